//! Where the domain meets the CPU kernels: the one module that calls `burn-cpu-kernels`.
//!
//! With the default feature `cpu-kernels`, the layers, the distillation loss, AdamW, SGD and
//! LoRA's weights run through that crate on the CPU backends (ndarray, Flex): the same values and
//! gradients as burn's operations, computed with backward passes of their own where burn's
//! are slow on the CPU. Without the feature, every call below is burn's own operation, and
//! nothing else in this crate changes. Other backends (wgpu) take burn's operations either
//! way: the kernels crate recognises the CPU backends by type and hands everything else back.
//!
//! # Settings for a training program on the CPU
//!
//! Two settings belong to the whole process, so the crate never makes them by itself; a
//! program that trains on ndarray or Flex makes them once, first thing in `main`:
//!
//! ```
//! // The training thread computes as one of rayon's threads instead of handing every
//! // parallel operation to the pool and waiting.
//! let joined = burn_transfer::kernels::join_compute_pool();
//! // glibc's malloc keeps freed blocks for the next step instead of returning them to the
//! // system (which made every step pay a page fault per 4 KiB it wrote).
//! let kept = burn_transfer::kernels::reuse_freed_memory();
//! # let _ = (joined, kept);
//! ```
//!
//! Both return whether they took effect (`false` without the feature, on another
//! allocator, or when rayon's pool was already built). The kernels crate itself is
//! re-exported as [`cpu`] (with the feature) for models of your own: `cpu::conv::conv2d`,
//! `cpu::linear::linear`, `cpu::pool::max_pool2d` take burn's layers as they are.

use crate::error::Result;
#[cfg(feature = "cpu-kernels")]
use crate::error::TransferError;
use crate::freeze::FrozenNorm;
use burn::module::AutodiffModule;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, LayerNorm, Linear};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

#[cfg(feature = "cpu-kernels")]
pub use burn_cpu_kernels as cpu;

/// Makes the calling thread one of rayon's (see the [module docs](self)); call it once, at
/// the start of `main`, from the thread that trains. Returns whether it did.
pub fn join_compute_pool() -> bool {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::threads::join_compute_pool();
    #[cfg(not(feature = "cpu-kernels"))]
    false
}

/// Keeps glibc's freed memory in the process for the next training step (see the
/// [module docs](self)); call it once, before training. Returns whether the setting took.
pub fn reuse_freed_memory() -> bool {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::allocator::reuse_freed_memory();
    #[cfg(not(feature = "cpu-kernels"))]
    false
}

/// `layer.forward(x)` for `[..., d_input]` rows (any rank).
pub(crate) fn linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::linear::linear(layer, x);
    #[cfg(not(feature = "cpu-kernels"))]
    layer.forward(x)
}

/// `relu(layer.forward(x))` for `[..., d_input]` rows (any rank).
pub(crate) fn linear_relu<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::linear::linear_relu(layer, x);
    #[cfg(not(feature = "cpu-kernels"))]
    burn::tensor::activation::relu(layer.forward(x))
}

/// Multi-head attention `[batch, sq, width]` from projected `q`, `k`, `v` (`k`, `v`
/// `[batch, sk, width]`), an additive bias per key `[batch, sk]` (no gradient), dropout `p`
/// on the probabilities in training, and, when `causal`, query `i` attending to keys up to
/// `i + sk − sq` (a decoder after `sk − sq` cached positions): one fused operation on the
/// CPU backends.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    key_bias: Option<Tensor<B, 2>>,
    heads: usize,
    dropout: f64,
    causal: bool,
) -> Tensor<B, 3> {
    #[cfg(feature = "cpu-kernels")]
    {
        use burn_cpu_kernels::attention::{AttentionOptions, attention};
        let options = AttentionOptions::new(heads)
            .with_dropout(dropout)
            .with_causal(causal);
        attention(q, k, v, key_bias, options)
    }
    #[cfg(not(feature = "cpu-kernels"))]
    {
        let [batch, sq, width] = q.dims();
        let sk = k.dims()[1];
        let d = width / heads;
        let split = |x: Tensor<B, 3>, s: usize| x.reshape([batch, s, heads, d]).swap_dims(1, 2);
        let scores = split(q, sq).matmul(split(k, sk).swap_dims(2, 3)) / (d as f64).sqrt();
        let scores = if causal {
            let future = future_keys::<B>(sq, sk, &scores.device());
            scores.mask_fill(future, f32::NEG_INFINITY)
        } else {
            scores
        };
        let probs = attention_softmax(scores, key_bias);
        let probs = burn::nn::DropoutConfig::new(dropout).init().forward(probs);
        probs
            .matmul(split(v, sk))
            .swap_dims(1, 2)
            .reshape([batch, sq, width])
    }
}

