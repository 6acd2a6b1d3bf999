//! Fine-tuning: the whole recipe in one call ([`FineTuner::fit`]), and each step on its own
//! ([`FineTuneSession`]) for users with their own loop.
//!
//! ```no_run
//! # use burn::backend::{Autodiff, NdArray};
//! # use burn_transfer::prelude::*;
//! # type B = Autodiff<NdArray>;
//! # fn data() -> (Vec<ClassificationBatch<B, burn::tensor::Tensor<B, 2>>>, Vec<ClassificationBatch<NdArray, burn::tensor::Tensor<NdArray, 2>>>) { (Vec::new(), Vec::new()) }
//! let device = Default::default();
//! let body = MlpBackbone::<B>::new(&[64, 128, 64], &device)?;
//! let model = TransferModel::with_linear_head(body, 5, &device)?;
//! let (train, valid) = data();
//! let outcome = FineTuner::<B>::new()
//!     .epochs(10)
//!     .learning_rate(2e-5)                 // the body: small steps
//!     .group("head", 1e-3)?                // the new head: larger ones
//!     .schedule(LrSchedule::Linear { warmup: 0.1 })
//!     .clip_grad_norm(1.0)
//!     .early_stopping(EarlyStopping::new(Monitor::ValidLoss).with_patience(3))
//!     .checkpoint_dir("runs/digits")
//!     .fit(model, &train, Some(&valid))?;
//! println!("best epoch {:?}", outcome.best_epoch);
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

mod early_stopping;
mod feature_cache;
mod fit;
mod history;
mod optim;
mod progress;
pub mod resume;
mod schedule;
mod session;

pub use crate::objective::{EvalStats, ValidBatch, evaluate};
pub use early_stopping::{BestTracker, EarlyStopping, Monitor, Observation};
pub use feature_cache::{CachedFeatures, HeadOnCache};
pub use fit::FitOutcome;
pub use history::{EpochMetrics, History};
pub use optim::{LrGroup, OptimizerKind};
pub use resume::{RESUME_FILE, ResumeState};
pub use schedule::LrSchedule;
pub use session::{FineTuneSession, StepStats};

use crate::error::{Result, TransferError};
use crate::freeze::{IntoSelector, UnfreezeSchedule};
use burn::tensor::backend::AutodiffBackend;
use core::marker::PhantomData;
use std::path::PathBuf;

/// Fine-tunes a [`Classifier`](crate::task::Classifier) on an autodiff backend: optimizer, learning-rate schedule and
/// groups, clipping, accumulation, validation, early stopping, checkpoints, progress and
/// history. Configure with the builder methods, then call [`FineTuner::fit`] (or
/// [`FineTuner::session`] to drive the steps yourself).
///
/// Defaults follow the seed's recipe: AdamW (weight decay 0.01), learning rate 2e-5
/// (full fine-tuning; give a new head its own group at ~1e-3), constant schedule, 3 epochs,
/// best epoch by validation loss.
///
/// A burn `Config`: with a [`checkpoint_dir`](Self::checkpoint_dir),
/// every run writes it to [`RUN_CONFIG_FILE`] in that folder, and
/// [`FineTuner::from_run_dir`] rebuilds the same trainer from there.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub struct FineTuner<B: AutodiffBackend> {
    pub(crate) epochs: usize,
    pub(crate) learning_rate: f64,
    pub(crate) optimizer: OptimizerKind,
    pub(crate) schedule: LrSchedule,
    pub(crate) groups: Vec<LrGroup>,
    pub(crate) clip_grad_norm: Option<f64>,
    pub(crate) accumulation: usize,
    pub(crate) label_smoothing: Option<f32>,
    pub(crate) early_stopping: Option<EarlyStopping>,
    pub(crate) monitor: Monitor,
    pub(crate) checkpoint_dir: Option<PathBuf>,
    pub(crate) resume: bool,
    pub(crate) unfreeze: UnfreezeSchedule,
    pub(crate) seed: Option<u64>,
    pub(crate) progress_bar: bool,
    pub(crate) verbose: bool,
    #[serde(skip)]
    _backend: PhantomData<B>,
}

/// The file, inside a run's checkpoint folder, that holds the [`FineTuner`]'s
/// configuration.
pub const RUN_CONFIG_FILE: &str = "fine_tuner.json";

impl<B: AutodiffBackend> burn::config::Config for FineTuner<B> {}

impl<B: AutodiffBackend> Default for FineTuner<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: AutodiffBackend> FineTuner<B> {
    /// The default configuration (see the type's docs).
    pub fn new() -> Self {
        Self {
            epochs: 3,
            learning_rate: 2e-5,
            optimizer: OptimizerKind::adamw(),
            schedule: LrSchedule::Constant,
            groups: Vec::new(),
            clip_grad_norm: None,
            accumulation: 1,
            label_smoothing: None,
            early_stopping: None,
            monitor: Monitor::ValidLoss,
            checkpoint_dir: None,
            resume: false,
            unfreeze: UnfreezeSchedule::new(),
            seed: None,
            progress_bar: true,
            verbose: true,
            _backend: PhantomData,
        }
    }

