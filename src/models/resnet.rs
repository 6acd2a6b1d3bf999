//! ResNet-18/34/50/101 (He et al. 2016) with torchvision's parameter names.
//!
//! The names are torchvision's (`layer3.1.conv2.weight`, `layer2.0.downsample.0.weight`) but
//! for the downsample pair, which is `downsample.{conv,bn}` here; [`resnet_import_options`]
//! maps a torchvision state dict onto a `TransferModel<ResNet, LinearHead>` (`fc` → the
//! head), and [`ResNet::pretrained`] loads it strictly. The seed's operation — ResNet-50's
//! `fc: 2048 → 1000` replaced by `2048 → 5` — is then one call:
//! [`replace_linear_head`](TransferModel::replace_linear_head).

use super::WithLinearHead;
use super::conv_bn::{ConvSpec, conv, global_avg_pool};
use crate::backbone::Backbone;
use crate::error::{Result, TransferError};
use crate::freeze::FrozenNorm;
use crate::head::TransferModel;
use crate::import::{ImportOptions, ImportReport, import_weights};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec, MapSpec};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use std::path::Path;

/// The projection on a block's shortcut when its shape changes (torchvision's
/// `downsample = Sequential(conv1x1, bn)`).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1×1 strided convolution.
    pub conv: Conv2d<B>,
    /// Its batch norm.
    pub bn: BatchNorm<B>,
}

/// A residual block: torchvision's `BasicBlock` (two 3×3 convolutions) or `Bottleneck`
/// (1×1, 3×3, 1×1 with 4× expansion; `conv3`/`bn3` present).
#[derive(Module, Debug)]
pub struct ResidualBlock<B: Backend> {
    /// First convolution (3×3 basic, 1×1 bottleneck).
    pub conv1: Conv2d<B>,
    /// Its batch norm.
    pub bn1: BatchNorm<B>,
    /// Second convolution (3×3, carries the stride, as torchvision's v1.5).
    pub conv2: Conv2d<B>,
    /// Its batch norm.
    pub bn2: BatchNorm<B>,
    /// Bottleneck's 1×1 expansion.
    pub conv3: Option<Conv2d<B>>,
    /// Its batch norm.
    pub bn3: Option<BatchNorm<B>>,
    /// Shortcut projection when the shape changes.
    pub downsample: Option<Downsample<B>>,
    /// What its norms do when frozen.
    #[module(skip)]
    frozen_norm: FrozenNorm,
}

impl<B: Backend> ResidualBlock<B> {
    fn new(
        input: usize,
        width: usize,
        stride: usize,
        bottleneck: bool,
        device: &B::Device,
    ) -> Self {
        let expansion = if bottleneck { 4 } else { 1 };
        let output = width * expansion;
        let bn = |c: usize| BatchNormConfig::new(c).init(device);
        let (conv1, conv2, conv3) = if bottleneck {
            (
                conv(ConvSpec::new(input, width, 1, 1), 0, device),
                conv(ConvSpec::new(width, width, 3, stride), 1, device),
                Some(conv(ConvSpec::new(width, output, 1, 1), 0, device)),
            )
        } else {
            (
                conv(ConvSpec::new(input, width, 3, stride), 1, device),
                conv(ConvSpec::new(width, width, 3, 1), 1, device),
                None,
            )
        };
        Self {
            conv1,
            bn1: bn(width),
            conv2,
            bn2: bn(width),
            conv3,
            bn3: bottleneck.then(|| bn(output)),
            downsample: (stride != 1 || input != output).then(|| Downsample {
                conv: conv(ConvSpec::new(input, output, 1, stride), 0, device),
                bn: bn(output),
            }),
            frozen_norm: FrozenNorm::default(),
        }
    }

    /// `[batch, in, h, w]` → `[batch, out, h / stride, w / stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        use crate::kernels::{NormActivation, conv2d};
        let batch_norm = |bn, x, residual, activation| {
            crate::kernels::batch_norm(bn, x, residual, activation, self.frozen_norm)
        };
        let relu = NormActivation::Relu;
        let shortcut = match &self.downsample {
            Some(d) => batch_norm(
                &d.bn,
                conv2d(&d.conv, x.clone()),
                None,
                NormActivation::Identity,
            ),
            None => x.clone(),
        };
        let y = batch_norm(&self.bn1, conv2d(&self.conv1, x), None, relu);
        // The last norm takes the shortcut and the ReLU with it (one pass on the CPU).
        match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let y = batch_norm(&self.bn2, conv2d(&self.conv2, y), None, relu);
                batch_norm(bn3, conv2d(conv3, y), Some(shortcut), relu)
            }
            _ => batch_norm(&self.bn2, conv2d(&self.conv2, y), Some(shortcut), relu),
        }
    }
}

