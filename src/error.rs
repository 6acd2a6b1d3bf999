//! The crate's one error type.
//!
//! Every message says what was wrong and what to do about it, so that a user reading it in a
//! terminal can fix the call without opening the source.

use std::path::PathBuf;

/// Everything that can go wrong in burn-transfer.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A parameter selector matched no parameter of the module.
    #[error(
        "selector `{selector}` matched no parameter; check the pattern against the available paths: {}",
        available.join(", ")
    )]
    SelectorMatchedNothing {
        /// The selector as the user wrote it.
        selector: String,
        /// Every parameter path of the module, in visiting order.
        available: Vec<String>,
    },

    /// A glob pattern could not be parsed.
    #[error(
        "invalid glob pattern `{pattern}`: {reason}; use `*`, `?` and `[a-z]` classes, e.g. `encoder.layers.[0-3].*`"
    )]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// Why it is invalid.
        reason: String,
    },

    /// A layer stack selection asked for more layers than the stack holds.
    #[error(
        "the stack `{prefix}` has {available} layers, so `{requested}` cannot be selected; pick at most {available}"
    )]
    StackTooShort {
        /// The path prefix of the stack (e.g. `encoder.layers`).
        prefix: String,
        /// How many layers were requested.
        requested: usize,
        /// How many the stack has.
        available: usize,
    },

    /// Two tensors that must have the same width do not.
    #[error("{what}: expected width {expected}, got {actual}; {hint}")]
    WidthMismatch {
        /// What was being connected (e.g. "head input vs backbone features").
        what: String,
        /// The width the receiving side needs.
        expected: usize,
        /// The width that was offered.
        actual: usize,
        /// How to fix it.
        hint: String,
    },

    /// A configuration value is out of its valid range.
    #[error("invalid configuration: {name} = {value} ({reason})")]
    InvalidConfig {
        /// The option's name.
        name: String,
        /// The offending value, formatted.
        value: String,
        /// The rule it broke and what to use instead.
        reason: String,
    },

    /// Training was asked of a model whose parameters are all frozen, with no unfreezing
    /// scheduled: it would run and change nothing.
    #[error(
        "the model has no trainable parameter ({total} parameters, all frozen), so training would change nothing; unfreeze what should train (`Freeze::unfreeze`, `unfreeze_matching`, or an unfreeze schedule). A module made with `AutodiffModule::from_inner` from a *clone* of an inference module comes out frozen (burn drops the flag when it clones a parameter): build such a student with `distill::init::trainable`"
    )]
    NothingToTrain {
        /// Number of (frozen) parameters the model has.
        total: usize,
    },

    /// The training data source yielded no batch.
    #[error(
        "the {split} data source yielded no batch; give it at least one sample (check the data set length and the batch size)"
    )]
    EmptyData {
        /// Which split was empty ("training" or "validation").
        split: String,
    },

    /// A label is not a valid class index.
    #[error(
        "label {label} in batch {batch} is out of range: the model predicts {num_classes} classes (0..={max}); fix the labels or widen the head"
    )]
    LabelOutOfRange {
        /// The offending label.
        label: i64,
        /// Index of the batch (within the epoch) that held it.
        batch: usize,
        /// The number of classes the model predicts.
        num_classes: usize,
        /// The largest valid label.
        max: usize,
    },

    /// A token label (token-level distillation) is not a vocabulary index.
    #[error(
        "token label {label} at row {row}, position {position} is out of range: the vocabulary has {vocab} entries; use -100 (loss::IGNORE_INDEX) for positions without a label, or mark them as padding"
    )]
    TokenLabelOutOfRange {
        /// The offending label.
        label: i64,
        /// The sequence (row of the batch) that holds it.
        row: usize,
        /// Its position in the sequence.
        position: usize,
        /// The vocabulary size (logits per position).
        vocab: usize,
    },

    /// The loss became NaN or infinite; training was stopped.
    #[error(
        "the loss became {value} at epoch {epoch}, step {step}; training stopped and the best checkpoint was left as it was. Lower the learning rate, enable gradient clipping, or check the batch for NaN/Inf inputs"
    )]
    NonFiniteLoss {
        /// The epoch (1-based) in which it happened.
        epoch: usize,
        /// The optimizer step within the epoch (1-based batch index).
        step: usize,
        /// The value that was seen.
        value: f32,
    },

    /// The validation loss was NaN or infinite; training was stopped.
    #[error(
        "the validation loss became {value} after epoch {epoch}; training stopped and the best checkpoint was left as it was. Check the validation data for NaN/Inf inputs, or lower the learning rate if the model diverged"
    )]
    NonFiniteValidLoss {
        /// The epoch (1-based) whose validation gave it.
        epoch: usize,
        /// The value that was seen.
        value: f64,
    },

    /// A batch's shapes do not fit together.
    #[error("batch shape error: {0}")]
    BatchShape(String),

    /// Reading or writing a file failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done ("write checkpoint", "read history", ...).
        action: String,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint could not be written or read by burn's recorder.
    #[error("checkpoint `{}`: {reason}", path.display())]
    Checkpoint {
        /// The file concerned.
        path: PathBuf,
        /// What the recorder reported.
        reason: String,
    },

    /// A file the crate wrote was changed afterwards: its checksum does not hold.
    #[error(
        "`{}` is damaged: {reason}. It changed after it was written (a flipped or lost byte, an interrupted copy); restore it from a copy, or delete it and save or train again",
        path.display()
    )]
    DamagedFile {
        /// The file concerned.
        path: PathBuf,
        /// What did not hold.
        reason: String,
    },

    /// A weights file could not be read: not found, truncated, corrupt, or not a
    /// safetensors / PyTorch file.
    #[error(
        "cannot read weights `{}`: {reason}; check the path and that the file is complete (fetch it again: scripts/fetch-weights.sh checks the sha256)",
        path.display()
    )]
    WeightFile {
        /// The file concerned.
        path: PathBuf,
        /// What the reader reported.
        reason: String,
    },

    /// A strict import found anything but a clean one-to-one match of file and model.
    #[error(
        "strict import of `{}` failed ({summary}):\n{problems}\nadd remapping rules (ImportOptions::with_remap), ignore keys that carry no weights (ImportOptions::with_ignore), or load without strict mode and read the report",
        path.display()
    )]
    ImportNotClean {
        /// The file concerned.
        path: PathBuf,
        /// Counts of each outcome.
        summary: String,
        /// The keys at fault, one line per kind of problem.
        problems: String,
    },

    /// Serialising or plotting the history failed.
    #[error("cannot export the history as {format}: {reason}")]
    Export {
        /// The target format ("JSON", "SVG").
        format: String,
        /// What went wrong.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = TransferError> = std::result::Result<T, E>;

impl TransferError {
    /// Builds an [`TransferError::InvalidConfig`].
    pub(crate) fn config(name: &str, value: impl std::fmt::Display, reason: &str) -> Self {
        Self::InvalidConfig {
            name: name.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Builds an [`TransferError::Io`].
    pub(crate) fn io(action: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.to_string(),
            path: path.into(),
            source,
        }
    }
}
