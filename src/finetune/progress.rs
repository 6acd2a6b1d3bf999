//! What a person sees during and after a run: a progress bar, a line per epoch, a chart.

use super::history::EpochMetrics;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