    /// The trainer a run was configured with, read from [`RUN_CONFIG_FILE`] in its
    /// checkpoint folder.
    pub fn from_run_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = dir.as_ref().join(RUN_CONFIG_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TransferError::io("read run configuration", &path, e))?;
        serde_json::from_str(&text).map_err(|e| TransferError::Checkpoint {
            path: path.clone(),
            reason: format!("not a FineTuner configuration: {e}"),
        })
    }

    /// Writes this configuration to [`RUN_CONFIG_FILE`] in `dir`, atomically.
    pub fn save_to_run_dir(&self, dir: impl AsRef<std::path::Path>) -> Result<()> {
        let path = dir.as_ref().join(RUN_CONFIG_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|e| TransferError::Export {
            format: "JSON".into(),
            reason: e.to_string(),
        })?;
        crate::checkpoint::atomic_write(&path, json.as_bytes())
    }

    /// Number of passes over the training data.
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Base learning rate of every parameter not in a [group](FineTuner::group).
    pub fn learning_rate(mut self, lr: f64) -> Self {
        self.learning_rate = lr;
        self
    }

    /// The optimizer (default [`OptimizerKind::adamw`]).
    pub fn optimizer(mut self, optimizer: OptimizerKind) -> Self {
        self.optimizer = optimizer;
        self
    }

    /// The learning-rate schedule (default constant).
    pub fn schedule(mut self, schedule: LrSchedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Discriminative learning rates: the parameters `selector` picks train at `lr`
    /// (the first matching group wins). An error for a malformed pattern.
    pub fn group(mut self, selector: impl IntoSelector, lr: f64) -> Result<Self> {
        self.groups.push(LrGroup {
            selector: selector.into_selector()?,
            learning_rate: lr,
        });
        Ok(self)
    }

    /// Clips the global L2 norm of all gradients to `max_norm` before each step.
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.clip_grad_norm = Some(max_norm);
        self
    }

    /// Sums the gradients of `steps` batches (each loss divided by `steps`) before one
    /// optimizer step: the same update as one batch `steps` times larger.
    pub fn accumulate(mut self, steps: usize) -> Self {
        self.accumulation = steps;
        self
    }

    /// Label smoothing for the training loss (validation loss stays plain cross-entropy).
    pub fn label_smoothing(mut self, epsilon: f32) -> Self {
        self.label_smoothing = Some(epsilon);
        self
    }

    /// Stops when the monitored metric stalls; its monitor also picks the best epoch.
    pub fn early_stopping(mut self, early_stopping: EarlyStopping) -> Self {
        self.monitor = early_stopping.monitor;
        self.early_stopping = Some(early_stopping);
        self
    }

    /// Which metric picks the best epoch when early stopping is off (default validation loss).
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = monitor;
        self
    }

    /// Writes `best.mpk`, `last.mpk`, `history.json`, `history.csv` and `history.svg` there
    /// after every epoch, and `resume.bin` (model, optimizer state, epoch, best-so-far,
    /// history: see [`resume`](Self::resume)). Every file is written atomically.
    pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self
    }

    /// Continues from the checkpoint folder's `resume.bin` when there is one (a fresh run
    /// otherwise). Give the same configuration, data and initial model (its freeze state
    /// included) as the interrupted run: with a [`seed`](Self::seed), the resumed run then
    /// ends bitwise where an uninterrupted one ends on ndarray, as long as the data source
    /// yields the same batches each epoch (a `Vec`, or a loader without shuffling).
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Gradual unfreezing: the schedule is applied at the start of each epoch.
    pub fn unfreeze_schedule(mut self, schedule: UnfreezeSchedule) -> Self {
        self.unfreeze = schedule;
        self
    }

    /// Seeds the backend's random generator (dropout) before training, and again from
    /// (seed, epoch) at each epoch start, so that resumed runs draw the same masks.
    ///
    /// From the same initial model and batches, a seeded run trains to the same weights
    /// bit for bit on every run on ndarray and Flex with the same number of threads: the
    /// losses' gradients are exact ([`crate::exact`]) and the CPU kernels add their
    /// parallel partial sums in a fixed order. (Seed burn's generator yourself before
    /// building a model with random initial weights: that happens before `fit`.)
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Shows a progress bar (default on; it is hidden anyway when stderr is no terminal).
    pub fn progress_bar(mut self, on: bool) -> Self {
        self.progress_bar = on;
        self
    }

    /// Prints one summary line per epoch on stdout (default on).
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// Checks every option; `fit` and `session` call it first.
    pub fn validate(&self) -> Result<()> {
        check_lr("learning_rate", self.learning_rate)?;
        for g in &self.groups {
            check_lr(
                &format!("learning rate of group `{}`", g.selector),
                g.learning_rate,
            )?;
        }
        if self.epochs == 0 {
            return Err(TransferError::config(
                "epochs",
                0,
                "train for at least 1 epoch",
            ));
        }
        if self.accumulation == 0 {
            return Err(TransferError::config(
                "accumulate",
                0,
                "accumulate over at least 1 batch (1 = no accumulation)",
            ));
        }
        if let Some(c) = self.clip_grad_norm
            && !(c > 0.0 && c.is_finite())
        {
            return Err(TransferError::config(
                "clip_grad_norm",
                c,
                "must be finite and > 0",
            ));
        }
        if let Some(e) = self.label_smoothing
            && !(0.0..1.0).contains(&e)
        {
            return Err(TransferError::config(
                "label_smoothing",
                e,
                "must be in [0, 1)",
            ));
        }
        if let Some(es) = &self.early_stopping {
            es.validate()?;
        }
        if self.resume && self.checkpoint_dir.is_none() {
            return Err(TransferError::config(
                "resume",
                true,
                "resuming reads the checkpoint folder: set checkpoint_dir too",
            ));
        }
        self.schedule.validate()?;
        self.optimizer.validate()
    }
}

fn check_lr(name: &str, lr: f64) -> Result<()> {
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(TransferError::config(
            name,
            lr,
            "a learning rate must be finite and > 0 (typical: 2e-5 for a pretrained body, 1e-3 for a new head)",
        ));
    }
    Ok(())
}
