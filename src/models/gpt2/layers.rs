//! GPT-2's building blocks with Hugging Face's module names (`ln_1`, `attn.c_attn`,
//! `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`).
//!
//! GPT-2's `Conv1D` is a linear layer whose weight is stored `[in, out]` — burn's own
//! `Linear` layout — so the projections are burn `Linear`s and a checkpoint loads without
//! transposition (and LoRA, freezing and the CPU kernels see ordinary linear layers).

use super::config::{Gpt2Activation, Gpt2Config};
use crate::kernels::{
    attention, attention_with_probabilities, dropout, gelu, gelu_tanh, layer_norm as norm, linear,
};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

/// One block's keys and values `[batch, positions, n_embd]` (heads side by side, as the
/// projection writes them), kept between generation steps.
#[derive(Clone, Debug)]
pub struct LayerCache<B: Backend> {
    /// Keys of every position seen so far.
    pub key: Tensor<B, 3>,
    /// Values of every position seen so far.
    pub value: Tensor<B, 3>,
}

pub(crate) fn layer_norm<B: Backend>(c: &Gpt2Config, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(c.n_embd)
        .with_epsilon(c.layer_norm_epsilon)
        .init(device)
}

/// Causal multi-head self-attention with fused query/key/value projection (HF `GPT2Attention`).
#[derive(Module, Debug)]
pub struct Gpt2Attention<B: Backend> {
    /// `n_embd → 3·n_embd`: queries, keys and values side by side.
    pub c_attn: Linear<B>,
    /// `n_embd → n_embd` after the heads are merged.
    pub c_proj: Linear<B>,
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    heads: usize,
}

impl<B: Backend> Gpt2Attention<B> {
    fn new(c: &Gpt2Config, device: &B::Device) -> Self {
        Self {
            c_attn: LinearConfig::new(c.n_embd, 3 * c.n_embd).init(device),
            c_proj: LinearConfig::new(c.n_embd, c.n_embd).init(device),
            attn_dropout: DropoutConfig::new(c.attn_pdrop).init(),
            resid_dropout: DropoutConfig::new(c.resid_pdrop).init(),
            heads: c.n_head,
        }
    }

    /// `x` `[batch, seq, n_embd]` attends to the cached positions and to itself, causally;
    /// `key_bias` `[batch, past + seq]` is 0 at real tokens and a large negative number at
    /// padding. Returns the output, the keys and values of all positions (for the cache)
    /// and, when `output_attentions`, the probabilities `[batch, heads, seq, past + seq]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        key_bias: Tensor<B, 2>,
        past: Option<LayerCache<B>>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, LayerCache<B>, Option<Tensor<B, 4>>) {
        let width = x.dims()[2];
        let qkv = linear(&self.c_attn, x);
        let q = qkv.clone().narrow(2, 0, width);
        let k = qkv.clone().narrow(2, width, width);
        let v = qkv.narrow(2, 2 * width, width);
        let (k, v) = match past {
            Some(past) => (
                Tensor::cat(vec![past.key, k], 1),
                Tensor::cat(vec![past.value, v], 1),
            ),
            None => (k, v),
        };
        let present = LayerCache {
            key: k.clone(),
            value: v.clone(),
        };
        if !output_attentions {
            let context = attention(
                q,
                k,
                v,
                Some(key_bias),
                self.heads,
                self.attn_dropout.prob,
                true,
            );
            let out = dropout(&self.resid_dropout, linear(&self.c_proj, context));
            return (out, present, None);
        }
        let (context, probs) = attention_with_probabilities(
            q,
            k,
            v,
            Some(key_bias),
            self.heads,
            &self.attn_dropout,
            true,
        );
        let out = dropout(&self.resid_dropout, linear(&self.c_proj, context));
        (out, present, Some(probs))
    }
}

/// The feed-forward block (HF `GPT2MLP`): `c_fc`, activation, `c_proj`, dropout.
#[derive(Module, Debug)]
pub struct Gpt2Mlp<B: Backend> {
    /// `n_embd → n_inner`.
    pub c_fc: Linear<B>,
    /// `n_inner → n_embd`.
    pub c_proj: Linear<B>,
    dropout: Dropout,
    #[module(skip)]
    activation: Gpt2Activation,
}

impl<B: Backend> Gpt2Mlp<B> {
    fn new(c: &Gpt2Config, activation: Gpt2Activation, device: &B::Device) -> Self {
        Self {
            c_fc: LinearConfig::new(c.n_embd, c.inner_size()).init(device),
            c_proj: LinearConfig::new(c.inner_size(), c.n_embd).init(device),
            dropout: DropoutConfig::new(c.resid_pdrop).init(),
            activation,
        }
    }

    /// `[batch, seq, n_embd]` → the same shape.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = linear(&self.c_fc, x);
        let h = match self.activation {
            Gpt2Activation::GeluTanh => gelu_tanh(h),
            Gpt2Activation::Gelu => gelu(h),
            Gpt2Activation::Relu => burn::tensor::activation::relu(h),
        };
        dropout(&self.dropout, linear(&self.c_proj, h))
    }
}

