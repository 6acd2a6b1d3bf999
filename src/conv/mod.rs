//! A 2-D convolution that trains fast on the CPU backends, with burn's `Conv2d` weights.
//!
//! burn 0.21's CPU backends compute a convolution's gradients with a transposed convolution
//! (input gradient) and a convolution whose kernel is the whole output map (weight
//! gradient); on ndarray those run about 80× slower than the forward pass, which made
//! fine-tuning a CNN on CPU about 100× slower than PyTorch. [`GemmConv2d`] computes the same
//! function as burn's [`Conv2d`] from the same weights, and routes by backend:
//!
//! - **ndarray and Flex, training** (`Autodiff<NdArray>`, `Autodiff<Flex>`): one autodiff
//!   operation of this crate with its own backward pass. Per sample, on rayon's threads, the
//!   receptive fields are unfolded into a matrix that stays in cache (im2col into a
//!   per-thread buffer kept between calls), and the forward pass, the weight gradient and
//!   the input gradient are each one GEMM on it (the `gemm` crate, on strided operands, so
//!   nothing is transposed in memory); the input gradient is folded back (col2im). Only the
//!   gradients that are needed are computed: none for the input of a first layer, none for
//!   a frozen weight. The tensors are read in place where they are contiguous `f32`.
//! - **ndarray, inference**: ndarray's own convolution (a SIMD direct convolution, faster
//!   in the forward direction). **Flex, inference**: the host forward for dense kernels
//!   (faster than Flex's), Flex's own for grouped and depthwise ones.
//! - **Other backends** (wgpu, …): with autodiff, im2col by one `select` and one matrix
//!   product (its backward is a GEMM and a scatter-add); without, the backend's own
//!   convolution.
//!
//! Which backend: that is a choice of type; the check happens at run time (see `cpu`), so
//! `GemmConv2d<B: Backend>` works on every backend and takes the fast path where there is
//! one. `models::{ResNet, MobileNetV2}` are built from it.
//!
//! The parameters are `weight` `[out, in/groups, kh, kw]` and `bias` `[out]`, as in burn's
//! `Conv2d` and PyTorch's `nn.Conv2d`, so the same weight files load into either, and
//! freezing, LoRA and checkpoints address them by the same paths.
//!
//! Speed (README, Benchmarks): a 32→64 3×3 convolution at batch 32, forward and backward on
//! ndarray, 13.2 ms against 1.0 s through burn's `Conv2d`; the reference CNN trained end to
//! end (with [`crate::pool::MaxPool2d`]) 1.29× (Flex) and 1.21× (ndarray) PyTorch's steps/s,
//! where burn's layers reach 0.16× and 0.009×.

mod host;
mod im2col;
mod layer;

use crate::error::{Result, TransferError};
use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

/// A 2-D convolution (NCHW) with the same weights and results as burn's [`Conv2d`], whose
/// backward pass is a matrix product (see the [module docs](self)).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::conv::Conv2dConfig;
/// use burn::prelude::*;
/// use burn_transfer::conv::GemmConv2d;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let conv = Conv2dConfig::new([3, 8], [3, 3]).init::<B>(&device);
/// let x = Tensor::<B, 4>::ones([2, 3, 16, 16], &device);
/// let reference = conv.forward(x.clone());
/// let fast = GemmConv2d::from_conv2d(conv);
/// let y = fast.forward(x);
/// assert_eq!(y.dims(), [2, 8, 14, 14]);
/// y.into_data().assert_approx_eq::<f32>(&reference.into_data(), Default::default());
/// # Ok::<(), burn_transfer::TransferError>(())
/// ```
#[derive(Module, Debug)]
pub struct GemmConv2d<B: Backend> {
    /// Kernel `[out_channels, in_channels / groups, kernel_h, kernel_w]`.
    pub weight: Param<Tensor<B, 4>>,
    /// Bias `[out_channels]`, if any.
    pub bias: Option<Param<Tensor<B, 1>>>,
    stride: [usize; 2],
    kernel_size: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    padding: PaddingConfig2d,
}

