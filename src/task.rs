//! The contracts between models, data and the training loop: a model that gives class
//! logits ([`Classifier`]), a labelled batch, and a source of batches. Fine-tuning,
//! distillation, adapters and burn-train's `Learner` all speak these.

use crate::backbone::Backbone;
use crate::head::{Head, TransferModel};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use burn::data::dataloader::DataLoader;
use burn::module::{Module, ModuleDisplay};
use burn::prelude::*;
use std::sync::Arc;

/// A model that maps a batch's inputs to class logits `[batch, classes]`.
///
/// [`TransferModel`] implements it; implement it for your own model to fine-tune it with
/// [`FineTuner`](crate::finetune::FineTuner).
pub trait Classifier<B: Backend>: Module<B> + ModuleDisplay {
    /// What the model reads.
    type Input: 'static;
    /// Class logits `[batch, classes]`.
    fn logits(&self, input: Self::Input) -> Tensor<B, 2>;

    /// Checks that `input` has a shape this model takes, before any computation: the
    /// training loop calls it on every batch and turns an error into one naming the batch.
    /// The default accepts everything (a mismatch then surfaces from the forward pass, which
    /// the loop also catches).
    fn check_input(&self, input: &Self::Input) -> crate::Result<()> {
        let _ = input;
        Ok(())
    }

    /// The intermediate outputs this model exposes for feature distillation and their
    /// shapes ([`LayerSpec`]); none by default. A
    /// [`Distiller`](crate::distill::Distiller) checks a layer map against it before
    /// training starts.
    fn layer_spec(&self) -> LayerSpec {
        LayerSpec::default()
    }

    /// The logits together with the intermediate outputs `request` asks for, as
    /// [`layer_spec`](Self::layer_spec) promises them. The default gives the logits and no
    /// intermediate output.
    fn logits_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let _ = request;
        (self.logits(input), LayerOutputs::default())
    }
}

impl<B: Backend, Bb: Backbone<B>, H: Head<B>> Classifier<B> for TransferModel<B, Bb, H> {
    type Input = Bb::Input;

    fn logits(&self, input: Self::Input) -> Tensor<B, 2> {
        self.forward(input)
    }

    fn check_input(&self, input: &Self::Input) -> crate::Result<()> {
        self.backbone.check_input(input)
    }

    fn layer_spec(&self) -> LayerSpec {
        self.backbone.layer_spec()
    }

    fn logits_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let (features, layers) = self.backbone.features_with_layers(input, request);
        (self.head.forward(features), layers)
    }
}

/// A causal language model: token ids → next-token logits `[batch, seq, vocab]`, where
/// position `t` scores the token at `t + 1`. What token-level distillation and perplexity
/// read; [`Gpt2LmHeadModel`](crate::models::gpt2::Gpt2LmHeadModel) implements it, and so can
/// a model of yours.
pub trait CausalLm<B: Backend>: Module<B> + ModuleDisplay {
    /// Size of the vocabulary: the logits' last dimension.
    fn vocab_size(&self) -> usize;

    /// Next-token logits for ids `[batch, seq]` with Hugging Face's `attention_mask`
    /// (1 = token, 0 = padding). An error for input the model cannot take (too long, of the
    /// wrong shape).
    fn next_token_logits(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> crate::Result<Tensor<B, 3>>;

    /// Continues each prompt (token ids) as `config` says and returns each row's new
    /// tokens, up to and including the end token where a row reached it (the config's, or
    /// none). The default runs the whole sequence again for every token; a model with a
    /// key/value cache (GPT-2) overrides it. Call it on an inference model (`valid()`).
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        config: &crate::generation::GenerationConfig,
    ) -> crate::Result<Vec<Vec<u32>>> {
        let device = self.devices().into_iter().next().unwrap_or_default();
        crate::generation::generate_by_recompute(
            |ids, mask| self.next_token_logits(ids, mask),
            self.vocab_size(),
            &device,
            prompts,
            config,
        )
    }

    /// `exp` of the mean next-token cross-entropy over every real target of `batches`
    /// (weighted by their token counts). An error when no batch has a target.
    fn perplexity(&self, batches: &[TokenBatch<B>]) -> crate::Result<f64> {
        let (mut nll, mut count) = (0.0, 0.0);
        for TokenBatch {
            input_ids: ids,
            attention_mask: mask,
        } in batches
        {
            let [batch, seq] = mask.dims();
            let targets = mask
                .clone()
                .slice([0..batch, 1..seq.max(1)])
                .not_equal_elem(0)
                .int()
                .sum()
                .into_scalar()
                .elem::<f64>();
            if targets == 0.0 {
                continue;
            }
            let logits = self.next_token_logits(ids.clone(), mask.clone())?;
            let loss = crate::loss::functional::causal_lm_loss(logits, ids.clone(), mask.clone())?;
            nll += loss.into_scalar().elem::<f64>() * targets;
            count += targets;
        }
        if count == 0.0 {
            return Err(crate::TransferError::BatchShape(
                "perplexity needs a position with a next token: give sequences of at least two                  real tokens"
                    .into(),
            ));
        }
        Ok((nll / count).exp())
    }
}

/// Token ids `[batch, seq]` with Hugging Face's `attention_mask` (1 = token, 0 = padding):
/// what a language model reads.
#[derive(Clone, Debug)]
pub struct TokenBatch<B: Backend> {
    /// Token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for a token, 0 for padding.
    pub attention_mask: Tensor<B, 2, Int>,
}

impl<B: Backend> TokenBatch<B> {
    /// Ids with their mask.
    pub fn new(input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask,
        }
    }

    /// Ids without padding: every position is a token.
    pub fn unpadded(input_ids: Tensor<B, 2, Int>) -> Self {
        let attention_mask = input_ids.ones_like();
        Self::new(input_ids, attention_mask)
    }
}

/// Inputs and integer class labels.
#[derive(Clone, Debug)]
pub struct ClassificationBatch<B: Backend, X> {
    /// The model's input for the batch.
    pub inputs: X,
    /// Class indices `[batch]`.
    pub targets: Tensor<B, 1, Int>,
}

impl<B: Backend, X> ClassificationBatch<B, X> {
    /// A batch from its parts.
    pub fn new(inputs: X, targets: Tensor<B, 1, Int>) -> Self {
        Self { inputs, targets }
    }
}

/// Anything that yields the batches of one epoch: a burn [`DataLoader`], or a `Vec` of
/// batches (handy for tests and for data that fits in memory).
pub trait BatchSource<T> {
    /// The batches of one epoch, each with the fraction of the epoch done once it has been
    /// processed (in `(0, 1]`), which drives learning-rate schedules and progress bars.
    fn epoch(&self) -> Box<dyn Iterator<Item = (T, f64)> + '_>;
}

impl<B: Backend, T: 'static> BatchSource<T> for Arc<dyn DataLoader<B, T>> {
    fn epoch(&self) -> Box<dyn Iterator<Item = (T, f64)> + '_> {
        let mut iter = self.iter();
        Box::new(std::iter::from_fn(move || {
            let item = iter.next()?;
            let p = iter.progress();
            let done = if p.items_total == 0 {
                1.0
            } else {
                p.items_processed as f64 / p.items_total as f64
            };
            Some((item, done))
        }))
    }
}

impl<T: Clone> BatchSource<T> for Vec<T> {
    fn epoch(&self) -> Box<dyn Iterator<Item = (T, f64)> + '_> {
        let n = self.len() as f64;
        Box::new(
            self.iter()
                .enumerate()
                .map(move |(i, b)| (b.clone(), (i + 1) as f64 / n)),
        )
    }
}
