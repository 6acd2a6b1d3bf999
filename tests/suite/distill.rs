use crate::common::*;
use burn::module::{AutodiffModule, Module};
use burn::nn::Linear;
use burn::prelude::*;
use burn_transfer::distill::init::{
    copy_layers, every_other, mlp_from_teacher, prune_mlp, trainable,
};
use burn_transfer::distill::{Distiller, Unlabelled};
use burn_transfer::loss::{DistillLossConfig, DistillTargets};
use burn_transfer::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the samples the teacher has seen (a static, since modules are cloned freely).
static TEACHER_SAMPLES: AtomicUsize = AtomicUsize::new(0);

#[derive(Module, Debug)]
struct CountingTeacher<B: Backend> {
    inner: TransferModel<B, MlpBackbone<B>, LinearHead<B>>,
}

impl<B: Backend> Classifier<B> for CountingTeacher<B> {
    type Input = Tensor<B, 2>;
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        TEACHER_SAMPLES.fetch_add(x.dims()[0], Ordering::SeqCst);
        self.inner.forward(x)
    }
}

fn teacher() -> TransferModel<Inner, MlpBackbone<Inner>, LinearHead<Inner>> {
    let d = device();
    TransferModel::with_linear_head(MlpBackbone::new(&[8, 32, 32], &d).unwrap(), 4, &d).unwrap()
}

fn student() -> TransferModel<B, MlpBackbone<B>, LinearHead<B>> {
    let d = device();
    TransferModel::with_linear_head(MlpBackbone::new(&[8, 6], &d).unwrap(), 4, &d).unwrap()
}

fn quiet_tuner(epochs: usize) -> FineTuner<B> {
    quiet(FineTuner::<B>::new().learning_rate(1e-2).epochs(epochs))
}

#[test]
fn cached_teacher_runs_once_per_sample_live_teacher_every_epoch() {
    let train = batches::<B>(3, 8, 8, 4);
    let valid = batches::<Inner>(1, 8, 8, 4);
    let counting = CountingTeacher { inner: teacher() };
    let distiller = Distiller::new(counting, DistillLossConfig::new(), quiet_tuner(3)).unwrap();

    TEACHER_SAMPLES.store(0, Ordering::SeqCst);
    let cache = distiller.cache_teacher(&train);
    let cached = cache
        .attach(train.clone(), |b| b.targets.dims()[0])
        .unwrap()
        .shuffled(5);
    let outcome = distiller.fit(student(), &cached, Some(&valid)).unwrap();
    assert_eq!(outcome.history.epochs.len(), 3);
    assert_eq!(
        TEACHER_SAMPLES.load(Ordering::SeqCst),
        24,
        "one forward per sample, not per epoch"
    );

    TEACHER_SAMPLES.store(0, Ordering::SeqCst);
    distiller.fit(student(), &train, Some(&valid)).unwrap();
    assert_eq!(
        TEACHER_SAMPLES.load(Ordering::SeqCst),
        72,
        "a live teacher runs every epoch"
    );
}

#[test]
fn cache_shorter_than_the_data_is_an_error() {
    let train = batches::<B>(3, 8, 8, 4);
    let distiller = Distiller::new(teacher(), DistillLossConfig::new(), quiet_tuner(1)).unwrap();
    let cache = distiller.cache_teacher(&train[..2]);
    let err = cache.attach(train, |b| b.targets.dims()[0]).err().unwrap();
    assert!(
        err.to_string()
            .contains("holds 2 batches but the data set has 3"),
        "{err}"
    );
}

#[test]
fn distillation_logs_each_term_and_moves_the_student_toward_the_teacher() {
    let train = batches::<B>(6, 32, 8, 4);
    let valid = batches::<Inner>(1, 64, 8, 4);
    let t = teacher();
    let before = values::<Inner, _>(&t);
    let distiller = Distiller::new(
        t,
        DistillLossConfig::new()
            .with_temperature(2.0)
            .with_alpha(1.0)
            .with_mse(0.1),
        quiet_tuner(8),
    )
    .unwrap();
    let outcome = distiller.fit(student(), &train, Some(&valid)).unwrap();
    let first = &outcome.history.epochs[0];
    let last = outcome.history.epochs.last().unwrap();
    assert_eq!(first.terms.keys().collect::<Vec<_>>(), ["ce", "kd", "mse"]);
    assert!(
        last.terms["kd"] < first.terms["kd"],
        "{:?} → {:?}",
        first.terms,
        last.terms
    );
    assert_eq!(last.terms["ce"], 0.0, "α = 1: no CE");
    assert_eq!(
        values::<Inner, _>(distiller.teacher()),
        before,
        "the teacher never changes"
    );
    assert!(
        outcome
            .history
            .to_csv()
            .lines()
            .next()
            .unwrap()
            .ends_with("term_ce,term_kd,term_mse")
    );
}

#[test]
fn unlabelled_distillation_uses_soft_targets_only() {
    crate::common::isolated(
        "distill::unlabelled_distillation_child",
        "BURN_TRANSFER_UNLABELLED_TEST",
    );
}