/// Multi-head attention written with tensor operations, keeping the probabilities
/// `[batch, heads, sq, sk]` (and their gradient, for distilling attention maps): what a model
/// computes when asked for its maps; the same arguments as [`attention`], with burn's
/// `Dropout` on the probabilities.
pub(crate) fn attention_with_probabilities<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    key_bias: Option<Tensor<B, 2>>,
    heads: usize,
    dropout_layer: &burn::nn::Dropout,
    causal: bool,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [batch, sq, width] = q.dims();
    let sk = k.dims()[1];
    let d = width / heads;
    let split = |x: Tensor<B, 3>, s: usize| x.reshape([batch, s, heads, d]).swap_dims(1, 2);
    // The scale on the queries (`[batch, heads, sq, d]`) rather than on the scores (`sk`
    // times as many values when `sk` exceeds `d`), as PyTorch's scaled dot-product attention
    // does; the same up to rounding.
    let q = split(q, sq) / (d as f64).sqrt();
    let scores = q.matmul(split(k, sk).swap_dims(2, 3));
    let scores = if causal {
        let future = future_keys::<B>(sq, sk, &scores.device());
        scores.mask_fill(future, f32::NEG_INFINITY)
    } else {
        scores
    };
    let probs = attention_softmax(scores, key_bias);
    let context = dropout(dropout_layer, probs.clone())
        .matmul(split(v, sk))
        .swap_dims(1, 2)
        .reshape([batch, sq, width]);
    (context, probs)
}

/// `[1, 1, sq, sk]`, true where key `j` lies in the future of query `i` (`j > i + sk − sq`:
/// the queries are the last `sq` of `sk` positions, as after a key/value cache), for causal
/// attention written with tensor operations.
pub(crate) fn future_keys<B: Backend>(
    sq: usize,
    sk: usize,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let future: Vec<bool> = (0..sq)
        .flat_map(|i| (0..sk).map(move |j| j + sq > i + sk))
        .collect();
    Tensor::from_data(TensorData::new(future, [1, 1, sq, sk]), device)
}

/// burn's `Dropout` (the identity outside training).
pub(crate) fn dropout<B: Backend, const D: usize>(
    layer: &burn::nn::Dropout,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::dropout::dropout(layer, x);
    #[cfg(not(feature = "cpu-kernels"))]
    layer.forward(x)
}

/// burn's exact `gelu(x)`.
pub(crate) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::activation::gelu(x);
    #[cfg(not(feature = "cpu-kernels"))]
    burn::tensor::activation::gelu(x)
}

/// burn's `gelu_approximate(x)` (GELU's tanh approximation, GPT-2's `gelu_new`).
pub(crate) fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::activation::gelu_tanh(x);
    #[cfg(not(feature = "cpu-kernels"))]
    burn::tensor::activation::gelu_approximate(x)
}

/// `layer.forward(x)` for burn's `LayerNorm` over the last dimension, built with `epsilon`
/// (burn keeps the layer's own private).
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    layer: &LayerNorm<B>,
    epsilon: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::norm::layer_norm(layer, epsilon, x);
    #[cfg(not(feature = "cpu-kernels"))]
    {
        let _ = epsilon;
        layer.forward(x)
    }
}

