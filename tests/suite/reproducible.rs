//! The same seed trains to the same weights, bit for bit, within a process and from one
//! process to the next — what a user who passes `.seed(…)` expects.
//!
//! Two causes made runs differ before: burn-ndarray 0.21's approximate reciprocal in the
//! gradients of `log` and of division (every cross-entropy; see `burn_transfer::exact`),
//! and partial sums grouped by rayon's work stealing in the convolution kernels' weight
//! gradients. The network here reaches both: a convolutional network with batch norm on a
//! batch of 32 (long enough for burn-ndarray's vectorised paths), cross-entropy, AdamW,
//! several threads.

use crate::common::*;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_transfer::models::{MobileNetV2, MobileNetV2Config};
use burn_transfer::prelude::*;

const CHILD: &str = "BURN_TRANSFER_REPRODUCIBLE_TEST";

/// A checksum of every trained weight's bits, after a seeded run from a seeded start.
fn train_once() -> u64 {
    let d = device();
    <Inner as Backend>::seed(&d, 11);
    let batches: Vec<ClassificationBatch<B, Tensor<B, 4>>> = (0..2)
        .map(|i| {
            ClassificationBatch::new(
                Tensor::random([32, 3, 32, 32], Distribution::Normal(0.0, 1.0), &d),
                Tensor::from_data(
                    TensorData::new((0..32).map(|j| ((i + j) % 5) as i64).collect(), [32]),
                    &d,
                ),
            )
        })
        .collect();
    let config = MobileNetV2Config {
        width_mult: 0.25,
        stage_depths: [1; 7],
    };
    let body = MobileNetV2::<B>::new(&config, &d).unwrap();
    let model = TransferModel::with_linear_head(body, 5, &d).unwrap();
    let tuner = FineTuner::<B>::new()
        .learning_rate(1e-3)
        .epochs(1)
        .seed(3)
        .monitor(Monitor::TrainLoss)
        .verbose(false);
    let trained = tuner.fit(model, &batches, None).unwrap().model;
    values(&trained)
        .iter()
        .flat_map(|(_, v)| v.iter())
        .fold(0u64, |h, v| h.rotate_left(5) ^ v.to_bits() as u64)
}

#[test]
fn seeded_training_gives_the_same_weights_in_every_run() {
    let run = || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reproducible::reproducible_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.split_once("checksum ").map(|(_, sum)| sum.trim()))
            .unwrap_or_else(|| panic!("the child printed no checksum:\n{stdout}"))
            .to_string()
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second, "two processes trained different weights");
}

/// The child of the test above (does nothing in a normal run): trains twice in this
/// process, checks both agree, prints the checksum for the parent to compare across
/// processes.
#[test]
fn reproducible_child() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let (first, second) = (train_once(), train_once());
    assert_eq!(
        first, second,
        "two runs in one process trained different weights"
    );
    println!("checksum {first}");
}
