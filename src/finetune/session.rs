//! One fine-tuning run, step by step.

use super::optim::GroupedOptimizer;
use super::{FineTuner, LrSchedule};
use crate::error::{Result, TransferError};
use crate::freeze::{Freeze, UnfreezeSchedule};
use crate::objective::classification::classification_step;
use crate::objective::{
    CrossEntropy, EvalStats, Objective, StepAt, StepOutput, ValidBatch, evaluate_with,
};
use crate::task::{BatchSource, ClassificationBatch, Classifier};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// What one training step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// The batch's loss (before any division for accumulation).
    pub loss: f32,
    /// The loss's named parts, when the objective has any.
    pub terms: Vec<(&'static str, f32)>,
    /// Correct predictions in the batch.
    pub correct: usize,
    /// Samples in the batch.
    pub count: usize,
    /// Base-group learning rate used (or that will be used, while accumulating).
    pub learning_rate: f64,
    /// Whether an optimizer step was taken (false while accumulating).
    pub stepped: bool,
    /// Global gradient norm before clipping, when clipping is on and a step was taken.
    pub grad_norm: Option<f64>,
}

/// The generator seed for an epoch: distinct per epoch, a pure function of (seed, epoch).
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    // SplitMix64's finaliser: nearby (seed, epoch) pairs give unrelated seeds.
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A model being fine-tuned with its optimizer state: the building block of
/// [`FineTuner::fit`], public for users who write their own loop.
///
/// ```no_run
/// # use burn::backend::{Autodiff, NdArray};
/// # use burn_transfer::prelude::*;
/// # type B = Autodiff<NdArray>;
/// # fn go(model: TransferModel<B, MlpBackbone<B>, LinearHead<B>>, batches: Vec<ClassificationBatch<B, burn::tensor::Tensor<B, 2>>>) -> burn_transfer::Result<()> {
/// let mut session = FineTuner::<B>::new().learning_rate(1e-3).epochs(1).session(model)?;
/// session.begin_epoch(1)?;
/// let n = batches.len();
/// for (i, batch) in batches.into_iter().enumerate() {
///     let stats = session.train_step(batch, (i + 1) as f64 / n as f64)?;
///     println!("loss {:.4}", stats.loss);
/// }
/// session.end_epoch();
/// let model = session.into_model();
/// # Ok(()) }
/// ```
pub struct FineTuneSession<B: AutodiffBackend, M: AutodiffModule<B>> {
    model: Option<M>,
    optim: GroupedOptimizer<M, B>,
    schedule: LrSchedule,
    unfreeze: UnfreezeSchedule,
    smoothing: Option<f32>,
    accumulation: usize,
    epochs: usize,
    epoch: usize,
    pending: usize,
    batch_index: usize,
    last_fraction: f64,
    steps: usize,
    seed: Option<u64>,
}

