//! The one error this crate returns: an input its kernels cannot compute with.

/// What went wrong, and what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// Class labels that do not index the logits.
    #[error("labels: {0}")]
    Labels(String),
}

/// `Result` with [`KernelError`].
pub type Result<T> = std::result::Result<T, KernelError>;
