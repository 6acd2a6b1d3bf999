//! BERT's building blocks, with Hugging Face's module names (so a checkpoint's keys match
//! after two renamings: `LayerNorm` → `layer_norm`, `attention.self` → `attention.self_attention`,
//! since `self` is a Rust keyword).

use super::BertConfig;
use crate::adapter::{BottleneckAdapter, BottleneckConfig};
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};

/// Word + position + token-type embeddings, then LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// Token embeddings `[vocab, hidden]`.
    pub word_embeddings: Embedding<B>,
    /// Learned absolute position embeddings.
    pub position_embeddings: Embedding<B>,
    /// Segment embeddings.
    pub token_type_embeddings: Embedding<B>,
    /// Normalisation after the sum.
    pub layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

impl<B: Backend> BertEmbeddings<B> {
    pub(crate) fn new(c: &BertConfig, device: &B::Device) -> Self {
        Self {
            word_embeddings: EmbeddingConfig::new(c.vocab_size, c.hidden_size).init(device),
            position_embeddings: EmbeddingConfig::new(c.max_position_embeddings, c.hidden_size)
                .init(device),
            token_type_embeddings: EmbeddingConfig::new(c.type_vocab_size, c.hidden_size)
                .init(device),
            layer_norm: layer_norm(c, device),
            dropout: DropoutConfig::new(c.hidden_dropout_prob).init(),
        }
    }

    /// `[batch, seq]` ids → `[batch, seq, hidden]`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([batch, seq]);
        let types = token_type_ids.unwrap_or_else(|| Tensor::zeros([batch, seq], &device));
        let x = self.word_embeddings.forward(input_ids)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(types);
        self.dropout.forward(self.layer_norm.forward(x))
    }
}

pub(crate) fn layer_norm<B: Backend>(c: &BertConfig, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(c.hidden_size)
        .with_epsilon(c.layer_norm_eps)
        .init(device)
}

/// Multi-head scaled dot-product self-attention (HF `BertSelfAttention`).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
    dropout: Dropout,
    heads: usize,
}

impl<B: Backend> BertSelfAttention<B> {
    fn new(c: &BertConfig, device: &B::Device) -> Self {
        let linear = || LinearConfig::new(c.hidden_size, c.hidden_size).init(device);
        Self {
            query: linear(),
            key: linear(),
            value: linear(),
            dropout: DropoutConfig::new(c.attention_probs_dropout_prob).init(),
            heads: c.num_attention_heads,
        }
    }

    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, seq, hidden] = x.dims();
        x.reshape([batch, seq, self.heads, hidden / self.heads])
            .swap_dims(1, 2)
    }

    /// Returns the context `[batch, seq, hidden]` and the attention probabilities
    /// `[batch, heads, seq, seq]`. `additive_mask` is `[batch, 1, 1, seq]`, 0 where a key
    /// may be attended and a large negative number at padding.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        additive_mask: Tensor<B, 4>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.heads;
        let q = self.split_heads(self.query.forward(x.clone()));
        let k = self.split_heads(self.key.forward(x.clone()));
        let v = self.split_heads(self.value.forward(x));
        let scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt() + additive_mask;
        let probs = softmax(scores, 3);
        let context = self
            .dropout
            .forward(probs.clone())
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden]);
        (context, probs)
    }
}

/// Dense + dropout (+ bottleneck adapter) + residual + LayerNorm (HF `BertSelfOutput` and
/// `BertOutput`).
#[derive(Module, Debug)]
pub struct BertResidualOutput<B: Backend> {
    /// The projection.
    pub dense: Linear<B>,
    /// Normalisation after the residual sum.
    pub layer_norm: LayerNorm<B>,
    /// Houlsby's placement: a bottleneck adapter on the sub-layer's output, before the
    /// residual sum and the norm. Absent in pretrained checkpoints; see
    /// [`Bert::with_adapters`](super::Bert::with_adapters).
    pub adapter: Option<BottleneckAdapter<B>>,
    dropout: Dropout,
}

impl<B: Backend> BertResidualOutput<B> {
    fn new(c: &BertConfig, d_in: usize, device: &B::Device) -> Self {
        Self {
            dense: LinearConfig::new(d_in, c.hidden_size).init(device),
            layer_norm: layer_norm(c, device),
            // `validate` refused a zero size, the only way `init` fails.
            adapter: c
                .adapter_size
                .and_then(|n| BottleneckConfig::new(c.hidden_size, n).init(device).ok()),
            dropout: DropoutConfig::new(c.hidden_dropout_prob).init(),
        }
    }

    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.dropout.forward(self.dense.forward(x));
        let h = match &self.adapter {
            Some(adapter) => adapter.forward(h),
            None => h,
        };
        self.layer_norm.forward(h + residual)
    }

    pub(crate) fn add_adapter(&mut self, size: usize, device: &B::Device) -> crate::Result<()> {
        let width = self.layer_norm.gamma.dims()[0];
        self.adapter = Some(BottleneckConfig::new(width, size).init(device)?);
        Ok(())
    }
}

/// Self-attention and its output block (HF `BertAttention`).
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    /// HF's `attention.self`.
    pub self_attention: BertSelfAttention<B>,
    /// HF's `attention.output`.
    pub output: BertResidualOutput<B>,
}

/// The feed-forward expansion (HF `BertIntermediate`): dense then GELU.
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    /// `hidden → intermediate`.
    pub dense: Linear<B>,
}

/// One transformer layer (HF `BertLayer`), post-norm as in BERT.
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    /// Attention block.
    pub attention: BertAttention<B>,
    /// Feed-forward expansion.
    pub intermediate: BertIntermediate<B>,
    /// Feed-forward projection back, residual and norm.
    pub output: BertResidualOutput<B>,
}

impl<B: Backend> BertLayer<B> {
    pub(crate) fn new(c: &BertConfig, device: &B::Device) -> Self {
        Self {
            attention: BertAttention {
                self_attention: BertSelfAttention::new(c, device),
                output: BertResidualOutput::new(c, c.hidden_size, device),
            },
            intermediate: BertIntermediate {
                dense: LinearConfig::new(c.hidden_size, c.intermediate_size).init(device),
            },
            output: BertResidualOutput::new(c, c.intermediate_size, device),
        }
    }

    /// Returns the layer's output and its attention probabilities.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        additive_mask: Tensor<B, 4>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let (context, probs) = self
            .attention
            .self_attention
            .forward(x.clone(), additive_mask);
        let attended = self.attention.output.forward(context, x);
        let expanded = gelu(self.intermediate.dense.forward(attended.clone()));
        (self.output.forward(expanded, attended), probs)
    }
}

/// BERT's pooler: tanh(dense(hidden state of `[CLS]`)).
#[derive(Module, Debug)]
pub struct BertPooler<B: Backend> {
    /// `hidden → hidden`.
    pub dense: Linear<B>,
}

impl<B: Backend> BertPooler<B> {
    pub(crate) fn new(c: &BertConfig, device: &B::Device) -> Self {
        Self {
            dense: LinearConfig::new(c.hidden_size, c.hidden_size).init(device),
        }
    }

    /// `[batch, seq, hidden]` → `[batch, hidden]`.
    pub fn forward(&self, hidden: Tensor<B, 3>) -> Tensor<B, 2> {
        let [batch, _, width] = hidden.dims();
        let cls = hidden
            .slice([0..batch, 0..1, 0..width])
            .reshape([batch, width]);
        self.dense.forward(cls).tanh()
    }
}
