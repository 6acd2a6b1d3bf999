//! MobileNetV2 (Sandler et al. 2018) in torchvision's layout, loading torchvision's ImageNet
//! checkpoint (`mobilenet_v2-b0353104.pth`).
//!
//! torchvision names layers by position in `nn.Sequential`s (`features.3.conv.1.0.weight`);
//! here they have names (`blocks.2.depthwise.conv.weight`), and
//! [`mobilenet_v2_import_options`] holds the rules between the two, so the original file
//! loads strictly with no hand-written map.

use super::WithLinearHead;
use super::conv_bn::{Activation, ConvBn, ConvSpec, global_avg_pool};
use crate::backbone::Backbone;
use crate::error::{Result, TransferError};
use crate::freeze::FrozenNorm;
use crate::head::TransferModel;
use crate::import::{ImportOptions, ImportReport, import_weights};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec, MapSpec};
use burn::module::Module;
use burn::prelude::*;
use std::path::Path;

/// One inverted residual block: 1×1 expansion (absent when the ratio is 1), 3×3 depthwise,
/// 1×1 linear projection, and a residual sum when shapes allow.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    /// 1×1 expansion to `ratio × input` channels with ReLU6.
    pub expand: Option<ConvBn<B>>,
    /// 3×3 depthwise convolution with ReLU6 (carries the stride).
    pub depthwise: ConvBn<B>,
    /// 1×1 projection without activation (the linear bottleneck).
    pub project: ConvBn<B>,
    residual: bool,
}

impl<B: Backend> InvertedResidual<B> {
    fn new(input: usize, output: usize, stride: usize, ratio: usize, device: &B::Device) -> Self {
        let hidden = input * ratio;
        Self {
            expand: (ratio != 1).then(|| {
                ConvBn::new(
                    ConvSpec::new(input, hidden, 1, 1),
                    Activation::Relu6,
                    device,
                )
            }),
            depthwise: ConvBn::new(
                ConvSpec::depthwise(hidden, 3, stride),
                Activation::Relu6,
                device,
            ),
            project: ConvBn::new(
                ConvSpec::new(hidden, output, 1, 1),
                Activation::Identity,
                device,
            ),
            residual: stride == 1 && input == output,
        }
    }

    /// `[batch, in, h, w]` → `[batch, out, h / stride, w / stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.depthwise.forward(y);
        // The residual sum joins the projection's norm (one pass where the kernels run).
        let residual = self.residual.then_some(x);
        self.project.forward_plus(y, residual)
    }
}

/// The width and depth of a MobileNetV2; a burn `Config`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MobileNetV2Config {
    /// Channel multiplier (1.0 for the ImageNet checkpoint); channel counts are rounded to
    /// multiples of 8 as torchvision does.
    pub width_mult: f64,
    /// How many blocks of each of the seven stages to build (the paper's `n`: 1, 2, 3, 4,
    /// 3, 3, 1). Fewer gives a shallower student.
    pub stage_depths: [usize; 7],
}

/// The paper's stages: expansion ratio t, output channels c, stride s of the first block.
const STAGES: [(usize, usize, usize); 7] = [
    (1, 16, 1),
    (6, 24, 2),
    (6, 32, 2),
    (6, 64, 2),
    (6, 96, 1),
    (6, 160, 2),
    (6, 320, 1),
];

impl burn::config::Config for MobileNetV2Config {}

impl Default for MobileNetV2Config {
    /// The ImageNet model: width 1.0, stage depths 1, 2, 3, 4, 3, 3, 1 (17 blocks).
    fn default() -> Self {
        Self {
            width_mult: 1.0,
            stage_depths: [1, 2, 3, 4, 3, 3, 1],
        }
    }
}

impl MobileNetV2Config {
    /// A student for distillation: half the width and one block per stage (about 0.6M
    /// parameters in the body instead of 2.2M).
    pub fn student() -> Self {
        Self {
            width_mult: 0.5,
            stage_depths: [1; 7],
        }
    }
}

