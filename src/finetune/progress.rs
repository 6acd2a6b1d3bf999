//! What a person sees during and after a run: a progress bar, a line per epoch, a chart.

use super::history::{EpochMetrics, History};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::prelude::*;

/// A bar over one epoch, in per-mille of the epoch (data loaders report progress as a
/// share). Hidden when asked, and by indicatif when stderr is not a terminal.
pub(crate) fn epoch_bar(epoch: usize, epochs: usize, show: bool) -> ProgressBar {
    let target = if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(1000), target);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {percent:>3}% {elapsed} {msg}")
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

/// The per-epoch summary line.
pub(crate) fn epoch_line(m: &EpochMetrics, best: bool) -> String {
    let valid = match (m.valid_loss, m.valid_accuracy) {
        (Some(l), Some(a)) => format!(" | valid loss {l:.4} acc {:.2}%", a * 100.0),
        _ => String::new(),
    };
    let terms: String = m
        .terms
        .iter()
        .map(|(k, v)| format!(" {k} {v:.4}"))
        .collect();
    let terms = if terms.is_empty() {
        terms
    } else {
        format!(" |{terms}")
    };
    format!(
        "epoch {:>3} | train loss {:.4} acc {:.2}%{terms}{valid} | lr {:.2e} | {:.1}s{}",
        m.epoch,
        m.train_loss,
        m.train_accuracy * 100.0,
        m.learning_rate,
        m.seconds,
        if best { " *" } else { "" }
    )
}

/// Two line charts side by side (loss, accuracy), train and valid series.
pub(crate) fn render_svg(history: &History) -> Result<String, String> {
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