/// Attention's `softmax(scores + key_bias[:, None, None, :], 3)` over `[batch, heads,
/// queries, keys]` scores, `key_bias` `[batch, keys]` (no gradient reaches it).
pub(crate) fn attention_softmax<B: Backend>(
    scores: Tensor<B, 4>,
    key_bias: Option<Tensor<B, 2>>,
) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::softmax::softmax_with_key_bias(scores, key_bias);
    #[cfg(not(feature = "cpu-kernels"))]
    {
        let scores = match key_bias {
            Some(bias) => {
                let [batch, keys] = bias.dims();
                scores + bias.reshape([batch, 1, 1, keys])
            }
            None => scores,
        };
        burn::tensor::activation::softmax(scores, 3)
    }
}

/// What follows a batch norm (and a residual sum) in [`batch_norm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NormActivation {
    /// Nothing.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

/// `activation(layer.forward(x) + residual)` for burn's `BatchNorm` over NCHW maps: one
/// pass forward (and its own backward) on the CPU backends, where the norm is otherwise
/// about fifteen recorded operations on a CNN's largest tensors.
///
/// A norm whose scale and shift are both frozen, in training, follows `frozen`: with
/// [`FrozenNorm::RunningStatistics`] it normalises with its running statistics and leaves
/// them unchanged (see [`FrozenNorm`] for why), otherwise as burn's does.
pub(crate) fn batch_norm<B: Backend>(
    layer: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Option<Tensor<B, 4>>,
    activation: NormActivation,
    frozen: FrozenNorm,
) -> Tensor<B, 4> {
    if frozen == FrozenNorm::RunningStatistics
        && B::ad_enabled(&x.device())
        && !layer.gamma.is_require_grad()
        && !layer.beta.is_require_grad()
    {
        return running_batch_norm(layer, x, residual, activation);
    }
    #[cfg(feature = "cpu-kernels")]
    {
        use burn_cpu_kernels::batch_norm::{NormActivation as Kernel, batch_norm};
        let activation = match activation {
            NormActivation::Identity => Kernel::Identity,
            NormActivation::Relu => Kernel::Relu,
            NormActivation::Relu6 => Kernel::Relu6,
        };
        batch_norm(layer, x, residual, activation)
    }
    #[cfg(not(feature = "cpu-kernels"))]
    residual_activation(layer.forward(x), residual, activation)
}

/// `activation(y + residual)` with burn's operations.
fn residual_activation<B: Backend>(
    y: Tensor<B, 4>,
    residual: Option<Tensor<B, 4>>,
    activation: NormActivation,
) -> Tensor<B, 4> {
    let y = match residual {
        Some(r) => y + r,
        None => y,
    };
    match activation {
        NormActivation::Identity => y,
        NormActivation::Relu => burn::tensor::activation::relu(y),
        NormActivation::Relu6 => y.clamp(0.0, 6.0),
    }
}

/// The norm with its running statistics, as in inference, inside a training graph: a
/// per-channel affine map of `x` (constants: nothing flows back to the norm's parameters or
/// statistics), then the residual and the activation.
fn running_batch_norm<B: Backend>(
    layer: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Option<Tensor<B, 4>>,
    activation: NormActivation,
) -> Tensor<B, 4> {
    let channels = layer.gamma.dims()[0];
    // `value_sync`: updates made while the norm trained (before it was frozen) count, as
    // they do in the inference model (`valid()` syncs); `value()` may miss the last one.
    let mean = layer.running_mean.value_sync().detach();
    let var = layer.running_var.value_sync().detach();
    let scale = layer.gamma.val().detach() / var.add_scalar(layer.epsilon).sqrt();
    let shift = layer.beta.val().detach() - mean * scale.clone();
    let y = x * scale.reshape([1, channels, 1, 1]) + shift.reshape([1, channels, 1, 1]);
    residual_activation(y, residual, activation)
}

