//! What a hostile but honest user passes: batches of the wrong shape, empty batches, token
//! labels out of range, checkpoints of other architectures, damaged files, NaN validation
//! data, a finished run resumed. Each is an error with the message a user reads, never a
//! panic, never a silent wrong load.

use crate::common::*;
use burn::prelude::*;
use burn_transfer::checkpoint::{load_model, save_model};
use burn_transfer::distill::{Distiller, Unlabelled};
use burn_transfer::finetune::{RESUME_FILE, ResumeState};
use burn_transfer::loss::{DistillLossConfig, IGNORE_INDEX};
use burn_transfer::prelude::*;

type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;

fn net<Bk: Backend>(widths: &[usize], classes: usize) -> Net<Bk> {
    let d = Default::default();
    TransferModel::with_linear_head(MlpBackbone::new(widths, &d).unwrap(), classes, &d).unwrap()
}

fn tuner() -> FineTuner<B> {
    quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(2))
}

fn shape_error(err: TransferError) -> String {
    assert!(matches!(err, TransferError::BatchShape(_)), "{err}");
    err.to_string()
}

#[test]
fn a_batch_of_another_width_is_an_error_naming_batch_and_shapes() {
    // The model takes 8 features; the second training batch has 5.
    let mut train = batches::<B>(3, 8, 8, 4);
    train[1] = batch::<B>(8, 5, 4, 7);
    let valid = batches::<Inner>(1, 8, 8, 4);
    let err = shape_error(tuner().fit(mlp_model(), &train, Some(&valid)).unwrap_err());
    assert!(
        err.contains("training batch 2") && err.contains("[8, 5]") && err.contains("takes 8"),
        "{err}"
    );
    // The same in validation.
    let train = batches::<B>(2, 8, 8, 4);
    let valid = vec![batch::<Inner>(8, 8, 8, 4), batch::<Inner>(8, 3, 4, 4)];
    let err = shape_error(tuner().fit(mlp_model(), &train, Some(&valid)).unwrap_err());
    assert!(err.contains("validation batch 2"), "{err}");
}

/// A model without its own input check: the panic inside burn becomes the error.
#[derive(burn::module::Module, Debug)]
struct Unchecked<B: Backend> {
    linear: burn::nn::Linear<B>,
}

impl<B: Backend> Classifier<B> for Unchecked<B> {
    type Input = Tensor<B, 2>;
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear.forward(x)
    }
}

#[test]
fn a_panic_inside_burn_becomes_an_error_naming_the_batch() {
    let d = device();
    let model = Unchecked::<B> {
        linear: burn::nn::LinearConfig::new(8, 4).init(&d),
    };
    let train = vec![batch::<B>(8, 6, 4, 1)];
    let err = shape_error(
        tuner()
            .monitor(Monitor::TrainLoss)
            .fit(model, &train, None)
            .unwrap_err(),
    );
    assert!(
        err.contains("training batch 1 does not fit the model"),
        "{err}"
    );
}

