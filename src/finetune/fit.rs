//! The whole recipe in one call: the epoch loop every objective runs in.

use super::FineTuner;
use super::early_stopping::{BestTracker, Monitor};
use super::history::{EpochMetrics, History};
use super::progress::{epoch_bar, epoch_line};
use super::resume::{RESUME_FILE, ResumeState};
use super::session::{FineTuneSession, StepStats};
use crate::checkpoint::{load_model, load_model_bytes, model_to_bytes, save_model};
use crate::error::{Result, TransferError};
use crate::freeze::Freeze;
use crate::objective::{CrossEntropy, EvalStats, Objective, ValidBatch, evaluate_with};
use crate::task::{BatchSource, ClassificationBatch, Classifier};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use indicatif::ProgressBar;
use std::collections::BTreeMap;
use std::time::Instant;

/// What [`FineTuner::fit`] returns.
#[derive(Clone, Debug)]
pub struct FitOutcome<M> {
    /// The model after the last epoch that ran.
    pub model: M,
    /// The model as it was after the best epoch (by the monitored metric).
    pub best_model: M,
    /// The epoch `best_model` comes from.
    pub best_epoch: usize,
    /// The monitored metric's value at that epoch.
    pub best_value: f64,
    /// Every epoch's metrics.
    pub history: History,
    /// Whether early stopping ended the run before the last epoch.
    pub stopped_early: bool,
}

impl<M> FitOutcome<M> {
    /// The same outcome with `f` applied to both models (e.g. to keep only a part).
    pub fn map<N>(self, mut f: impl FnMut(M) -> N) -> FitOutcome<N> {
        FitOutcome {
            model: f(self.model),
            best_model: f(self.best_model),
            best_epoch: self.best_epoch,
            best_value: self.best_value,
            history: self.history,
            stopped_early: self.stopped_early,
        }
    }
}

/// Sums over an epoch's training steps.
#[derive(Default)]
struct TrainTotals {
    loss_sum: f64,
    correct: usize,
    count: usize,
    batches: usize,
    learning_rate: f64,
    terms: BTreeMap<String, f64>,
}

impl TrainTotals {
    /// Adds one step's statistics, updating the progress bar.
    fn add(&mut self, stats: &StepStats, fraction: f64, bar: &ProgressBar) {
        let n = stats.count as f64;
        self.loss_sum += stats.loss as f64 * n;
        self.correct += stats.correct;
        self.count += stats.count;
        self.batches += 1;
        self.learning_rate = stats.learning_rate;
        for (name, v) in &stats.terms {
            *self.terms.entry(name.to_string()).or_default() += *v as f64 * n;
        }
        bar.set_position((fraction * 1000.0) as u64);
        bar.set_message(format!("loss {:.4}", stats.loss));
    }
}

impl<B: AutodiffBackend> FineTuner<B> {
    /// Trains a classifier with cross-entropy (and the configured label smoothing) on
    /// `train`, validating on `valid` after every epoch (in inference mode, on the inner
    /// backend), and returns the last and the best model with the history.
    ///
    /// Without validation data (`None`) the best epoch is judged by the training loss (the
    /// monitor must be [`Monitor::TrainLoss`]). With a checkpoint folder, `best.mpk` is
    /// written whenever the monitored metric improves and `last.mpk` plus
    /// `history.{json,csv,svg}` after every epoch. A NaN/Inf loss stops the run with an
    /// error naming the epoch and step; the files written so far stay as they were.
    pub fn fit<M>(
        &self,
        model: M,
        train: &dyn BatchSource<ClassificationBatch<B, M::Input>>,
        valid: Option<&dyn BatchSource<ValidBatch<B, M>>>,
    ) -> Result<FitOutcome<M>>
    where
        M: AutodiffModule<B> + Classifier<B>,
        M::InnerModule: Classifier<B::InnerBackend>,
    {
        let objective = CrossEntropy {
            smoothing: self.label_smoothing,
        };
        self.train(model, &objective, train, valid)
    }

