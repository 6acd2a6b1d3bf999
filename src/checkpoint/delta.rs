//! Trainable-only checkpoints: after fine-tuning a few layers of a big pretrained model,
//! save just those (and the running statistics of the modules that trained), and put them
//! back onto a fresh copy of the base model later.

use super::atomic_write;
use crate::error::{Result, TransferError};
use crate::freeze::Freeze;
use crate::import::{ImportOptions, Layout, import_weights};
use burn::module::Module;
use burn::prelude::*;
use burn_store::{ModuleSnapshot, PathFilter, SafetensorsStore};
use std::collections::HashSet;
use std::path::Path;

/// Writes the trainable parameters of `model` (those with `require_grad`, so call it on the
/// autodiff model) plus the buffers (BatchNorm running statistics) of every module that has
/// a trainable parameter, as safetensors in burn's layout, atomically. Returns the number
/// of tensors written. Nothing trainable is an error: the file would be empty.
pub fn save_trainable<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<usize> {
    let summary = model.param_summary();
    let trained_modules: HashSet<&str> = summary
        .entries
        .iter()
        .filter(|p| p.trainable)
        .map(|p| module_of(&p.path))
        .collect();
    let keep: Vec<String> = summary
        .entries
        .iter()
        .filter(|p| p.trainable || (p.buffer && trained_modules.contains(module_of(&p.path))))
        .map(|p| p.path.clone())
        .collect();
    if keep.is_empty() {
        return Err(TransferError::config(
            "save_trainable",
            "no trainable parameter",
            "the model has nothing trainable (on an inference backend nothing is): save it with save_model, or call this on the autodiff model",
        ));
    }
    let mut store = SafetensorsStore::from_bytes(None)
        .filter(PathFilter::new().with_full_paths(keep.iter().cloned()))
        .metadata("format", "burn-transfer trainable delta");
    model
        .save_into(&mut store)
        .map_err(|e| TransferError::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let bytes = store.get_bytes().map_err(|e| TransferError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // A CRC-32 in the metadata, checked by `load_trainable` (through `import_weights`).
    let bytes = crate::import::integrity::stamp_safetensors(&bytes).map_err(|reason| {
        TransferError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    atomic_write(path, &bytes)?;
    Ok(keep.len())
}

/// Loads a file written by [`save_trainable`] onto `base` (the same architecture, e.g. the
/// pretrained model rebuilt). Parameters not in the file keep their values. A tensor the
/// model does not have, or of another shape, is an error naming it (the delta belongs to
/// another architecture); so is an unreadable file.
pub fn load_trainable<B: Backend, M: Module<B>>(base: M, path: &Path) -> Result<M> {
    let (model, report) =
        import_weights(base, path, &ImportOptions::new().with_layout(Layout::Burn))?;
    if !report.unexpected.is_empty()
        || !report.mismatched.is_empty()
        || !report.unreadable.is_empty()
    {
        return Err(TransferError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "this delta does not fit the model (saved from another architecture?):\n{}",
                report.problems()
            ),
        });
    }
    Ok(model)
}

/// `a.b.weight` → `a.b`.
fn module_of(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(module, _)| module)
}
