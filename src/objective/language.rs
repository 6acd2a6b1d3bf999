//! Language modelling: next-token cross-entropy for a [`CausalLm`].

use super::{Objective, StepAt, StepOutput};
use crate::error::Result;
use crate::loss::functional::causal_lm_loss;
use crate::task::{CausalLm, TokenBatch};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Next-token cross-entropy, the mean over every position whose next token is real
/// (Hugging Face's `attention_mask`: 1 = token, 0 = padding), as transformers' causal LM
/// loss; the accuracy is the share of those next tokens the model ranks first. Each batch
/// weighs by its number of targets, so the validation loss is the log of the perplexity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextTokenLoss;

fn lm_step<B: Backend, M: CausalLm<B>>(
    model: &M,
    batch: TokenBatch<B>,
    at: StepAt,
    split: &str,
) -> Result<StepOutput<B>> {
    let TokenBatch {
        input_ids,
        attention_mask,
    } = batch;
    let in_batch = |e| super::batch_error(e, split, at.batch);
    let logits = model
        .next_token_logits(input_ids.clone(), attention_mask.clone())
        .map_err(in_batch)?;
    let loss = causal_lm_loss(logits.clone(), input_ids.clone(), attention_mask.clone())
        .map_err(in_batch)?;
    let (correct, count) = next_token_correct(&logits, &input_ids, &attention_mask);
    Ok(StepOutput::new(loss, correct, count))
}

/// Of the positions whose next token is real (`attention_mask` 1 at `t + 1`), how many the
/// logits `[batch, seq, vocab]` rank first, and how many there are: `(correct, targets)`.
/// Shapes must agree (as [`causal_lm_loss`] checks).
pub fn next_token_correct<B: Backend>(
    logits: &Tensor<B, 3>,
    input_ids: &Tensor<B, 2, Int>,
    attention_mask: &Tensor<B, 2, Int>,
) -> (usize, usize) {
    let [batch, seq, vocab] = logits.dims();
    if seq < 2 || batch == 0 {
        return (0, 0);
    }
    let predicted = logits
        .clone()
        .slice([0..batch, 0..seq - 1, 0..vocab])
        .argmax(2)
        .reshape([batch, seq - 1]);
    let targets = input_ids.clone().slice([0..batch, 1..seq]);
    let real = attention_mask
        .clone()
        .slice([0..batch, 1..seq])
        .not_equal_elem(0);
    let hits = predicted.equal(targets).bool_and(real.clone());
    let count = |t: Tensor<B, 2, Bool>| t.int().sum().into_scalar().elem::<i64>() as usize;
    (count(hits), count(real))
}

impl<B, M> Objective<B, M> for NextTokenLoss
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + CausalLm<B>,
    M::InnerModule: CausalLm<B::InnerBackend>,
{
    type Batch = TokenBatch<B>;
    type ValidBatch = TokenBatch<B::InnerBackend>;

    fn train_step(&self, model: &M, batch: Self::Batch, at: StepAt) -> Result<StepOutput<B>> {
        lm_step(model, batch, at, "training")
    }

    fn valid_step(
        &self,
        model: &M::InnerModule,
        batch: Self::ValidBatch,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        lm_step(model, batch, at, "validation")
    }
}
