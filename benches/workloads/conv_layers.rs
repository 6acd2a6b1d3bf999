//! Single convolution layers at the shapes the real networks run them (batch 16, the
//! networks' 128-pixel input), one by one, against the same layers in
//! `benches/pytorch/torch_networks.py`: where a network's step is behind, these rows say
//! which layer holds the gap, forward (the frozen path) and training (forward, then the
//! input and weight gradients).
//!
//! A name spells the layer: `conv_k3_s2_c64_o128_h32_g1_train` is a 3×3 convolution with
//! stride 2 from 64 to 128 channels on 32×32 maps, one group, padding `k / 2`, no bias.
//! `_train` is forward and backward of `sum(y · g)` for a fixed random `g` (the input
//! gradient too, except for 3-channel images, whose input needs none); `_infer` is one
//! inference forward on the inner backend, then the output's sum. The `*_layers` names stand
//! for a network's distinct layers (`resnet18_layers`, `resnet50_layers`,
//! `mobilenetv2_layers`), each in both modes.

use crate::workloads::{N_BATCHES, Step};
use burn::module::AutodiffModule;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use burn_transfer::kernels::cpu::conv::conv2d;

const BATCH: usize = 16;

/// One convolution layer's shape.
struct ConvSpec {
    kernel: usize,
    stride: usize,
    channels: usize,
    out: usize,
    size: usize,
    groups: usize,
}

impl ConvSpec {
    fn name(&self, mode: &str) -> String {
        let Self {
            kernel: k,
            stride: s,
            channels: c,
            out: o,
            size: h,
            groups: g,
        } = self;
        format!("conv_k{k}_s{s}_c{c}_o{o}_h{h}_g{g}_{mode}")
    }

    /// `conv_k3_s1_c64_o64_h32_g1_train` → the spec and the mode.
    fn parse(name: &str) -> Option<(Self, &str)> {
        let rest = name.strip_prefix("conv_")?;
        let parts: Vec<&str> = rest.split('_').collect();
        let [k, s, c, o, h, g, mode] = parts[..] else {
            return None;
        };
        let field = |part: &str, prefix: &str| part.strip_prefix(prefix)?.parse::<usize>().ok();
        let spec = Self {
            kernel: field(k, "k")?,
            stride: field(s, "s")?,
            channels: field(c, "c")?,
            out: field(o, "o")?,
            size: field(h, "h")?,
            groups: field(g, "g")?,
        };
        matches!(mode, "train" | "infer").then_some((spec, mode))
    }

    fn output_size(&self) -> usize {
        let pad = self.kernel / 2;
        (self.size + 2 * pad - self.kernel) / self.stride + 1
    }
}

/// A layer as `(kernel, stride, channels, out, size, groups)`.
type Layer = (usize, usize, usize, usize, usize, usize);