/// Depth, block type and width of a ResNet; a burn `Config`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResNetConfig {
    /// Blocks in `layer1` … `layer4`.
    pub layers: [usize; 4],
    /// Bottleneck blocks (ResNet-50 and deeper) or basic blocks.
    pub bottleneck: bool,
    /// Channels of `conv1` and of `layer1`'s blocks (64 in torchvision); each later stage
    /// doubles it.
    pub base_width: usize,
}

impl burn::config::Config for ResNetConfig {}

impl ResNetConfig {
    /// ResNet-18: basic blocks 2, 2, 2, 2; 512 features.
    pub fn resnet18() -> Self {
        Self {
            layers: [2, 2, 2, 2],
            bottleneck: false,
            base_width: 64,
        }
    }

    /// ResNet-34: basic blocks 3, 4, 6, 3; 512 features.
    pub fn resnet34() -> Self {
        Self {
            layers: [3, 4, 6, 3],
            ..Self::resnet18()
        }
    }

    /// ResNet-50: bottleneck blocks 3, 4, 6, 3; 2048 features.
    pub fn resnet50() -> Self {
        Self {
            layers: [3, 4, 6, 3],
            bottleneck: true,
            base_width: 64,
        }
    }

    /// ResNet-101: bottleneck blocks 3, 4, 23, 3; 2048 features.
    pub fn resnet101() -> Self {
        Self {
            layers: [3, 4, 23, 3],
            ..Self::resnet50()
        }
    }

    /// A student for distillation: one basic block per stage at `base_width` channels
    /// (ResNet-10-style; 16 gives about 80k parameters).
    pub fn student(base_width: usize) -> Self {
        Self {
            layers: [1, 1, 1, 1],
            bottleneck: false,
            base_width,
        }
    }

    /// Width of the pooled features (`fc`'s input).
    pub fn feature_dim(&self) -> usize {
        self.base_width * 8 * if self.bottleneck { 4 } else { 1 }
    }
}

/// ResNet's body: `conv1`, `bn1`, max pool, `layer1` … `layer4`, global average pool.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// 7×7 stride-2 stem convolution.
    pub conv1: Conv2d<B>,
    /// Its batch norm.
    pub bn1: BatchNorm<B>,
    /// Stage 1 (stride 1 after the max pool).
    pub layer1: Vec<ResidualBlock<B>>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<ResidualBlock<B>>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<ResidualBlock<B>>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<ResidualBlock<B>>,
    pool: MaxPool2d,
    feature_dim: usize,
    #[module(skip)]
    frozen_norm: FrozenNorm,
}

impl<B: Backend> ResNet<B> {
    /// A randomly initialised body.
    pub fn new(config: &ResNetConfig, device: &B::Device) -> Result<Self> {
        if config.layers.contains(&0) || config.base_width == 0 {
            return Err(TransferError::config(
                "ResNetConfig",
                format!("{config:?}"),
                "every stage needs at least one block and base_width ≥ 1",
            ));
        }
        let expansion = if config.bottleneck { 4 } else { 1 };
        let mut input = config.base_width;
        let mut stage = |index: usize| {
            let width = config.base_width << index;
            let stride = if index == 0 { 1 } else { 2 };
            (0..config.layers[index])
                .map(|i| {
                    let block = ResidualBlock::new(
                        input,
                        width,
                        if i == 0 { stride } else { 1 },
                        config.bottleneck,
                        device,
                    );
                    input = width * expansion;
                    block
                })
                .collect::<Vec<_>>()
        };
        let (layer1, layer2, layer3, layer4) = (stage(0), stage(1), stage(2), stage(3));
        let model = Self {
            conv1: conv(ConvSpec::new(3, config.base_width, 7, 2), 3, device),
            bn1: BatchNormConfig::new(config.base_width).init(device),
            layer1,
            layer2,
            layer3,
            layer4,
            pool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            feature_dim: config.feature_dim(),
            frozen_norm: FrozenNorm::default(),
        };
        crate::freeze::materialize(&model);
        Ok(model)
    }

