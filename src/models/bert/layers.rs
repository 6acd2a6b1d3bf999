//! BERT's building blocks, with Hugging Face's module names (so a checkpoint's keys match
//! after two renamings: `LayerNorm` → `layer_norm`, `attention.self` → `attention.self_attention`,
//! since `self` is a Rust keyword).

use super::BertConfig;
use crate::adapter::{BottleneckAdapter, BottleneckConfig};
use crate::kernels::{
    attention, attention_with_probabilities, dropout, gelu, layer_norm as norm, linear,
};
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::prelude::*;

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
    /// The norm's `ε` (burn's `LayerNorm` keeps its own private), for the CPU kernel.
    layer_norm_eps: f64,
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
            layer_norm_eps: c.layer_norm_eps,
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
        dropout(
            &self.dropout,
            norm(&self.layer_norm, self.layer_norm_eps, x),
        )
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
    pub(crate) heads: usize,
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

    /// Returns the context `[batch, seq, hidden]` and, when `output_attentions`, the
    /// attention probabilities `[batch, heads, seq, seq]`. `additive_mask` is `[batch, 1, 1,
    /// seq]` (or any shape of `batch · seq` values), 0 where a key may be attended and a
    /// large negative number at padding.
    ///
    /// Without the maps, attention is one fused operation on the CPU backends
    /// ([`crate::kernels`]); with them, tensor operations that keep the probabilities (and
    /// their gradient, for distilling attention).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        additive_mask: Tensor<B, 4>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let [batch, seq, _] = x.dims();
        let q = linear(&self.query, x.clone());
        let k = linear(&self.key, x.clone());
        let v = linear(&self.value, x);
        let key_bias = additive_mask.reshape([batch, seq]);
        if !output_attentions {
            let context = attention(
                q,
                k,
                v,
                Some(key_bias),
                self.heads,
                self.dropout.prob,
                false,
            );
            return (context, None);
        }
        let (context, probs) =
            attention_with_probabilities(q, k, v, Some(key_bias), self.heads, &self.dropout, false);
        (context, Some(probs))
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
    /// The norm's `ε` (burn's `LayerNorm` keeps its own private), for the CPU kernel.
    layer_norm_eps: f64,
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
            layer_norm_eps: c.layer_norm_eps,
        }
    }

    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = dropout(&self.dropout, linear(&self.dense, x));
        let h = match &self.adapter {
            Some(adapter) => adapter.forward(h),
            None => h,
        };
        norm(&self.layer_norm, self.layer_norm_eps, h + residual)
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

    /// Returns the layer's output and, when `output_attentions`, its attention
    /// probabilities.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        additive_mask: Tensor<B, 4>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let (context, probs) =
            self.attention
                .self_attention
                .forward(x.clone(), additive_mask, output_attentions);
        let attended = self.attention.output.forward(context, x);
        let expanded = gelu(linear(&self.intermediate.dense, attended.clone()));
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
        self.pool_cls(
            hidden
                .slice([0..batch, 0..1, 0..width])
                .reshape([batch, width]),
        )
    }

    /// `[batch, hidden]` hidden states of `[CLS]` → `tanh(dense(·))`.
    pub fn pool_cls(&self, cls: Tensor<B, 2>) -> Tensor<B, 2> {
        linear(&self.dense, cls).tanh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    /// The fused attention (no maps asked for) and the tensor-operation one (maps kept) give
    /// one layer the same output and the same gradients, with padding in the batch.
    #[test]
    fn fused_and_unfused_attention_agree() {
        let device = Default::default();
        let mut config = BertConfig::all_minilm_l6_v2().narrower(32, 4);
        config.hidden_dropout_prob = 0.0;
        config.attention_probs_dropout_prob = 0.0;
        let layer = BertLayer::<A>::new(&config, &device);
        crate::freeze::materialize(&layer);
        let x = Tensor::<A, 3>::random([3, 7, 32], Distribution::Normal(0.0, 1.0), &device);
        let mut mask = vec![0.0f32; 21];
        mask[7 + 5..14].iter_mut().for_each(|m| *m = -10_000.0);
        let mask = Tensor::<A, 4>::from_data(TensorData::new(mask, [3, 1, 1, 7]), &device);
        let (fused, none) = layer.forward(x.clone(), mask.clone(), false);
        let (unfused, maps) = layer.forward(x, mask, true);
        assert!(none.is_none());
        assert_eq!(maps.map(|m| m.dims()), Some([3, 4, 7, 7]));
        let tolerance = Tolerance::rel_abs(1e-4, 1e-5);
        fused
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&unfused.clone().into_data(), tolerance);
        let weight = &layer.attention.self_attention.query.weight;
        let a = weight.grad(&fused.powi_scalar(2).sum().backward()).unwrap();
        let b = weight
            .grad(&unfused.powi_scalar(2).sum().backward())
            .unwrap();
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), tolerance);
    }
}
