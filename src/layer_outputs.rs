//! What a model computes between its input and its output — hidden states per layer,
//! attention maps, CNN stage maps — and the shapes it promises for them: what feature
//! distillation (FitNets hints, DistilBERT's cosine, TinyBERT's hidden and attention MSE,
//! attention transfer) compares between a teacher and a student.
//!
//! A model exposes them through [`Classifier::layer_spec`](crate::task::Classifier) and
//! [`Classifier::logits_with_layers`](crate::task::Classifier); a
//! [`TransferModel`](crate::head::TransferModel) takes them from its
//! [`Backbone`](crate::backbone::Backbone). [`Bert`](crate::models::bert::Bert),
//! [`ViT`](crate::models::vit::ViT),
//! [`WhisperEncoder`](crate::models::whisper::WhisperEncoder) (hidden states and attention
//! maps), [`ResNet`](crate::models::resnet::ResNet),
//! [`MobileNetV2`](crate::models::mobilenet_v2::MobileNetV2) (stage maps) and
//! [`MlpBackbone`](crate::backbone::MlpBackbone) (hidden layers) implement them.
//!
//! Numbering follows Hugging Face's `hidden_states`: number `k ≥ 1` is the output of block
//! (layer, stage) `k`; number 0 is the input-level output (BERT's embeddings, an MLP's
//! input) where a model has one.

use crate::cross_backend::CrossBackend;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Which intermediate outputs a forward pass should keep. Attention maps cost an unfused
/// attention; nothing is kept unless asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerRequest {
    /// Hidden states (numbers 0 to `layers`).
    pub hidden: bool,
    /// Attention probabilities of every block.
    pub attentions: bool,
    /// The output of every stage (CNNs).
    pub maps: bool,
}

impl LayerRequest {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        !(self.hidden || self.attentions || self.maps)
    }
}

/// One stage map's shape, as far as it is known before seeing an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// Channels.
    pub channels: usize,
    /// How many input pixels one map position spans along each side (4 for ResNet's first
    /// stage): two maps compare position by position only when their strides are equal.
    pub stride: usize,
}

/// The intermediate outputs a model exposes and their shapes: what a layer map is checked
/// against before training starts. The default exposes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerSpec {
    /// Width of each hidden state, numbers 0 (input level) to `layers`; empty when the model
    /// exposes none.
    pub hidden_widths: Vec<usize>,
    /// Heads of block `k`'s attention at index `k - 1`; empty when none.
    pub attention_heads: Vec<usize>,
    /// Stage `k`'s map at index `k - 1`; empty when none.
    pub maps: Vec<MapSpec>,
}

impl LayerSpec {
    /// Whether the model exposes nothing.
    pub fn is_empty(&self) -> bool {
        self.hidden_widths.is_empty() && self.attention_heads.is_empty() && self.maps.is_empty()
    }

    /// A transformer encoder's: `layers + 1` hidden states of `width`, `layers` attention
    /// maps of `heads` heads.
    pub fn transformer(layers: usize, width: usize, heads: usize) -> Self {
        Self {
            hidden_widths: vec![width; layers + 1],
            attention_heads: vec![heads; layers],
            maps: Vec::new(),
        }
    }
}

/// The intermediate outputs of one forward pass (only those a [`LayerRequest`] asked for;
/// the others are empty).
#[derive(Clone, Debug)]
pub struct LayerOutputs<B: Backend> {
    /// Hidden states `[batch, positions, width]`, numbers 0 to `layers` (a model without
    /// positions, an MLP, gives one position).
    pub hidden: Vec<Tensor<B, 3>>,
    /// Attention probabilities `[batch, heads, queries, keys]`, block `k` at index `k - 1`.
    pub attentions: Vec<Tensor<B, 4>>,
    /// Stage maps `[batch, channels, height, width]`, stage `k` at index `k - 1`.
    pub maps: Vec<Tensor<B, 4>>,
    /// `[batch, positions]`, `true` at padding (burn's convention); `None` when no
    /// position is padding.
    pub padding: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> Default for LayerOutputs<B> {
    fn default() -> Self {
        Self {
            hidden: Vec::new(),
            attentions: Vec::new(),
            maps: Vec::new(),
            padding: None,
        }
    }
}

impl<B: Backend> LayerOutputs<B> {
    /// A transformer encoder's outputs as `request` asks for them: its hidden states
    /// (dropped unless asked for), its attention maps (computed only when asked for), its
    /// padding mask.
    pub fn transformer(
        hidden_states: Vec<Tensor<B, 3>>,
        attentions: Vec<Tensor<B, 4>>,
        padding: Option<Tensor<B, 2, Bool>>,
        request: LayerRequest,
    ) -> Self {
        Self {
            hidden: if request.hidden {
                hidden_states
            } else {
                Vec::new()
            },
            attentions,
            maps: Vec::new(),
            padding,
        }
    }
}

impl<B: AutodiffBackend> LayerOutputs<B> {
    /// Outputs computed on the inner backend (a teacher's, a frozen body's) as constants of
    /// the autodiff backend.
    pub fn from_inner(inner: LayerOutputs<B::InnerBackend>) -> Self {
        Self {
            hidden: inner.hidden.into_iter().map(Tensor::from_inner).collect(),
            attentions: inner
                .attentions
                .into_iter()
                .map(Tensor::from_inner)
                .collect(),
            maps: inner.maps.into_iter().map(Tensor::from_inner).collect(),
            padding: inner.padding.map(Tensor::from_inner),
        }
    }
}

impl<B: Backend> LayerOutputs<B> {
    /// A copy on `device` of backend `B2` (a teacher on another backend or device).
    pub fn to_backend<B2: Backend>(self, device: &B2::Device) -> LayerOutputs<B2> {
        LayerOutputs {
            hidden: self
                .hidden
                .into_iter()
                .map(|t| t.to_backend(device))
                .collect(),
            attentions: self
                .attentions
                .into_iter()
                .map(|t| t.to_backend(device))
                .collect(),
            maps: self
                .maps
                .into_iter()
                .map(|t| t.to_backend(device))
                .collect(),
            padding: self.padding.map(|t| t.to_backend(device)),
        }
    }
}
