//! One distillation step on the bench README's workload: teacher MLP 784→2048→2048→10
//! (frozen), student 784→256→256→10, batch 256, loss α·T²·KL + (1-α)·CE with T = 4, α = 0.7.
//!
//! - `live_inner`: the teacher runs on the inner backend each step (this crate's design);
//! - `cached`: the teacher's logits were computed once and are reused;
//! - `live_autodiff_detach`: the naive way, the teacher run on the autodiff backend with
//!   frozen parameters and its output detached: what the design saves.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn_transfer::distill::DistillStudent;
use burn_transfer::loss::{DistillLossConfig, DistillTargets};
use burn_transfer::objective::StepOutput;
use burn_transfer::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};

type B = Autodiff<NdArray>;
type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;

fn net(widths: &[usize]) -> Net<B> {
    let d = Default::default();
    TransferModel::with_linear_head(MlpBackbone::new(widths, &d).unwrap(), 10, &d).unwrap()
}

fn bench_distill(c: &mut Criterion) {
    let device = Default::default();
    let x = Tensor::<B, 2>::random([256, 784], burn::tensor::Distribution::Default, &device);
    let y = Tensor::<B, 1, Int>::from_data(
        TensorData::new((0..256).map(|i| (i % 10) as i64).collect::<Vec<_>>(), [256]),
        &device,
    );
    let teacher_ad = net(&[784, 2048, 2048]).freeze();
    let teacher_inner = teacher_ad.valid();
    let cached = teacher_inner.forward(x.clone().inner());
    let loss = DistillLossConfig::new()
        .with_temperature(4.0)
        .with_alpha(0.7);
    let tuner = FineTuner::<B>::new().learning_rate(1e-3).verbose(false);
    let mut group = c.benchmark_group("distill_step_b256");
    group.sample_size(10);

    let mut run = |name: &str, teacher: &dyn Fn() -> Tensor<B, 2>| {
        let pair = DistillStudent {
            student: net(&[784, 256, 256]),
            loss: loss.init(&device).unwrap(),
        };
        let mut s = tuner.session(pair).unwrap();
        s.begin_epoch(1).unwrap();
        group.bench_function(name, |bench| {
            bench.iter(|| {
                s.step_with(0.5, |pair| {
                    let logits = pair.student.forward(x.clone());
                    let out = pair.loss.forward(
                        DistillTargets::new(logits, teacher()).with_labels(y.clone()),
                        1,
                    )?;
                    Ok(StepOutput::new(out.total, 0, 256))
                })
                .unwrap()
            })
        });
    };
    run("live_inner", &|| {
        Tensor::from_inner(teacher_inner.forward(x.clone().inner()))
    });
    run("cached", &|| Tensor::from_inner(cached.clone()));
    run("live_autodiff_detach", &|| {
        teacher_ad.forward(x.clone()).detach()
    });
    group.finish();
}

criterion_group!(benches, bench_distill);
criterion_main!(benches);
