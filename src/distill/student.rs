//! The module a distillation run optimises: the student and the loss's own weights.

use crate::loss::DistillLoss;
use burn::module::Module;
use burn::prelude::*;

/// The student together with the [`DistillLoss`] (whose FitNets projector, if any, trains
/// with it). Parameter paths are `student.…` and `loss.…`.
#[derive(Module, Debug)]
pub struct DistillStudent<B: Backend, M> {
    /// The network being taught.
    pub student: M,
    /// The objective, with its trainable projector.
    pub loss: DistillLoss<B>,
}