/// `layer.forward(x)` for a 2-D convolution (NCHW).
pub(crate) fn conv2d<B: Backend>(layer: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::conv::conv2d(layer, x);
    #[cfg(not(feature = "cpu-kernels"))]
    layer.forward(x)
}

/// `layer.forward(x)` for 2-D max pooling (NCHW).
pub(crate) fn max_pool2d<B: Backend>(layer: &MaxPool2d, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::pool::max_pool2d(layer, x);
    #[cfg(not(feature = "cpu-kernels"))]
    layer.forward(x)
}

/// The constants of Hinton's KD term mixed with cross-entropy.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "cpu-kernels"), allow(dead_code))]
pub(crate) struct KdCeWeights {
    /// Softmax temperature `T`.
    pub temperature: f64,
    /// Weight of the KD term.
    pub kd_weight: f64,
    /// Weight of the CE term (unused without labels).
    pub ce_weight: f64,
    /// Label smoothing of the CE term.
    pub smoothing: f64,
}

/// `[w_kd·KD, w_ce·CE]` as one operation where the kernels take it; `None` where the
/// caller computes the terms with tensor operations (other backends, element types, and
/// always without the feature). Labels outside the classes are an error.
pub(crate) fn kd_ce<B: Backend>(
    weights: KdCeWeights,
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    labels: Option<Tensor<B, 1, Int>>,
) -> Option<Result<Tensor<B, 1>>> {
    #[cfg(feature = "cpu-kernels")]
    {
        use burn_cpu_kernels::{KernelError, kd_ce};
        let constants = kd_ce::KdCe {
            temperature: weights.temperature,
            kd_weight: weights.kd_weight,
            ce_weight: weights.ce_weight,
            smoothing: weights.smoothing,
        };
        kd_ce::weighted_terms(constants, student, teacher, labels).map(|terms| {
            terms.map_err(|e| match e {
                KernelError::Labels(message) => TransferError::BatchShape(message),
                other => TransferError::BatchShape(other.to_string()),
            })
        })
    }
    #[cfg(not(feature = "cpu-kernels"))]
    {
        let _ = (weights, student, teacher, labels);
        None::<Result<Tensor<B, 1>>>
    }
}

/// How LoRA's factors `A` `[r, fan_in]` and `B` `[fan_out, r]` (PEFT's layouts) map onto a
/// weight seen as a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoraOrientation {
    /// `W [fan_in, fan_out] = W0 + s·Aᵀ·Bᵀ` (burn's `Linear` and `Embedding`).
    Transposed,
    /// `W [fan_out, fan_in] = W0 + s·B·A` (a convolution, flattened per output channel).
    Direct,
}

/// LoRA's effective weight `W0 + scale·ΔW`, with gradients reaching `a` and `b` (and `w0`,
/// should it be trainable).
pub(crate) fn lora_weight<B: Backend>(
    w0: Tensor<B, 2>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scale: f64,
    orientation: LoraOrientation,
) -> Tensor<B, 2> {
    #[cfg(feature = "cpu-kernels")]
    {
        use burn_cpu_kernels::lora_weight::{Orientation, effective_weight};
        let orientation = match orientation {
            LoraOrientation::Transposed => Orientation::Transposed,
            LoraOrientation::Direct => Orientation::Direct,
        };
        effective_weight(w0, a, b, scale, orientation)
    }
    #[cfg(not(feature = "cpu-kernels"))]
    {
        let delta = match orientation {
            LoraOrientation::Transposed => a.transpose().matmul(b.transpose()),
            LoraOrientation::Direct => b.matmul(a),
        };
        w0 + delta.mul_scalar(scale)
    }
}

/// The AdamW the trainer uses: fused into one pass per parameter with the feature, burn's
/// otherwise. Both keep burn's `AdamWState`, so checkpoints move between the two.
#[cfg(feature = "cpu-kernels")]
pub(crate) type AdamW = burn_cpu_kernels::adamw::FusedAdamW;
/// The AdamW the trainer uses: burn's (the feature `cpu-kernels` fuses it).
#[cfg(not(feature = "cpu-kernels"))]
pub(crate) type AdamW = burn::optim::AdamW;

