//! Saving and loading models without ever leaving a half-written file.
//!
//! Every write goes to a temporary file in the same folder, is flushed to disk, and is then
//! renamed over the target: a reader (or a crash) sees the old file or the new one, never a
//! mix.

pub mod delta;
pub mod pytorch;

pub use delta::{load_trainable, save_trainable};
pub use pytorch::save_pytorch_safetensors;

use crate::error::{Result, TransferError};
use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file in the same folder, fsync, rename).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| TransferError::io("create folder", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TransferError::io("write", path, e)
    })
}

/// Serialises a module's weights (burn's named MessagePack, full precision) to bytes.
pub fn model_to_bytes<B: Backend, M: Module<B>>(model: &M) -> Result<Vec<u8>> {
    crate::freeze::materialize(model);
    NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| TransferError::Checkpoint {
            path: "<memory>".into(),
            reason: e.to_string(),
        })
}

/// Saves a module's weights to `path` atomically.
pub fn save_model<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<()> {
    atomic_write(path, &model_to_bytes(model)?)
}

/// Loads weights saved by [`save_model`] into `model` (which gives the architecture).
///
/// A missing file, a truncated file or one of another architecture is an error, not a
/// panic. The parameters keep their `require_grad` flags from `model`.
pub fn load_model<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    let bytes = std::fs::read(path).map_err(|e| TransferError::io("read checkpoint", path, e))?;
    load_model_bytes(model, bytes, path, device)
}

/// Loads weights serialised by [`model_to_bytes`] into `model`; `path` names the source in
/// errors. Parameters take the ids stored with the weights and keep `model`'s
/// `require_grad` flags.
pub fn load_model_bytes<B: Backend, M: Module<B>>(
    model: M,
    bytes: Vec<u8>,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    let record = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NamedMpkBytesRecorder::<FullPrecisionSettings>::default().load(bytes, device)
    }))
    .map_err(|_| TransferError::Checkpoint {
        path: path.into(),
        reason: "the file could not be decoded (corrupt, or not a burn checkpoint)".into(),
    })?
    .map_err(|e| TransferError::Checkpoint {
        path: path.into(),
        reason: format!("{e}; was it saved from a model of this architecture?"),
    })?;
    // `load_record` keeps each parameter's `require_grad` flag (burn's `transform_for_load`).
    Ok(model.load_record(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn round_trip_is_exact_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.mpk");
        let device = Default::default();
        let a: Linear<NdArray> = LinearConfig::new(3, 2).init(&device);
        // Saving initialises `a` in place: what is read back must equal what `a` holds.
        save_model(&a, &path).unwrap();
        let b: Linear<NdArray> = LinearConfig::new(3, 2).init(&device);
        let b = load_model(b, &path, &device).unwrap();
        assert_eq!(a.weight.val().to_data(), b.weight.val().to_data());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_and_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let device = Default::default();
        let m: Linear<NdArray> = LinearConfig::new(3, 2).init(&device);
        let err = load_model(m.clone(), &dir.path().join("none.mpk"), &device).unwrap_err();
        assert!(matches!(err, TransferError::Io { .. }), "{err}");
        let path = dir.path().join("bad.mpk");
        std::fs::write(&path, b"not a checkpoint").unwrap();
        let err = load_model(m, &path, &device).unwrap_err();
        assert!(matches!(err, TransferError::Checkpoint { .. }), "{err}");
    }
}
