use crate::common::*;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn_transfer::checkpoint::load_model;
use burn_transfer::finetune::{History, evaluate};
use burn_transfer::prelude::*;

fn grad_of(
    model: &TransferModel<B, MlpBackbone<B>, LinearHead<B>>,
    b: &Batch<B>,
    path: &str,
) -> Vec<f32> {
    let logits = model.forward(b.inputs.clone());
    let loss = CrossEntropyLossConfig::new()
        .init(&device())
        .forward(logits, b.targets.clone());
    let grads = loss.backward();
    let p = match path {
        "head.linear.weight" => model.head.linear.weight.val(),
        "backbone.layers.0.weight" => model.backbone.layers[0].weight.val(),
        _ => unreachable!(),
    };
    p.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap()
}

#[test]
fn discriminative_rates_give_each_group_its_own_sgd_step() {
    let model = mlp_model();
    let b = batch::<B>(16, 8, 4, 3);
    let g_head = grad_of(&model, &b, "head.linear.weight");
    let g_body = grad_of(&model, &b, "backbone.layers.0.weight");
    let before_head = value_of::<B, _>(&model, "head.linear.weight");
    let before_body = value_of::<B, _>(&model, "backbone.layers.0.weight");
    let tuner = quiet(FineTuner::<B>::new())
        .optimizer(OptimizerKind::sgd())
        .learning_rate(0.01)
        .group("head", 0.5)
        .unwrap();
    let mut s = tuner.session(model).unwrap();
    s.begin_epoch(1).unwrap();
    s.train_step(b, 1.0).unwrap();
    let after_head = value_of::<B, _>(s.model(), "head.linear.weight");
    let after_body = value_of::<B, _>(s.model(), "backbone.layers.0.weight");
    for (lr, before, after, grad) in [
        (0.5f32, &before_head, &after_head, &g_head),
        (0.01, &before_body, &after_body, &g_body),
    ] {
        let max_grad = grad.iter().fold(0f32, |m, g| m.max(g.abs()));
        assert!(max_grad > 0.0);
        for ((b, a), g) in before.iter().zip(after).zip(grad) {
            assert!(
                ((b - a) - lr * g).abs() < 1e-6,
                "update {} vs lr·grad {}",
                b - a,
                lr * g
            );
        }
    }
}

#[test]
fn four_micro_batches_of_8_equal_one_batch_of_32() {
    let model = mlp_model();
    let big = batch::<B>(32, 8, 4, 9);
    let micro: Vec<Batch<B>> = (0..4)
        .map(|i| {
            ClassificationBatch::new(
                big.inputs.clone().slice([i * 8..(i + 1) * 8, 0..8]),
                big.targets.clone().narrow(0, i * 8, 8),
            )
        })
        .collect();
    let sgd = |acc: usize| {
        quiet(FineTuner::<B>::new())
            .optimizer(OptimizerKind::sgd())
            .learning_rate(0.1)
            .accumulate(acc)
    };
    let mut one = sgd(1).session(model.clone()).unwrap();
    one.begin_epoch(1).unwrap();
    assert!(one.train_step(big, 1.0).unwrap().stepped);
    let mut four = sgd(4).session(model).unwrap();
    four.begin_epoch(1).unwrap();
    for (i, b) in micro.into_iter().enumerate() {
        let stats = four.train_step(b, (i + 1) as f64 / 4.0).unwrap();
        assert_eq!(stats.stepped, i == 3);
    }
    assert_eq!(four.steps(), 1);
    for ((path, a), (_, b)) in values::<B, _>(one.model())
        .iter()
        .zip(values::<B, _>(four.model()))
    {
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{path}: {x} vs {y}");
        }
    }
}

