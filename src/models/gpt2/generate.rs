//! Text generation with the key/value cache: the tokens chosen as [`GenerationConfig`]
//! says. Prompts of different lengths are padded on the left and their positions counted
//! from each row's first real token, as transformers' `generate` does, so a row continues the
//! same way alone or in a batch.

use super::{Gpt2Input, Gpt2LmHeadModel, KeyValueCache, check_ids};
use crate::error::{Result, TransferError};
use crate::generation::GenerationConfig;
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

impl<B: Backend> Gpt2LmHeadModel<B> {
    /// Continues each prompt (token ids) and returns the new tokens of each row, up to and
    /// including the end-of-text token where a row reached it. Rows run as one batch with
    /// the key/value cache. Call it on an inference model (`model.valid()` of a trained
    /// one): on an autodiff backend it would record a graph nobody uses.
    ///
    /// An error for an empty prompt, an id outside the vocabulary, a prompt plus
    /// `max_new_tokens` longer than `n_positions`, or an invalid configuration.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        config.validate()?;
        let model_config = self.config();
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(TransferError::BatchShape(
                "generation needs at least one prompt, each of at least one token".into(),
            ));
        }
        check_ids(prompts, model_config.vocab_size)?;
        let eos = config.eos_token_id.or(model_config.eos_token_id);
        let pad = config.pad_token_id.or(eos).unwrap_or(0);
        check_ids(&[vec![pad]], model_config.vocab_size)?;
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if width + config.max_new_tokens > model_config.n_positions {
            return Err(TransferError::config(
                "max_new_tokens",
                config.max_new_tokens,
                &format!(
                    "the longest prompt ({width} tokens) plus the new tokens exceed n_positions {}",
                    model_config.n_positions
                ),
            ));
        }
        let device = self.transformer.wte.weight.device();
        let batch = prompts.len();
        let (ids, mask, positions) = left_padded(prompts, width, pad);
        let int = |v: Vec<i64>, len: usize| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, [batch, len]), &device)
        };
        let mut input = Gpt2Input::with_mask(int(ids, width), int(mask, width))
            .with_positions(int(positions.clone(), width));
        let mut next_position: Vec<i64> = (0..batch)
            .map(|r| positions[r * width + width - 1] + 1)
            .collect();
        let mut cache = KeyValueCache::new();
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut out = vec![Vec::new(); batch];
        let mut done = vec![false; batch];
        let vocab = model_config.vocab_size;
        for step in 0..config.max_new_tokens {
            let hidden = self
                .transformer
                .forward(input, Some(&mut cache), false)?
                .last_hidden_state;
            let seq = hidden.dims()[1];
            let last = hidden.slice([0..batch, seq - 1..seq]);
            let logits = self
                .logits(last)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| {
                    TransferError::BatchShape(format!("logits could not be read back: {e:?}"))
                })?;
            let mut next = Vec::with_capacity(batch);
            for row in 0..batch {
                let token = if done[row] {
                    pad
                } else {
                    let token = config.choose(&logits[row * vocab..(row + 1) * vocab], &mut rng);
                    out[row].push(token);
                    done[row] = Some(token) == eos;
                    token
                };
                next.push(token as i64);
            }
            if done.iter().all(|&d| d) || step + 1 == config.max_new_tokens {
                break;
            }
            input = Gpt2Input::with_mask(int(next, 1), int(vec![1; batch], 1))
                .with_positions(int(next_position.clone(), 1));
            next_position.iter_mut().for_each(|p| *p += 1);
        }
        Ok(out)
    }
}

/// Prompts padded on the left to `width`: ids, mask (1 = token) and positions counted from
/// each row's first token (padding at position 1, as transformers fills it), row-major.
fn left_padded(prompts: &[Vec<u32>], width: usize, pad: u32) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let mut ids = Vec::with_capacity(prompts.len() * width);
    let mut mask = Vec::with_capacity(ids.capacity());
    let mut positions = Vec::with_capacity(ids.capacity());
    for prompt in prompts {
        let padding = width - prompt.len();
        ids.extend(std::iter::repeat_n(pad as i64, padding));
        ids.extend(prompt.iter().map(|&t| t as i64));
        mask.extend(std::iter::repeat_n(0, padding));
        mask.extend(std::iter::repeat_n(1, prompt.len()));
        positions.extend(std::iter::repeat_n(1, padding));
        positions.extend(0..prompt.len() as i64);
    }
    (ids, mask, positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_padded_on_the_left_with_positions_from_the_first_token() {
        let (ids, mask, positions) = left_padded(&[vec![5, 6, 7], vec![9]], 3, 0);
        assert_eq!(ids, vec![5, 6, 7, 0, 0, 9]);
        assert_eq!(mask, vec![1, 1, 1, 0, 0, 1]);
        assert_eq!(positions, vec![0, 1, 2, 1, 1, 0]);
    }
}
