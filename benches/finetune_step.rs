//! One optimizer step of the bench README's MLP workload (784→1024→1024→1024, head 1024→10,
//! batch 256): the whole network trainable vs the body frozen by flag vs the body wrapped in
//! `Frozen` (run on the inner backend). The JSON harness that compares with PyTorch belongs
//! to the performance issue; this shows what freezing saves, measured by criterion.

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use burn_transfer::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};

type B = Autodiff<NdArray>;

fn batch() -> ClassificationBatch<B, Tensor<B, 2>> {
    let device = Default::default();
    let x = Tensor::<B, 2>::random([256, 784], burn::tensor::Distribution::Default, &device);
    let y = Tensor::<B, 1, Int>::from_data(
        TensorData::new((0..256).map(|i| (i % 10) as i64).collect::<Vec<_>>(), [256]),
        &device,
    );
    ClassificationBatch::new(x, y)
}

fn body() -> MlpBackbone<B> {
    MlpBackbone::new(&[784, 1024, 1024, 1024], &Default::default()).unwrap()
}

fn bench_steps(c: &mut Criterion) {
    let device = Default::default();
    let b = batch();
    let mut group = c.benchmark_group("finetune_step_mlp_b256");
    group.sample_size(10);

    let tuner = FineTuner::<B>::new().learning_rate(1e-3).verbose(false);
    let full = TransferModel::with_linear_head(body(), 10, &device).unwrap();
    let mut s = tuner.session(full).unwrap();
    s.begin_epoch(1).unwrap();
    group.bench_function("full", |bench| {
        bench.iter(|| s.train_step(b.clone(), 0.5).unwrap())
    });

    let flagged = TransferModel::with_linear_head(body(), 10, &device)
        .unwrap()
        .freeze_matching("backbone")
        .unwrap();
    let mut s = tuner.session(flagged).unwrap();
    s.begin_epoch(1).unwrap();
    group.bench_function("head_only_flag", |bench| {
        bench.iter(|| s.train_step(b.clone(), 0.5).unwrap())
    });

    let wrapped = TransferModel::with_linear_head(Frozen::new(body()), 10, &device).unwrap();
    let mut s = tuner.session(wrapped).unwrap();
    s.begin_epoch(1).unwrap();
    group.bench_function("head_only_frozen", |bench| {
        bench.iter(|| s.train_step(b.clone(), 0.5).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_steps);
criterion_main!(benches);