impl<B: Backend> GemmConv2d<B> {
    /// A fresh convolution, initialised as burn's `Conv2dConfig::init` would.
    pub fn new(config: &Conv2dConfig, device: &B::Device) -> Result<Self> {
        if config.groups == 0
            || !config.channels[0].is_multiple_of(config.groups)
            || !config.channels[1].is_multiple_of(config.groups)
        {
            return Err(TransferError::config(
                "groups",
                config.groups,
                "the input and output channels must be multiples of the groups",
            ));
        }
        Ok(Self::from_conv2d(config.init(device)))
    }

    /// Takes over burn's convolution: the same parameters (shared, not copied), stride,
    /// padding, dilation and groups.
    pub fn from_conv2d(conv: Conv2d<B>) -> Self {
        // A lazily initialised parameter that is later cloned (`to_conv2d`) would otherwise
        // be initialised once per clone, with different values.
        crate::freeze::materialize(&conv);
        Self {
            weight: conv.weight,
            bias: conv.bias,
            stride: conv.stride,
            kernel_size: conv.kernel_size,
            dilation: conv.dilation,
            groups: conv.groups,
            padding: conv.padding,
        }
    }

    /// The same layer as burn's convolution (sharing the parameters).
    pub fn to_conv2d(&self) -> Conv2d<B> {
        Conv2d {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            stride: self.stride,
            kernel_size: self.kernel_size,
            dilation: self.dilation,
            groups: self.groups,
            padding: self.padding.clone(),
        }
    }