/// The body of the test above, run alone in a child process: the teacher's and student's
/// initial weights come from burn's global generator, which parallel tests share.
#[test]
fn unlabelled_distillation_child() {
    if std::env::var("BURN_TRANSFER_UNLABELLED_TEST").is_err() {
        return;
    }
    // Unseeded, burn draws the initial weights from OS entropy: seed them, so the run is
    // the same every time. (Over seeds 0–19, 20 epochs raised agreement on every one; 6
    // epochs left seed 9 at 0.55 → 0.50, which is how this test once failed in CI.)
    <Inner as Backend>::seed(&device(), 7);
    let inputs: Vec<Unlabelled<Tensor<B, 2>>> = batches::<B>(4, 16, 8, 4)
        .into_iter()
        .map(|b| Unlabelled(b.inputs))
        .collect();
    let valid = batches::<Inner>(1, 16, 8, 4);
    let distiller = Distiller::new(
        teacher(),
        DistillLossConfig::new().with_temperature(2.0),
        quiet_tuner(20),
    )
    .unwrap();
    let outcome = distiller.fit(student(), &inputs, Some(&valid)).unwrap();
    let first = &outcome.history.epochs[0];
    let last = outcome.history.epochs.last().unwrap();
    assert_eq!(first.terms.keys().collect::<Vec<_>>(), ["kd"]);
    assert!(last.train_loss < first.train_loss);
    // With no labels, train accuracy is agreement with the teacher; it should rise.
    eprintln!(
        "agreement {} -> {}",
        first.train_accuracy, last.train_accuracy
    );
    assert!(
        last.train_accuracy > first.train_accuracy,
        "agreement with the teacher must rise: {} -> {}",
        first.train_accuracy,
        last.train_accuracy
    );
}

#[test]
fn bad_distillation_settings_are_errors() {
    let tuner = quiet_tuner(1);
    for (cfg, word) in [
        (
            DistillLossConfig::new().with_temperature(0.0),
            "temperature",
        ),
        (
            DistillLossConfig::new().with_temperature(f64::NAN),
            "temperature",
        ),
        (DistillLossConfig::new().with_alpha(1.5), "alpha"),
        (DistillLossConfig::new().with_alpha(-0.1), "alpha"),
    ] {
        let err = Distiller::new(teacher(), cfg, tuner.clone()).err().unwrap();
        assert!(err.to_string().contains(word), "{err}");
    }
    // Teacher with 4 classes, student with 3: both widths named.
    let d = device();
    let narrow =
        TransferModel::with_linear_head(MlpBackbone::<B>::new(&[8, 6], &d).unwrap(), 3, &d)
            .unwrap();
    let distiller = Distiller::new(teacher(), DistillLossConfig::new(), tuner).unwrap();
    let err = distiller
        .fit(
            narrow,
            &batches::<B>(1, 8, 8, 3),
            Some(&batches::<Inner>(1, 8, 8, 3)),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("expected width 4, got 3") && msg.contains("teacher's classes"),
        "{msg}"
    );
}

#[test]
fn loss_terms_refuse_missing_or_mismatched_inputs() {
    let d = device();
    let s = Tensor::<Inner, 2>::zeros([2, 3], &d);
    let t = Tensor::<Inner, 2>::zeros([2, 3], &d);
    // DKD needs labels.
    let dkd = DistillLossConfig::new()
        .with_dkd(1.0, 1.0, 8.0)
        .init::<Inner>(&d)
        .unwrap();
    let err = dkd
        .forward(DistillTargets::new(s.clone(), t.clone()), 1)
        .unwrap_err();
    assert!(err.to_string().contains("labels"), "{err}");
    // A hint projector 5 → 7 fed 4-wide hidden states.
    let hint = DistillLossConfig::new()
        .with_hint(1.0)
        .init_with_projectors::<Inner>(&[(5, 7)], &d)
        .unwrap();
    let h = DistillTargets::new(s.clone(), t.clone())
        .with_hidden(Tensor::zeros([2, 4], &d), Tensor::zeros([2, 7], &d));
    let err = hint.forward(h.clone(), 1).unwrap_err();
    assert!(
        err.to_string().contains("init_with_projectors(&[(4, 7)])"),
        "{err}"
    );
    // No projector at all for widths that differ.
    let bare = DistillLossConfig::new()
        .with_hint(1.0)
        .init::<Inner>(&d)
        .unwrap();
    let err = bare.forward(h, 1).unwrap_err();
    assert!(err.to_string().contains("no projector"), "{err}");
    // Token KD with a mask of the wrong shape.
    let kd = DistillLossConfig::new().init::<Inner>(&d).unwrap();
    let logits = Tensor::<Inner, 3>::zeros([2, 5, 3], &d);
    let mask = Tensor::<Inner, 2, Int>::ones([2, 4], &d);
    let err = kd
        .forward_tokens(logits.clone(), logits, Some(mask), None, 1)
        .unwrap_err();
    assert!(err.to_string().contains("attention mask"), "{err}");
}

