//! ViT's building blocks, with the module names of the checkpoints on the Hugging Face hub
//! (`embeddings.patch_embeddings.projection`, `encoder.layer.N.attention.attention.query`,
//! `layernorm_before`, …), so their keys match without renaming.

use super::{ViTConfig, positions};
use crate::kernels::{
    attention, attention_with_probabilities, conv2d, dropout, gelu, layer_norm as norm, linear,
};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

/// ViT's initialisation of weights: `N(0, initializer_range)` (transformers truncates at
/// ±2, a hundred standard deviations away).
fn normal(c: &ViTConfig) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: c.initializer_range,
    }
}

/// A projection initialised as ViT's: `N(0, initializer_range)` weights, zero bias.
fn vit_linear<B: Backend>(
    c: &ViTConfig,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    crate::models::shared::normal_linear(d_in, d_out, bias, c.initializer_range, device)
}

pub(crate) fn layer_norm<B: Backend>(c: &ViTConfig, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(c.hidden_size)
        .with_epsilon(c.layer_norm_eps)
        .init(device)
}

/// Cuts an image into patches and projects each to the hidden width (HF
/// `ViTPatchEmbeddings`): a convolution whose kernel and stride are the patch size.
#[derive(Module, Debug)]
pub struct ViTPatchEmbeddings<B: Backend> {
    /// `[hidden, channels, patch_h, patch_w]`, stride = kernel.
    pub projection: Conv2d<B>,
}

impl<B: Backend> ViTPatchEmbeddings<B> {
    /// `[batch, channels, h, w]` → `[batch, (h / patch_h)·(w / patch_w), hidden]`, patches row
    /// by row (pixels past the last whole patch are dropped, as by the convolution).
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let maps = conv2d(&self.projection, pixels);
        let [batch, hidden, gh, gw] = maps.dims();
        maps.reshape([batch, hidden, gh * gw]).swap_dims(1, 2)
    }
}

/// The class token, the patch embeddings and the position embeddings (HF `ViTEmbeddings`).
#[derive(Module, Debug)]
pub struct ViTEmbeddings<B: Backend> {
    /// The learned `[CLS]` token `[1, 1, hidden]`, prepended to the patches.
    pub cls_token: Param<Tensor<B, 3>>,
    /// The patch projection.
    pub patch_embeddings: ViTPatchEmbeddings<B>,
    /// Learned position embeddings `[1, 1 + patches, hidden]` (class token first), for the
    /// configured image size; resampled for other sizes.
    pub position_embeddings: Param<Tensor<B, 3>>,
    dropout: Dropout,
    /// Patches per column and row at the configured image size.
    grid: [usize; 2],
}

impl<B: Backend> ViTEmbeddings<B> {
    pub(crate) fn new(c: &ViTConfig, device: &B::Device) -> Self {
        let [ph, pw] = c.patch_size.pair();
        let grid = c.patch_grid();
        let token = |n: usize| {
            Param::from_tensor(Tensor::random(
                [1, n, c.hidden_size],
                burn::tensor::Distribution::Normal(0.0, c.initializer_range),
                device,
            ))
        };
        let mut projection = Conv2dConfig::new([c.num_channels, c.hidden_size], [ph, pw])
            .with_stride([ph, pw])
            .with_initializer(normal(c))
            .init(device);
        if let Some(b) = projection.bias.take() {
            projection.bias = Some(Param::from_tensor(b.val().zeros_like()));
        }
        Self {
            cls_token: token(1),
            patch_embeddings: ViTPatchEmbeddings { projection },
            position_embeddings: token(1 + grid[0] * grid[1]),
            dropout: DropoutConfig::new(c.hidden_dropout_prob).init(),
            grid,
        }
    }

    /// `[batch, channels, h, w]` → `[batch, 1 + patches, hidden]`. An image of another size
    /// than the configured one gets position embeddings resampled bicubically to its patch
    /// grid (transformers' `interpolate_pos_encoding=True`).
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, _, h, w] = pixels.dims();
        let [ph, pw] = self.patch_size();
        let patches = self.patch_embeddings.forward(pixels);
        let hidden = patches.dims()[2];
        let cls = self.cls_token.val().expand([batch, 1, hidden]);
        let tokens = Tensor::cat(vec![cls, patches], 1);
        let positions =
            positions::resize(self.position_embeddings.val(), self.grid, [h / ph, w / pw]);
        dropout(&self.dropout, tokens + positions)
    }

    /// `[patch_h, patch_w]`.
    pub fn patch_size(&self) -> [usize; 2] {
        let [_, _, ph, pw] = self.patch_embeddings.projection.weight.dims();
        [ph, pw]
    }

    /// Patches per column and row of the image size the position embeddings were trained for.
    pub fn grid(&self) -> [usize; 2] {
        self.grid
    }
}

