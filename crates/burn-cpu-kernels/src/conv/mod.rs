//! burn's [`Conv2d`] trained fast on the CPU backends: the same weights, the same results.
//!
//! burn 0.21's CPU backends compute a convolution's gradients with a transposed convolution
//! (input gradient) and a convolution whose kernel is the whole output map (weight
//! gradient); on ndarray those run one to two orders of magnitude slower than the forward
//! pass, which made fine-tuning a CNN on the CPU impractical. [`conv2d`] computes what
//! `layer.forward(x)` computes, from the same layer, and routes by backend:
//!
//! - **ndarray and Flex, training** (`Autodiff<NdArray>`, `Autodiff<Flex>`): one autodiff
//!   operation with its own backward pass, computed by the fastest of: several samples'
//!   unfolded receptive fields in one GEMM (maps under 256 pixels, where one sample's GEMM
//!   would be too thin); Winograd's F(2×2, 3×3) per sample (3×3 layers with enough
//!   channels); a direct per-plane kernel (depthwise layers); otherwise, per sample on
//!   rayon's threads, the receptive fields unfolded into a matrix that stays in cache
//!   (im2col into a per-thread buffer kept between calls). The forward pass, the weight
//!   gradient and the input gradient are each one GEMM on it (the `gemm` crate, on strided
//!   operands, so nothing is transposed in memory); the input gradient is folded back
//!   (col2im). Only the gradients that are needed are computed: none for the input of a
//!   first layer, none for a frozen weight.
//! - **ndarray and Flex, inference** (a frozen body): the same forward kernels, except
//!   grouped (not depthwise) layers on Flex, which keep Flex's own.
//! - **Other backends** (wgpu, …): with autodiff, im2col by one `select` and one matrix
//!   product (its backward is a GEMM and a scatter-add); without, the backend's own
//!   convolution.
//!
//! The backend is a type; the check happens at run time (by type, in the private `cpu` module), so these
//! functions take any `B: Backend` and use the fast path where there is one.

mod im2col;
mod kernel;
mod layer;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

/// `layer.forward(x)` (`[batch, in, h, w]` → `[batch, out, h_out, w_out]`): the same values
/// (to float rounding) and gradients, through this crate's convolution on the CPU backends
/// (see the [module docs](self)).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::conv::Conv2dConfig;
/// use burn::prelude::*;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let conv = Conv2dConfig::new([3, 8], [3, 3]).init::<B>(&device);
/// let x = Tensor::<B, 4>::ones([2, 3, 16, 16], &device);
/// let y = burn_cpu_kernels::conv::conv2d(&conv, x.clone());
/// assert_eq!(y.dims(), [2, 8, 14, 14]);
/// y.into_data().assert_approx_eq::<f32>(&conv.forward(x).into_data(), Default::default());
/// ```
pub fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    forward_then(layer, x, false)
}

/// `relu(layer.forward(x))`: the same values and gradients. On the CPU backends the ReLU is
/// fused into the convolution: applied to each sample's output while it is still in cache,
/// and, in training, its mask applied to the output gradient in the same pass that reads
/// it, where a separate ReLU writes and reads the whole output map twice more.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::conv::Conv2dConfig;
/// use burn::prelude::*;
/// use burn_cpu_kernels::conv::{conv2d, conv2d_relu};
///
/// let device = Default::default();
/// let conv = Conv2dConfig::new([3, 8], [3, 3]).init::<NdArray>(&device);
/// let x = Tensor::<NdArray, 4>::ones([2, 3, 8, 8], &device);
/// let y = conv2d_relu(&conv, x.clone());
/// let expected = burn::tensor::activation::relu(conv2d(&conv, x));
/// y.into_data().assert_approx_eq::<f32>(&expected.into_data(), Default::default());
/// ```
pub fn conv2d_relu<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    forward_then(layer, x, true)
}

/// The convolution, and ReLU after it when `relu`.
fn forward_then<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>, relu: bool) -> Tensor<B, 4> {
    let activation = |y: Tensor<B, 4>| {
        if relu {
            burn::tensor::activation::relu(y)
        } else {
            y
        }
    };
    let Some(shape) = shape_for(layer, &x) else {
        // A kernel larger than the input, or channels that do not match the weight:
        // burn's convolution reports it.
        return activation(layer.forward(x));
    };
    let bias = layer.bias.as_ref().map(|b| b.val());
    // CPU backends: this crate's convolution, ReLU fused (see `layer`).
    match crate::cpu::layer::run((x, layer.weight.val(), bias), shape, relu) {
        Ok(y) => y,
        Err((x, _, _)) => activation(forward_with_tensor_ops(layer, x)),
    }
}