#[test]
fn caught_panics_print_nothing() {
    isolated(
        "reliability::caught_panic_child",
        "BURN_TRANSFER_QUIET_TEST",
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reliability::caught_panic_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BURN_TRANSFER_QUIET_TEST", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The child of the test above: a forward that panics inside burn, caught by the crate.
#[test]
fn caught_panic_child() {
    if std::env::var("BURN_TRANSFER_QUIET_TEST").is_err() {
        return;
    }
    a_panic_inside_burn_becomes_an_error_naming_the_batch();
}

#[test]
fn empty_batches_are_an_error_in_the_middle_and_alone() {
    let valid = batches::<Inner>(1, 8, 8, 4);
    let empty = || batch::<B>(0, 8, 8, 4);
    let mut train = batches::<B>(3, 8, 8, 4);
    train[1] = empty();
    let err = shape_error(tuner().fit(mlp_model(), &train, Some(&valid)).unwrap_err());
    assert!(err.contains("training batch 2 has no rows"), "{err}");
    let err = shape_error(
        tuner()
            .fit(mlp_model(), &vec![empty()], Some(&valid))
            .unwrap_err(),
    );
    assert!(err.contains("training batch 1 has no rows"), "{err}");
    let train = batches::<B>(2, 8, 8, 4);
    let err = shape_error(
        tuner()
            .fit(mlp_model(), &train, Some(&vec![batch::<Inner>(0, 8, 8, 4)]))
            .unwrap_err(),
    );
    assert!(err.contains("validation batch 1 has no rows"), "{err}");
}

#[test]
fn token_labels_are_checked_and_ignore_index_and_padding_are_skipped() {
    let d = device();
    let kd = DistillLossConfig::new()
        .with_temperature(1.0)
        .with_alpha(0.0)
        .init::<Inner>(&d)
        .unwrap();
    // One sequence of three positions over a vocabulary of 7.
    let s = Tensor::<Inner, 3>::from_floats([[[1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]; 3]], &d);
    let labels = |l: [i64; 3]| Tensor::<Inner, 2, Int>::from_data(TensorData::from([l]), &d);
    let pad_last = || Tensor::<Inner, 2, Int>::from_data(TensorData::from([[1i64, 1, 0]]), &d);
    let ce = |l: [i64; 3], mask: Option<Tensor<Inner, 2, Int>>| {
        kd.forward_tokens(s.clone(), s.clone(), mask, Some(labels(l)), 1)
    };
    for bad in [7, -1, 100] {
        let err = ce([0, bad, 1], None).unwrap_err();
        assert!(
            matches!(
                err,
                TransferError::TokenLabelOutOfRange {
                    row: 0,
                    position: 1,
                    vocab: 7,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("-100"), "{err}");
    }
    // Out of range on a padded position: ignored, as PyTorch's ignore_index is.
    let padded = ce([6, 0, 7], Some(pad_last())).unwrap().total.into_scalar();
    // -100 anywhere: ignored.
    let ignored = ce([6, 0, IGNORE_INDEX], None).unwrap().total.into_scalar();
    // Both equal the mean cross-entropy of the first two positions alone.
    let log_z = (1f32.exp() + 2f32.exp() + 4.0 + 3f32.exp()).ln();
    let expected = ((log_z - 3.0) + (log_z - 1.0)) / 2.0;
    assert!((padded - expected).abs() < 1e-5, "{padded} vs {expected}");
    assert!((ignored - expected).abs() < 1e-5, "{ignored} vs {expected}");
    // All positions ignored: zero, not NaN.
    let none = ce([IGNORE_INDEX; 3], None).unwrap().total.into_scalar();
    assert_eq!(none, 0.0);
}

#[test]
fn a_checkpoint_of_another_architecture_is_an_error_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.mpk");
    let d = device();
    save_model(&net::<Inner>(&[8, 16, 16], 4), &path).unwrap();
    let cases: [(Net<Inner>, &str); 5] = [
        (
            net(&[8, 32, 16], 4),
            "`backbone.layers.0.weight` is [8, 16] in the file but [8, 32]",
        ),
        (
            net(&[8, 16, 16], 5),
            "`head.linear.weight` is [16, 4] in the file but [16, 5]",
        ),
        (
            net(&[9, 16, 16], 4),
            "`backbone.layers.0.weight` is [8, 16] in the file but [9, 16]",
        ),
        (
            net(&[8, 16, 16, 16], 4),
            "the model has `backbone.layers.2.weight`",
        ),
        (net(&[8, 16], 4), "the file has `backbone.layers.1.weight`"),
    ];
    for (model, expected) in cases {
        let err = load_model(model, &path, &d).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("another architecture"), "{err}");
    }
    // The same architecture loads.
    load_model(net::<Inner>(&[8, 16, 16], 4), &path, &d).unwrap();
}

#[test]
fn a_file_written_by_burns_own_recorder_is_checked_after_decoding() {
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("plain");
    let d = device();
    let saved = net::<Inner>(&[8, 16, 16], 4);
    saved
        .clone()
        .save_file(&stem, &NamedMpkFileRecorder::<FullPrecisionSettings>::new())
        .unwrap();
    let path = stem.with_extension("mpk");
    let loaded = load_model(net::<Inner>(&[8, 16, 16], 4), &path, &d).unwrap();
    assert_eq!(values(&loaded), values(&saved));
    let err = load_model(net::<Inner>(&[8, 32, 16], 4), &path, &d).unwrap_err();
    assert!(
        err.to_string().contains("backbone.layers.0.weight"),
        "{err}"
    );
    let err = load_model(net::<Inner>(&[8, 16, 16, 16], 4), &path, &d).unwrap_err();
    assert!(err.to_string().contains("another architecture"), "{err}");
}

#[test]
fn our_checkpoints_are_burn_records_that_burn_reads() {
    use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.mpk");
    let saved = net::<Inner>(&[8, 16, 16], 4);
    save_model(&saved, &path).unwrap();
    let read = net::<Inner>(&[8, 16, 16], 4)
        .load_file(
            &path,
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
            &device(),
        )
        .unwrap();
    assert_eq!(values(&read), values(&saved));
}

#[test]
fn a_flipped_byte_in_a_checkpoint_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.mpk");
    save_model(&net::<Inner>(&[8, 16, 16], 4), &path).unwrap();
    let good = std::fs::read(&path).unwrap();
    // Every 7th byte, across the record, the list of tensors and the footer.
    for at in (0..good.len()).step_by(7) {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        std::fs::write(&path, &bad).unwrap();
        let err = load_model(net::<Inner>(&[8, 16, 16], 4), &path, &device()).unwrap_err();
        assert!(
            matches!(err, TransferError::DamagedFile { .. }) && err.to_string().contains("m.mpk"),
            "byte {at}: {err}"
        );
    }
}

fn early_stopping_tuner(dir: &std::path::Path) -> FineTuner<B> {
    quiet(
        FineTuner::<B>::new()
            .learning_rate(1e-2)
            .epochs(50)
            .seed(3)
            .checkpoint_dir(dir)
            .resume(true),
    )
    // No epoch after the first can improve by 1e9: the run stops after 1 + patience epochs.
    .early_stopping(
        EarlyStopping::new(Monitor::ValidLoss)
            .with_patience(2)
            .with_min_delta(1e9),
    )
}

#[test]
fn a_run_that_stopped_early_resumes_as_finished() {
    let dir = tempfile::tempdir().unwrap();
    let train = batches::<B>(2, 8, 8, 4);
    let valid = batches::<Inner>(1, 8, 8, 4);
    let first = early_stopping_tuner(dir.path())
        .fit(mlp_model(), &train, Some(&valid))
        .unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.history.epochs.len(), 3);
    let state = ResumeState::load(&dir.path().join(RESUME_FILE))
        .unwrap()
        .unwrap();
    assert!(state.stopped_early);
    for _ in 0..2 {
        let again = early_stopping_tuner(dir.path())
            .fit(mlp_model(), &train, Some(&valid))
            .unwrap();
        assert!(again.stopped_early);
        assert_eq!(again.history.epochs.len(), 3);
        assert_eq!(again.best_epoch, first.best_epoch);
        assert_eq!(values(&again.model), values(&first.model));
        assert_eq!(values(&again.best_model), values(&first.best_model));
    }
}

