//! burn's [`MaxPool2d`] fast on the CPU backends: the same settings, the same results.
//!
//! [`max_pool2d`] computes what `layer.forward(x)` computes (the first maximum of each
//! window; padding never wins). On ndarray and Flex it pools in the backend's memory: in
//! training with a backward pass of its own that adds each gradient at the position the
//! forward pass recorded, in inference (a frozen body) in two separable passes. burn's Flex
//! max-pool is a general scalar loop, slow enough to dominate a small CNN's frozen forward;
//! ndarray's copies the map into a padded one first. Elsewhere (GPUs; `ceil_mode`) it is
//! burn's own.

mod kernel;
mod op;

use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;

/// `layer.forward(x)`, `[batch, channels, h, w]` → `[batch, channels, h_out, w_out]`: the
/// same values and gradients (see the [module docs](self)).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::pool::MaxPool2dConfig;
/// use burn::prelude::*;
/// use burn_cpu_kernels::pool::max_pool2d;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let pool = MaxPool2dConfig::new([2, 2]).init();
/// let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0], [4.0, 3.0]]]], &device).require_grad();
/// let y = max_pool2d(&pool, x.clone());
/// assert_eq!(y.clone().into_scalar(), 4.0);
/// let grads = y.sum().backward();
/// let dx = x.grad(&grads).unwrap().into_data();
/// assert_eq!(dx.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 1.0, 0.0]);
/// ```
pub fn max_pool2d<B: Backend>(layer: &MaxPool2d, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let Some(shape) = shape_for(layer, x.dims()) else {
        return layer.forward(x);
    };
    match op::run(x, &shape) {
        Ok(y) => y,
        Err(x) => layer.forward(x),
    }
}

/// The sizes for this crate's pooling, or `None` where burn's own pooling should decide
/// (ceil mode, windows that do not fit, or padding beyond half a window, which burn's
/// backends reject).
fn shape_for(layer: &MaxPool2d, [batch, channels, h, w]: [usize; 4]) -> Option<kernel::PoolShape> {
    if layer.ceil_mode || layer.kernel_size.contains(&0) || layer.stride.contains(&0) {
        return None;
    }
    let [(top, bottom), (left, right)] = match layer.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => [
            crate::conv::same_padding(layer.kernel_size[0], layer.stride[0], h),
            crate::conv::same_padding(layer.kernel_size[1], layer.stride[1], w),
        ],
    };
    let pads = [(top, bottom), (left, right)];
    let mut output = [0; 2];
    for a in 0..2 {
        let span = layer.dilation[a] * (layer.kernel_size[a] - 1) + 1;
        let padded = [h, w][a] + pads[a].0 + pads[a].1;
        if padded < span || pads[a].0.max(pads[a].1) > layer.kernel_size[a] / 2 {
            return None;
        }
        output[a] = (padded - span) / layer.stride[a] + 1;
    }
    Some(kernel::PoolShape {
        planes: batch * channels,
        input: [h, w],
        output,
        kernel: layer.kernel_size,
        stride: layer.stride,
        padding: [top, left],
        dilation: layer.dilation,
    })
}

#[cfg(test)]
mod tests;