/// The path of the other backends (GPU): burn's convolution without autodiff, im2col by
/// `select` and a matrix product with it.
fn forward_with_tensor_ops<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    if !B::ad_enabled(&x.device()) {
        // No gradients to compute: the backend's direct convolution is the fast path.
        return layer.forward(x);
    }
    let [_, _, h, w] = x.dims();
    let geometry = im2col::Geometry {
        stride: layer.stride,
        padding: padding_pairs(layer, h, w),
        dilation: layer.dilation,
        groups: layer.groups,
    };
    let bias = layer.bias.as_ref().map(|b| b.val());
    match im2col::conv2d(x.clone(), layer.weight.val(), bias, &geometry) {
        Some(y) => y,
        None => layer.forward(x),
    }
}

/// Every size of `layer` on `x`, or `None` when the kernel does not fit or the channels do
/// not match the weight.
fn shape_for<B: Backend>(layer: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<kernel::ConvShape> {
    let [batch, channels, h, w] = x.dims();
    let [out_channels, group_channels, kh, kw] = layer.weight.dims();
    if channels != group_channels * layer.groups {
        return None;
    }
    let padding = padding_pairs(layer, h, w);
    let [Some(ho), Some(wo)] = [0, 1].map(|a| {
        im2col::out_len(
            [h, w][a] + padding[a].0 + padding[a].1,
            [kh, kw][a],
            layer.stride[a],
            layer.dilation[a],
        )
    }) else {
        return None;
    };
    Some(kernel::ConvShape {
        batch,
        channels,
        input: [h, w],
        out_channels,
        kernel: [kh, kw],
        output: [ho, wo],
        stride: layer.stride,
        padding: [padding[0].0, padding[1].0],
        dilation: layer.dilation,
        groups: layer.groups,
    })
}

/// `[(top, bottom), (left, right)]` for an input of `h × w`, as burn's `Conv2d` pads.
fn padding_pairs<B: Backend>(layer: &Conv2d<B>, h: usize, w: usize) -> [(usize, usize); 2] {
    match layer.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => [
            same_padding(layer.kernel_size[0], layer.stride[0], h),
            same_padding(layer.kernel_size[1], layer.stride[1], w),
        ],
    }
}

