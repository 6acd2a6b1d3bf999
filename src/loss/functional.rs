//! The distillation terms as plain functions on logits and hidden states.
//!
//! Every softmax-based term is computed from `log_softmax` (never `log(softmax)`), so it
//! stays finite for large logits. Teacher tensors are constants: pass them lifted from the
//! inner backend (`Tensor::from_inner`) or detached.

use crate::error::{Result, TransferError};
use crate::exact::{self, log_softmax};
use burn::prelude::*;

/// Hinton's KD term: `T² · KL(softmax(t/T) ‖ softmax(s/T))`, mean over the batch (PyTorch's
/// `F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") * T²`).
///
/// The `T²` factor keeps the soft targets' gradient magnitude comparable across
/// temperatures. Both inputs are `[batch, classes]`.
pub fn kd_kl<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [batch, _] = student.dims();
    per_row_kl(student, teacher, temperature)
        .sum()
        .mul_scalar(temperature * temperature / batch as f64)
}

/// `KL(softmax(t/T) ‖ softmax(s/T))` for each row: `[rows]`.
pub(crate) fn per_row_kl<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    temperature: f64,
) -> Tensor<B, 1> {
    let log_p_s = log_softmax(student.div_scalar(temperature), 1);
    let log_p_t = log_softmax(teacher.div_scalar(temperature), 1);
    let p_t = log_p_t.clone().exp();
    (p_t * (log_p_t - log_p_s)).sum_dim(1).flatten(0, 1)
}

/// Token-level KD for sequence models: logits `[batch, seq, vocab]` and an optional
/// `attention_mask` `[batch, seq]` in Hugging Face's convention — 1 for a token, 0 for
/// padding, as a tokenizer returns it. Returns `T²` × the mean of the per-token
/// `KL(softmax(t/T) ‖ softmax(s/T))` over the tokens (all positions without a mask).
pub fn kd_kl_tokens<B: Backend>(
    student: Tensor<B, 3>,
    teacher: Tensor<B, 3>,
    attention_mask: Option<Tensor<B, 2, Int>>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [batch, seq, vocab] = student.dims();
    let kl = per_row_kl(
        student.reshape([batch * seq, vocab]),
        teacher.reshape([batch * seq, vocab]),
        temperature,
    );
    token_mean(kl, attention_mask).mul_scalar(temperature * temperature)
}

/// Token-level KD against a *sparse* teacher (a top-k cache): per position the teacher's
/// `k` most likely tokens `indices` `[batch, seq, k]` with their log-probabilities at
/// temperature `T` `teacher_log_probs` `[batch, seq, k]`, and the log of the probability
/// left to every other token `teacher_tail` `[batch, seq]` (`-inf`, or any value below
/// −10⁴, when nothing is left). The rest of the vocabulary is one bucket on both sides:
/// the term is `T²` × the mean over the tokens (mask as [`kd_kl_tokens`]) of the KL between
/// the `(k + 1)`-bucket distributions `(p_t(top-k), tail_t)` and `(p_s(top-k), tail_s)`,
/// with `tail_s = 1 − Σ_top-k p_s`. With `k` equal to the vocabulary it is
/// [`kd_kl_tokens`].
pub fn kd_kl_topk_tokens<B: Backend>(
    student: Tensor<B, 3>,
    indices: Tensor<B, 3, Int>,
    teacher_log_probs: Tensor<B, 3>,
    teacher_tail: Tensor<B, 2>,
    attention_mask: Option<Tensor<B, 2, Int>>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [batch, seq, _] = student.dims();
    let k = indices.dims()[2];
    let log_ps = log_softmax(student.div_scalar(temperature), 2);
    let top_s = log_ps.gather(2, indices).reshape([batch * seq, k]);
    let top_t = teacher_log_probs.reshape([batch * seq, k]);
    // A tail of exactly nothing (k = vocabulary) stays finite: its probability is 0 and
    // so is its term, whatever the student's tail.
    let tail_t = teacher_tail.reshape([batch * seq, 1]).clamp_min(-1e4);
    let tail_s = top_s
        .clone()
        .exp()
        .sum_dim(1)
        .neg()
        .add_scalar(1.0)
        .clamp_min(1e-12);
    let tail_s = exact::log(tail_s);
    let kl_top = (top_t.clone().exp() * (top_t - top_s)).sum_dim(1);
    let kl_tail = tail_t.clone().exp() * (tail_t - tail_s);
    let kl = (kl_top + kl_tail).reshape([batch * seq]);
    token_mean(kl, attention_mask).mul_scalar(temperature * temperature)
}

