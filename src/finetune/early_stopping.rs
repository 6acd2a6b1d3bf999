//! Early stopping and the choice of the best epoch.

use crate::error::{Result, TransferError};
use serde::{Deserialize, Serialize};

/// A per-epoch quantity that decides which epoch is best and when to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Monitor {
    /// Validation loss; lower is better.
    ValidLoss,
    /// Validation accuracy; higher is better.
    ValidAccuracy,
    /// Training loss; lower is better (for runs without validation data).
    TrainLoss,
}

impl Monitor {
    /// Whether a larger value is better.
    pub fn higher_is_better(&self) -> bool {
        matches!(self, Monitor::ValidAccuracy)
    }

    /// A short name for messages and files.
    pub fn name(&self) -> &'static str {
        match self {
            Monitor::ValidLoss => "valid_loss",
            Monitor::ValidAccuracy => "valid_accuracy",
            Monitor::TrainLoss => "train_loss",
        }
    }
}

/// Stop when the monitored value has not improved by more than `min_delta` for `patience`
/// epochs in a row (Keras' `EarlyStopping`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// What to watch.
    pub monitor: Monitor,
    /// Epochs without improvement that are tolerated.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
}

impl EarlyStopping {
    /// Watches `monitor` with patience 3 and `min_delta` 0.
    pub fn new(monitor: Monitor) -> Self {
        Self {
            monitor,
            patience: 3,
            min_delta: 0.0,
        }
    }

    /// Sets the patience.
    pub fn with_patience(mut self, patience: usize) -> Self {
        self.patience = patience;
        self
    }

    /// Sets the minimum improvement.
    pub fn with_min_delta(mut self, min_delta: f64) -> Self {
        self.min_delta = min_delta;
        self
    }

    /// Whether training should stop after an epoch with this observation.
    pub fn should_stop(&self, observation: Observation) -> bool {
        !observation.improved && observation.epochs_since_best >= self.patience.max(1)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !self.min_delta.is_finite() || self.min_delta < 0.0 {
            return Err(TransferError::config(
                "min_delta",
                self.min_delta,
                "must be a finite number ≥ 0",
            ));
        }
        Ok(())
    }
}

/// Tracks the best value of a monitored quantity.
#[derive(Clone, Debug)]
pub struct BestTracker {
    monitor: Monitor,
    min_delta: f64,
    best: Option<(usize, f64)>,
    epochs_since_best: usize,
}

/// What one epoch's value meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// This epoch is the new best.
    pub improved: bool,
    /// Epochs since the best one (0 when `improved`).
    pub epochs_since_best: usize,
}

impl BestTracker {
    /// A tracker for `monitor`; changes of at most `min_delta` do not count as improvement.
    pub fn new(monitor: Monitor, min_delta: f64) -> Self {
        Self {
            monitor,
            min_delta,
            best: None,
            epochs_since_best: 0,
        }
    }

    /// Records an epoch's value.
    pub fn observe(&mut self, epoch: usize, value: f64) -> Observation {
        let improved = match self.best {
            None => value.is_finite(),
            Some((_, best)) if self.monitor.higher_is_better() => value > best + self.min_delta,
            Some((_, best)) => value < best - self.min_delta,
        };
        if improved {
            self.best = Some((epoch, value));
            self.epochs_since_best = 0;
        } else {
            self.epochs_since_best += 1;
        }
        Observation {
            improved,
            epochs_since_best: self.epochs_since_best,
        }
    }

    /// The best epoch and its value so far.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.best
    }

    /// Epochs observed since the best one.
    pub fn epochs_since_best(&self) -> usize {
        self.epochs_since_best
    }

    /// Puts the tracker back where a checkpointed run left it.
    pub(crate) fn restore(&mut self, best: Option<(usize, f64)>, epochs_since_best: usize) {
        self.best = best;
        self.epochs_since_best = epochs_since_best;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        // Scripted validation losses; patience 2, min_delta 0.01.
        let losses = [1.0, 0.8, 0.795, 0.7, 0.71, 0.705, 0.5];
        let stop = EarlyStopping::new(Monitor::ValidLoss)
            .with_patience(2)
            .with_min_delta(0.01);
        let mut t = BestTracker::new(stop.monitor, stop.min_delta);
        let mut stopped_at = None;
        for (i, l) in losses.iter().enumerate() {
            let o = t.observe(i + 1, *l);
            if stop.should_stop(o) {
                stopped_at = Some(i + 1);
                break;
            }
        }
        // 0.795 is not 0.01 better than 0.8 (epoch 3 no improvement), epoch 4 improves,
        // epochs 5 and 6 do not: stop at 6.
        assert_eq!(stopped_at, Some(6));
        assert_eq!(t.best(), Some((4, 0.7)));
    }

    #[test]
    fn accuracy_is_maximised() {
        let mut t = BestTracker::new(Monitor::ValidAccuracy, 0.0);
        assert!(t.observe(1, 0.5).improved);
        assert!(!t.observe(2, 0.4).improved);
        assert!(t.observe(3, 0.6).improved);
        assert_eq!(t.best(), Some((3, 0.6)));
        assert!(!t.observe(4, f64::NAN).improved);
    }
}