/// torchvision's `_make_divisible`: round to the nearest multiple of 8, never below 90%.
fn make_divisible(value: f64) -> usize {
    let divisor = 8.0;
    let rounded = ((value + divisor / 2.0) / divisor).floor().max(1.0) * divisor;
    let rounded = if rounded < 0.9 * value {
        rounded + divisor
    } else {
        rounded
    };
    rounded as usize
}

/// MobileNetV2's body (everything before the classifier): features `[batch, 1280]` after
/// global average pooling. Pair it with a head in a [`TransferModel`].
#[derive(Module, Debug)]
pub struct MobileNetV2<B: Backend> {
    /// torchvision `features.0`: 3×3 stride-2 convolution to 32 channels.
    pub stem: ConvBn<B>,
    /// torchvision `features.1` … `features.17`.
    pub blocks: Vec<InvertedResidual<B>>,
    /// torchvision `features.18`: 1×1 convolution to 1280 channels.
    pub last: ConvBn<B>,
    feature_dim: usize,
    /// Index of the last block of each of the seven stages.
    #[module(skip)]
    stage_ends: Vec<usize>,
    /// Channels and stride of each stage's output.
    #[module(skip)]
    stage_specs: Vec<MapSpec>,
}

impl<B: Backend> MobileNetV2<B> {
    /// A randomly initialised body.
    pub fn new(config: &MobileNetV2Config, device: &B::Device) -> Result<Self> {
        if !(config.width_mult > 0.0 && config.width_mult.is_finite()) {
            return Err(TransferError::config(
                "width_mult",
                config.width_mult,
                "must be a positive number (1.0 for the ImageNet model)",
            ));
        }
        if config.stage_depths.contains(&0) {
            return Err(TransferError::config(
                "stage_depths",
                format!("{:?}", config.stage_depths),
                "every stage needs at least one block",
            ));
        }
        let stem_out = make_divisible(32.0 * config.width_mult);
        let last_out = make_divisible(1280.0 * config.width_mult.max(1.0));
        let mut blocks = Vec::new();
        let mut stage_ends = Vec::new();
        let mut stage_specs = Vec::new();
        let mut channels = stem_out;
        let mut total_stride = 2; // the stem's
        for ((ratio, c, stride), &depth) in STAGES.iter().zip(&config.stage_depths) {
            let out = make_divisible(*c as f64 * config.width_mult);
            for i in 0..depth {
                let s = if i == 0 { *stride } else { 1 };
                blocks.push(InvertedResidual::new(channels, out, s, *ratio, device));
                channels = out;
            }
            total_stride *= stride;
            stage_ends.push(blocks.len() - 1);
            stage_specs.push(MapSpec {
                channels: out,
                stride: total_stride,
            });
        }
        let model = Self {
            stem: ConvBn::new(ConvSpec::new(3, stem_out, 3, 2), Activation::Relu6, device),
            blocks,
            last: ConvBn::new(
                ConvSpec::new(channels, last_out, 1, 1),
                Activation::Relu6,
                device,
            ),
            feature_dim: last_out,
            stage_ends,
            stage_specs,
        };
        crate::freeze::materialize(&model);
        Ok(model)
    }

    /// Sets what every BatchNorm of the body does when frozen ([`FrozenNorm`]; by default
    /// it normalises with its running statistics, leaving them unchanged).
    pub fn with_frozen_norm(self, frozen_norm: FrozenNorm) -> Self {
        let unit = |u: ConvBn<B>| u.with_frozen_norm(frozen_norm);
        Self {
            stem: unit(self.stem),
            blocks: self
                .blocks
                .into_iter()
                .map(|b| InvertedResidual {
                    expand: b.expand.map(unit),
                    depthwise: unit(b.depthwise),
                    project: unit(b.project),
                    residual: b.residual,
                })
                .collect(),
            last: unit(self.last),
            ..self
        }
    }

    /// The feature map before pooling, `[batch, 1280, h/32, w/32]`.
    pub fn feature_map(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.stem.forward(images);
        let x = self.blocks.iter().fold(x, |x, block| block.forward(x));
        self.last.forward(x)
    }

    /// The output of each of the seven stages (16, 24, 32, 64, 96, 160, 320 channels at
    /// width 1): what attention transfer and FitNets hints compare between a teacher and a
    /// student.
    pub fn stage_maps(&self, images: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let request = LayerRequest {
            maps: true,
            ..LayerRequest::default()
        };
        self.features_with_layers(images, request).1.maps
    }