#[test]
fn clipping_bounds_the_global_gradient_norm() {
    let b = batch::<B>(16, 8, 4, 5);
    let model = mlp_model();
    let before = values::<B, _>(&model);
    let tuner = quiet(FineTuner::<B>::new())
        .optimizer(OptimizerKind::sgd())
        .learning_rate(1.0)
        .clip_grad_norm(1e-3);
    let mut s = tuner.session(model).unwrap();
    s.begin_epoch(1).unwrap();
    let stats = s.train_step(b, 1.0).unwrap();
    assert!(stats.grad_norm.unwrap() > 1e-3);
    // With SGD at lr 1 the whole update is the clipped gradient: its norm is the limit.
    let sq: f32 = before
        .iter()
        .zip(values::<B, _>(s.model()))
        .flat_map(|((_, a), (_, b))| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .collect::<Vec<_>>()
        })
        .sum();
    assert!((sq.sqrt() - 1e-3).abs() < 1e-5, "update norm {}", sq.sqrt());
}

#[test]
fn early_stopping_stops_at_the_expected_epoch() {
    // No improvement can exceed a min_delta of 1.0 in accuracy: epoch 1 is the best, and
    // with patience 2 the run stops after epoch 3.
    let train = batches::<B>(2, 8, 8, 4);
    let valid = batches::<Inner>(1, 16, 8, 4);
    let outcome = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(10))
        .early_stopping(
            EarlyStopping::new(Monitor::ValidAccuracy)
                .with_patience(2)
                .with_min_delta(1.0),
        )
        .fit(mlp_model(), &train, Some(&valid))
        .unwrap();
    assert!(outcome.stopped_early);
    assert_eq!(outcome.history.epochs.len(), 3);
    assert_eq!(outcome.best_epoch, 1);
}

#[test]
fn best_checkpoint_reloads_to_the_same_validation_score() {
    let dir = tempfile::tempdir().unwrap();
    let train = batches::<B>(4, 16, 8, 4);
    let valid = batches::<Inner>(2, 32, 8, 4);
    let outcome = quiet(FineTuner::<B>::new().learning_rate(5e-3).epochs(6))
        .checkpoint_dir(dir.path())
        .fit(mlp_model(), &train, Some(&valid))
        .unwrap();
    for f in [
        "best.mpk",
        "last.mpk",
        "history.json",
        "history.csv",
        "history.svg",
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let reloaded = load_model(mlp_model(), &dir.path().join("best.mpk"), &device()).unwrap();
    let score = evaluate(&reloaded.valid(), &valid).unwrap().loss;
    assert!(
        (score - outcome.best_value).abs() < 1e-6,
        "{score} vs {}",
        outcome.best_value
    );
    let in_memory = evaluate(&outcome.best_model.valid(), &valid).unwrap().loss;
    assert!((in_memory - outcome.best_value).abs() < 1e-6);
    let history =
        History::from_json(&std::fs::read_to_string(dir.path().join("history.json")).unwrap())
            .unwrap();
    assert_eq!(history, outcome.history);
}

/// Yields clean batches in epoch 1 and a NaN input at step 2 of epoch 2.
struct PoisonedSecondEpoch {
    clean: Vec<Batch<B>>,
    epoch: std::cell::Cell<usize>,
}

impl BatchSource<Batch<B>> for PoisonedSecondEpoch {
    fn epoch(&self) -> Box<dyn Iterator<Item = (Batch<B>, f64)> + '_> {
        self.epoch.set(self.epoch.get() + 1);
        let poison = self.epoch.get() == 2;
        let n = self.clean.len() as f64;
        Box::new(
            self.clean
                .iter()
                .cloned()
                .enumerate()
                .map(move |(i, mut b)| {
                    if poison && i == 1 {
                        b.inputs = b.inputs.mul_scalar(f32::NAN);
                    }
                    (b, (i + 1) as f64 / n)
                }),
        )
    }
}

#[test]
fn nan_loss_stops_with_the_step_named_and_the_best_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let train = PoisonedSecondEpoch {
        clean: batches::<B>(3, 8, 8, 4),
        epoch: Default::default(),
    };
    let valid = batches::<Inner>(1, 16, 8, 4);
    let err = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(3))
        .checkpoint_dir(dir.path())
        .fit(linear_model(), &train, Some(&valid))
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::NonFiniteLoss {
                epoch: 2,
                step: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("epoch 2, step 2"), "{err}");
    let history =
        History::from_json(&std::fs::read_to_string(dir.path().join("history.json")).unwrap())
            .unwrap();
    assert_eq!(history.epochs.len(), 1);
    let best = load_model(linear_model(), &dir.path().join("best.mpk"), &device()).unwrap();
    let loss = evaluate(&best.valid(), &valid).unwrap().loss;
    assert!((loss - history.epochs[0].valid_loss.unwrap()).abs() < 1e-6);
}