    /// Trains `model` on any [`Objective`]: the loop of [`FineTuner::fit`] (schedules,
    /// groups, clipping, accumulation, validation, early stopping, checkpoints, resume,
    /// history) with the objective's loss. Validation (`valid`, optional as in `fit`) runs
    /// the objective's validation step on the inference-mode model after every epoch.
    pub fn train<M, O>(
        &self,
        model: M,
        objective: &O,
        train: &dyn BatchSource<O::Batch>,
        valid: Option<&dyn BatchSource<O::ValidBatch>>,
    ) -> Result<FitOutcome<M>>
    where
        M: AutodiffModule<B>,
        O: Objective<B, M> + ?Sized,
    {
        let session = self.session(model)?;
        self.drive(
            session,
            valid.is_some(),
            |session, bar| {
                let mut totals = TrainTotals::default();
                for (batch, fraction) in train.epoch() {
                    let stats = session.step(objective, batch, fraction)?;
                    totals.add(&stats, fraction, bar);
                }
                Ok(totals)
            },
            |session| {
                valid
                    .map(|v| {
                        evaluate_with::<B, M, O>(
                            objective,
                            &session.model().valid(),
                            v,
                            session.epoch(),
                        )
                    })
                    .transpose()
            },
        )
    }

    /// The saved state to continue from, when resuming and the folder has one.
    fn resume_state(&self) -> Result<Option<ResumeState>> {
        match (&self.checkpoint_dir, self.resume) {
            (Some(dir), true) => ResumeState::load(&dir.join(RESUME_FILE)),
            _ => Ok(None),
        }
    }