/// One pre-norm transformer block (HF `GPT2Block`):
/// `x + attn(ln_1(x))`, then `h + mlp(ln_2(h))`.
#[derive(Module, Debug)]
pub struct Gpt2Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Causal self-attention.
    pub attn: Gpt2Attention<B>,
    /// Norm before the feed-forward block.
    pub ln_2: LayerNorm<B>,
    /// Feed-forward block.
    pub mlp: Gpt2Mlp<B>,
    /// The norms' `ε` (burn's `LayerNorm` keeps its own private), for the CPU kernel.
    layer_norm_epsilon: f64,
}

impl<B: Backend> Gpt2Block<B> {
    pub(crate) fn new(c: &Gpt2Config, activation: Gpt2Activation, device: &B::Device) -> Self {
        Self {
            ln_1: layer_norm(c, device),
            attn: Gpt2Attention::new(c, device),
            ln_2: layer_norm(c, device),
            mlp: Gpt2Mlp::new(c, activation, device),
            layer_norm_epsilon: c.layer_norm_epsilon,
        }
    }

    /// Returns the block's output, its keys and values (for the cache) and, when
    /// `output_attentions`, its attention probabilities.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        key_bias: Tensor<B, 2>,
        past: Option<LayerCache<B>>,
        output_attentions: bool,
    ) -> (Tensor<B, 3>, LayerCache<B>, Option<Tensor<B, 4>>) {
        let eps = self.layer_norm_epsilon;
        let (attended, present, probs) = self.attn.forward(
            norm(&self.ln_1, eps, x.clone()),
            key_bias,
            past,
            output_attentions,
        );
        let h = x + attended;
        let out = h.clone() + self.mlp.forward(norm(&self.ln_2, eps, h));
        (out, present, probs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    fn block(device: &burn::backend::ndarray::NdArrayDevice) -> Gpt2Block<A> {
        let mut config = Gpt2Config::default().narrower(32, 4);
        config.resid_pdrop = 0.0;
        config.attn_pdrop = 0.0;
        let block = Gpt2Block::<A>::new(&config, Gpt2Activation::GeluTanh, device);
        crate::freeze::materialize(&block);
        block
    }

    /// The fused causal attention (no maps asked for) and the tensor-operation one (maps
    /// kept) give one block the same output and gradients, with padding in the batch; the
    /// maps are causal (zero above the diagonal) and zero at padded keys.
    #[test]
    fn fused_and_unfused_causal_attention_agree() {
        let device = Default::default();
        let block = block(&device);
        let x = Tensor::<A, 3>::random([3, 7, 32], Distribution::Normal(0.0, 1.0), &device);
        let mut bias = vec![0.0f32; 21];
        bias[7..9].iter_mut().for_each(|m| *m = -10_000.0); // sample 1: two left pads
        let bias = Tensor::<A, 2>::from_data(TensorData::new(bias, [3, 7]), &device);
        let (fused, _, none) = block.forward(x.clone(), bias.clone(), None, false);
        let (unfused, _, maps) = block.forward(x, bias, None, true);
        assert!(none.is_none());
        let maps = maps.unwrap();
        assert_eq!(maps.dims(), [3, 4, 7, 7]);
        let probs = maps.clone().into_data().to_vec::<f32>().unwrap();
        for (n, p) in probs.iter().enumerate() {
            let (sample, i, j) = (n / (4 * 49), (n / 7) % 7, n % 7);
            if j > i || (sample == 1 && j < 2 && i >= 2) {
                assert_eq!(*p, 0.0, "sample {sample}, query {i}, key {j}");
            }
        }
        let tolerance = Tolerance::rel_abs(1e-4, 1e-5);
        fused
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&unfused.clone().into_data(), tolerance);
        let weight = &block.attn.c_attn.weight;
        let a = weight.grad(&fused.powi_scalar(2).sum().backward()).unwrap();
        let b = weight
            .grad(&unfused.powi_scalar(2).sum().backward())
            .unwrap();
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), tolerance);
    }

    /// Running a sequence in two pieces through the cache gives the outputs of running it
    /// whole: the second piece attends to the first's cached keys and values.
    #[test]
    fn the_cache_continues_a_sequence() {
        let device = Default::default();
        let block = block(&device);
        let x = Tensor::<A, 3>::random([2, 6, 32], Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<A, 2>::zeros([2, 6], &device);
        let (whole, cache, _) = block.forward(x.clone(), bias.clone(), None, false);
        assert_eq!(cache.key.dims(), [2, 6, 32]);
        let (first, cache, _) = block.forward(
            x.clone().slice([0..2, 0..4]),
            bias.clone().slice([0..2, 0..4]),
            None,
            false,
        );
        let (second, cache, _) = block.forward(x.slice([0..2, 4..6]), bias, Some(cache), false);
        assert_eq!(cache.value.dims(), [2, 6, 32]);
        Tensor::cat(vec![first, second], 1)
            .into_data()
            .assert_approx_eq::<f32>(&whole.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }
}
