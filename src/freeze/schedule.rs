//! Gradual unfreezing (ULMFiT): more of the model becomes trainable as epochs pass.

use super::{Freeze, Selector};
use crate::error::{Result, TransferError};
use burn::prelude::Backend;

/// A list of [`UnfreezeStep`]s: at the start of each step's epoch (1-based), the selected
/// parameters become trainable.
///
/// The state at any epoch is a function of the epoch alone, so a resumed run reaches the
/// same freeze state by calling [`UnfreezeSchedule::apply_up_to`].
///
/// ```
/// use burn_transfer::freeze::UnfreezeSchedule;
/// // Epoch 1: only what is already trainable (the head). Epoch 2: + the last block,
/// // epoch 3: + the last two blocks, and so on.
/// let schedule = UnfreezeSchedule::gradual("backbone.layers", 3, 2, 1).unwrap();
/// assert_eq!(schedule.steps().len(), 3);
/// assert_eq!(schedule.steps()[2].epoch, 4);
/// ```
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct UnfreezeSchedule {
    steps: Vec<UnfreezeStep>,
}

/// One step of an [`UnfreezeSchedule`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct UnfreezeStep {
    /// The epoch (1-based) at whose start the step applies.
    pub epoch: usize,
    /// What becomes trainable then.
    pub selector: Selector,
}

impl UnfreezeSchedule {
    /// An empty schedule (nothing is ever unfrozen).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a step: at the start of `epoch` (1-based), unfreeze what `selector` picks.
    pub fn at(mut self, epoch: usize, selector: Selector) -> Result<Self> {
        if epoch == 0 {
            return Err(TransferError::config(
                "unfreeze epoch",
                epoch,
                "epochs are counted from 1",
            ));
        }
        self.steps.push(UnfreezeStep { epoch, selector });
        self.steps.sort_by_key(|step| step.epoch);
        Ok(self)
    }

    /// The ULMFiT recipe for a stack of `num_layers` layers at `stack`: starting at
    /// `first_epoch`, one more layer (from the top) every `every` epochs.
    pub fn gradual(
        stack: &str,
        num_layers: usize,
        first_epoch: usize,
        every: usize,
    ) -> Result<Self> {
        if every == 0 {
            return Err(TransferError::config(
                "every",
                every,
                "must be at least 1 epoch",
            ));
        }
        (1..=num_layers).try_fold(Self::new(), |s, k| {
            s.at(
                first_epoch + (k - 1) * every,
                Selector::last_layers(stack, k),
            )
        })
    }

    /// The steps, sorted by epoch.
    pub fn steps(&self) -> &[UnfreezeStep] {
        &self.steps
    }

    /// Whether no step is scheduled.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Checks every step's selector against `model` before training starts, so that a
    /// selector matching nothing is an error at once, not when its epoch comes after earlier
    /// epochs have trained and saved.
    pub fn check_against<B: Backend, M: Freeze<B>>(&self, model: &M) -> Result<()> {
        let paths = model.param_paths();
        for step in &self.steps {
            step.selector.resolve(&paths)?;
        }
        Ok(())
    }

    /// Applies the steps scheduled exactly at `epoch`. Returns the model and whether it
    /// changed (so a trainer knows to log it).
    pub fn apply<B: Backend, M: Freeze<B>>(&self, model: M, epoch: usize) -> Result<(M, bool)> {
        let mut model = model;
        let mut changed = false;
        for step in self.steps.iter().filter(|step| step.epoch == epoch) {
            model = model.unfreeze_matching(&step.selector)?;
            changed = true;
        }
        Ok((model, changed))
    }

    /// Applies every step scheduled at or before `epoch`: the freeze state a run has when
    /// `epoch` starts, for resuming.
    pub fn apply_up_to<B: Backend, M: Freeze<B>>(&self, model: M, epoch: usize) -> Result<M> {
        self.steps
            .iter()
            .filter(|step| step.epoch <= epoch)
            .try_fold(model, |m, step| m.unfreeze_matching(&step.selector))
    }
}