/// AdamW with decoupled `weight_decay`, moment decays `beta_1`, `beta_2` and `epsilon`.
pub(crate) fn adamw<B: AutodiffBackend, M: AutodiffModule<B>>(
    weight_decay: f32,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
) -> OptimizerAdaptor<AdamW, M, B> {
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::adamw::FusedAdamW::new(weight_decay, beta_1, beta_2, epsilon).init();
    #[cfg(not(feature = "cpu-kernels"))]
    burn::optim::AdamWConfig::new()
        .with_weight_decay(weight_decay)
        .with_beta_1(beta_1)
        .with_beta_2(beta_2)
        .with_epsilon(epsilon)
        .init()
}

/// The SGD the trainer uses: fused into one pass per parameter with the feature, burn's
/// otherwise. Both keep the record of burn's `SgdState`, so checkpoints move between the two.
#[cfg(feature = "cpu-kernels")]
pub(crate) type Sgd<M, B> = OptimizerAdaptor<burn_cpu_kernels::sgd::FusedSgd, M, B>;
/// The SGD the trainer uses: burn's (the feature `cpu-kernels` fuses it).
#[cfg(not(feature = "cpu-kernels"))]
pub(crate) type Sgd<M, B> =
    OptimizerAdaptor<burn::optim::Sgd<<B as AutodiffBackend>::InnerBackend>, M, B>;

/// SGD with PyTorch's undampened `momentum` (none when 0), Nesterov or not, and an L2
/// `weight_decay` added to the gradient (none when 0).
pub(crate) fn sgd<B: AutodiffBackend, M: AutodiffModule<B>>(
    momentum: f64,
    nesterov: bool,
    weight_decay: f32,
) -> Sgd<M, B> {
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::momentum::MomentumConfig;
    let momentum = (momentum > 0.0).then(|| {
        MomentumConfig::new()
            .with_momentum(momentum)
            .with_dampening(0.0)
            .with_nesterov(nesterov)
    });
    let decay = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay));
    #[cfg(feature = "cpu-kernels")]
    return burn_cpu_kernels::sgd::FusedSgd::new(momentum.as_ref(), decay.as_ref()).init();
    #[cfg(not(feature = "cpu-kernels"))]
    burn::optim::SgdConfig::new()
        .with_momentum(momentum)
        .with_weight_decay(decay)
        .init()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    /// Whichever way the feature is set, LoRA's weight is `W0 + s·ΔW` with PEFT's layouts.
    #[test]
    fn lora_weight_is_the_base_plus_the_scaled_product() {
        let device = Default::default();
        let random = |dims: [usize; 2]| {
            Tensor::<A, 2>::random(dims, Distribution::Normal(0.0, 1.0), &device)
        };
        let (a, b) = (random([2, 5]), random([3, 2]));
        let transposed = lora_weight(
            random([5, 3]).mul_scalar(0.0),
            a.clone(),
            b.clone(),
            0.5,
            LoraOrientation::Transposed,
        );
        let expected = a
            .clone()
            .transpose()
            .matmul(b.clone().transpose())
            .mul_scalar(0.5);
        transposed
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        let direct = lora_weight(
            random([3, 5]).mul_scalar(0.0),
            a.clone(),
            b.clone(),
            2.0,
            LoraOrientation::Direct,
        );
        let expected = b.matmul(a).mul_scalar(2.0);
        direct
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
    }

    /// The layers give burn's values with or without the kernels.
    #[test]
    fn layers_give_burns_values() {
        let device = Default::default();
        let layer = LinearConfig::new(6, 4).init::<A>(&device);
        let x = Tensor::<A, 2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
        linear_relu(&layer, x.clone())
            .into_data()
            .assert_approx_eq::<f32>(
                &burn::tensor::activation::relu(layer.forward(x)).into_data(),
                Tolerance::absolute(1e-5),
            );
    }
}
