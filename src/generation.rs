//! Choosing tokens when a language model continues prompts: greedy decoding or sampling
//! with temperature, top-k and top-p, seeded, stopping at an end token or a length.
//!
//! The order of the sampling filters is transformers': temperature, then top-k, then top-p.
//! `CausalLm::generate` (in [`task`](crate::task)) continues prompts with any causal LM
//! through [`GenerationConfig`]; GPT-2 does it with its key/value cache.

use crate::error::{Result, TransferError};
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How a language model continues prompts (transformers' `GenerationConfig`). A
/// burn `Config`, saved and loaded as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Most tokens to add to each prompt.
    pub max_new_tokens: usize,
    /// Sample from the (filtered) distribution; `false` takes the most likely token.
    pub do_sample: bool,
    /// Logits are divided by it before sampling (below 1 sharpens, above 1 flattens).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (ties with the `k`-th kept too), if set.
    pub top_k: Option<usize>,
    /// Keep the most likely tokens whose probabilities sum to at least `p`, if set.
    pub top_p: Option<f64>,
    /// Seed of the sampler: the same seed, model and prompts give the same tokens.
    pub seed: u64,
    /// The token that ends a row; `None` takes the model's own (GPT-2's `eos_token_id`), or
    /// none for a model without one.
    pub eos_token_id: Option<u32>,
    /// The token that pads prompts and finished rows; `None` takes the end-of-text token
    /// (GPT-2 has no padding token), or 0 without one. Padding is masked: its value does
    /// not change the result.
    pub pad_token_id: Option<u32>,
}

impl burn::config::Config for GenerationConfig {}

impl GenerationConfig {
    /// The most likely token at every step, at most `max_new_tokens` of them.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            do_sample: false,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
            eos_token_id: None,
            pad_token_id: None,
        }
    }

    /// Sampling at `temperature` with `seed`, no top-k or top-p filter (add them with
    /// [`with_top_k`](Self::with_top_k), [`with_top_p`](Self::with_top_p)).
    pub fn sampling(max_new_tokens: usize, temperature: f64, seed: u64) -> Self {
        Self {
            do_sample: true,
            temperature,
            seed,
            ..Self::greedy(max_new_tokens)
        }
    }

    /// Keeps only the `k` most likely tokens when sampling.
    pub fn with_top_k(self, k: usize) -> Self {
        Self {
            top_k: Some(k),
            ..self
        }
    }

    /// Nucleus sampling: keeps the most likely tokens that together hold probability `p`.
    pub fn with_top_p(self, p: f64) -> Self {
        Self {
            top_p: Some(p),
            ..self
        }
    }

    /// Stops a row at `id` instead of the model's end-of-text token.
    pub fn with_eos_token_id(self, id: u32) -> Self {
        Self {
            eos_token_id: Some(id),
            ..self
        }
    }

    /// Checks the values: at least one new token, a finite positive temperature, `k ≥ 1`,
    /// `0 < p ≤ 1`.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(TransferError::config(
                "max_new_tokens",
                0,
                "generate at least one token",
            ));
        }
        if self.do_sample && !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(TransferError::config(
                "temperature",
                self.temperature,
                "must be finite and > 0 when sampling (use greedy decoding for the argmax)",
            ));
        }
        if self.top_k == Some(0) {
            return Err(TransferError::config(
                "top_k",
                0,
                "keep at least one token (or None for no top-k filter)",
            ));
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(TransferError::config("top_p", p, "must be in (0, 1]"));
        }
        Ok(())
    }

    /// The next token from one row's logits.
    pub(crate) fn choose(&self, logits: &[f32], rng: &mut StdRng) -> u32 {
        if !self.do_sample {
            return argmax(logits);
        }
        let probs = self.filtered_probabilities(logits);
        let mut u = rng.random::<f64>();
        let mut last = 0;
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                last = i;
                if u < p {
                    return i as u32;
                }
                u -= p;
            }
        }
        // Rounding left `u` above the summed probabilities: the last kept token.
        last as u32
    }

    /// The sampling distribution after temperature, top-k and top-p: zero for every token
    /// a filter removed, summing to 1. A NaN logit counts as −∞.
    fn filtered_probabilities(&self, logits: &[f32]) -> Vec<f64> {
        let mut scores: Vec<f64> = logits
            .iter()
            .map(|&l| {
                if l.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    l as f64 / self.temperature
                }
            })
            .collect();
        if let Some(k) = self.top_k.filter(|&k| k < scores.len()) {
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            scores
                .iter_mut()
                .filter(|s| **s < kth)
                .for_each(|s| *s = f64::NEG_INFINITY);
        }
        let mut probs = softmax(&scores);
        if let Some(p) = self.top_p.filter(|&p| p < 1.0) {
            // transformers' rule: in ascending order, drop tokens while the mass up to and
            // including them is at most 1 − p; the most likely token always stays.
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
            let mut mass = 0.0;
            for &i in &order[..order.len() - 1] {
                mass += probs[i];
                if mass > 1.0 - p {
                    break;
                }
                probs[i] = 0.0;
            }
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|q| *q /= total);
        }
        probs
    }
}

