//! The same seed trains to the same weights, bit for bit, within a process and from one
//! process to the next — what a user who passes `.seed(…)` expects.
//!
//! Two causes made runs differ before: burn-ndarray 0.21's approximate reciprocal in the
//! gradients of `log` and of division (every cross-entropy; see `burn_transfer::exact`),
//! and partial sums grouped by rayon's work stealing in the convolution kernels' weight
//! gradients. The runs (`tests/shared/seeded_run.rs`) reach both, and the divisions inside
//! layer norm, batch norm and attention's softmax: a convolutional network with batch norm
//! and a small BERT, cross-entropy, AdamW, several threads.

use crate::seeded_run::{seeded_bert_checksum, seeded_cnn_checksum};

const CHILD: &str = "BURN_TRANSFER_REPRODUCIBLE_TEST";

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
    let run = || {
        (
            seeded_cnn_checksum::<crate::common::B>(),
            seeded_bert_checksum::<crate::common::B>(),
        )
    };
    let (first, second) = (run(), run());
    assert_eq!(
        first, second,
        "two runs in one process trained different weights"
    );
    println!("checksum {} {}", first.0, first.1);
}
