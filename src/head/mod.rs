//! Task heads and the typed backbone + head composition.
//!
//! A head maps backbone features to task outputs. Replacing one is a typed operation on
//! [`TransferModel`]: `replace_head` returns a model of the new type, and a head whose input
//! width differs from the backbone's feature width is refused at construction, with both
//! widths in the message.

mod linear;
mod mlp;
mod pooling;
mod transfer;

pub use linear::LinearHead;
pub use mlp::{MlpHead, MlpHeadConfig};
pub use pooling::{Pooled, Pooling, SequenceBackbone, SequenceFeatures};
pub use transfer::TransferModel;

use burn::module::{Module, ModuleDisplay};
use burn::prelude::*;

/// A task head: features `[batch, input_dim]` → outputs `[batch, num_outputs]`.
pub trait Head<B: Backend>: Module<B> + ModuleDisplay {
    /// Maps features to outputs (logits for classification).
    fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2>;

    /// The feature width this head expects.
    fn input_dim(&self) -> usize;

    /// The output width (number of classes).
    fn num_outputs(&self) -> usize;
}
