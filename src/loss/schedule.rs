//! Values that change over epochs (temperature, α).

use crate::error::{Result, TransferError};

/// A scalar hyper-parameter as a function of the epoch (1-based).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ParamSchedule {
    /// The same value every epoch.
    Constant(f64),
    /// From `start` at epoch 1 to `end` at epoch `epochs`, linearly; `end` afterwards.
    Linear {
        /// Value at epoch 1.
        start: f64,
        /// Value from epoch `epochs` on.
        end: f64,
        /// Epoch at which `end` is reached (≥ 1).
        epochs: usize,
    },
}

impl ParamSchedule {
    /// Whether the value is the same at every epoch.
    pub fn is_constant(&self) -> bool {
        match *self {
            ParamSchedule::Constant(_) => true,
            ParamSchedule::Linear { start, end, epochs } => start == end || epochs <= 1,
        }
    }

    /// The value at `epoch` (1-based; 0 is treated as 1).
    pub fn at(&self, epoch: usize) -> f64 {
        match *self {
            ParamSchedule::Constant(v) => v,
            ParamSchedule::Linear { start, end, epochs } => {
                if epochs <= 1 {
                    return end;
                }
                let t = (epoch.max(1) - 1) as f64 / (epochs - 1) as f64;
                start + (end - start) * t.min(1.0)
            }
        }
    }

    /// Every value the schedule can take must satisfy `ok`.
    pub(crate) fn check(&self, name: &str, ok: impl Fn(f64) -> bool, rule: &str) -> Result<()> {
        let values = match *self {
            ParamSchedule::Constant(v) => vec![v],
            ParamSchedule::Linear { start, end, epochs } => {
                if epochs == 0 {
                    return Err(TransferError::config(
                        name,
                        "epochs = 0",
                        "a linear schedule needs at least 1 epoch",
                    ));
                }
                vec![start, end]
            }
        };
        match values.into_iter().find(|v| !ok(*v)) {
            Some(v) => Err(TransferError::config(name, v, rule)),
            None => Ok(()),
        }
    }
}

impl From<f64> for ParamSchedule {
    fn from(v: f64) -> Self {
        ParamSchedule::Constant(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_reaches_its_end_and_stays() {
        let s = ParamSchedule::Linear {
            start: 4.0,
            end: 1.0,
            epochs: 4,
        };
        let v: Vec<f64> = (1..=6).map(|e| s.at(e)).collect();
        assert_eq!(v, [4.0, 3.0, 2.0, 1.0, 1.0, 1.0]);
        assert_eq!(ParamSchedule::from(2.0).at(9), 2.0);
        assert!(s.check("T", |t| t > 0.0, "> 0").is_ok());
        assert!(
            ParamSchedule::Linear {
                start: 1.0,
                end: 0.0,
                epochs: 3
            }
            .check("T", |t| t > 0.0, "> 0")
            .is_err()
        );
    }
}
