//! Bad input gets a clear error, never a panic.
use crate::common::*;
use burn::prelude::*;
use burn_transfer::prelude::*;

fn fit_err(tuner: FineTuner<B>, train: &Vec<Batch<B>>) -> TransferError {
    let valid = batches::<Inner>(1, 8, 8, 4);
    quiet(tuner)
        .fit(mlp_model(), train, Some(&valid))
        .unwrap_err()
}

#[test]
fn bad_learning_rates_are_refused() {
    let train = batches::<B>(1, 8, 8, 4);
    for lr in [0.0, -1e-3, f64::NAN, f64::INFINITY] {
        let err = fit_err(FineTuner::new().learning_rate(lr), &train);
        assert!(matches!(err, TransferError::InvalidConfig { .. }), "{err}");
        assert!(err.to_string().contains("learning"), "{err}");
    }
    let err = fit_err(FineTuner::new().group("head", 0.0).unwrap(), &train);
    assert!(err.to_string().contains("group `head`"), "{err}");
}

#[test]
fn zero_epochs_and_zero_accumulation_are_refused() {
    let train = batches::<B>(1, 8, 8, 4);
    let err = fit_err(FineTuner::new().epochs(0), &train);
    assert!(err.to_string().contains("epochs"), "{err}");
    let err = fit_err(FineTuner::new().accumulate(0), &train);
    assert!(err.to_string().contains("accumulate"), "{err}");
    let err = fit_err(FineTuner::new().clip_grad_norm(-1.0), &train);
    assert!(err.to_string().contains("clip_grad_norm"), "{err}");
}

#[test]
fn empty_training_data_is_an_error() {
    let err = fit_err(FineTuner::new(), &Vec::new());
    assert!(matches!(err, TransferError::EmptyData { .. }), "{err}");
    assert!(err.to_string().contains("training"), "{err}");
}

#[test]
fn a_model_with_nothing_to_train_is_an_error_unless_unfreezing_is_scheduled() {
    let train = batches::<B>(1, 8, 8, 4);
    let err = quiet(FineTuner::new())
        .fit(mlp_model().freeze(), &train, None)
        .unwrap_err();
    assert!(
        matches!(err, TransferError::NothingToTrain { total: 484 }),
        "{err}"
    );
    assert!(err.to_string().contains("init::trainable"), "{err}");
    // Everything frozen at the start, the head unfrozen at epoch 2: a valid plan.
    let tuner = quiet(FineTuner::new().epochs(2)).unfreeze_schedule(
        UnfreezeSchedule::new()
            .at(2, Selector::glob("head.*").unwrap())
            .unwrap(),
    );
    let valid = batches::<Inner>(1, 8, 8, 4);
    let outcome = tuner.fit(mlp_model().freeze(), &train, Some(&valid));
    assert!(outcome.is_ok(), "{:?}", outcome.err());
}

#[test]
fn labels_beyond_the_head_are_an_error() {
    // The head has 4 outputs; the second batch holds a label 5, the first a valid one.
    let mut train = batches::<B>(2, 8, 8, 4);
    train[1].targets = Tensor::from_data(
        TensorData::new(vec![0i64, 1, 5, 2, 3, 0, 1, 2], [8]),
        &device(),
    );
    let err = fit_err(FineTuner::new(), &train);
    match &err {
        TransferError::LabelOutOfRange {
            label: 5,
            batch: 2,
            num_classes: 4,
            ..
        } => {}
        other => panic!("unexpected: {other}"),
    }
    assert!(err.to_string().contains("label 5 in batch 2"), "{err}");
}

#[test]
fn head_width_mismatch_names_both_widths() {
    let d = device();
    let body = MlpBackbone::<B>::new(&[8, 16], &d).unwrap();
    assert!(MlpBackbone::<B>::new(&[8], &d).is_err());
    assert!(MlpBackbone::<B>::new(&[8, 0], &d).is_err());
    let err = TransferModel::new(body, LinearHead::new(12, 4, &d).unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            TransferError::WidthMismatch {
                expected: 16,
                actual: 12,
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("16") && msg.contains("12"), "{msg}");
    assert!(LinearHead::<B>::new(0, 4, &d).is_err());
    assert!(
        MlpHeadConfig::new(16, vec![8], 4)
            .with_dropout(1.5)
            .init::<B>(&d)
            .is_err()
    );
}

#[test]
fn selector_that_matches_nothing_lists_the_paths() {
    let err = mlp_model().freeze_matching("encoder.*").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("backbone.layers.0.weight") && msg.contains("head.linear.bias"),
        "{msg}"
    );
    let err = FineTuner::<B>::new().group("layers.[", 1e-3).unwrap_err();
    assert!(matches!(err, TransferError::InvalidPattern { .. }), "{err}");
    let train = batches::<B>(1, 8, 8, 4);
    let err = fit_err(FineTuner::new().group("decoder", 1e-3).unwrap(), &train);
    assert!(
        matches!(err, TransferError::SelectorMatchedNothing { .. }),
        "{err}"
    );
}

#[test]
fn validation_monitor_without_validation_data_is_refused() {
    let train = batches::<B>(1, 8, 8, 4);
    let err = quiet(FineTuner::new())
        .fit(mlp_model(), &train, None)
        .unwrap_err();
    assert!(err.to_string().contains("TrainLoss"), "{err}");
}
