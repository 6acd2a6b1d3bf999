//! Convolution + batch norm (+ activation): the unit torchvision's CNNs are built from.

use crate::freeze::FrozenNorm;
use crate::kernels::NormActivation;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;

/// What follows the batch norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Nothing (a linear bottleneck or a residual branch before the sum).
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet).
    Relu6,
}

impl Activation {
    /// Applies the activation.
    pub fn apply<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Identity => x,
            Self::Relu => burn::tensor::activation::relu(x),
            Self::Relu6 => x.clamp(0.0, 6.0),
        }
    }

    /// The same activation for [`crate::kernels::batch_norm`].
    pub(crate) fn after_norm(self) -> NormActivation {
        match self {
            Self::Identity => NormActivation::Identity,
            Self::Relu => NormActivation::Relu,
            Self::Relu6 => NormActivation::Relu6,
        }
    }
}

/// A bias-free convolution, batch norm and activation (torchvision's
/// `Conv2dNormActivation`, or a ResNet `convN`/`bnN` pair).
#[derive(Module, Debug)]
pub struct ConvBn<B: Backend> {
    /// The convolution (no bias: the norm's shift replaces it), computed through
    /// [`crate::kernels`].
    pub conv: Conv2d<B>,
    /// The batch norm after it.
    pub bn: BatchNorm<B>,
    #[module(skip)]
    activation: Activation,
    /// What the norm does when frozen.
    #[module(skip)]
    frozen_norm: FrozenNorm,
}

/// Shape of a [`ConvBn`]: channels, square kernel, stride and groups; padding is
/// `kernel / 2` ("same" for odd kernels at stride 1), as in torchvision.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Input channels.
    pub input: usize,
    /// Output channels.
    pub output: usize,
    /// Kernel size (square).
    pub kernel: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Groups (`input` for a depthwise convolution).
    pub groups: usize,
}

impl ConvSpec {
    /// A dense convolution.
    pub fn new(input: usize, output: usize, kernel: usize, stride: usize) -> Self {
        Self {
            input,
            output,
            kernel,
            stride,
            groups: 1,
        }
    }

    /// A depthwise convolution (one filter per channel).
    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            groups: channels,
            ..Self::new(channels, channels, kernel, stride)
        }
    }
}

impl<B: Backend> ConvBn<B> {
    /// A fresh unit.
    pub fn new(spec: ConvSpec, activation: Activation, device: &B::Device) -> Self {
        let pad = spec.kernel / 2;
        Self {
            conv: conv(spec, pad, device),
            bn: BatchNormConfig::new(spec.output).init(device),
            activation,
            frozen_norm: FrozenNorm::default(),
        }
    }

    /// The unit with its norm behaving as `frozen_norm` says when frozen.
    pub fn with_frozen_norm(self, frozen_norm: FrozenNorm) -> Self {
        Self {
            frozen_norm,
            ..self
        }
    }

    /// `[batch, in, h, w]` → `[batch, out, h / stride, w / stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_plus(x, None)
    }

    /// `activation(bn(conv(x)) + residual)`: the sum before the activation, as one
    /// operation with the norm where the kernels run.
    pub fn forward_plus(&self, x: Tensor<B, 4>, residual: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
        let y = crate::kernels::conv2d(&self.conv, x);
        crate::kernels::batch_norm(
            &self.bn,
            y,
            residual,
            self.activation.after_norm(),
            self.frozen_norm,
        )
    }
}

/// A bias-free convolution with explicit padding (torchvision's CNNs use no conv bias
/// before a batch norm).
pub(crate) fn conv<B: Backend>(spec: ConvSpec, pad: usize, device: &B::Device) -> Conv2d<B> {
    let conv = Conv2dConfig::new([spec.input, spec.output], [spec.kernel, spec.kernel])
        .with_stride([spec.stride, spec.stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_groups(spec.groups)
        .with_bias(false)
        .init(device);
    // Drawn now: a model cloned before its first forward must be a copy.
    crate::freeze::materialize(&conv);
    conv
}

/// Global average pooling `[batch, c, h, w]` → `[batch, c]`.
pub(crate) fn global_avg_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [batch, channels, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([batch, channels])
}

/// Checks images `[batch, channels, height, width]` for a CNN whose stem convolution is
/// `stem`. Any size of at least one pixel runs (every stride-2 layer pads).
pub(crate) fn check_images<B: Backend>(
    images: &Tensor<B, 4>,
    stem: &Conv2d<B>,
) -> crate::Result<()> {
    let channels = stem.weight.dims()[1];
    let [n, c, h, w] = images.dims();
    if n == 0 {
        return Err(crate::TransferError::BatchShape(
            "the image batch has no images".into(),
        ));
    }
    if c != channels {
        return Err(crate::TransferError::BatchShape(format!(
            "the images are [{n}, {c}, {h}, {w}] but the network's first convolution takes {channels} channels; give [batch, {channels}, height, width]"
        )));
    }
    if h == 0 || w == 0 {
        return Err(crate::TransferError::BatchShape(format!(
            "the images are {h}×{w} pixels; give them at least one pixel per side"
        )));
    }
    Ok(())
}