/// burn's rule for `Same`: the output has `ceil(size / stride)` positions, the padding
/// needed for that is split with the odd element at the end.
pub(crate) fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = if out > 0 {
        ((out - 1) * stride + kernel).saturating_sub(size)
    } else {
        0
    };
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    type B = Autodiff<NdArray>;

    /// Forward output and the gradients of input, weight and bias agree with burn's Conv2d.
    fn check(config: Conv2dConfig, input: [usize; 4]) {
        let device = Default::default();
        let conv = config.init::<B>(&device);
        crate::materialize(&conv);
        let x0 = Tensor::<B, 4>::random(input, Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 4>| {
            let x = x0.clone().detach().require_grad();
            let y = f(x.clone());
            // A loss that weights every output differently, so no gradient hides a mistake.
            let weights = Tensor::<B, 4>::ones(y.dims(), &device).cumsum(3).cumsum(1);
            let grads = (y.clone() * weights).sum().backward();
            let w = conv.weight.val();
            (
                y.inner().into_data(),
                x.grad(&grads).unwrap().into_data(),
                w.grad(&grads).unwrap().into_data(),
                conv.bias
                    .as_ref()
                    .map(|b| b.val().grad(&grads).unwrap().into_data()),
            )
        };
        let reference = run(&|x| conv.forward(x));
        // The kernel path (ndarray) and the tensor-op path (what GPUs take).
        for ours in [
            run(&|x| conv2d(&conv, x)),
            run(&|x| forward_with_tensor_ops(&conv, x)),
        ] {
            agree(&ours, &reference);
        }
        // Inference (inner backend) takes burn's own path and must agree too.
        let inner = {
            use burn::module::AutodiffModule;
            conv2d(&conv.valid(), x0.clone().inner())
        };
        close(&inner.into_data(), &reference.0);
        // ReLU fused into the convolution: burn's ReLU after burn's convolution.
        let relu = burn::tensor::activation::relu;
        let reference = run(&|x| relu(conv.forward(x)));
        let ours = run(&|x| conv2d_relu(&conv, x));
        agree(&ours, &reference);
        let zeros = reference.0.iter::<f32>().filter(|v| *v == 0.0).count();
        assert!(
            zeros > 0,
            "the ReLU must cut some outputs for the test to mean anything"
        );
        let inner = {
            use burn::module::AutodiffModule;
            conv2d_relu(&conv.valid(), x0.clone().inner())
        };
        close(&inner.into_data(), &reference.0);
    }

    type Results = (TensorData, TensorData, TensorData, Option<TensorData>);

    /// Output and every gradient agree (see [`close`]).
    fn agree(ours: &Results, reference: &Results) {
        close(&ours.0, &reference.0);
        close(&ours.1, &reference.1);
        close(&ours.2, &reference.2);
        if let (Some(a), Some(b)) = (&ours.3, &reference.3) {
            close(a, b);
        }
    }

    /// Equal to float rounding: relative 1e-4, and absolute 1e-5 of the tensor's largest
    /// value. The gradients here are sums of a hundred terms as large as 10³ that cancel to
    /// values near 1, whose rounding error (either side's) is of that absolute size; a fixed
    /// absolute tolerance failed one run in six on random inputs without any bug.
    fn close(ours: &TensorData, reference: &TensorData) {
        let largest = reference.iter::<f32>().fold(0f32, |m, v| m.max(v.abs()));
        let tol = Tolerance::<f32>::rel_abs(1e-4, (1e-5 * largest).max(1e-4));
        ours.assert_approx_eq::<f32>(reference, tol);
    }

    #[test]
    fn plain_3x3_matches_burn() {
        check(Conv2dConfig::new([3, 8], [3, 3]), [2, 3, 9, 7]);
    }

    #[test]
    fn winograd_layers_match_burn() {
        // Enough channels for Winograd's F(2×2, 3×3); odd output sizes crop the last tiles.
        check(
            Conv2dConfig::new([8, 16], [3, 3]).with_padding(PaddingConfig2d::Same),
            [2, 8, 9, 7],
        );
        check(Conv2dConfig::new([12, 8], [3, 3]), [3, 12, 8, 11]);
    }

    #[test]
    fn stride_padding_dilation_match_burn() {
        check(
            Conv2dConfig::new([4, 6], [3, 3])
                .with_stride([2, 1])
                .with_dilation([1, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 2, 0, 1)),
            [2, 4, 11, 10],
        );
        check(
            Conv2dConfig::new([3, 5], [5, 3]).with_padding(PaddingConfig2d::Same),
            [1, 3, 8, 6],
        );
        check(
            Conv2dConfig::new([2, 4], [1, 1])
                .with_stride([2, 2])
                .with_bias(false),
            [3, 2, 7, 7],
        );
    }

    #[test]
    fn groups_and_depthwise_match_burn() {
        check(
            Conv2dConfig::new([4, 6], [3, 3]).with_groups(2),
            [2, 4, 6, 6],
        );
        check(
            Conv2dConfig::new([5, 5], [3, 3])
                .with_groups(5)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_stride([2, 2]),
            [2, 5, 9, 9],
        );
    }

    #[test]
    fn frozen_weight_and_constant_input_get_no_gradient() {
        // The first layer of a fine-tuned net: its input is data (no gradient), and a
        // frozen layer's weight gets none either; the gradients that flow are burn's.
        let device = Default::default();
        let conv = Conv2dConfig::new([3, 4], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<B>(&device);
        crate::materialize(&conv);
        let frozen = conv.clone().no_grad();
        let x = Tensor::<B, 4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &device);
        let head = Tensor::<B, 4>::random([2, 4, 6, 6], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let grads = (conv2d(&frozen, x.clone()) * head.clone()).sum().backward();
        assert!(frozen.weight.val().grad(&grads).is_none());
        assert!(x.grad(&grads).is_none());
        let expected = conv.forward(x).inner();
        head.grad(&grads)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::rel_abs(1e-4, 1e-4));
    }

    #[test]
    fn balanced_checkpointing_backend_matches_burn() {
        type Bc = Autodiff<NdArray, burn_autodiff::checkpoint::strategy::BalancedCheckpointing>;
        let device = Default::default();
        let conv = Conv2dConfig::new([2, 3], [3, 3]).init::<Bc>(&device);
        crate::materialize(&conv);
        let x0 = Tensor::<Bc, 4>::random([2, 2, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let weight_grad = |f: &dyn Fn(Tensor<Bc, 4>) -> Tensor<Bc, 4>| {
            let grads = f(x0.clone()).powi_scalar(2).sum().backward();
            conv.weight.val().grad(&grads).unwrap().into_data()
        };
        weight_grad(&|x| conv2d(&conv, x)).assert_approx_eq::<f32>(
            &weight_grad(&|x| conv.forward(x)),
            Tolerance::rel_abs(1e-4, 1e-4),
        );
    }

    #[test]
    fn kernel_larger_than_input_is_left_to_burn() {
        // The gather path declines, so burn's convolution handles (and reports) it.
        let device = Default::default();
        let geometry = im2col::Geometry {
            stride: [1, 1],
            padding: [(0, 0), (0, 0)],
            dilation: [1, 1],
            groups: 1,
        };
        let x = Tensor::<B, 4>::ones([1, 1, 2, 2], &device);
        let w = Tensor::<B, 4>::ones([1, 1, 3, 3], &device);
        assert!(im2col::conv2d(x.clone(), w.clone(), None, &geometry).is_none());
        let padded = im2col::Geometry {
            padding: [(1, 0), (1, 0)],
            ..geometry
        };
        let y = im2col::conv2d(x, w, None, &padded).unwrap();
        assert_eq!(y.dims(), [1, 1, 1, 1]);
        assert_eq!(y.into_scalar().elem::<f32>(), 4.0);
    }
}