impl<B: AutodiffBackend> FineTuner<B> {
    /// Validates the configuration and prepares a run on `model`.
    pub fn session<M>(&self, model: M) -> Result<FineTuneSession<B, M>>
    where
        M: AutodiffModule<B>,
    {
        self.validate()?;
        self.unfreeze.check_against(&model)?;
        crate::freeze::materialize(&model);
        let summary = model.param_summary();
        if summary.trainable() == 0 && self.unfreeze.is_empty() {
            return Err(TransferError::NothingToTrain {
                total: summary.total(),
            });
        }
        if let Some(seed) = self.seed {
            let device = model.devices().into_iter().next().unwrap_or_default();
            B::seed(&device, seed);
        }
        let optim = GroupedOptimizer::new(
            &model,
            self.optimizer,
            self.learning_rate,
            &self.groups,
            self.clip_grad_norm,
        )?;
        Ok(FineTuneSession {
            model: Some(model),
            optim,
            schedule: self.schedule,
            unfreeze: self.unfreeze.clone(),
            smoothing: self.label_smoothing,
            accumulation: self.accumulation,
            epochs: self.epochs,
            epoch: 1,
            pending: 0,
            batch_index: 0,
            last_fraction: 0.0,
            steps: 0,
            seed: self.seed,
        })
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> FineTuneSession<B, M> {
    /// Starts epoch `epoch` (1-based): applies the unfreeze schedule's steps for it.
    /// Returns whether the set of trainable parameters changed.
    ///
    /// With a seed, the backend's random generator is re-seeded from (seed, epoch), so that
    /// a run resumed at this epoch draws the same dropout masks as one that never stopped.
    pub fn begin_epoch(&mut self, epoch: usize) -> Result<bool> {
        if let Some(seed) = self.seed {
            let device = self
                .model()
                .devices()
                .into_iter()
                .next()
                .unwrap_or_default();
            B::seed(&device, epoch_seed(seed, epoch));
        }
        self.epoch = epoch;
        self.batch_index = 0;
        self.last_fraction = 0.0;
        let model = self.take_model();
        let (model, changed) = self.unfreeze.apply(model, epoch)?;
        self.model = Some(model);
        Ok(changed)
    }

    /// One step of `objective` on `batch`: its loss, backward, and (every `accumulate`
    /// batches) an optimizer step.
    ///
    /// `epoch_fraction` is the share of the epoch done after this batch (in `(0, 1]`); it
    /// drives the learning-rate schedule. A NaN/Inf loss is an error and changes nothing.
    pub fn step<O>(
        &mut self,
        objective: &O,
        batch: O::Batch,
        epoch_fraction: f64,
    ) -> Result<StepStats>
    where
        O: Objective<B, M> + ?Sized,
    {
        let at = StepAt {
            epoch: self.epoch,
            batch: self.batch_index + 1,
        };
        self.step_with(epoch_fraction, |model| {
            objective.train_step(model, batch, at)
        })
    }

    /// One step on a loss computed by a closure from the model (the same as
    /// [`FineTuneSession::step`] without an [`Objective`] type).
    pub fn step_with<F>(&mut self, epoch_fraction: f64, objective: F) -> Result<StepStats>
    where
        F: FnOnce(&M) -> Result<StepOutput<B>>,
    {
        self.batch_index += 1;
        let model = self.model.as_ref().expect("model present between steps");
        let StepOutput {
            loss,
            correct,
            count,
            terms,
        } = objective(model)?;
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            return Err(TransferError::NonFiniteLoss {
                epoch: self.epoch,
                step: self.batch_index,
                value: loss_value,
            });
        }
        let terms = terms
            .into_iter()
            .map(|(name, t)| (name, t.into_scalar().elem::<f32>()))
            .collect();
        let loss = if self.accumulation > 1 {
            loss.div_scalar(self.accumulation as f32)
        } else {
            loss
        };
        let mut grads = loss.backward();
        self.optim.accumulate(model, &mut grads);
        self.pending += 1;

        let fraction = epoch_fraction.clamp(0.0, 1.0);
        let factor = self.lr_factor(fraction);
        self.last_fraction = fraction;
        let mut stats = StepStats {
            loss: loss_value,
            correct,
            count,
            terms,
            learning_rate: self.optim.base_rates().last().copied().unwrap_or(0.0) * factor,
            stepped: false,
            grad_norm: None,
        };
        if self.pending == self.accumulation {
            stats.grad_norm = self.apply(factor, 1.0);
            stats.stepped = true;
        }
        Ok(stats)
    }

    /// The current epoch (1-based).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Ends the epoch: a partial accumulation (fewer than `accumulate` batches left) is
    /// applied, rescaled as if its batches were all there were.
    pub fn end_epoch(&mut self) {
        if self.pending > 0 {
            let factor = self.lr_factor(1.0);
            let scale = self.accumulation as f64 / self.pending as f64;
            self.apply(factor, scale);
        }
    }

    /// The model as it is now.
    pub fn model(&self) -> &M {
        self.model.as_ref().expect("model present between steps")
    }

    /// Replaces the model (e.g. after loading a checkpoint), keeping the optimizer state.
    pub fn set_model(&mut self, model: M) {
        self.model = Some(model);
    }

    /// Ends the run and gives the model back.
    pub fn into_model(self) -> M {
        self.model.expect("model present between steps")
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Each optimizer group's state, serialised, for a resumable checkpoint.
    pub(crate) fn optimizer_state(&self) -> Result<Vec<Vec<u8>>> {
        self.optim
            .state_bytes()
            .map_err(|reason| TransferError::Checkpoint {
                path: "<optimizer state>".into(),
                reason,
            })
    }

    /// Continues a checkpointed run: `model` holds the saved weights (with the parameter
    /// ids they were saved with), `epoch` is the last completed one. The optimizer is
    /// rebuilt for the model's ids and given its saved state; the unfreeze schedule's steps
    /// up to `epoch` are applied.
    pub(crate) fn restore(
        &mut self,
        tuner: &FineTuner<B>,
        model: M,
        optimizer: Vec<Vec<u8>>,
        epoch: usize,
        steps: usize,
    ) -> Result<()> {
        let model = self.unfreeze.apply_up_to(model, epoch)?;
        let mut optim = GroupedOptimizer::new(
            &model,
            tuner.optimizer,
            tuner.learning_rate,
            &tuner.groups,
            tuner.clip_grad_norm,
        )?;
        let device = model.devices().into_iter().next().unwrap_or_default();
        optim
            .load_state_bytes(optimizer, &device)
            .map_err(|reason| TransferError::Checkpoint {
                path: "<optimizer state>".into(),
                reason,
            })?;
        self.optim = optim;
        self.model = Some(model);
        self.epoch = epoch;
        self.steps = steps;
        Ok(())
    }

    fn lr_factor(&self, fraction: f64) -> f64 {
        let done = (self.epoch - 1) as f64;
        let start = (done + self.last_fraction) / self.epochs as f64;
        let end = (done + fraction) / self.epochs as f64;
        self.schedule.factor(start, end.max(start))
    }

    fn apply(&mut self, factor: f64, grad_scale: f64) -> Option<f64> {
        let model = self.take_model();
        let (model, norm) = self.optim.step(model, factor, grad_scale);
        self.model = Some(model);
        self.pending = 0;
        self.steps += 1;
        norm
    }

    fn take_model(&mut self) -> M {
        self.model.take().expect("model present between steps")
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B> + Classifier<B>> FineTuneSession<B, M> {
    /// Cross-entropy (with the configured label smoothing) on a labelled batch: forward,
    /// backward, and (every `accumulate` batches) an optimizer step. See
    /// [`FineTuneSession::step`] (this is [`CrossEntropy`]'s training step).
    pub fn train_step(
        &mut self,
        batch: ClassificationBatch<B, M::Input>,
        epoch_fraction: f64,
    ) -> Result<StepStats> {
        let smoothing = self.smoothing;
        let at = StepAt {
            epoch: self.epoch,
            batch: self.batch_index + 1,
        };
        self.step_with(epoch_fraction, |model| {
            classification_step(model, batch, smoothing, at, "training")
        })
    }

    /// Loss and accuracy of the current model in inference mode (inner backend: no graph,
    /// dropout off, BatchNorm on running statistics).
    pub fn evaluate(&self, data: &dyn BatchSource<ValidBatch<B, M>>) -> Result<EvalStats>
    where
        M::InnerModule: Classifier<B::InnerBackend>,
    {
        evaluate_with::<B, M, _>(
            &CrossEntropy::new(),
            &self.model().valid(),
            data,
            self.epoch,
        )
    }
}
