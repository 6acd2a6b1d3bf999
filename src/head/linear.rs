//! The plain linear head: the seed's `fc = Linear(2048, 5)`.

use super::Head;
use crate::error::{Result, TransferError};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

/// One linear layer, features → logits.
#[derive(Module, Debug)]
pub struct LinearHead<B: Backend> {
    /// The layer; its parameters are `linear.weight` (`[in, out]`) and `linear.bias`.
    pub linear: Linear<B>,
}

impl<B: Backend> LinearHead<B> {
    /// A fresh head from `input_dim` features to `num_outputs` outputs (Kaiming-uniform
    /// weights, as burn's `Linear`). Zero widths are an error.
    pub fn new(input_dim: usize, num_outputs: usize, device: &B::Device) -> Result<Self> {
        if input_dim == 0 || num_outputs == 0 {
            return Err(TransferError::config(
                "LinearHead widths",
                format!("{input_dim}→{num_outputs}"),
                "both widths must be at least 1",
            ));
        }
        let head = Self {
            linear: LinearConfig::new(input_dim, num_outputs).init(device),
        };
        crate::freeze::materialize(&head);
        Ok(head)
    }
}

impl<B: Backend> LinearHead<B> {
    /// A head from an existing layer (e.g. a pretrained classifier, or a pruned one).
    pub fn from_linear(linear: Linear<B>) -> Self {
        let head = Self { linear };
        crate::freeze::materialize(&head);
        head
    }
}

impl<B: Backend> Head<B> for LinearHead<B> {
    fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        crate::kernels::linear(&self.linear, features)
    }

    fn input_dim(&self) -> usize {
        self.linear.weight.dims()[0]
    }

    fn num_outputs(&self) -> usize {
        self.linear.weight.dims()[1]
    }
}
