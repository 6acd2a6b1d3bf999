//! The contracts between models, data and the training loop: a model that gives class
//! logits ([`Classifier`]), a labelled batch, and a source of batches. Fine-tuning,
//! distillation, adapters and burn-train's `Learner` all speak these.

use crate::backbone::Backbone;
use crate::head::{Head, TransferModel};
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
}

impl<B: Backend, Bb: Backbone<B>, H: Head<B>> Classifier<B> for TransferModel<B, Bb, H> {
    type Input = Bb::Input;

    fn logits(&self, input: Self::Input) -> Tensor<B, 2> {
        self.forward(input)
    }

    fn check_input(&self, input: &Self::Input) -> crate::Result<()> {
        self.backbone.check_input(input)
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