#[test]
fn token_kd_ignores_padding() {
    let d = device();
    let kd = DistillLossConfig::new()
        .with_temperature(1.0)
        .init::<Inner>(&d)
        .unwrap();
    let s = Tensor::<Inner, 3>::from_floats([[[1.0, 0.0], [5.0, -5.0]]], &d);
    let t = Tensor::<Inner, 3>::from_floats([[[1.0, 0.0], [-5.0, 5.0]]], &d);
    // The second token differs wildly but is padding (Hugging Face's mask: 0): the loss is
    // that of the first, 0.
    let mask = Tensor::<Inner, 2, Int>::from_data(TensorData::from([[1i64, 0]]), &d);
    let masked = kd
        .forward_tokens(s.clone(), t.clone(), Some(mask), None, 1)
        .unwrap();
    assert!(masked.total.into_scalar().abs() < 1e-6);
    let unmasked = kd.forward_tokens(s, t, None, None, 1).unwrap();
    assert!(unmasked.total.into_scalar() > 1.0);
}

#[test]
fn copied_layers_carry_the_teachers_exact_weights() {
    // A teacher as training leaves it: an autodiff model made an inference one, then
    // cloned (burn's `Param::clone` drops the trainable flag of an inference parameter).
    let trained = TransferModel::with_linear_head(
        MlpBackbone::<B>::new(&[8, 8, 8, 8, 8], &device()).unwrap(),
        4,
        &device(),
    )
    .unwrap();
    let t = trained.valid().clone();
    let picked = every_other(4);
    assert_eq!(picked, [0, 2]);
    let body: MlpBackbone<B> = mlp_from_teacher(&t.backbone, &picked).unwrap();
    assert_eq!(body.layers.len(), 2);
    let summary = body.param_summary();
    assert_eq!(summary.trainable(), summary.total(), "the copies train");
    let plain = MlpBackbone::<B>::from_inner(t.backbone.clone());
    assert_eq!(
        plain.param_summary().trainable(),
        0,
        "burn's from_inner of a clone is frozen: what `init::trainable` is for"
    );
    let student: MlpBackbone<B> = trainable(t.backbone.clone());
    assert_eq!(student.param_summary().trainable(), summary.total() * 2);
    for (s, &i) in body.layers.iter().zip(&picked) {
        assert_eq!(
            s.weight.val().inner().to_data(),
            t.backbone.layers[i].weight.val().to_data()
        );
    }
    let err = copy_layers::<B, Linear<B>>(&t.backbone.layers, &[0, 9]).unwrap_err();
    assert!(matches!(err, TransferError::StackTooShort { .. }), "{err}");
}

#[test]
fn pruning_nothing_keeps_the_outputs_and_pruning_keeps_the_strongest_units() {
    let t = teacher();
    let x = batch::<Inner>(5, 8, 8, 4).inputs;
    let (body, head) = prune_mlp(&t.backbone, &t.head, &[32, 32]).unwrap();
    let same = TransferModel::new(body, head).unwrap();
    assert_eq!(
        same.forward(x.clone()).to_data(),
        t.forward(x.clone()).to_data()
    );

    let (body, head) = prune_mlp(&t.backbone, &t.head, &[8, 4]).unwrap();
    let small = TransferModel::new(body, head).unwrap();
    assert_eq!(small.backbone.feature_dim(), 4);
    assert_eq!(small.forward(x).dims(), [5, 4]);
    assert!(small.num_params() < t.num_params() / 5);
    // The first layer kept the 8 columns with the largest norms.
    let column_norms = |layer: &burn::nn::Linear<Inner>| -> Vec<f32> {
        layer
            .weight
            .val()
            .powi_scalar(2)
            .sum_dim(0)
            .to_data()
            .to_vec()
            .unwrap()
    };
    let norms = column_norms(&t.backbone.layers[0]);
    let kept = column_norms(&small.backbone.layers[0]);
    let mut sorted = norms.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let threshold = sorted[7];
    assert!(kept.iter().all(|k| *k >= threshold - 1e-6));
    assert!(prune_mlp(&t.backbone, &t.head, &[0, 4]).is_err());
    assert!(prune_mlp(&t.backbone, &t.head, &[8]).is_err());
}

#[test]
fn a_distilled_student_trains_as_an_autodiff_module() {
    // The student made from the teacher's layers can itself be fine-tuned.
    let t = teacher();
    let body: MlpBackbone<B> = mlp_from_teacher(&t.backbone, &[0]).unwrap();
    let s = TransferModel::new(body, LinearHead::<B>::new(32, 4, &device()).unwrap()).unwrap();
    let outcome = quiet(
        FineTuner::<B>::new()
            .learning_rate(1e-2)
            .epochs(1)
            .monitor(Monitor::TrainLoss),
    )
    .fit(s, &batches::<B>(2, 8, 8, 4), None)
    .unwrap();
    assert_eq!(outcome.model.valid().backbone.layers.len(), 1);
}