/// The index of the largest logit (the first of ties, as `torch.argmax`); NaN never wins.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// `exp(s − max) / Σ` in f64; all −∞ gives a uniform distribution rather than NaN.
fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return vec![1.0 / scores.len() as f64; scores.len()];
    }
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// Continues each prompt with `model`, running the sequences again for every new token (no
/// cache: what any causal LM can do). Prompts of the same length run as one batch, so
/// no padding is ever needed; tokens are drawn row by row at each step, so one batch of
/// prompts draws in the same order as GPT-2's cached generation. Returns the new tokens of
/// each row, up to and including the config's end token where a row reached it.
///
/// `next_token_logits` is the model's (ids and mask → logits `[rows, len, vocab]`).
pub(crate) fn generate_by_recompute<B: Backend>(
    next_token_logits: impl Fn(Tensor<B, 2, Int>, Tensor<B, 2, Int>) -> Result<Tensor<B, 3>>,
    vocab: usize,
    device: &B::Device,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    config.validate()?;
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(TransferError::BatchShape(
            "generation needs at least one prompt, each of at least one token".into(),
        ));
    }
    if let Some(&id) = prompts.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(TransferError::BatchShape(format!(
            "prompt token {id} is outside the vocabulary of {vocab}"
        )));
    }
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (row, prompt) in prompts.iter().enumerate() {
        groups.entry(prompt.len()).or_default().push(row);
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut out = vec![Vec::new(); prompts.len()];
    for (width, rows) in groups {
        let mut ids: Vec<Vec<i64>> = rows
            .iter()
            .map(|&r| prompts[r].iter().map(|&t| t as i64).collect())
            .collect();
        let mut done = vec![false; rows.len()];
        for step in 0..config.max_new_tokens {
            let len = width + step;
            let flat: Vec<i64> = ids.iter().flatten().copied().collect();
            let input =
                Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [rows.len(), len]), device);
            let logits = next_token_logits(input.clone(), input.ones_like())?;
            let last = logits
                .slice([0..rows.len(), len - 1..len])
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| {
                    TransferError::BatchShape(format!("logits could not be read back: {e:?}"))
                })?;
            for (k, &row) in rows.iter().enumerate() {
                // A finished row keeps a placeholder token: under causal attention it
                // changes nothing for the other rows, and its own output is complete.
                let token = if done[k] {
                    0
                } else {
                    let token = config.choose(&last[k * vocab..(k + 1) * vocab], &mut rng);
                    out[row].push(token);
                    done[k] = Some(token) == config.eos_token_id;
                    token
                };
                ids[k].push(token as i64);
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(config: &GenerationConfig, logits: &[f32], n: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut counts = vec![0; logits.len()];
        for _ in 0..n {
            counts[config.choose(logits, &mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_takes_the_first_largest_and_never_nan() {
        assert_eq!(argmax(&[0.5, 2.0, 2.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0, 0.0]), 1);
        let config = GenerationConfig::greedy(1);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(config.choose(&[0.0, 3.0, 1.0], &mut rng), 1);
    }

    /// The filters keep exactly the tokens transformers' `TopKLogitsWarper` and
    /// `TopPLogitsWarper` keep, and what is kept is renormalised.
    #[test]
    fn top_k_and_top_p_keep_what_transformers_keeps() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, 0.0];
        let kept = |c: &GenerationConfig| -> Vec<usize> {
            let p = c.filtered_probabilities(&logits);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            (0..p.len()).filter(|&i| p[i] > 0.0).collect()
        };
        let base = GenerationConfig::sampling(1, 1.0, 0);
        assert_eq!(kept(&base), vec![0, 1, 2, 3, 4]);
        assert_eq!(kept(&base.clone().with_top_k(1)), vec![1, 3]); // a tie with the 1st
        assert_eq!(kept(&base.clone().with_top_k(3)), vec![1, 2, 3]);
        // softmax ≈ [0.053, 0.392, 0.144, 0.392, 0.019]: 1 and 3 hold 0.78 together.
        assert_eq!(kept(&base.clone().with_top_p(0.5)), vec![1, 3]);
        assert_eq!(kept(&base.clone().with_top_p(0.8)), vec![1, 2, 3]);
        assert_eq!(kept(&base.clone().with_top_p(1e-9)), vec![3]);
        let p = base.clone().with_top_k(3).filtered_probabilities(&logits);
        let e = [(3f64).exp(), (2f64).exp(), (3f64).exp()];
        let z: f64 = e.iter().sum();
        assert!((p[2] - e[1] / z).abs() < 1e-12);
    }

    /// Seeded sampling is reproducible, draws in proportion to the probabilities, and a low
    /// temperature concentrates on the argmax.
    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let logits = [0.0f32, (2.0f32).ln(), (3.0f32).ln(), f32::NAN];
        let config = GenerationConfig::sampling(1, 1.0, 7);
        let counts = draws(&config, &logits, 60_000);
        assert_eq!(counts, draws(&config, &logits, 60_000));
        assert_eq!(counts[3], 0);
        for (i, share) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].iter().enumerate() {
            let observed = counts[i] as f64 / 60_000.0;
            // Six standard deviations of a binomial share at n = 60 000: ≤ 0.0122.
            assert!(
                (observed - share).abs() < 0.0122,
                "token {i}: {observed} vs {share}"
            );
        }
        let cold = draws(&GenerationConfig::sampling(1, 0.01, 7), &logits, 1000);
        assert_eq!(cold[2], 1000);
    }

    #[test]
    fn invalid_settings_are_refused() {
        for (config, what) in [
            (GenerationConfig::greedy(0), "max_new_tokens"),
            (GenerationConfig::sampling(4, 0.0, 0), "temperature"),
            (GenerationConfig::sampling(4, f64::NAN, 0), "temperature"),
            (GenerationConfig::sampling(4, 1.0, 0).with_top_k(0), "top_k"),
            (
                GenerationConfig::sampling(4, 1.0, 0).with_top_p(1.5),
                "top_p",
            ),
            (
                GenerationConfig::sampling(4, 1.0, 0).with_top_p(0.0),
                "top_p",
            ),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{err}");
        }
    }
}
