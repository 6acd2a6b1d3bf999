//! The one hook into the training loop: an [`Objective`] turns a batch into a loss.
//!
//! [`FineTuner::train`](crate::finetune::FineTuner::train) drives any objective through the
//! same loop (schedules, groups, clipping, accumulation, validation, early stopping,
//! checkpoints, resume, history). The crate's own modes are implementations of it:
//! classification ([`CrossEntropy`], what [`FineTuner::fit`](crate::finetune::FineTuner::fit)
//! trains), language modelling ([`NextTokenLoss`]) and every
//! [`Distiller`](crate::distill::Distiller) mode; a user's own objective (regression,
//! multi-label, token tagging) is one more.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::module::AutodiffModule;
//! use burn::prelude::*;
//! use burn::tensor::backend::AutodiffBackend;
//! use burn_transfer::objective::{Objective, StepAt, StepOutput};
//! use burn_transfer::prelude::*;
//!
//! type B = Autodiff<NdArray>;
//! type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;
//!
//! /// Regression on the model's single output: mean squared error.
//! struct Mse;
//!
//! impl<Bk: AutodiffBackend> Objective<Bk, Net<Bk>> for Mse {
//!     type Batch = (Tensor<Bk, 2>, Tensor<Bk, 1>);
//!     type ValidBatch = (Tensor<Bk::InnerBackend, 2>, Tensor<Bk::InnerBackend, 1>);
//!
//!     fn train_step(&self, model: &Net<Bk>, (x, y): Self::Batch, _at: StepAt) -> Result<StepOutput<Bk>> {
//!         let count = y.dims()[0];
//!         let prediction = model.forward(x).reshape([count]);
//!         Ok(StepOutput::new((prediction - y).powf_scalar(2.0).mean(), 0, count))
//!     }
//!
//!     fn valid_step(
//!         &self,
//!         model: &Net<Bk::InnerBackend>,
//!         (x, y): Self::ValidBatch,
//!         _at: StepAt,
//!     ) -> Result<StepOutput<Bk::InnerBackend>> {
//!         let count = y.dims()[0];
//!         let prediction = model.forward(x).reshape([count]);
//!         Ok(StepOutput::new((prediction - y).powf_scalar(2.0).mean(), 0, count))
//!     }
//! }
//!
//! let device = Default::default();
//! let model: Net<B> = TransferModel::with_linear_head(MlpBackbone::new(&[3, 8], &device)?, 1, &device)?;
//! let x = Tensor::<B, 2>::from_floats([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]], &device);
//! let y = Tensor::<B, 1>::from_floats([3.0, -1.0], &device);
//! let train = vec![(x, y)];
//! let outcome = FineTuner::<B>::new()
//!     .epochs(20)
//!     .learning_rate(1e-2)
//!     .monitor(Monitor::TrainLoss)
//!     .verbose(false)
//!     .train(model, &Mse, &train, None)?;
//! let losses: Vec<f64> = outcome.history.epochs.iter().map(|e| e.train_loss).collect();
//! assert!(losses[19] < losses[0]);
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

pub(crate) mod classification;
mod language;

pub use classification::{CrossEntropy, ValidBatch, checked_logits, count_correct, evaluate};
pub use language::{NextTokenLoss, next_token_correct};

use crate::error::{Result, TransferError};
use crate::task::BatchSource;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Where a step is in the run: what an objective's own schedules read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepAt {
    /// The epoch, 1-based.
    pub epoch: usize,
    /// The batch within the epoch's training (or validation) pass, 1-based: error messages
    /// name it.
    pub batch: usize,
}

