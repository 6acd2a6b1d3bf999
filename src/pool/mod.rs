//! Max pooling with burn's `MaxPool2d` settings and results, fast on the CPU backends.
//!
//! [`MaxPool2d`] is configured by burn's [`MaxPool2dConfig`] and computes what burn's
//! `MaxPool2d` computes (the first maximum of each window; padding never wins). On Flex,
//! and in training on ndarray and Flex, it pools on the host with a backward pass of its
//! own that adds each gradient at the position the forward pass recorded; burn's Flex
//! max-pool is a general scalar loop that took 41% of a small CNN's frozen forward and 12%
//! of its training step. Elsewhere (ndarray inference, whose max-pool is SIMD; GPUs;
//! `ceil_mode`) it is burn's own.

mod cpu;
mod host;

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2dConfig;
use burn::prelude::*;

/// 2-D max pooling (NCHW) with burn's settings; see the [module docs](self).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::pool::MaxPool2dConfig;
/// use burn::prelude::*;
/// use burn_transfer::pool::MaxPool2d;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let pool = MaxPool2d::new(&MaxPool2dConfig::new([2, 2]));
/// let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0], [4.0, 3.0]]]], &device).require_grad();
/// let y = pool.forward(x.clone());
/// assert_eq!(y.clone().into_scalar(), 4.0);
/// let grads = y.sum().backward();
/// let dx = x.grad(&grads).unwrap().into_data();
/// assert_eq!(dx.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 1.0, 0.0]);
/// ```
#[derive(Module, Clone, Debug)]
pub struct MaxPool2d {
    kernel_size: [usize; 2],
    stride: [usize; 2],
    padding: PaddingConfig2d,
    dilation: [usize; 2],
    ceil_mode: bool,
}

impl MaxPool2d {
    /// The pooling `config` describes.
    pub fn new(config: &MaxPool2dConfig) -> Self {
        Self::from_burn(config.init())
    }

    /// Takes over burn's max pooling settings.
    pub fn from_burn(pool: burn::nn::pool::MaxPool2d) -> Self {
        Self {
            kernel_size: pool.kernel_size,
            stride: pool.stride,
            padding: pool.padding,
            dilation: pool.dilation,
            ceil_mode: pool.ceil_mode,
        }
    }

    /// burn's max pooling with the same settings.
    pub fn to_burn(&self) -> burn::nn::pool::MaxPool2d {
        burn::nn::pool::MaxPool2d {
            stride: self.stride,
            kernel_size: self.kernel_size,
            padding: self.padding.clone(),
            dilation: self.dilation,
            ceil_mode: self.ceil_mode,
        }
    }

    /// `[batch, channels, h, w]` → `[batch, channels, h_out, w_out]`.
    pub fn forward<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let Some(shape) = self.shape_for(x.dims()) else {
            return self.to_burn().forward(x);
        };
        match cpu::run(x, &shape) {
            Ok(y) => y,
            Err(x) => self.to_burn().forward(x),
        }
    }

    /// The host path's sizes, or `None` where burn's own pooling should decide (ceil
    /// mode, windows that do not fit, or padding beyond half a window, which burn's
    /// backends reject).
    fn shape_for(&self, [batch, channels, h, w]: [usize; 4]) -> Option<host::PoolShape> {
        if self.ceil_mode || self.kernel_size.contains(&0) || self.stride.contains(&0) {
            return None;
        }
        let [(top, bottom), (left, right)] = match self.padding {
            PaddingConfig2d::Valid => [(0, 0), (0, 0)],
            PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
            PaddingConfig2d::Same => [
                crate::conv::same_padding(self.kernel_size[0], self.stride[0], h),
                crate::conv::same_padding(self.kernel_size[1], self.stride[1], w),
            ],
        };
        let pads = [(top, bottom), (left, right)];
        let mut output = [0; 2];
        for a in 0..2 {
            let span = self.dilation[a] * (self.kernel_size[a] - 1) + 1;
            let padded = [h, w][a] + pads[a].0 + pads[a].1;
            if padded < span || pads[a].0.max(pads[a].1) > self.kernel_size[a] / 2 {
                return None;
            }
            output[a] = (padded - span) / self.stride[a] + 1;
        }
        Some(host::PoolShape {
            planes: batch * channels,
            input: [h, w],
            output,
            kernel: self.kernel_size,
            stride: self.stride,
            padding: [top, left],
            dilation: self.dilation,
        })
    }
}

#[cfg(test)]
mod tests;
