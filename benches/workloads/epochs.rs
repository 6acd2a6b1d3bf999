//! Multi-epoch head-only fine-tuning (MLP workload, 10 batches of 256 per epoch): with the
//! frozen-feature cache (`FineTuner::fit_frozen_backbone`) and with the backbone recomputed
//! every step (`FineTuner::fit` on a `Frozen` body, PyTorch's usual loop). Reported as
//! epochs/s over a whole run (the cache's first pass included), against PyTorch's
//! `head_frozen_nograd` loop: 10 steps per epoch.

use crate::report::Summary;
use crate::workloads::{B_MLP, N_BATCHES, data, tuner};
use burn::tensor::backend::AutodiffBackend;
use burn_transfer::finetune::Monitor;
use burn_transfer::prelude::*;
use serde_json::{Value, json};
use std::time::Instant;

pub const NAMES: [&str; 2] = ["head_epochs_cached", "head_epochs_recompute"];

pub fn run<B: AutodiffBackend>(
    names: &[&String],
    epochs: usize,
    repeats: usize,
    device: &B::Device,
) -> Value {
    let mut out = json!({});
    for name in names {
        let mut rates = Vec::new();
        for _ in 0..repeats {
            B::seed(device, 0);
            let body = Frozen::new(
                MlpBackbone::<B>::new(&[784, 1024, 1024, 1024], device).expect("valid widths"),
            );
            let model = TransferModel::with_linear_head(body, 10, device).expect("head fits");
            let train = data::<B, 2>([B_MLP, 784], device);
            let t = tuner::<B>().epochs(epochs).monitor(Monitor::TrainLoss);
            let t0 = Instant::now();
            let outcome = match name.as_str() {
                "head_epochs_cached" => t.fit_frozen_backbone(model, &train, None),
                _ => t.fit(model, &train, None),
            }
            .expect("training runs");
            B::sync(device).expect("device sync");
            let secs = t0.elapsed().as_secs_f64();
            assert_eq!(outcome.history.epochs.len(), epochs);
            rates.push(epochs as f64 / secs);
        }
        let s = Summary::of(rates);
        println!(
            "{:<22} {:>8.3} epochs/s ({} epochs of {} batches per run)",
            name, s.median, epochs, N_BATCHES
        );
        out[name.as_str()] = json!({
            "epochs_per_s": s.to_json(),
            "epochs": epochs,
            "steps_per_epoch": N_BATCHES,
            "torch_workload": "head_frozen_nograd",
        });
    }
    out
}