    /// Loads torchvision's ImageNet checkpoint (body and `classifier.1`, 1280→1000) as a
    /// [`TransferModel`]; strict: every tensor must match. Call
    /// [`replace_linear_head`](TransferModel::replace_linear_head) for a new task.
    pub fn imagenet(
        path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(WithLinearHead<B, Self>, ImportReport)> {
        let body = Self::new(&MobileNetV2Config::default(), device)?;
        let model = TransferModel::with_linear_head(body, 1000, device)?;
        import_weights(
            model,
            path,
            &mobilenet_v2_import_options(&MobileNetV2Config::default())?.with_strict(true),
        )
    }
}

impl<B: Backend> Backbone<B> for MobileNetV2<B> {
    type Input = Tensor<B, 4>;

    fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        global_avg_pool(self.feature_map(images))
    }

    fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    fn check_input(&self, images: &Tensor<B, 4>) -> crate::Result<()> {
        super::conv_bn::check_images(images, &self.stem.conv)
    }

    /// The seven stage maps ([`stage_maps`](MobileNetV2::stage_maps)).
    fn layer_spec(&self) -> LayerSpec {
        LayerSpec {
            maps: self.stage_specs.clone(),
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
        let mut x = self.stem.forward(images);
        let mut maps = Vec::with_capacity(self.stage_ends.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            if self.stage_ends.contains(&i) {
                maps.push(x.clone());
            }
        }
        let features = global_avg_pool(self.last.forward(x));
        let layers = LayerOutputs {
            maps,
            ..LayerOutputs::default()
        };
        (features, layers)
    }
}

/// Rules from torchvision's `MobileNetV2` state dict to a `TransferModel<MobileNetV2,
/// LinearHead>` built with `config`: `features.0` → `backbone.stem`, `features.N.conv.*` →
/// `backbone.blocks.{N-1}.{expand,depthwise,project}`, `features.{last}` → `backbone.last`,
/// `classifier.1` → `head.linear`; `num_batches_tracked` ignored.
pub fn mobilenet_v2_import_options(config: &MobileNetV2Config) -> Result<ImportOptions> {
    let blocks: usize = config.stage_depths.iter().sum();
    let mut options = ImportOptions::new()
        .with_remap(r"^features\.0\.0\.", "backbone.stem.conv.")?
        .with_remap(r"^features\.0\.1\.", "backbone.stem.bn.")?
        .with_remap(
            &format!(r"^features\.{}\.0\.", blocks + 1),
            "backbone.last.conv.",
        )?
        .with_remap(
            &format!(r"^features\.{}\.1\.", blocks + 1),
            "backbone.last.bn.",
        )?
        .with_remap(r"^classifier\.1\.", "head.linear.")?
        .with_ignore(r"num_batches_tracked$")?;
    for b in 0..blocks {
        let from = format!(r"^features\.{}\.conv\.", b + 1);
        let to = format!("backbone.blocks.{b}.");
        // The first block has no expansion, so its Sequential starts at the depthwise step.
        let parts: &[(&str, &str)] = if b == 0 {
            &[
                (r"0\.0\.", "depthwise.conv."),
                (r"0\.1\.", "depthwise.bn."),
                (r"1\.", "project.conv."),
                (r"2\.", "project.bn."),
            ]
        } else {
            &[
                (r"0\.0\.", "expand.conv."),
                (r"0\.1\.", "expand.bn."),
                (r"1\.0\.", "depthwise.conv."),
                (r"1\.1\.", "depthwise.bn."),
                (r"2\.", "project.conv."),
                (r"3\.", "project.bn."),
            ]
        };
        for (suffix, target) in parts {
            options = options.with_remap(&format!("{from}{suffix}"), &format!("{to}{target}"))?;
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rounding_matches_torchvision() {
        assert_eq!(make_divisible(32.0), 32);
        assert_eq!(make_divisible(16.0 * 0.5), 8);
        assert_eq!(make_divisible(24.0 * 0.5), 16);
        assert_eq!(make_divisible(320.0 * 0.35), 112);
    }
}
