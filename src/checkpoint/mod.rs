//! Saving and loading models without ever leaving a half-written file.
//!
//! Every write goes to a temporary file in the same folder, is flushed to disk, and is then
//! renamed over the target: a reader (or a crash) sees the old file or the new one, never a
//! mix.

pub(crate) mod checked;
pub mod delta;
pub(crate) mod manifest;
pub mod pytorch;

pub use delta::{load_trainable, save_trainable};
pub use pytorch::save_pytorch_safetensors;

use crate::error::{Result, TransferError};
use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use checked::Opened;
use manifest::{TensorEntry, first_difference, manifest_of};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file in the same folder, fsync, rename).
///
/// The temporary file is `.<name>.tmp-<pid>`. A process killed while writing leaves its
/// temporary file behind; the next write to the same path removes those whose process is
/// gone, so repeated kills cannot fill the disk.
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
    remove_stale_temporaries(dir, &name);
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

/// Removes `.<name>.tmp-<pid>` files in `dir` left by writers that no longer run.
/// Best effort: a file that cannot be listed or removed is left alone.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_is_running(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether a process with this id exists. Where the system cannot tell (no `/proc`), every
/// other process counts as running, so that no live writer loses its temporary file.
fn process_is_running(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Serialises a module's weights (burn's named MessagePack, full precision) to bytes, with
/// the list of its tensors and a checksum after them (see [`load_model_bytes`]).
pub fn model_to_bytes<B: Backend, M: Module<B>>(model: &M) -> Result<Vec<u8>> {
    crate::freeze::materialize(model);
    let record = NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
        .record(model.clone().into_record(), ())
        .map_err(|e| TransferError::Checkpoint {
            path: "<memory>".into(),
            reason: e.to_string(),
        })?;
    let manifest = serde_json::to_vec(&manifest_of(model)).map_err(|e| TransferError::Export {
        format: "checkpoint manifest".into(),
        reason: e.to_string(),
    })?;
    Ok(checked::seal_after(record, &[&manifest]))
}

/// Saves a module's weights to `path` atomically.
///
/// The file is burn's named MessagePack record (burn's `NamedMpkFileRecorder` reads it),
/// followed by the list of tensors and a CRC-32 that [`load_model`] checks.
pub fn save_model<B: Backend, M: Module<B>>(model: &M, path: &Path) -> Result<()> {
    atomic_write(path, &model_to_bytes(model)?)
}

/// Loads weights saved by [`save_model`] into `model` (which gives the architecture).
///
/// A missing, truncated or damaged file (one flipped byte is enough: the checksum catches
/// it) is an error, not a panic; so is a file of another architecture, with the first
/// tensor that differs named, before anything is replaced. Files written by burn's own
/// recorder (no checksum) load too, and are checked against the model's shapes after
/// decoding. The parameters keep their `require_grad` flags from `model`.
pub fn load_model<B: Backend, M: Module<B>>(
    model: M,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    let bytes = std::fs::read(path).map_err(|e| TransferError::io("read checkpoint", path, e))?;
    load_model_bytes(model, bytes, path, device)
}

/// Loads weights serialised by [`model_to_bytes`] into `model`; `path` names the source in
/// errors. Checked as [`load_model`] checks a file. Parameters take the ids stored with the
/// weights and keep `model`'s `require_grad` flags.
pub fn load_model_bytes<B: Backend, M: Module<B>>(
    model: M,
    bytes: Vec<u8>,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    let expected = manifest_of(&model);
    let mismatch = |reason: String| TransferError::Checkpoint {
        path: path.into(),
        reason,
    };
    // The record is the first section: cut the bytes down to it instead of copying it.
    let record_len = match checked::open(&bytes, path)? {
        Opened::Checked(sections) => {
            let [record, manifest] = sections[..] else {
                return Err(mismatch(
                    "not a model checkpoint of burn-transfer (wrong number of sections)".into(),
                ));
            };
            let saved: Vec<TensorEntry> = serde_json::from_slice(manifest)
                .map_err(|e| mismatch(format!("unreadable list of tensors: {e}")))?;
            if let Some(difference) = first_difference(&saved, &expected) {
                return Err(mismatch(difference));
            }
            record.len()
        }
        Opened::Unsealed(all) => all.len(),
    };
    let mut record_bytes = bytes;
    record_bytes.truncate(record_len);
    let record = crate::guard::quietly(|| {
        NamedMpkBytesRecorder::<FullPrecisionSettings>::default().load(record_bytes, device)
    })
    .map_err(|_| {
        mismatch("the file could not be decoded (corrupt, or not a burn checkpoint)".into())
    })?
    .map_err(|e| {
        // burn appends advice about records of burn 0.14 to every tensor decoding error;
        // it does not apply to a file of the wrong architecture, so only the first line is
        // kept.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default().to_string();
        mismatch(format!(
            "it does not decode as this model's record ({first}); was it saved from a model of this architecture?"
        ))
    })?;
    // `load_record` keeps each parameter's `require_grad` flag (burn's `transform_for_load`).
    // burn asserts (panics) when a list of layers has another length than the record's.
    let loaded = crate::guard::quietly(|| model.load_record(record)).map_err(|_| {
        mismatch(
            "it was saved from another architecture (a list of layers has another length); build the model with the configuration it was saved with".into(),
        )
    })?;
    // Files without a list of tensors are checked after decoding, against the shapes the
    // model had before: burn takes every tensor as the file has it.
    if let Some(difference) = first_difference(&manifest_of(&loaded), &expected) {
        return Err(mismatch(difference));
    }
    Ok(loaded)
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
        // burn's advice about records of burn 0.14 does not reach the user.
        assert!(!err.to_string().contains("0.14"), "{err}");
    }
}
