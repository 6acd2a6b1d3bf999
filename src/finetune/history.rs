//! The per-epoch record of a run, as data and as CSV, JSON and an SVG chart.

use crate::checkpoint::atomic_write;
use crate::error::{Result, TransferError};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Metrics of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy (measured in training mode, on the fly).
    pub train_accuracy: f64,
    /// Validation loss, when there was validation data.
    pub valid_loss: Option<f64>,
    /// Validation accuracy, when there was validation data.
    pub valid_accuracy: Option<f64>,
    /// Base-group learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Trainable parameters during the epoch.
    pub trainable_params: usize,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
    /// Mean of each named loss term over the epoch (distillation: `kd`, `ce`, ...).
    #[serde(default)]
    pub terms: BTreeMap<String, f64>,
}

/// Every epoch of a run, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// One entry per finished epoch.
    pub epochs: Vec<EpochMetrics>,
}

const CSV_HEADER: &str = "epoch,train_loss,train_accuracy,valid_loss,valid_accuracy,learning_rate,trainable_params,seconds";

impl History {
    /// The history as CSV with a header line; missing values are empty cells. Named loss
    /// terms, if any, follow as `term_<name>` columns.
    pub fn to_csv(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let names: BTreeSet<&String> = self.epochs.iter().flat_map(|e| e.terms.keys()).collect();
        let mut out = String::from(CSV_HEADER);
        for n in &names {
            out.push_str(&format!(",term_{n}"));
        }
        out.push('\n');
        for e in &self.epochs {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}",
                e.epoch,
                e.train_loss,
                e.train_accuracy,
                opt(e.valid_loss),
                opt(e.valid_accuracy),
                e.learning_rate,
                e.trainable_params,
                e.seconds
            ));
            for n in &names {
                out.push(',');
                out.push_str(&opt(e.terms.get(*n).copied()));
            }
            out.push('\n');
        }
        out
    }

    /// The history as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| TransferError::Export {
            format: "JSON".into(),
            reason: e.to_string(),
        })
    }

    /// Reads a history written by [`History::write_json`].
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| TransferError::Export {
            format: "JSON".into(),
            reason: format!("cannot parse: {e}"),
        })
    }

    /// Writes [`History::to_csv`] to `path` atomically.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        atomic_write(path, self.to_csv().as_bytes())
    }

    /// Writes [`History::to_json`] to `path` atomically.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        atomic_write(path, self.to_json()?.as_bytes())
    }

    /// An SVG chart: loss (train, valid) on the left, accuracy (train, valid) on the right.
    pub fn to_svg(&self) -> Result<String> {
        render_svg(self).map_err(|reason| TransferError::Export {
            format: "SVG".into(),
            reason,
        })
    }

    /// Writes [`History::to_svg`] to `path` atomically.
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        atomic_write(path, self.to_svg()?.as_bytes())
    }
}

/// Two line charts side by side (loss, accuracy), train and valid series.
fn render_svg(history: &History) -> std::result::Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_horizontally(480);
        let series = |f: fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
            history
                .epochs
                .iter()
                .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
                .collect()
        };
        let charts = [
            (
                "loss",
                &panels.0,
                [series(|e| Some(e.train_loss)), series(|e| e.valid_loss)],
            ),
            (
                "accuracy",
                &panels.1,
                [
                    series(|e| Some(e.train_accuracy)),
                    series(|e| e.valid_accuracy),
                ],
            ),
        ];
        let last_epoch = history.epochs.last().map_or(1, |e| e.epoch).max(2) as f64;
        for (title, area, [train, valid]) in charts {
            let values = train.iter().chain(&valid).map(|p| p.1);
            let lo = values.clone().fold(f64::INFINITY, f64::min);
            let hi = values.fold(f64::NEG_INFINITY, f64::max);
            let (lo, hi) = if lo.is_finite() && hi > lo {
                (lo, hi)
            } else {
                (0.0, 1.0)
            };
            let pad = (hi - lo) * 0.05;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(1.0..last_epoch, (lo - pad)..(hi + pad))
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .draw()
                .map_err(|e| e.to_string())?;
            for (name, points, color) in [("train", train, BLUE), ("valid", valid, RED)] {
                if points.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        History {
            epochs: (1..=3)
                .map(|e| EpochMetrics {
                    epoch: e,
                    train_loss: 1.0 / e as f64,
                    train_accuracy: 0.5 + 0.1 * e as f64,
                    valid_loss: (e != 2).then_some(1.2 / e as f64),
                    valid_accuracy: (e != 2).then_some(0.4 + 0.1 * e as f64),
                    learning_rate: 1e-3,
                    trainable_params: 100,
                    seconds: 0.5,
                    terms: [("kd".to_string(), 0.1 * e as f64)].into_iter().collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn csv_and_json_round_trip() {
        let h = sample();
        let csv = h.to_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], format!("{CSV_HEADER},term_kd"));
        assert_eq!(lines.len(), 4);
        assert!(
            lines[2].contains(",,"),
            "missing values are empty cells: {}",
            lines[2]
        );
        assert_eq!(History::from_json(&h.to_json().unwrap()).unwrap(), h);
        assert!(History::from_json("{").is_err());
    }

    #[test]
    fn svg_has_both_panels_and_series() {
        let svg = sample().to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("loss") && svg.contains("accuracy"));
        assert!(svg.matches("<polyline").count() >= 4, "{svg}");
    }
}