    /// `[batch, in, h, w]` → `[batch, out, h_out, w_out]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_then(x, false)
    }

    /// The convolution followed by ReLU: the same values and gradients as
    /// `burn::tensor::activation::relu(self.forward(x))`. On the CPU backends the ReLU is
    /// fused into the convolution: applied to each sample's output while it is still in
    /// cache, and, in training, its mask applied to the output gradient in the same pass
    /// that reads it, where a separate ReLU writes and reads the whole output map twice
    /// more (17% of the reference CNN's training step on Flex).
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::conv::Conv2dConfig;
    /// use burn::prelude::*;
    /// use burn_transfer::conv::GemmConv2d;
    ///
    /// # fn main() -> burn_transfer::Result<()> {
    /// let device = Default::default();
    /// let conv = GemmConv2d::<NdArray>::new(&Conv2dConfig::new([3, 8], [3, 3]), &device)?;
    /// let x = Tensor::<NdArray, 4>::ones([2, 3, 8, 8], &device);
    /// let y = conv.forward_relu(x.clone());
    /// let expected = burn::tensor::activation::relu(conv.forward(x));
    /// y.into_data().assert_approx_eq::<f32>(&expected.into_data(), Default::default());
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_relu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_then(x, true)
    }

    /// The convolution, and ReLU after it when `relu`.
    fn forward_then(&self, x: Tensor<B, 4>, relu: bool) -> Tensor<B, 4> {
        let activation = |y: Tensor<B, 4>| {
            if relu {
                burn::tensor::activation::relu(y)
            } else {
                y
            }
        };
        let Some(shape) = self.shape_for(&x) else {
            // A kernel larger than the input, or channels that do not match the weight:
            // burn's convolution reports it.
            return activation(self.to_conv2d().forward(x));
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        // CPU backends: the host convolution, ReLU fused (see `layer`).
        match crate::host::layer::run((x, self.weight.val(), bias), shape, relu) {
            Ok(y) => y,
            Err((x, _, _)) => activation(self.forward_with_tensor_ops(x)),
        }
    }

    /// The path of the other backends (GPU): burn's convolution without autodiff, im2col
    /// by `select` and a matrix product with it.
    fn forward_with_tensor_ops(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if !B::ad_enabled(&x.device()) {
            // No gradients to compute: the backend's direct convolution is the fast path.
            return self.to_conv2d().forward(x);
        }
        let [_, _, h, w] = x.dims();
        let geometry = im2col::Geometry {
            stride: self.stride,
            padding: self.padding_pairs(h, w),
            dilation: self.dilation,
            groups: self.groups,
        };
        let bias = self.bias.as_ref().map(|b| b.val());
        match im2col::conv2d(x.clone(), self.weight.val(), bias, &geometry) {
            Some(y) => y,
            None => self.to_conv2d().forward(x),
        }
    }

    /// Every size of this convolution on `x`, or `None` when the kernel does not fit or
    /// the channels do not match the weight.
    fn shape_for(&self, x: &Tensor<B, 4>) -> Option<host::ConvShape> {
        let [batch, channels, h, w] = x.dims();
        let [out_channels, group_channels, kh, kw] = self.weight.dims();
        if channels != group_channels * self.groups {
            return None;
        }
        let padding = self.padding_pairs(h, w);
        let [Some(ho), Some(wo)] = [0, 1].map(|a| {
            im2col::out_len(
                [h, w][a] + padding[a].0 + padding[a].1,
                [kh, kw][a],
                self.stride[a],
                self.dilation[a],
            )
        }) else {
            return None;
        };
        Some(host::ConvShape {
            batch,
            channels,
            input: [h, w],
            out_channels,
            kernel: [kh, kw],
            output: [ho, wo],
            stride: self.stride,
            padding: [padding[0].0, padding[1].0],
            dilation: self.dilation,
            groups: self.groups,
        })
    }

    /// `[(top, bottom), (left, right)]` for an input of `h × w`, as burn's `Conv2d` pads.
    fn padding_pairs(&self, h: usize, w: usize) -> [(usize, usize); 2] {
        match self.padding {
            PaddingConfig2d::Valid => [(0, 0), (0, 0)],
            PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
            PaddingConfig2d::Same => [
                same_padding(self.kernel_size[0], self.stride[0], h),
                same_padding(self.kernel_size[1], self.stride[1], w),
            ],
        }
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
    use burn::tensor::{Distribution, Tolerance};

    type B = Autodiff<NdArray>;

    /// Forward output and the gradients of input, weight and bias agree with burn's Conv2d.
    fn check(config: Conv2dConfig, input: [usize; 4]) {
        let device = Default::default();
        let conv = config.init::<B>(&device);
        crate::freeze::materialize(&conv);
        let fast = GemmConv2d::from_conv2d(conv.clone());
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
        // The host path (ndarray) and the tensor-op path (what GPUs take).
        for ours in [
            run(&|x| fast.forward(x)),
            run(&|x| fast.forward_with_tensor_ops(x)),
        ] {
            agree(&ours, &reference);
        }
        // Inference (inner backend) takes burn's own path and must agree too.
        let inner = fast.valid_forward(x0.clone().inner());
        close(&inner.into_data(), &reference.0);
        // ReLU fused into the convolution: burn's ReLU after burn's convolution.
        let relu = burn::tensor::activation::relu;
        let reference = run(&|x| relu(conv.forward(x)));
        let ours = run(&|x| fast.forward_relu(x));
        agree(&ours, &reference);
        let zeros = reference.0.iter::<f32>().filter(|v| *v == 0.0).count();
        assert!(
            zeros > 0,
            "the ReLU must cut some outputs for the test to mean anything"
        );
        let inner = {
            use burn::module::AutodiffModule;
            fast.valid().forward_relu(x0.clone().inner())
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

    impl GemmConv2d<B> {
        fn valid_forward(&self, x: Tensor<NdArray, 4>) -> Tensor<NdArray, 4> {
            use burn::module::AutodiffModule;
            self.valid().forward(x)
        }
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
        crate::freeze::materialize(&conv);
        let frozen = GemmConv2d::from_conv2d(conv.clone()).no_grad();
        let x = Tensor::<B, 4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &device);
        let head = Tensor::<B, 4>::random([2, 4, 6, 6], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        let grads = (frozen.forward(x.clone()) * head.clone()).sum().backward();
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
        crate::freeze::materialize(&conv);
        let fast = GemmConv2d::from_conv2d(conv.clone());
        let x0 = Tensor::<Bc, 4>::random([2, 2, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let weight_grad = |f: &dyn Fn(Tensor<Bc, 4>) -> Tensor<Bc, 4>| {
            let grads = f(x0.clone()).powi_scalar(2).sum().backward();
            conv.weight.val().grad(&grads).unwrap().into_data()
        };
        weight_grad(&|x| fast.forward(x)).assert_approx_eq::<f32>(
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

    #[test]
    fn bad_groups_are_an_error() {
        let device = Default::default();
        let err = GemmConv2d::<B>::new(&Conv2dConfig::new([3, 4], [3, 3]).with_groups(2), &device)
            .unwrap_err();
        assert!(err.to_string().contains("groups"), "{err}");
    }
}