    /// Sets what every BatchNorm of the body does when frozen ([`FrozenNorm`]; by default
    /// it normalises with its running statistics, leaving them unchanged).
    pub fn with_frozen_norm(self, frozen_norm: FrozenNorm) -> Self {
        let stage = |blocks: Vec<ResidualBlock<B>>| {
            blocks
                .into_iter()
                .map(|b| ResidualBlock { frozen_norm, ..b })
                .collect()
        };
        Self {
            layer1: stage(self.layer1),
            layer2: stage(self.layer2),
            layer3: stage(self.layer3),
            layer4: stage(self.layer4),
            frozen_norm,
            ..self
        }
    }

    /// The feature map before pooling, `[batch, features, h/32, w/32]`.
    pub fn feature_map(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        self.stage_maps(images)
            .pop()
            .expect("a ResNet has four stages")
    }

    /// The output of each stage (`layer1` … `layer4`, strides 4, 8, 16, 32): what
    /// attention transfer and FitNets hints compare between a teacher and a student.
    pub fn stage_maps(&self, images: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let x = crate::kernels::batch_norm(
            &self.bn1,
            crate::kernels::conv2d(&self.conv1, images),
            None,
            crate::kernels::NormActivation::Relu,
            self.frozen_norm,
        );
        let mut x = crate::kernels::max_pool2d(&self.pool, x);
        let mut maps = Vec::with_capacity(4);
        for stage in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            x = stage.iter().fold(x, |x, block| block.forward(x));
            maps.push(x.clone());
        }
        maps
    }

    /// Loads a torchvision state dict (`.pth` or safetensors, with `fc`) as a
    /// [`TransferModel`] whose head is `fc`; strict: every tensor must match.
    pub fn pretrained(
        config: &ResNetConfig,
        path: impl AsRef<Path>,
        num_classes: usize,
        device: &B::Device,
    ) -> Result<(WithLinearHead<B, Self>, ImportReport)> {
        let model =
            TransferModel::with_linear_head(Self::new(config, device)?, num_classes, device)?;
        import_weights(model, path, &resnet_import_options()?.with_strict(true))
    }
}

impl<B: Backend> Backbone<B> for ResNet<B> {
    type Input = Tensor<B, 4>;

    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        global_avg_pool(self.feature_map(images))
    }

    fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    fn check_input(&self, images: &Tensor<B, 4>) -> crate::Result<()> {
        super::conv_bn::check_images(images, &self.conv1)
    }

    /// The four stage maps ([`stage_maps`](ResNet::stage_maps)), strides 4, 8, 16, 32.
    fn layer_spec(&self) -> LayerSpec {
        LayerSpec {
            // Each stage doubles the channels of the one before; the last gives the features.
            maps: (0..4)
                .map(|k| MapSpec {
                    channels: self.feature_dim >> (3 - k),
                    stride: 4 << k,
                })
                .collect(),
            ..LayerSpec::default()
        }
    }

    fn features_with_layers(
        &self,
        images: Tensor<B, 4>,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        if !request.maps {
            return (self.features(images), LayerOutputs::default());
        }
        let maps = self.stage_maps(images);
        let last = maps.last().expect("a ResNet has four stages").clone();
        let layers = LayerOutputs {
            maps,
            ..LayerOutputs::default()
        };
        (global_avg_pool(last), layers)
    }
}

/// Rules from a torchvision ResNet state dict to a `TransferModel<ResNet, LinearHead>`:
/// `fc` → `head.linear`, the body under `backbone.`, `downsample.{0,1}` →
/// `downsample.{conv,bn}`; `num_batches_tracked` ignored.
pub fn resnet_import_options() -> Result<ImportOptions> {
    ImportOptions::new()
        .with_remap(r"^fc\.", "head.linear.")?
        .with_remap(r"^(conv1|bn1|layer[1-4])\.", "backbone.$1.")?
        .with_remap(r"\.downsample\.0\.", ".downsample.conv.")?
        .with_remap(r"\.downsample\.1\.", ".downsample.bn.")?
        .with_ignore(r"num_batches_tracked$")
}
