//! The encoder's layers, with Hugging Face's module names (`self_attn.{q,k,v,out}_proj`,
//! `self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`).

use super::WhisperEncoderConfig;
use crate::kernels::{
    attention, attention_with_probabilities, dropout, gelu, layer_norm as norm, linear,
};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;

/// PyTorch's `nn.LayerNorm` default, which Whisper keeps.
pub(crate) const LAYER_NORM_EPS: f64 = 1e-5;

/// A projection initialised as Whisper's: `N(0, init_std)` weights, zero bias.
fn whisper_linear<B: Backend>(
    c: &WhisperEncoderConfig,
    d_in: usize,
    d_out: usize,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    crate::models::shared::normal_linear(d_in, d_out, bias, c.init_std, device)
}

pub(crate) fn layer_norm<B: Backend>(c: &WhisperEncoderConfig, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(c.d_model)
        .with_epsilon(LAYER_NORM_EPS)
        .init(device)
}

/// Multi-head self-attention (HF `WhisperAttention` of the encoder). The key projection has
/// no bias, as in Whisper.
#[derive(Module, Debug)]
pub struct WhisperAttention<B: Backend> {
    /// Query projection.
    pub q_proj: Linear<B>,
    /// Key projection (no bias).
    pub k_proj: Linear<B>,
    /// Value projection.
    pub v_proj: Linear<B>,
    /// Output projection.
    pub out_proj: Linear<B>,
    dropout: Dropout,
    pub(crate) heads: usize,
}

impl<B: Backend> WhisperAttention<B> {
    fn new(c: &WhisperEncoderConfig, device: &B::Device) -> Self {
        let d = c.d_model;
        Self {
            q_proj: whisper_linear(c, d, d, true, device),
            k_proj: whisper_linear(c, d, d, false, device),
            v_proj: whisper_linear(c, d, d, true, device),
            out_proj: whisper_linear(c, d, d, true, device),
            dropout: DropoutConfig::new(c.attention_dropout).init(),
            heads: c.encoder_attention_heads,
        }
    }

    /// The projected context `[batch, positions, d_model]` and, when `output_attentions`,
    /// the probabilities `[batch, heads, positions, positions]`: every position attends to
    /// every position (fused on the CPU backends without the maps).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let q = linear(&self.q_proj, x.clone());
        let k = linear(&self.k_proj, x.clone());
        let v = linear(&self.v_proj, x);
        let (context, probs) = if output_attentions {
            let (context, probs) =
                attention_with_probabilities(q, k, v, None, self.heads, &self.dropout, false);
            (context, Some(probs))
        } else {
            let context = attention(q, k, v, None, self.heads, self.dropout.prob, false);
            (context, None)
        };
        (linear(&self.out_proj, context), probs)
    }
}

/// One encoder layer (HF `WhisperEncoderLayer`), pre-norm: `x + attn(norm(x))`, then
/// `x + fc2(gelu(fc1(norm(x))))`.
#[derive(Module, Debug)]
pub struct WhisperEncoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: WhisperAttention<B>,
    /// Norm before the attention.
    pub self_attn_layer_norm: LayerNorm<B>,
    /// Feed-forward expansion.
    pub fc1: Linear<B>,
    /// Feed-forward projection back.
    pub fc2: Linear<B>,
    /// Norm before the feed-forward block.
    pub final_layer_norm: LayerNorm<B>,
    dropout: Dropout,
    activation_dropout: Dropout,
}

impl<B: Backend> WhisperEncoderLayer<B> {
    pub(crate) fn new(c: &WhisperEncoderConfig, device: &B::Device) -> Self {
        Self {
            self_attn: WhisperAttention::new(c, device),
            self_attn_layer_norm: layer_norm(c, device),
            fc1: whisper_linear(c, c.d_model, c.encoder_ffn_dim, true, device),
            fc2: whisper_linear(c, c.encoder_ffn_dim, c.d_model, true, device),
            final_layer_norm: layer_norm(c, device),
            dropout: DropoutConfig::new(c.dropout).init(),
            activation_dropout: DropoutConfig::new(c.activation_dropout).init(),
        }
    }

    /// The layer's output and, when `output_attentions`, its attention probabilities.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let (attended, probs) = self.self_attn.forward(
            norm(&self.self_attn_layer_norm, LAYER_NORM_EPS, x.clone()),
            output_attentions,
        );
        let x = dropout(&self.dropout, attended) + x;
        let expanded = gelu(linear(
            &self.fc1,
            norm(&self.final_layer_norm, LAYER_NORM_EPS, x.clone()),
        ));
        let projected = linear(&self.fc2, dropout(&self.activation_dropout, expanded));
        (dropout(&self.dropout, projected) + x, probs)
    }
}
