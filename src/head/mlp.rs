//! A multi-layer head: hidden layers with an activation and dropout, then the output layer.

use super::Head;
use crate::error::{Result, TransferError};
use burn::module::Module;
use burn::nn::activation::{Activation, ActivationConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;

/// Configuration of an [`MlpHead`]: `MlpHeadConfig::new(input_dim, hidden, num_outputs)`,
/// then `with_activation` / `with_dropout`, then [`init`](Self::init).
#[derive(Config, Debug)]
pub struct MlpHeadConfig {
    /// Feature width in.
    pub input_dim: usize,
    /// Widths of the hidden layers (may be empty: then the head is linear).
    pub hidden: Vec<usize>,
    /// Output width.
    pub num_outputs: usize,
    /// Activation after each hidden layer (default ReLU).
    #[config(default = "ActivationConfig::Relu")]
    pub activation: ActivationConfig,
    /// Dropout probability after each activation (default 0.1).
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl MlpHeadConfig {
    /// Builds the head; zero widths or a dropout outside `[0, 1)` are errors.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<MlpHead<B>> {
        let widths: Vec<usize> = std::iter::once(self.input_dim)
            .chain(self.hidden.iter().copied())
            .chain(std::iter::once(self.num_outputs))
            .collect();
        if widths.contains(&0) {
            return Err(TransferError::config(
                "MlpHead widths",
                format!("{widths:?}"),
                "every width must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TransferError::config(
                "dropout",
                self.dropout,
                "must be in [0, 1)",
            ));
        }
        let mut layers: Vec<Linear<B>> = widths
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        let output = layers.pop().expect("at least one layer");
        let head = MlpHead {
            hidden: layers,
            activation: self.activation.init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            output,
        };
        crate::freeze::materialize(&head);
        Ok(head)
    }
}

/// Hidden layers (each: linear, activation, dropout) and an output layer.
#[derive(Module, Debug)]
pub struct MlpHead<B: Backend> {
    /// Hidden layers, at `hidden.N`.
    pub hidden: Vec<Linear<B>>,
    activation: Activation<B>,
    dropout: Dropout,
    /// The output layer.
    pub output: Linear<B>,
}

impl<B: Backend> Head<B> for MlpHead<B> {
    fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.hidden.iter().fold(features, |x, layer| {
            self.dropout
                .forward(self.activation.forward(crate::kernels::linear(layer, x)))
        });
        crate::kernels::linear(&self.output, x)
    }

    fn input_dim(&self) -> usize {
        self.hidden.first().unwrap_or(&self.output).weight.dims()[0]
    }

    fn num_outputs(&self) -> usize {
        self.output.weight.dims()[1]
    }
}
