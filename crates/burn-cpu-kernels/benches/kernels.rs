//! Criterion benchmarks of the kernels against burn's own operations, on the shapes of the
//! workloads they were written for:
//!
//! - `conv_32to64_3x3_b32`: the reference CNN's second convolution (26×26 input, batch 32),
//!   forward and backward with gradients for input, weight and bias;
//! - `linear_784to1024_b256`: a fine-tuned MLP's first layer with ReLU, forward and backward;
//! - `kd_ce_256x10`: Hinton's term and cross-entropy on a small student's logits, forward
//!   and backward, against the same terms as tensor operations.

use burn::backend::{Autodiff, NdArray};
use burn::nn::LinearConfig;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{log_softmax, relu};
use burn_cpu_kernels::conv::conv2d;
use burn_cpu_kernels::kd_ce::{KdCe, weighted_terms};
use burn_cpu_kernels::linear::linear_relu;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

type B = Autodiff<NdArray>;

fn normal<const D: usize>(dims: [usize; D]) -> Tensor<B, D> {
    Tensor::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
}

/// Forward, then backward to the input: what one layer costs inside a training step.
fn step<const D: usize>(x: &Tensor<B, D>, forward: &dyn Fn(Tensor<B, D>) -> Tensor<B, D>) {
    let x = x.clone().require_grad();
    let grads = forward(x.clone()).sum().backward();
    black_box(x.grad(&grads));
}

fn bench_conv(c: &mut Criterion) {
    let conv = Conv2dConfig::new([32, 64], [3, 3]).init::<B>(&Default::default());
    let x = normal([32, 32, 26, 26]);
    let mut group = c.benchmark_group("conv_32to64_3x3_b32");
    group.sample_size(10);
    group.bench_function("kernels_fwd_bwd", |b| {
        b.iter(|| step(&x, &|x| conv2d(&conv, x)))
    });
    group.bench_function("burn_fwd_bwd", |b| {
        b.iter(|| step(&x, &|x| conv.forward(x)))
    });
    group.finish();
}

fn bench_linear(c: &mut Criterion) {
    let layer = LinearConfig::new(784, 1024).init::<B>(&Default::default());
    let x = normal([256, 784]);
    let mut group = c.benchmark_group("linear_784to1024_b256");
    group.sample_size(20);
    group.bench_function("kernels_fwd_bwd", |b| {
        b.iter(|| step(&x, &|x| linear_relu(&layer, x)))
    });
    group.bench_function("burn_fwd_bwd", |b| {
        b.iter(|| step(&x, &|x| relu(layer.forward(x))))
    });
    group.finish();
}

fn bench_kd_ce(c: &mut Criterion) {
    let (s, t) = (normal([256, 10]), normal([256, 10]));
    let y =
        Tensor::<B, 1, Int>::random([256], Distribution::Uniform(0.0, 10.0), &Default::default());
    let k = KdCe {
        temperature: 4.0,
        kd_weight: 0.7,
        ce_weight: 0.3,
        smoothing: 0.0,
    };
    let tensor_ops = |s: Tensor<B, 2>| {
        let log_q = log_softmax(s.clone().div_scalar(4.0), 1);
        let log_p = log_softmax(t.clone().div_scalar(4.0), 1);
        let kd = (log_p.clone().exp() * (log_p - log_q))
            .sum()
            .mul_scalar(16.0 / 256.0);
        let ce = log_softmax(s, 1)
            .gather(1, y.clone().reshape([256, 1]))
            .mean()
            .neg();
        Tensor::cat(vec![kd.mul_scalar(0.7), ce.mul_scalar(0.3)], 0)
    };
    let mut group = c.benchmark_group("kd_ce_256x10");
    group.bench_function("kernels_fwd_bwd", |b| {
        b.iter(|| {
            let s = s.clone().require_grad();
            let terms = weighted_terms(k, s.clone(), t.clone(), Some(y.clone()));
            black_box(s.grad(&terms.unwrap().unwrap().sum().backward()))
        })
    });
    group.bench_function("tensor_ops_fwd_bwd", |b| {
        b.iter(|| {
            let s = s.clone().require_grad();
            black_box(s.grad(&tensor_ops(s.clone()).sum().backward()))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_conv, bench_linear, bench_kd_ce);
criterion_main!(benches);