/// The generalized Jensen–Shannon divergence of GKD (Agarwal et al., 2024; TRL's
/// `GKDTrainer`) between teacher and student token distributions at temperature `T`:
/// `β·KL(p_t ‖ m) + (1 − β)·KL(p_s ‖ m)` with the mixture `m = β·p_t + (1 − β)·p_s`, which
/// vanishes at both ends, so `β = 0` is the forward `KL(p_t ‖ p_s)` (plain token KD without
/// `T²`) and `β = 1` the reverse `KL(p_s ‖ p_t)` (mode-seeking: the student keeps to what the
/// teacher finds likely), as TRL defines them. Logits `[batch, seq, vocab]`, mask as
/// [`kd_kl_tokens`]; the mean is over the tokens. `β` must lie in `[0, 1]`.
pub fn generalized_jsd_tokens<B: Backend>(
    student: Tensor<B, 3>,
    teacher: Tensor<B, 3>,
    attention_mask: Option<Tensor<B, 2, Int>>,
    beta: f64,
    temperature: f64,
) -> Tensor<B, 1> {
    let [batch, seq, vocab] = student.dims();
    let log_p = |logits: Tensor<B, 3>| {
        log_softmax(
            logits.reshape([batch * seq, vocab]).div_scalar(temperature),
            1,
        )
    };
    let (log_s, log_t) = (log_p(student), log_p(teacher));
    let per_token = if beta <= 0.0 {
        kl_rows(log_t, log_s)
    } else if beta >= 1.0 {
        kl_rows(log_s, log_t)
    } else {
        // log m = log(β·p_t + (1 − β)·p_s), from the log-probabilities without leaving
        // log space (shifted by the larger term, as a log-sum-exp).
        let a = log_t.clone().add_scalar(beta.ln());
        let b = log_s.clone().add_scalar((1.0 - beta).ln());
        let top = a.clone().max_pair(b.clone()).detach();
        let log_m = exact::log((a - top.clone()).exp() + (b - top.clone()).exp()) + top;
        kl_rows(log_t, log_m.clone()).mul_scalar(beta)
            + kl_rows(log_s, log_m).mul_scalar(1.0 - beta)
    };
    token_mean(per_token, attention_mask)
}

/// `KL(p ‖ q)` for each row of log-probabilities `[rows, vocab]`: `[rows]`.
fn kl_rows<B: Backend>(log_p: Tensor<B, 2>, log_q: Tensor<B, 2>) -> Tensor<B, 1> {
    (log_p.clone().exp() * (log_p - log_q))
        .sum_dim(1)
        .flatten(0, 1)
}

/// The mean of per-token values `[batch · seq]` over the tokens whose mask is non-zero
/// (every position without a mask); a batch of padding alone gives 0.
fn token_mean<B: Backend>(
    values: Tensor<B, 1>,
    attention_mask: Option<Tensor<B, 2, Int>>,
) -> Tensor<B, 1> {
    match attention_mask {
        None => values.mean(),
        Some(mask) => {
            let [batch, seq] = mask.dims();
            let keep = mask.not_equal_elem(0).float().reshape([batch * seq]);
            let count = keep.clone().sum().clamp_min(1.0);
            (values * keep).sum().div(count)
        }
    }
}

/// Cross-entropy with optional label smoothing, mean over the batch (PyTorch's
/// `F.cross_entropy(..., label_smoothing=ε)`: targets `(1-ε)·onehot + ε/classes`).
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    smoothing: f32,
) -> Tensor<B, 1> {
    let [batch, classes] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let picked = log_p.clone().gather(1, labels.reshape([batch, 1])).sum();
    let nll = picked.neg().div_scalar(batch as f64);
    if smoothing == 0.0 {
        return nll;
    }
    let uniform = log_p.sum().neg().div_scalar((batch * classes) as f64);
    nll.mul_scalar(1.0 - smoothing as f64) + uniform.mul_scalar(smoothing as f64)
}

/// Mean squared difference of all elements (logit matching).
pub fn mse<B: Backend, const D: usize>(
    student: Tensor<B, D>,
    teacher: Tensor<B, D>,
) -> Tensor<B, 1> {
    (student - teacher).powi_scalar(2).mean()
}

/// DistilBERT's cosine term: the mean over rows of `1 - cos(h_s, h_t)` for `[rows, dim]`.
pub fn cosine_distance<B: Backend>(student: Tensor<B, 2>, teacher: Tensor<B, 2>) -> Tensor<B, 1> {
    // PyTorch's cosine_embedding_loss adds 1e-12 to each squared norm.
    let dot = (student.clone() * teacher.clone()).sum_dim(1);
    let ns = student.powi_scalar(2).sum_dim(1).add_scalar(1e-12);
    let nt = teacher.powi_scalar(2).sum_dim(1).add_scalar(1e-12);
    let cos = exact::div(dot, (ns * nt).sqrt());
    cos.neg().add_scalar(1.0).mean()
}

