//! Learning-rate schedules as a function of training progress.
//!
//! burn's schedulers are stateful iterators over a fixed number of steps, and composing a
//! warmup with a decay multiplies them (the cosine already decays during warmup). Here a
//! schedule is a pure function of how much of the run is done, so the number of batches
//! need not be known in advance (burn's data loaders report progress, not length) and a
//! resumed run gets exactly the rate it would have had.

use crate::error::{Result, TransferError};

/// How the learning rate changes over the run. Every schedule scales each group's base
/// rate by the same factor.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LrSchedule {
    /// The base rate throughout.
    Constant,
    /// Linear warmup from 0 over the first `warmup` share of training (e.g. 0.1), then
    /// linear decay to 0 at the end (BERT's schedule, HF `get_linear_schedule_with_warmup`).
    Linear {
        /// Share of the run spent warming up, in `[0, 1)`.
        warmup: f64,
    },
    /// Linear warmup, then half a cosine from the base rate down to `min_factor` × base.
    Cosine {
        /// Share of the run spent warming up, in `[0, 1)`.
        warmup: f64,
        /// Final rate as a fraction of the base rate, in `[0, 1]`.
        min_factor: f64,
    },
}

impl LrSchedule {
    /// The factor for a step that starts at progress `start` and ends at `end` (shares of
    /// the whole run, `0 ≤ start < end ≤ 1`). Warmup is judged at the step's end, so the
    /// first step does not run at rate 0; decay at its start, so the last step still learns.
    pub fn factor(&self, start: f64, end: f64) -> f64 {
        let warm = |w: f64| {
            if w > 0.0 && end < w {
                Some(end / w)
            } else {
                None
            }
        };
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Linear { warmup } => {
                warm(warmup).unwrap_or_else(|| ((1.0 - start) / (1.0 - warmup)).clamp(0.0, 1.0))
            }
            LrSchedule::Cosine { warmup, min_factor } => warm(warmup).unwrap_or_else(|| {
                let t = ((start - warmup) / (1.0 - warmup)).clamp(0.0, 1.0);
                min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let check_warmup = |w: f64| {
            if !(0.0..1.0).contains(&w) {
                return Err(TransferError::config(
                    "warmup",
                    w,
                    "the warmup share must be in [0, 1), e.g. 0.1 for 10% of the run",
                ));
            }
            Ok(())
        };
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Linear { warmup } => check_warmup(warmup),
            LrSchedule::Cosine { warmup, min_factor } => {
                check_warmup(warmup)?;
                if !(0.0..=1.0).contains(&min_factor) {
                    return Err(TransferError::config(
                        "min_factor",
                        min_factor,
                        "the final rate is a fraction of the base rate, in [0, 1]",
                    ));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_warms_up_then_decays_to_zero() {
        let s = LrSchedule::Linear { warmup: 0.1 };
        assert!((s.factor(0.0, 0.05) - 0.5).abs() < 1e-12);
        assert!((s.factor(0.05, 0.1) - 1.0).abs() < 1e-12);
        assert!((s.factor(0.55, 0.6) - 0.5).abs() < 1e-12);
        assert!(s.factor(0.9, 1.0) > 0.0);
        assert_eq!(LrSchedule::Constant.factor(0.3, 0.4), 1.0);
    }

    #[test]
    fn cosine_ends_at_its_floor() {
        let s = LrSchedule::Cosine {
            warmup: 0.0,
            min_factor: 0.1,
        };
        assert!((s.factor(0.0, 0.01) - 1.0).abs() < 1e-12);
        assert!((s.factor(0.5, 0.51) - 0.55).abs() < 1e-12);
        assert!((s.factor(1.0, 1.0) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn bad_warmup_is_refused() {
        assert!(LrSchedule::Linear { warmup: 1.0 }.validate().is_err());
        assert!(
            LrSchedule::Cosine {
                warmup: 0.1,
                min_factor: 2.0
            }
            .validate()
            .is_err()
        );
        assert!(LrSchedule::Linear { warmup: 0.0 }.validate().is_ok());
    }
}