    /// The epoch loop: unfreeze schedule, progress, training (`train_epoch`), validation
    /// (`validate`), history, best tracking, checkpoints and early stopping.
    fn drive<M, TE, VE>(
        &self,
        mut session: FineTuneSession<B, M>,
        has_validation: bool,
        mut train_epoch: TE,
        mut validate: VE,
    ) -> Result<FitOutcome<M>>
    where
        M: AutodiffModule<B>,
        TE: FnMut(&mut FineTuneSession<B, M>, &ProgressBar) -> Result<TrainTotals>,
        VE: FnMut(&FineTuneSession<B, M>) -> Result<Option<EvalStats>>,
    {
        if !has_validation && self.monitor != Monitor::TrainLoss {
            return Err(TransferError::config(
                "monitor",
                self.monitor.name(),
                "without validation data only Monitor::TrainLoss can be watched; pass validation data or change the monitor",
            ));
        }
        if let Some(dir) = &self.checkpoint_dir {
            // Saved first, so that a folder with checkpoints always says how they were made.
            self.save_to_run_dir(dir)?;
        }
        let min_delta = self.early_stopping.map_or(0.0, |e| e.min_delta);
        let mut tracker = BestTracker::new(self.monitor, min_delta);
        let mut history = History::default();
        let mut best_model = None;
        let mut stopped_early = false;
        let mut first_epoch = 1;
        if let Some(state) = self.resume_state()? {
            let dir = self
                .checkpoint_dir
                .as_ref()
                .expect("checked by resume_state");
            let resume_path = dir.join(RESUME_FILE);
            // Numbers read from the file are checked before any arithmetic with them.
            if state.epoch == 0 || state.epoch > self.epochs {
                return Err(TransferError::Checkpoint {
                    path: resume_path,
                    reason: format!(
                        "it records epoch {} but this run has {} epochs; set epochs to at least the recorded one to continue, or start over in another checkpoint folder",
                        state.epoch, self.epochs
                    ),
                });
            }
            first_epoch = state.epoch + 1;
            let device = session
                .model()
                .devices()
                .into_iter()
                .next()
                .unwrap_or_default();
            let fresh = session.model().clone();
            let model = load_model_bytes(fresh.clone(), state.model, &resume_path, &device)?;
            session.restore(self, model, state.optimizer, state.epoch, state.steps)?;
            tracker.restore(state.best, state.epochs_since_best);
            if state.best.is_some() && dir.join("best.mpk").is_file() {
                best_model = Some(load_model(fresh, &dir.join("best.mpk"), &device)?);
            }
            history = state.history;
            // A run that early stopping ended stays ended: resuming it returns what the
            // uninterrupted run returned, instead of training past the stop.
            stopped_early = state.stopped_early;
            if self.verbose {
                let how = if stopped_early {
                    "; it had stopped early, so nothing is left to train"
                } else {
                    ""
                };
                println!(
                    "resumed from {} after epoch {}{how}",
                    dir.display(),
                    state.epoch
                );
            }
        }

        let last_epoch = if stopped_early { 0 } else { self.epochs };
        for epoch in first_epoch..=last_epoch {
            let started = Instant::now();
            if session.begin_epoch(epoch)? && self.verbose {
                println!(
                    "epoch {epoch}: unfreeze schedule applied, {}",
                    session.model().param_summary().totals_line()
                );
            }
            let bar = epoch_bar(epoch, self.epochs, self.progress_bar);
            let totals = train_epoch(&mut session, &bar).inspect_err(|_| bar.abandon())?;
            session.end_epoch();
            bar.finish_and_clear();
            if totals.batches == 0 || totals.count == 0 {
                return Err(TransferError::EmptyData {
                    split: "training".into(),
                });
            }
            let eval = validate(&session)?;
            if let Some(eval) = eval
                && !eval.loss.is_finite()
            {
                // Treated like a NaN training loss: a NaN cannot be compared with the best
                // value, and a run that went on would keep checkpointing a broken model.
                return Err(TransferError::NonFiniteValidLoss {
                    epoch,
                    value: eval.loss,
                });
            }
            let n = totals.count as f64;
            let metrics = EpochMetrics {
                epoch,
                train_loss: totals.loss_sum / n,
                train_accuracy: totals.correct as f64 / n,
                valid_loss: eval.map(|e| e.loss),
                valid_accuracy: eval.map(|e| e.accuracy),
                learning_rate: totals.learning_rate,
                trainable_params: session.model().param_summary().trainable(),
                seconds: started.elapsed().as_secs_f64(),
                terms: totals.terms.into_iter().map(|(k, v)| (k, v / n)).collect(),
            };
            let value = match self.monitor {
                Monitor::ValidLoss => metrics.valid_loss,
                Monitor::ValidAccuracy => metrics.valid_accuracy,
                Monitor::TrainLoss => Some(metrics.train_loss),
            }
            .unwrap_or(f64::NAN);
            let observation = tracker.observe(epoch, value);
            if observation.improved {
                // A plain clone would share BatchNorm running statistics (burn keeps them
                // behind a shared lock) and drift with later epochs; a round trip through
                // the inner module copies them.
                best_model = Some(M::from_inner(session.model().valid()));
                if let Some(dir) = &self.checkpoint_dir {
                    save_model(session.model(), &dir.join("best.mpk"))?;
                }
            }
            if self.verbose {
                println!("{}", epoch_line(&metrics, observation.improved));
            }
            history.epochs.push(metrics);
            let stop = self
                .early_stopping
                .is_some_and(|es| es.should_stop(observation))
                && epoch < self.epochs;
            if let Some(dir) = &self.checkpoint_dir {
                save_model(session.model(), &dir.join("last.mpk"))?;
                history.write_json(&dir.join("history.json"))?;
                history.write_csv(&dir.join("history.csv"))?;
                history.write_svg(&dir.join("history.svg"))?;
                // Written last: a crash before this point resumes from the previous epoch.
                ResumeState {
                    epoch,
                    steps: session.steps(),
                    best: tracker.best(),
                    epochs_since_best: tracker.epochs_since_best(),
                    stopped_early: stop,
                    history: history.clone(),
                    model: model_to_bytes(session.model())?,
                    optimizer: session.optimizer_state()?,
                }
                .save(&dir.join(RESUME_FILE))?;
            }
            if stop {
                stopped_early = true;
                if self.verbose {
                    println!(
                        "early stopping: {} has not improved for {} epochs",
                        self.monitor.name(),
                        observation.epochs_since_best
                    );
                }
                break;
            }
        }
        let model = session.into_model();
        let (best_epoch, best_value) = tracker.best().unwrap_or((history.epochs.len(), f64::NAN));
        Ok(FitOutcome {
            best_model: best_model.unwrap_or_else(|| M::from_inner(model.valid())),
            model,
            best_epoch,
            best_value,
            history,
            stopped_early,
        })
    }
}