/// Attention transfer (Zagoruyko & Komodakis, 2017) between activation maps
/// `[batch, channels, positions]`: each map becomes the L2-normalised vector of
/// `Σ_c |A_c|^2` over positions; the term is the mean over the batch of the squared
/// distance between student and teacher vectors. Channel counts may differ; positions
/// must match.
pub fn attention_transfer<B: Backend>(
    student: Tensor<B, 3>,
    teacher: Tensor<B, 3>,
) -> Tensor<B, 1> {
    let q = |a: Tensor<B, 3>| {
        let [batch, _, positions] = a.dims();
        let m = a.powi_scalar(2).sum_dim(1).reshape([batch, positions]);
        let norm = m.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
        exact::div(m, norm)
    };
    (q(student) - q(teacher)).powi_scalar(2).sum_dim(1).mean()
}

/// Decoupled KD (Zhao et al., CVPR 2022): `α·TCKD + β·NCKD`, each `T²`-scaled and
/// batch-mean. TCKD is the KL between the binary (target vs rest) distributions of teacher
/// and student; NCKD the KL between their distributions over the non-target classes.
pub fn dkd<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    alpha: f64,
    beta: f64,
    temperature: f64,
) -> Tensor<B, 1> {
    let [batch, classes] = student.dims();
    let target = labels.one_hot::<2>(classes).equal_elem(1);
    let scale = temperature * temperature / batch as f64;

    // Binary distributions from log-sum-exps: log p(target) and log p(rest).
    let binary = |logits: Tensor<B, 2>| {
        let z = logits.div_scalar(temperature);
        let all = exact::logsumexp(z.clone(), 1);
        let tgt = exact::logsumexp(z.clone().mask_fill(target.clone().bool_not(), -1e9), 1);
        let rest = exact::logsumexp(z.mask_fill(target.clone(), -1e9), 1);
        Tensor::cat(vec![tgt - all.clone(), rest - all], 1)
    };
    let log_b_s = binary(student.clone());
    let log_b_t = binary(teacher.clone());
    let tckd = (log_b_t.clone().exp() * (log_b_t - log_b_s))
        .sum()
        .mul_scalar(scale);

    // Non-target distributions: the target logit pushed out of the softmax.
    let log_n_s = log_softmax(
        student
            .div_scalar(temperature)
            .mask_fill(target.clone(), -1e9),
        1,
    );
    let log_n_t = log_softmax(teacher.div_scalar(temperature).mask_fill(target, -1e9), 1);
    let nckd = (log_n_t.clone().exp() * (log_n_t - log_n_s))
        .sum()
        .mul_scalar(scale);

    tckd.mul_scalar(alpha) + nckd.mul_scalar(beta)
}

/// Mean next-token cross-entropy of `logits` `[batch, seq, vocab]` for the ids they were
/// computed from (the target of position `t` is the id at `t + 1`), over the targets whose
/// `attention_mask` is 1: transformers' loss with `labels = input_ids` and −100 at padding.
/// An error for shapes that disagree or a batch with no target.
pub fn causal_lm_loss<B: Backend>(
    logits: Tensor<B, 3>,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2, Int>,
) -> Result<Tensor<B, 1>> {
    let [batch, seq, vocab] = logits.dims();
    if input_ids.dims() != [batch, seq] || attention_mask.dims() != [batch, seq] {
        return Err(TransferError::BatchShape(format!(
            "logits {:?} need ids and mask of shape [{batch}, {seq}], got {:?} and {:?}",
            logits.dims(),
            input_ids.dims(),
            attention_mask.dims()
        )));
    }
    if seq < 2 {
        return Err(TransferError::BatchShape(
            "a causal LM loss needs sequences of at least two tokens".into(),
        ));
    }
    let scores = logits.slice([0..batch, 0..seq - 1, 0..vocab]);
    let targets = input_ids
        .slice([0..batch, 1..seq])
        .reshape([batch, seq - 1, 1]);
    let weights = attention_mask.slice([0..batch, 1..seq]).float();
    let count = weights.clone().sum().into_scalar().elem::<f64>();
    if count == 0.0 {
        return Err(TransferError::BatchShape(
            "the mask leaves no target token (every next position is padding)".into(),
        ));
    }
    let log_probs = log_softmax(scores, 2);
    let picked = log_probs.gather(2, targets).reshape([batch, seq - 1]);
    Ok((picked * weights).sum().neg().div_scalar(count))
}