/// Each network's distinct layers at batch 16 and 128 pixels (each listed once however
/// often the network repeats it).
fn network_layers(network: &str) -> Option<Vec<Layer>> {
    Some(match network {
        "resnet18" => vec![
            (7, 2, 3, 64, 128, 1),
            (3, 1, 64, 64, 32, 1),
            (3, 2, 64, 128, 32, 1),
            (1, 2, 64, 128, 32, 1),
            (3, 1, 128, 128, 16, 1),
            (3, 2, 128, 256, 16, 1),
            (1, 2, 128, 256, 16, 1),
            (3, 1, 256, 256, 8, 1),
            (3, 2, 256, 512, 8, 1),
            (1, 2, 256, 512, 8, 1),
            (3, 1, 512, 512, 4, 1),
        ],
        "resnet50" => vec![
            (7, 2, 3, 64, 128, 1),
            (1, 1, 64, 64, 32, 1),
            (3, 1, 64, 64, 32, 1),
            (1, 1, 64, 256, 32, 1),
            (1, 1, 256, 64, 32, 1),
            (1, 1, 256, 128, 32, 1),
            (3, 2, 128, 128, 32, 1),
            (1, 1, 128, 512, 16, 1),
            (1, 2, 256, 512, 32, 1),
            (1, 1, 512, 128, 16, 1),
            (3, 1, 128, 128, 16, 1),
            (1, 1, 512, 256, 16, 1),
            (3, 2, 256, 256, 16, 1),
            (1, 1, 256, 1024, 8, 1),
            (1, 2, 512, 1024, 16, 1),
            (1, 1, 1024, 256, 8, 1),
            (3, 1, 256, 256, 8, 1),
            (1, 1, 1024, 512, 8, 1),
            (3, 2, 512, 512, 8, 1),
            (1, 1, 512, 2048, 4, 1),
            (1, 2, 1024, 2048, 8, 1),
            (1, 1, 2048, 512, 4, 1),
            (3, 1, 512, 512, 4, 1),
        ],
        "mobilenetv2" => vec![
            (3, 2, 3, 32, 128, 1),
            (3, 1, 32, 32, 64, 32),
            (1, 1, 32, 16, 64, 1),
            (1, 1, 16, 96, 64, 1),
            (3, 2, 96, 96, 64, 96),
            (1, 1, 96, 24, 32, 1),
            (1, 1, 24, 144, 32, 1),
            (3, 1, 144, 144, 32, 144),
            (1, 1, 144, 24, 32, 1),
            (3, 2, 144, 144, 32, 144),
            (1, 1, 144, 32, 16, 1),
            (1, 1, 32, 192, 16, 1),
            (3, 1, 192, 192, 16, 192),
            (1, 1, 192, 32, 16, 1),
            (3, 2, 192, 192, 16, 192),
            (1, 1, 192, 64, 8, 1),
            (1, 1, 64, 384, 8, 1),
            (3, 1, 384, 384, 8, 384),
            (1, 1, 384, 64, 8, 1),
            (1, 1, 384, 96, 8, 1),
            (1, 1, 96, 576, 8, 1),
            (3, 1, 576, 576, 8, 576),
            (1, 1, 576, 96, 8, 1),
            (3, 2, 576, 576, 8, 576),
            (1, 1, 576, 160, 4, 1),
            (1, 1, 160, 960, 4, 1),
            (3, 1, 960, 960, 4, 960),
            (1, 1, 960, 160, 4, 1),
            (1, 1, 960, 320, 4, 1),
            (1, 1, 320, 1280, 4, 1),
        ],
        _ => return None,
    })
}

/// `resnet18_layers` → every layer's name in both modes; any other name → itself.
pub fn expand(name: &str) -> Vec<String> {
    let Some(layers) = name.strip_suffix("_layers").and_then(network_layers) else {
        return vec![name.to_string()];
    };
    ["infer", "train"]
        .iter()
        .flat_map(|mode| {
            layers
                .iter()
                .map(move |&(kernel, stride, channels, out, size, groups)| {
                    ConvSpec {
                        kernel,
                        stride,
                        channels,
                        out,
                        size,
                        groups,
                    }
                    .name(mode)
                })
        })
        .collect()
}

/// The layer workload `name` on backend `B`.
pub fn build<B: AutodiffBackend>(name: &str, device: &B::Device) -> Option<Step> {
    let (spec, mode) = ConvSpec::parse(name)?;
    B::seed(device, 0);
    let pad = spec.kernel / 2;
    let layer = Conv2dConfig::new([spec.channels, spec.out], [spec.kernel, spec.kernel])
        .with_stride([spec.stride, spec.stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_groups(spec.groups)
        .with_bias(false)
        .init::<B>(device);
    let inputs: Vec<Tensor<B::InnerBackend, 4>> = (0..N_BATCHES)
        .map(|_| {
            Tensor::random(
                [BATCH, spec.channels, spec.size, spec.size],
                Distribution::Normal(0.0, 1.0),
                device,
            )
        })
        .collect();
    if mode == "infer" {
        let layer = layer.valid();
        return Some(Box::new(move |i| {
            conv2d(&layer, inputs[i % N_BATCHES].clone())
                .sum()
                .into_scalar()
                .elem::<f32>()
        }));
    }
    let size = spec.output_size();
    let upstream = Tensor::<B, 4>::random(
        [BATCH, spec.out, size, size],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let input_grad = spec.channels > 3;
    Some(Box::new(move |i| {
        let x = Tensor::<B, 4>::from_inner(inputs[i % N_BATCHES].clone());
        let x = if input_grad { x.require_grad() } else { x };
        let y = conv2d(&layer, x.clone());
        let grads = (y * upstream.clone()).sum().backward();
        let weight = layer
            .weight
            .grad(&grads)
            .expect("the weight has a gradient");
        let mut read = weight
            .slice([0..1, 0..1, 0..1, 0..1])
            .into_scalar()
            .elem::<f32>();
        if input_grad {
            let dx = x.grad(&grads).expect("the input has a gradient");
            read += dx
                .slice([0..1, 0..1, 0..1, 0..1])
                .into_scalar()
                .elem::<f32>();
        }
        read
    }))
}