/// Multi-head self-attention's projections (HF `ViTSelfAttention`, at
/// `attention.attention`).
#[derive(Module, Debug)]
pub struct ViTSelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    dropout: Dropout,
    pub(crate) heads: usize,
}

impl<B: Backend> ViTSelfAttention<B> {
    fn new(c: &ViTConfig, device: &B::Device) -> Self {
        let projection = || vit_linear(c, c.hidden_size, c.hidden_size, c.qkv_bias, device);
        Self {
            query: projection(),
            key: projection(),
            value: projection(),
            dropout: DropoutConfig::new(c.attention_probs_dropout_prob).init(),
            heads: c.num_attention_heads,
        }
    }

    /// The context `[batch, seq, hidden]` and, when `output_attentions`, the attention
    /// probabilities `[batch, heads, seq, seq]`. Every patch attends to every patch: one
    /// fused operation on the CPU backends without the maps, tensor operations that keep
    /// them (and their gradient, for distilling attention) with.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let q = linear(&self.query, x.clone());
        let k = linear(&self.key, x.clone());
        let v = linear(&self.value, x);
        if !output_attentions {
            let context = attention(q, k, v, None, self.heads, self.dropout.prob, false);
            return (context, None);
        }
        let (context, probs) =
            attention_with_probabilities(q, k, v, None, self.heads, &self.dropout, false);
        (context, Some(probs))
    }
}

/// A projection with dropout (HF `ViTSelfOutput` at `attention.output`, `ViTIntermediate`'s
/// expansion, `ViTOutput` at `output`): the residual sum is the layer's.
#[derive(Module, Debug)]
pub struct ViTDense<B: Backend> {
    /// The projection.
    pub dense: Linear<B>,
}

/// Self-attention and its output projection (HF `ViTAttention`).
#[derive(Module, Debug)]
pub struct ViTAttention<B: Backend> {
    /// HF's `attention.attention`.
    pub attention: ViTSelfAttention<B>,
    /// HF's `attention.output`.
    pub output: ViTDense<B>,
}

/// One transformer layer (HF `ViTLayer`), pre-norm: `x + attn(norm(x))`, then
/// `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct ViTLayer<B: Backend> {
    /// Attention block.
    pub attention: ViTAttention<B>,
    /// Feed-forward expansion (`hidden → intermediate`, then GELU).
    pub intermediate: ViTDense<B>,
    /// Feed-forward projection back (`intermediate → hidden`).
    pub output: ViTDense<B>,
    /// Norm before the attention.
    pub layernorm_before: LayerNorm<B>,
    /// Norm before the feed-forward block.
    pub layernorm_after: LayerNorm<B>,
    dropout: Dropout,
    /// The norms' `ε` (burn's `LayerNorm` keeps its own private), for the CPU kernel.
    layer_norm_eps: f64,
}

impl<B: Backend> ViTLayer<B> {
    pub(crate) fn new(c: &ViTConfig, device: &B::Device) -> Self {
        let dense = |d_in, d_out| ViTDense {
            dense: vit_linear(c, d_in, d_out, true, device),
        };
        Self {
            attention: ViTAttention {
                attention: ViTSelfAttention::new(c, device),
                output: dense(c.hidden_size, c.hidden_size),
            },
            intermediate: dense(c.hidden_size, c.intermediate_size),
            output: dense(c.intermediate_size, c.hidden_size),
            layernorm_before: layer_norm(c, device),
            layernorm_after: layer_norm(c, device),
            dropout: DropoutConfig::new(c.hidden_dropout_prob).init(),
            layer_norm_eps: c.layer_norm_eps,
        }
    }

    /// The layer's output and, when `output_attentions`, its attention probabilities.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let eps = self.layer_norm_eps;
        let (context, probs) = self.attention.attention.forward(
            norm(&self.layernorm_before, eps, x.clone()),
            output_attentions,
        );
        let attended = linear(&self.attention.output.dense, context);
        let x = dropout(&self.dropout, attended) + x;
        let expanded = gelu(linear(
            &self.intermediate.dense,
            norm(&self.layernorm_after, eps, x.clone()),
        ));
        let projected = linear(&self.output.dense, expanded);
        (dropout(&self.dropout, projected) + x, probs)
    }
}

/// ViT's pooler: `tanh(dense(hidden state of [CLS]))` (HF `ViTPooler`; only in `ViTModel`
/// checkpoints saved with it, not used by `ViTForImageClassification`).
#[derive(Module, Debug)]
pub struct ViTPooler<B: Backend> {
    /// `hidden → pooler_output_size`.
    pub dense: Linear<B>,
}

impl<B: Backend> ViTPooler<B> {
    pub(crate) fn new(c: &ViTConfig, device: &B::Device) -> Self {
        Self {
            dense: vit_linear(c, c.hidden_size, c.pooler_size(), true, device),
        }
    }

    /// `[batch, seq, hidden]` → `[batch, pooler_output_size]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        linear(&self.dense, super::class_token(hidden)).tanh()
    }
}
