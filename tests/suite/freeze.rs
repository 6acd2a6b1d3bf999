use crate::common::*;
use burn::module::AutodiffModule;
use burn_transfer::prelude::*;

#[test]
fn frozen_parameters_stay_bitwise_while_trainable_ones_move() {
    let model = mlp_model().freeze_matching("backbone.layers.0").unwrap();
    let before = values::<B, _>(&model);
    let train = batches::<B>(3, 8, 8, 4);
    // Weight decay on: a frozen parameter must not even decay.
    let mut session = quiet(FineTuner::<B>::new().learning_rate(1e-2))
        .session(model)
        .unwrap();
    session.begin_epoch(1).unwrap();
    for (i, b) in train.into_iter().enumerate() {
        session.train_step(b, (i + 1) as f64 / 3.0).unwrap();
    }
    assert_eq!(session.steps(), 3);
    let after = values::<B, _>(session.model());
    for ((path, a), (_, b)) in before.iter().zip(&after) {
        if path.starts_with("backbone.layers.0.") {
            assert_eq!(a, b, "{path} changed although frozen");
        } else {
            assert_ne!(a, b, "{path} did not train");
        }
    }
}

#[test]
fn frozen_wrapper_keeps_batchnorm_statistics_and_gets_no_gradient() {
    let d = device();
    let body = BnBackbone::<B>::new(&d);
    let mean_before = body.norm.running_mean.value().to_data();
    let weight_before = value_of::<B, _>(&body, "linear.weight");
    let model = TransferModel::new(
        Frozen::new(body.clone()),
        LinearHead::new(6, 4, &d).unwrap(),
    )
    .unwrap();
    // Even an explicit unfreeze cannot make the wrapped body trainable.
    let model = model.unfreeze();
    assert_eq!(model.param_summary().trainable(), 6 * 4 + 4);
    let train = batches::<B>(4, 16, 8, 4);
    let outcome = quiet(
        FineTuner::<B>::new()
            .learning_rate(1e-1)
            .epochs(2)
            .monitor(Monitor::TrainLoss),
    )
    .fit(model, &train, None)
    .unwrap();
    let (frozen, _) = outcome.model.into_parts();
    let body = frozen.into_inner();
    assert_eq!(body.norm.running_mean.value().to_data(), mean_before);
    assert_eq!(value_of::<B, _>(&body, "linear.weight"), weight_before);

    // Control: the same body trained without the wrapper does move its statistics, so the
    // assertion above can fail.
    let model =
        TransferModel::new(BnBackbone::<B>::new(&d), LinearHead::new(6, 4, &d).unwrap()).unwrap();
    let stats_before = model.backbone.norm.running_mean.value().to_data();
    let outcome = quiet(
        FineTuner::<B>::new()
            .learning_rate(1e-1)
            .epochs(1)
            .monitor(Monitor::TrainLoss),
    )
    .fit(model, &train, None)
    .unwrap();
    assert_ne!(
        outcome
            .model
            .valid()
            .backbone
            .norm
            .running_mean
            .value()
            .to_data(),
        stats_before
    );
}

#[test]
fn freeze_all_but_last_k_layers_of_a_stack() {
    let model = mlp_model()
        .freeze_all_but_last("backbone.layers", 1)
        .unwrap();
    let summary = model.param_summary();
    assert_eq!(
        summary.trainable_paths(),
        [
            "backbone.layers.1.weight",
            "backbone.layers.1.bias",
            "head.linear.weight",
            "head.linear.bias"
        ]
    );
    assert!(
        mlp_model()
            .freeze_all_but_last("backbone.layers", 3)
            .is_err()
    );
    let all = mlp_model()
        .freeze_all_but_last("backbone.layers", 0)
        .unwrap();
    assert_eq!(
        all.param_summary().trainable_paths(),
        ["head.linear.weight", "head.linear.bias"]
    );
    // Unfreezing by glob brings them back.
    let back = all
        .unfreeze_matching("backbone.layers.[0-1].weight")
        .unwrap();
    assert_eq!(back.param_summary().trainable_paths().len(), 4);
    println!("{}", back.param_summary());
}

#[test]
fn gradual_unfreezing_applies_at_the_scheduled_epochs() {
    let model = mlp_model().freeze_matching("backbone").unwrap();
    let schedule = UnfreezeSchedule::gradual("backbone.layers", 2, 2, 2).unwrap();
    let train = batches::<B>(2, 8, 8, 4);
    let outcome = quiet(
        FineTuner::<B>::new()
            .learning_rate(1e-3)
            .epochs(4)
            .monitor(Monitor::TrainLoss),
    )
    .unfreeze_schedule(schedule.clone())
    .fit(model, &train, None)
    .unwrap();
    let trainable: Vec<usize> = outcome
        .history
        .epochs
        .iter()
        .map(|e| e.trainable_params)
        .collect();
    let head = 16 * 4 + 4;
    let layer = 16 * 16 + 16;
    let first = 8 * 16 + 16;
    assert_eq!(
        trainable,
        [head, head + layer, head + layer, head + layer + first]
    );
    // Resuming at epoch 4 reaches the same state from the frozen model in one call.
    let resumed = schedule
        .apply_up_to(mlp_model().freeze_matching("backbone").unwrap(), 4)
        .unwrap();
    assert_eq!(resumed.param_summary().trainable(), head + layer + first);
}
