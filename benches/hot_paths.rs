//! Criterion micro-benchmarks of the hot paths, on the reference workloads' shapes:
//!
//! - `kd_loss_fwd_bwd`: α·T²·KL + (1-α)·CE (T = 4, α = 0.7) on 256×10 logits, forward and
//!   backward (the loss's own cost inside a distillation step);
//! - `lora_forward_backward`: the 784→1024→1024→1024 MLP with LoRA r = 8 on every layer,
//!   batch 256, forward and backward (the graph consumed, as in training: a forward whose
//!   graph is never used leaves it to burn's autodiff to collect later, and measures that
//!   instead), against the plain model's; and a whole training step
//!   of that LoRA model (factors + head train) against a step that trains every weight;
//! - `frozen_forward`: that MLP's forward on the inner backend (what a `Frozen` body costs),
//!   next to a whole head-only step: the step should cost about one such forward.
//!
//! The kernels' own operations (convolution, linear, fused loss) are benchmarked in
//! `crates/burn-cpu-kernels/benches/kernels.rs`.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_transfer::adapter::{LoraConfig, LoraModel};
use burn_transfer::loss::{DistillLossConfig, DistillTargets};
use burn_transfer::prelude::*;
use burn_transfer::task::Classifier;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

type B = Autodiff<NdArray>;

fn bench_kd_loss(c: &mut Criterion) {
    let d = Default::default();
    let s = Tensor::<B, 2>::random([256, 10], Distribution::Normal(0.0, 1.0), &d);
    let t = Tensor::<B, 2>::random([256, 10], Distribution::Normal(0.0, 1.0), &d);
    let y = Tensor::<B, 1, Int>::random([256], Distribution::Uniform(0.0, 10.0), &d);
    let loss = DistillLossConfig::new()
        .with_temperature(4.0)
        .with_alpha(0.7)
        .init::<B>(&d)
        .unwrap();
    c.bench_function("kd_loss_fwd_bwd_256x10", |b| {
        b.iter(|| {
            let s = s.clone().require_grad();
            let out = loss
                .forward(
                    DistillTargets::new(s.clone(), t.clone()).with_labels(y.clone()),
                    1,
                )
                .unwrap();
            black_box(s.grad(&out.total.backward()))
        })
    });
}

fn mlp() -> TransferModel<B, MlpBackbone<B>, LinearHead<B>> {
    let d = Default::default();
    let body = MlpBackbone::new(&[784, 1024, 1024, 1024], &d).unwrap();
    TransferModel::with_linear_head(body, 10, &d).unwrap()
}

fn bench_lora_and_frozen(c: &mut Criterion) {
    let d = Default::default();
    let x = Tensor::<B, 2>::random([256, 784], Distribution::Normal(0.0, 1.0), &d);
    let mut group = c.benchmark_group("mlp_784_1024x3_b256");
    group.sample_size(10);

    let plain = mlp();
    group.bench_function("forward_backward", |b| {
        b.iter(|| black_box(plain.forward(x.clone()).sum().backward()))
    });
    let lora = LoraModel::new(
        mlp(),
        "bench",
        LoraConfig::new(8, 16.0, ["backbone.layers.*"]),
    )
    .unwrap();
    group.bench_function("lora_forward_backward", |b| {
        b.iter(|| black_box(lora.logits(x.clone()).sum().backward()))
    });

    // Whole steps: LoRA (A, B of every body layer + the head) against full fine-tuning.
    let y = Tensor::<B, 1, Int>::random([256], Distribution::Uniform(0.0, 10.0), &d);
    let tuner = FineTuner::<B>::new().learning_rate(1e-3).verbose(false);
    let mut full = tuner.session(mlp()).unwrap();
    full.begin_epoch(1).unwrap();
    group.bench_function("full_step", |b| {
        b.iter(|| {
            full.train_step(ClassificationBatch::new(x.clone(), y.clone()), 0.5)
                .unwrap()
        })
    });
    let mut lora_step = tuner.session(lora.unfreeze_base("head").unwrap()).unwrap();
    lora_step.begin_epoch(1).unwrap();
    group.bench_function("lora_step", |b| {
        b.iter(|| {
            lora_step
                .train_step(ClassificationBatch::new(x.clone(), y.clone()), 0.5)
                .unwrap()
        })
    });

    let inner = mlp().valid();
    let xi = x.clone().inner();
    group.bench_function("frozen_forward_inner", |b| {
        b.iter(|| black_box(inner.backbone.features(xi.clone())))
    });
    let frozen = TransferModel::with_linear_head(Frozen::new(mlp().backbone), 10, &d).unwrap();
    let mut s = tuner.session(frozen).unwrap();
    s.begin_epoch(1).unwrap();
    group.bench_function("head_only_step_frozen", |b| {
        b.iter(|| {
            s.train_step(ClassificationBatch::new(x.clone(), y.clone()), 0.5)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_kd_loss, bench_lora_and_frozen);
criterion_main!(benches);
