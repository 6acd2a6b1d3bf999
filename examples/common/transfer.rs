//! The transfer comparison the network examples share: a pretrained body with a new head,
//! (1) frozen (linear probing), (2) fine-tuned whole from that probed head (LP-FT, Kumar et
//! al. 2022), against (3) the same network from random initialisation, on several draws of
//! the labelled data; then the mean, the range and the time of each.
#![allow(dead_code)]

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn_transfer::finetune::evaluate;
use burn_transfer::freeze::ToInner;
use burn_transfer::prelude::*;
use std::time::Instant;

pub type B = Autodiff<NdArray>;
pub type Inner = NdArray;

/// The three variants, as the table names them.
pub const VARIANTS: [&str; 3] = [
    "pretrained, frozen body + new head",
    "pretrained, full fine-tune",
    "random init, full training",
];
/// The same in a draw's line.
const SHORT: [&str; 3] = ["frozen", "fine-tuned", "scratch"];

/// `$name` as a number, or `default` when it is unset or not one (the examples' run sizes).
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pretraining loop of the examples: AdamW at 1e-3 with a short warm-up and a cosine
/// decay, no validation.
pub fn pretrainer(epochs: usize, seed: u64) -> FineTuner<B> {
    FineTuner::<B>::new()
        .learning_rate(1e-3)
        .schedule(LrSchedule::Cosine {
            warmup: 0.05,
            min_factor: 0.01,
        })
        .seed(seed)
        .epochs(epochs)
        .monitor(Monitor::TrainLoss)
        .verbose(false)
}

/// Learning rates and epochs of the three variants.
pub struct Budget {
    /// Rate of the head on frozen features.
    pub head_only: f64,
    /// Epochs of the head on frozen features (a cached matrix product a step: cheap).
    pub head_epochs: usize,
    /// Rates of the body and of the new head when fine-tuning.
    pub fine_tune: (f64, f64),
    /// Rate of the network from scratch.
    pub scratch: f64,
    /// Epochs of the fine-tuned and scratch networks.
    pub epochs: usize,
    /// Seed of the heads, the scratch network and the loops.
    pub seed: u64,
}

/// Runs the three variants on one draw: (test accuracy, seconds) each, in [`VARIANTS`]'
/// order. `scratch` builds the randomly initialised network (called after seeding).
pub fn three_ways<Bb, X>(
    body: &Bb,
    scratch: impl FnOnce() -> burn_transfer::Result<Bb>,
    classes: usize,
    train: &Vec<ClassificationBatch<B, X>>,
    test: &Vec<ClassificationBatch<Inner, X::Inner>>,
    budget: &Budget,
) -> burn_transfer::Result<Vec<(f64, f64)>>
where
    Bb: AutodiffModule<B> + Backbone<B, Input = X> + Clone,
    Bb::InnerModule: Backbone<Inner, Input = X::Inner>,
    X: ToInner<B> + Clone + 'static,
    X::Inner: Clone + 'static,
{
    let device = Default::default();
    let tuner = |lr: f64, epochs: usize| {
        FineTuner::<B>::new()
            .learning_rate(lr)
            .seed(budget.seed)
            .epochs(epochs)
            .monitor(Monitor::TrainLoss)
            .verbose(false)
    };
    let head = || {
        B::seed(&device, budget.seed);
        LinearHead::new(body.feature_dim(), classes, &device)
    };
    let mut runs = Vec::new();

    // Frozen body: its features are computed once, then only the head trains.
    let started = Instant::now();
    let model = TransferModel::new(Frozen::new(body.clone()), head()?)?;
    let probed = tuner(budget.head_only, budget.head_epochs)
        .fit_frozen_backbone(model, train, None)?
        .model;
    let probe_seconds = started.elapsed().as_secs_f64();
    runs.push((evaluate(&probed.valid(), test)?.accuracy, probe_seconds));

    // Everything fine-tuned, starting from the head just trained on the frozen features
    // (linear probing, then fine-tuning: a random head's first gradients would otherwise
    // distort the pretrained features), the head at its own rate.
    let started = Instant::now();
    let (_, probe_head) = probed.into_parts();
    let model = TransferModel::new(body.clone(), probe_head)?;
    let (body_rate, head_rate) = budget.fine_tune;
    let model = tuner(body_rate, budget.epochs)
        .group("head", head_rate)?
        .fit(model, train, None)?
        .model;
    runs.push((
        evaluate(&model.valid(), test)?.accuracy,
        probe_seconds + started.elapsed().as_secs_f64(),
    ));

    // The same network from random initialisation, same data and epochs.
    let started = Instant::now();
    B::seed(&device, budget.seed);
    let model = TransferModel::new(scratch()?, head()?)?;
    let model = tuner(budget.scratch, budget.epochs)
        .fit(model, train, None)?
        .model;
    runs.push((
        evaluate(&model.valid(), test)?.accuracy,
        started.elapsed().as_secs_f64(),
    ));
    Ok(runs)
}

/// Accuracies and times of the variants over the draws.
#[derive(Default)]
pub struct Draws {
    accuracy: [Vec<f64>; 3],
    seconds: [Vec<f64>; 3],
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

impl Draws {
    /// Records one draw's runs and prints its line.
    pub fn record(&mut self, runs: Vec<(f64, f64)>) {
        for (v, (accuracy, seconds)) in runs.into_iter().enumerate() {
            self.accuracy[v].push(accuracy);
            self.seconds[v].push(seconds);
        }
        let draw = self.accuracy[0].len();
        let line: Vec<String> = SHORT
            .iter()
            .zip(&self.accuracy)
            .map(|(name, acc)| format!("{name} {}", super::table::percent(acc[draw - 1])))
            .collect();
        println!("draw {draw}: {}", line.join(", "));
    }

    /// Mean accuracy of each variant, in [`VARIANTS`]' order.
    pub fn means(&self) -> [f64; 3] {
        [0, 1, 2].map(|v| mean(&self.accuracy[v]))
    }

    /// The table: mean accuracy, range over the draws, seconds per run.
    pub fn print(&self) {
        use super::table::{Table, percent};
        let mut table = Table::new(&["", "mean accuracy", "range", "s/run"]);
        for (v, name) in VARIANTS.iter().enumerate() {
            let acc = &self.accuracy[v];
            let (lo, hi) = acc
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &a| (lo.min(a), hi.max(a)));
            table.row(vec![
                name.to_string(),
                percent(mean(acc)),
                format!("{}–{}", percent(lo), percent(hi)),
                format!("{:.1}", mean(&self.seconds[v])),
            ]);
        }
        table.print();
    }

    /// Exits 1 unless, on average, the better pretrained variant beats scratch.
    pub fn check_transfer(&self, what: &str) {
        let [frozen, tuned, scratch] = self.means();
        if frozen.max(tuned) <= scratch {
            eprintln!("the pretrained {what} did not beat random initialisation");
            std::process::exit(1);
        }
    }

    /// Exits 1 unless, on average, transfer beats scratch and fine-tuning at least matches
    /// the frozen features.
    pub fn check(&self, what: &str) {
        self.check_transfer(what);
        let [frozen, tuned, _] = self.means();
        if tuned < frozen {
            eprintln!("fine-tuning the pretrained {what} did worse than its frozen features");
            std::process::exit(1);
        }
    }
}
