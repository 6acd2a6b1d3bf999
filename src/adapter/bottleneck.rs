//! Bottleneck adapters (Houlsby et al., 2019): a small residual MLP placed after a
//! sub-layer, `x + up(act(down(x)))`, initialised near the identity.

use crate::error::{Result, TransferError};
use burn::module::Module;
use burn::nn::Initializer;
use burn::nn::{Gelu, Linear, LinearConfig};
use burn::prelude::*;

/// Size of a [`BottleneckAdapter`]: `BottleneckConfig::new(dim, bottleneck)` for
/// `dim`-wide features through a `bottleneck`-wide hidden layer.
#[derive(Config, Debug, PartialEq)]
pub struct BottleneckConfig {
    /// Width of the features it adapts.
    pub dim: usize,
    /// Bottleneck width (e.g. 64 for a 768-wide model).
    pub bottleneck: usize,
    /// Standard deviation of the near-zero initial weights of the down-projection (the
    /// up-projection starts at zero, so a new adapter is the identity).
    #[config(default = 1e-3)]
    pub init_std: f64,
}

impl BottleneckConfig {
    /// Builds it; zero widths are errors.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<BottleneckAdapter<B>> {
        if self.dim == 0 || self.bottleneck == 0 {
            return Err(TransferError::config(
                "bottleneck widths",
                format!("{}→{}", self.dim, self.bottleneck),
                "both must be ≥ 1",
            ));
        }
        let near_zero = Initializer::Normal {
            mean: 0.0,
            std: self.init_std,
        };
        let adapter = BottleneckAdapter {
            down: LinearConfig::new(self.dim, self.bottleneck)
                .with_initializer(near_zero.clone())
                .init(device),
            up: LinearConfig::new(self.bottleneck, self.dim)
                .with_initializer(Initializer::Zeros)
                .init(device),
            activation: Gelu::new(),
        };
        crate::freeze::materialize(&adapter);
        Ok(adapter)
    }
}

/// `x + up(gelu(down(x)))`; `up` starts at zero, so a new adapter is the identity.
#[derive(Module, Debug)]
pub struct BottleneckAdapter<B: Backend> {
    /// Down-projection `dim → bottleneck`.
    pub down: Linear<B>,
    /// Up-projection `bottleneck → dim`.
    pub up: Linear<B>,
    activation: Gelu,
}

impl<B: Backend> BottleneckAdapter<B> {
    /// Applies the adapter to features of any rank whose last dimension is `dim`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = self
            .up
            .forward(self.activation.forward(self.down.forward(x.clone())));
        x + h
    }
}