#[test]
fn fit_takes_burn_data_loaders_and_an_mlp_head() {
    use burn::data::dataloader::DataLoaderBuilder;
    use burn::data::dataset::InMemDataset;
    let d = device();
    let body = MlpBackbone::<B>::new(&[8, 16], &d).unwrap();
    let head = MlpHeadConfig::new(16, vec![12], 4)
        .with_dropout(0.2)
        .init::<B>(&d)
        .unwrap();
    assert_eq!((head.input_dim(), head.num_outputs()), (16, 4));
    let model = TransferModel::new(body, head).unwrap();
    let train = DataLoaderBuilder::<B, _, _>::new(RowBatcher)
        .batch_size(16)
        .shuffle(3)
        .build(InMemDataset::new(items(1)));
    let valid = DataLoaderBuilder::<Inner, _, _>::new(RowBatcher)
        .batch_size(32)
        .build(InMemDataset::new(items(2)));
    let outcome = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(3))
        .schedule(LrSchedule::Linear { warmup: 0.2 })
        .fit(model, &train, Some(&valid))
        .unwrap();
    assert_eq!(outcome.history.epochs.len(), 3);
    assert_eq!(
        outcome.history.epochs[0].trainable_params,
        8 * 16 + 16 + 16 * 12 + 12 + 12 * 4 + 4
    );
    // 64 items in batches of 16, 12 steps: the schedule follows the loader's progress, so
    // the last step (starting at 11/12 of the run) runs at (1 - 11/12) / 0.8 ≈ 0.10 × base.
    let last_lr = outcome.history.epochs[2].learning_rate;
    assert!(
        (last_lr - 1e-2 * (1.0 - 11.0 / 12.0) / 0.8).abs() < 1e-9,
        "{last_lr}"
    );
}

#[test]
fn training_improves_on_a_learnable_task() {
    let train = batches::<B>(8, 32, 8, 4);
    let valid = batches::<Inner>(2, 64, 8, 4);
    let outcome = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(15).seed(1))
        .schedule(LrSchedule::Cosine {
            warmup: 0.1,
            min_factor: 0.0,
        })
        .fit(mlp_model(), &train, Some(&valid))
        .unwrap();
    let first = &outcome.history.epochs[0];
    let last = outcome.history.epochs.last().unwrap();
    assert!(
        last.train_loss < first.train_loss * 0.7,
        "{} → {}",
        first.train_loss,
        last.train_loss
    );
    assert!(
        last.valid_accuracy.unwrap() > 0.8,
        "{:?}",
        last.valid_accuracy
    );
    // The cosine schedule ends near zero.
    assert!(last.learning_rate < 1e-3 * first.learning_rate.max(1e-2));
}

#[test]
fn the_best_model_keeps_its_own_batchnorm_statistics() {
    // burn's `clone` shares running statistics; the best model must not drift with the
    // epochs that follow it.
    let d = device();
    let model =
        TransferModel::new(BnBackbone::<B>::new(&d), LinearHead::new(6, 4, &d).unwrap()).unwrap();
    let outcome = quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(3))
        .early_stopping(
            EarlyStopping::new(Monitor::ValidAccuracy)
                .with_patience(5)
                .with_min_delta(1.0),
        )
        .fit(
            model,
            &batches::<B>(3, 16, 8, 4),
            Some(&batches::<Inner>(1, 16, 8, 4)),
        )
        .unwrap();
    assert_eq!(outcome.best_epoch, 1);
    let best = outcome
        .best_model
        .valid()
        .backbone
        .norm
        .running_mean
        .value()
        .into_data();
    let last = outcome
        .model
        .valid()
        .backbone
        .norm
        .running_mean
        .value()
        .into_data();
    assert_ne!(best, last);
}