/// What an objective computed for one batch: the loss to minimise and what to log.
pub struct StepOutput<B: Backend> {
    /// The loss (mean over the batch's samples or tokens).
    pub loss: Tensor<B, 1>,
    /// Correct predictions in the batch (0 when the objective has no notion of it).
    pub correct: usize,
    /// Samples (or tokens) in the batch: the weight of this batch's loss in the epoch's mean.
    pub count: usize,
    /// Named parts of the loss, logged per epoch (e.g. `kd`, `ce`).
    pub terms: Vec<(&'static str, Tensor<B, 1>)>,
}

impl<B: Backend> StepOutput<B> {
    /// A loss with its accuracy counts and no named parts.
    pub fn new(loss: Tensor<B, 1>, correct: usize, count: usize) -> Self {
        Self {
            loss,
            correct,
            count,
            terms: Vec::new(),
        }
    }

    /// The same output with named parts of the loss.
    pub fn with_terms(mut self, terms: Vec<(&'static str, Tensor<B, 1>)>) -> Self {
        self.terms = terms;
        self
    }
}

/// A training objective for model `M`: how a training batch becomes a loss (on the autodiff
/// backend, with the model in training mode), and how a validation batch is scored (on the
/// inner backend, with the model in inference mode: `model.valid()`).
///
/// Everything else (optimizer, schedules, accumulation, checkpoints, early stopping) is
/// the loop's: implement this trait and hand it to
/// [`FineTuner::train`](crate::finetune::FineTuner::train).
pub trait Objective<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// One training batch.
    type Batch;
    /// One validation batch (inner backend).
    type ValidBatch;

    /// The loss of `batch` under `model` (training mode); an error for a batch that does not
    /// fit the model, naming `at.batch`.
    fn train_step(&self, model: &M, batch: Self::Batch, at: StepAt) -> Result<StepOutput<B>>;

    /// The loss of a validation batch under the inference-mode model.
    fn valid_step(
        &self,
        model: &M::InnerModule,
        batch: Self::ValidBatch,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>>;
}

/// Loss and accuracy over a data set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalStats {
    /// Mean loss per counted sample (or token).
    pub loss: f64,
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Number of counted samples (or tokens).
    pub count: usize,
}

/// Scores `model` (inference mode: pass `model.valid()`) on every batch of `data` with
/// `objective`'s validation step: the count-weighted mean loss and the accuracy.
pub fn evaluate_with<B, M, O>(
    objective: &O,
    model: &M::InnerModule,
    data: &dyn BatchSource<O::ValidBatch>,
    epoch: usize,
) -> Result<EvalStats>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Objective<B, M> + ?Sized,
{
    mean_over(data.epoch().enumerate().map(|(i, (batch, _))| {
        let at = StepAt {
            epoch,
            batch: i + 1,
        };
        objective.valid_step(model, batch, at)
    }))
}

/// The count-weighted mean loss and the accuracy of a validation pass's outputs.
pub(crate) fn mean_over<B: Backend>(
    outputs: impl Iterator<Item = Result<StepOutput<B>>>,
) -> Result<EvalStats> {
    let (mut loss_sum, mut correct, mut count) = (0.0f64, 0usize, 0usize);
    for out in outputs {
        let out = out?;
        let loss: f64 = out.loss.into_scalar().elem();
        loss_sum += loss * out.count as f64;
        correct += out.correct;
        count += out.count;
    }
    if count == 0 {
        return Err(TransferError::EmptyData {
            split: "validation".into(),
        });
    }
    Ok(EvalStats {
        loss: loss_sum / count as f64,
        accuracy: correct as f64 / count as f64,
        count,
    })
}

/// An error of the model on one batch, naming the batch: a shape it cannot take
/// ([`TransferError::BatchShape`]) or an input beyond its configuration (a sequence longer
/// than its positions, [`TransferError::InvalidConfig`]) becomes a batch error.
pub(crate) fn batch_error(e: TransferError, split: &str, batch: usize) -> TransferError {
    match e {
        TransferError::BatchShape(why) => {
            TransferError::BatchShape(format!("{split} batch {batch}: {why}"))
        }
        e @ TransferError::InvalidConfig { .. } => {
            TransferError::BatchShape(format!("{split} batch {batch}: {e}"))
        }
        other => other,
    }
}
