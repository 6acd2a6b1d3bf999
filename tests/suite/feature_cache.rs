//! Head-only fine-tuning on cached features (`FineTuner::fit_frozen_backbone`): the same
//! model as recomputing the frozen body every step, with the body run once per sample.

use crate::common::{B as Ad, Batch, Inner, batches, device};
use burn::module::Module;
use burn::prelude::*;
use burn_transfer::finetune::Monitor;
use burn_transfer::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Samples the counting body has seen (only the test below uses it).
static SEEN: AtomicUsize = AtomicUsize::new(0);

/// An MLP body that counts the samples it processes.
#[derive(Module, Debug)]
struct CountingBody<B: Backend> {
    mlp: MlpBackbone<B>,
}

impl<B: Backend> Backbone<B> for CountingBody<B> {
    type Input = Tensor<B, 2>;

    fn features(&self, input: Tensor<B, 2>) -> Tensor<B, 2> {
        SEEN.fetch_add(input.dims()[0], Ordering::SeqCst);
        self.mlp.features(input)
    }

    fn feature_dim(&self) -> usize {
        self.mlp.feature_dim()
    }
}

fn tuner() -> FineTuner<Ad> {
    FineTuner::<Ad>::new()
        .epochs(3)
        .learning_rate(1e-2)
        .verbose(false)
        .progress_bar(false)
}

fn data() -> (Vec<Batch<Ad>>, Vec<Batch<Inner>>) {
    (batches::<Ad>(4, 10, 8, 4), batches::<Inner>(2, 5, 8, 4))
}

#[test]
fn cached_features_train_the_same_head_as_recomputing_the_body() {
    let d = device();
    let body = Frozen::new(MlpBackbone::<Ad>::new(&[8, 16, 16], &d).unwrap());
    let model = TransferModel::with_linear_head(body, 4, &d).unwrap();
    let (train, valid) = data();
    let plain = tuner().fit(model.clone(), &train, Some(&valid)).unwrap();
    let cached = tuner()
        .fit_frozen_backbone(model.clone(), &train, Some(&valid))
        .unwrap();
    let tol = burn::tensor::Tolerance::<f32>::rel_abs(1e-5, 1e-6);
    for (a, b) in [
        (&plain.model, &cached.model),
        (&plain.best_model, &cached.best_model),
    ] {
        let (wa, wb) = (a.head.linear.weight.val(), b.head.linear.weight.val());
        wa.into_data().assert_approx_eq::<f32>(&wb.into_data(), tol);
        // The body comes back untouched.
        let before = model.backbone.get().layers[0].weight.val().into_data();
        b.backbone.get().layers[0]
            .weight
            .val()
            .into_data()
            .assert_eq(&before, true);
    }
    assert_eq!(plain.best_epoch, cached.best_epoch);
    for (p, c) in plain.history.epochs.iter().zip(&cached.history.epochs) {
        assert!((p.train_loss - c.train_loss).abs() < 1e-5, "{p:?} vs {c:?}");
        assert!((p.valid_loss.unwrap() - c.valid_loss.unwrap()).abs() < 1e-5);
        assert_eq!(p.train_accuracy, c.train_accuracy);
    }
    // Training moved the head (the comparison above is not between two untrained heads).
    let start = model.head.linear.weight.val().into_data();
    let end = cached.model.head.linear.weight.val().into_data();
    assert_ne!(start, end);
    // Without validation data too.
    let no_valid = tuner()
        .monitor(Monitor::TrainLoss)
        .fit_frozen_backbone(model, &train, None)
        .unwrap();
    assert_eq!(no_valid.history.epochs.len(), 3);
    assert!(no_valid.history.epochs[0].valid_loss.is_none());
}

#[test]
fn the_frozen_body_runs_once_per_sample() {
    let d = device();
    let body = Frozen::new(CountingBody {
        mlp: MlpBackbone::<Ad>::new(&[8, 16], &d).unwrap(),
    });
    let model = TransferModel::with_linear_head(body, 4, &d).unwrap();
    let (train, valid) = data();
    // 40 training and 10 validation samples, 3 epochs.
    SEEN.store(0, Ordering::SeqCst);
    tuner().fit(model.clone(), &train, Some(&valid)).unwrap();
    assert_eq!(SEEN.load(Ordering::SeqCst), 3 * (40 + 10));

    SEEN.store(0, Ordering::SeqCst);
    tuner()
        .fit_frozen_backbone(model.clone(), &train, Some(&valid))
        .unwrap();
    assert_eq!(SEEN.load(Ordering::SeqCst), 40 + 10);

    // A bad configuration is refused before the caching pass.
    SEEN.store(0, Ordering::SeqCst);
    let err = tuner()
        .epochs(0)
        .fit_frozen_backbone(model, &train, Some(&valid))
        .unwrap_err();
    assert!(err.to_string().contains("epochs"), "{err}");
    assert_eq!(SEEN.load(Ordering::SeqCst), 0);
}