#[test]
fn damaged_or_impossible_resume_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let train = batches::<B>(2, 8, 8, 4);
    let valid = batches::<Inner>(1, 8, 8, 4);
    let run = || {
        quiet(
            FineTuner::<B>::new()
                .epochs(2)
                .checkpoint_dir(dir.path())
                .resume(true),
        )
    };
    run().fit(mlp_model(), &train, Some(&valid)).unwrap();
    let path = dir.path().join(RESUME_FILE);
    let good = std::fs::read(&path).unwrap();

    // A flipped byte anywhere.
    for at in (0..good.len()).step_by(97) {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let err = run().fit(mlp_model(), &train, Some(&valid)).unwrap_err();
        assert!(err.to_string().contains(RESUME_FILE), "byte {at}: {err}");
    }
    // A well-formed file whose epoch is absurd: checked before any arithmetic.
    let mut state = ResumeState::from_bytes(&good, &path).unwrap();
    state.epoch = usize::MAX;
    std::fs::write(&path, state.to_bytes().unwrap()).unwrap();
    let err = run().fit(mlp_model(), &train, Some(&valid)).unwrap_err();
    assert!(err.to_string().contains("records epoch"), "{err}");
    // Resuming into another architecture.
    std::fs::write(&path, &good).unwrap();
    let err = quiet(
        FineTuner::<B>::new()
            .epochs(3)
            .checkpoint_dir(dir.path())
            .resume(true),
    )
    .fit(net::<B>(&[8, 24, 16], 4), &train, Some(&valid))
    .unwrap_err();
    assert!(err.to_string().contains("another architecture"), "{err}");
}

#[test]
fn a_nan_validation_loss_stops_the_run() {
    // One linear layer, no activation: a NaN input reaches the logits whatever the weights
    // (a ReLU may turn NaN into 0).
    let model = Unchecked::<B> {
        linear: burn::nn::LinearConfig::new(8, 4).init(&device()),
    };
    let train = batches::<B>(2, 8, 8, 4);
    let mut valid = batches::<Inner>(1, 8, 8, 4);
    valid[0].inputs = valid[0].inputs.clone().mul_scalar(f32::NAN);
    let err = tuner().fit(model, &train, Some(&valid)).unwrap_err();
    match &err {
        TransferError::NonFiniteValidLoss { epoch: 1, value } => assert!(value.is_nan()),
        other => panic!("unexpected: {other}"),
    }
    assert!(
        err.to_string().contains("validation loss became NaN"),
        "{err}"
    );
}

#[test]
fn a_student_with_other_classes_than_its_teacher_is_named_as_such() {
    let teacher = net::<Inner>(&[8, 16], 4);
    let distiller = Distiller::new(teacher, DistillLossConfig::new(), tuner()).unwrap();
    let train: Vec<Unlabelled<Tensor<B, 2>>> = batches::<B>(2, 8, 8, 4)
        .into_iter()
        .map(|b| Unlabelled(b.inputs))
        .collect();
    let valid = batches::<Inner>(1, 8, 8, 3);
    let err = distiller
        .fit(net::<B>(&[8, 6], 3), &train, Some(&valid))
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::WidthMismatch {
                expected: 4,
                actual: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("teacher's classes"), "{err}");
}

#[test]
fn an_unfreeze_selector_that_matches_nothing_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let train = batches::<B>(2, 8, 8, 4);
    let valid = batches::<Inner>(1, 8, 8, 4);
    let err = quiet(
        FineTuner::<B>::new()
            .epochs(4)
            .checkpoint_dir(dir.path())
            .unfreeze_schedule(
                UnfreezeSchedule::new()
                    .at(3, Selector::glob("encoder.*").unwrap())
                    .unwrap(),
            ),
    )
    .fit(mlp_model(), &train, Some(&valid))
    .unwrap_err();
    assert!(
        matches!(err, TransferError::SelectorMatchedNothing { .. }),
        "{err}"
    );
    assert!(!dir.path().join("last.mpk").exists(), "no epoch ran");
}
