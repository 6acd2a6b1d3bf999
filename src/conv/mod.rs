//! A 2-D convolution whose training pass is made of matrix products.
//!
//! burn 0.21's CPU backends compute a convolution's gradients with a transposed convolution
//! (input gradient) and a convolution whose kernel is the whole output map (weight
//! gradient); on ndarray those run 10–100× slower than the forward pass, which made
//! fine-tuning a CNN on CPU about 100× slower than PyTorch. [`GemmConv2d`] computes the same
//! function as burn's [`Conv2d`] from the same weights, but while gradients are recorded it
//! gathers the receptive fields with one `select` (im2col) and multiplies them with the
//! kernel in one GEMM, so its backward pass is a GEMM and a scatter-add: the operations CPU
//! backends are fast at. Without autodiff (inference, frozen bodies on the inner backend)
//! it calls the backend's own convolution, which is fast in the forward direction.
//!
//! The parameters are `weight` `[out, in/groups, kh, kw]` and `bias` `[out]`, as in burn's
//! `Conv2d` and PyTorch's `nn.Conv2d`, so the same weight files load into either.
//!
//! Which to use (README, Benchmarks; a 2-conv CNN trained end to end): on ndarray this layer
//! trains about 7× faster than burn's `Conv2d`; on Flex burn's own `Conv2d` is faster (its
//! backward is better there, and this layer's gather and scatter are not), so keep `Conv2d`
//! (`to_conv2d`) on Flex. Both are far from PyTorch's convolutions on CPU; see the README for
//! where the time goes.

mod im2col;

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
            // A kernel larger than the input: burn's convolution reports it.
            None => self.to_conv2d().forward(x),
        }
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
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
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
        let ours = run(&|x| fast.forward(x));
        let tol = Tolerance::<f32>::rel_abs(1e-4, 1e-4);
        ours.0.assert_approx_eq::<f32>(&reference.0, tol);
        ours.1.assert_approx_eq::<f32>(&reference.1, tol);
        ours.2.assert_approx_eq::<f32>(&reference.2, tol);
        if let (Some(a), Some(b)) = (ours.3, reference.3) {
            a.assert_approx_eq::<f32>(&b, tol);
        }
        // Inference (inner backend) takes burn's own path and must agree too.
        let inner = fast.valid_forward(x0.clone().inner());
        inner.into_data().assert_approx_eq::<f32>(&reference.0, tol);
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
