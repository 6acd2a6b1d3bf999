//! The reference workloads (benches/pytorch/README.md), each built with this crate's public
//! API the way a user would write it, as a closure that performs one optimizer step on batch
//! `i % 10`.

use crate::cnn::CnnBody;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use burn_transfer::distill::DistillStudent;
use burn_transfer::finetune::FineTuneSession;
use burn_transfer::loss::{DistillLossConfig, DistillTargets};
use burn_transfer::objective::StepOutput;
use burn_transfer::prelude::*;

pub const B_MLP: usize = 256;
pub const B_CNN: usize = 128;
pub const N_BATCHES: usize = 10;
const LR: f64 = 1e-3;

/// Every workload of the reference, in its order.
pub const NAMES: [&str; 7] = [
    "head_frozen_nograd",
    "head_frozen_grad",
    "full_ft",
    "distill",
    "distill_cached",
    "cnn_frozen_nograd",
    "cnn_full",
];

/// One optimizer step on batch `i % 10`; returns the loss (read back, so the step is done).
pub type Step = Box<dyn FnMut(usize) -> f32>;

pub fn tuner<B: AutodiffBackend>() -> FineTuner<B> {
    FineTuner::<B>::new()
        .learning_rate(LR)
        .verbose(false)
        .progress_bar(false)
}

fn labels<B: Backend>(batch: usize, device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::<B, 1, Int>::random([batch], Distribution::Uniform(0.0, 10.0), device)
}

/// Ten fixed batches of standard-normal inputs of shape `[batch, ..dims]` with random labels.
pub fn data<B: Backend, const D: usize>(
    dims: [usize; D],
    device: &B::Device,
) -> Vec<ClassificationBatch<B, Tensor<B, D>>> {
    (0..N_BATCHES)
        .map(|_| {
            let x = Tensor::<B, D>::random(dims, Distribution::Normal(0.0, 1.0), device);
            ClassificationBatch::new(x, labels::<B>(dims[0], device))
        })
        .collect()
}

fn mlp<B: Backend>(widths: &[usize], device: &B::Device) -> MlpBackbone<B> {
    MlpBackbone::new(widths, device).expect("valid widths")
}

/// One training step of `session` per call, on the batches in turn.
pub fn session_step<B, M, X>(
    mut session: FineTuneSession<B, M>,
    batches: Vec<ClassificationBatch<B, X>>,
) -> Step
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B, Input = X> + 'static,
    X: Clone + 'static,
{
    session.begin_epoch(1).expect("epoch starts");
    Box::new(move |i| {
        let batch = batches[i % N_BATCHES].clone();
        session.train_step(batch, 0.5).expect("step runs").loss
    })
}

/// The workload `name` on backend `B`, with its FLOPs per step (the reference's model).
pub fn build<B: AutodiffBackend>(name: &str, device: &B::Device) -> Option<(Step, f64)> {
    B::seed(device, 0);
    let t = tuner::<B>();
    let step = match name {
        "head_frozen_nograd" => {
            // `Frozen`: the body runs on the inner backend, autodiff never sees it.
            let body = Frozen::new(mlp::<B>(&[784, 1024, 1024, 1024], device));
            let model = TransferModel::with_linear_head(body, 10, device).ok()?;
            session_step(t.session(model).ok()?, data::<B, 2>([B_MLP, 784], device))
        }
        "head_frozen_grad" => {
            // Frozen by flag (`requires_grad = false`), run on the autodiff backend.
            let body = mlp::<B>(&[784, 1024, 1024, 1024], device);
            let model = TransferModel::with_linear_head(body, 10, device)
                .ok()?
                .freeze_matching("backbone")
                .ok()?;
            session_step(t.session(model).ok()?, data::<B, 2>([B_MLP, 784], device))
        }
        "full_ft" => {
            let body = mlp::<B>(&[784, 1024, 1024, 1024], device);
            let model = TransferModel::with_linear_head(body, 10, device).ok()?;
            session_step(t.session(model).ok()?, data::<B, 2>([B_MLP, 784], device))
        }
        "distill" | "distill_cached" => distill_step::<B>(name == "distill_cached", device)?,
        "cnn_frozen_nograd" => {
            let body = Frozen::new(CnnBody::<B>::new(false, device));
            let model = TransferModel::with_linear_head(body, 10, device).ok()?;
            session_step(
                t.session(model).ok()?,
                data::<B, 4>([B_CNN, 1, 28, 28], device),
            )
        }
        "cnn_full" | "cnn_full_burn_conv" => {
            let body = CnnBody::<B>::new(name == "cnn_full_burn_conv", device);
            let model = TransferModel::with_linear_head(body, 10, device).ok()?;
            session_step(
                t.session(model).ok()?,
                data::<B, 4>([B_CNN, 1, 28, 28], device),
            )
        }
        _ => return None,
    };
    Some((step, flops(name)))
}

/// A distillation step as `Distiller` runs it: the teacher on the inner backend (or its
/// logits from a cache), the student and `α·T²·KL + (1-α)·CE` (T = 4, α = 0.7) on autodiff.
fn distill_step<B: AutodiffBackend>(cached: bool, device: &B::Device) -> Option<Step> {
    let teacher = TransferModel::with_linear_head(mlp::<B>(&[784, 2048, 2048], device), 10, device)
        .ok()?
        .freeze()
        .valid();
    let student =
        TransferModel::with_linear_head(mlp::<B>(&[784, 256, 256], device), 10, device).ok()?;
    let batches = data::<B, 2>([B_MLP, 784], device);
    let cache: Option<Vec<_>> = cached.then(|| {
        batches
            .iter()
            .map(|b| teacher.forward(b.inputs.clone().inner()))
            .collect()
    });
    let pair = DistillStudent {
        student,
        loss: DistillLossConfig::new()
            .with_temperature(4.0)
            .with_alpha(0.7)
            .init(device)
            .ok()?,
    };
    let mut session = tuner::<B>().session(pair).ok()?;
    session.begin_epoch(1).ok()?;
    Some(Box::new(move |i| {
        let b = &batches[i % N_BATCHES];
        let teacher_logits = match &cache {
            Some(c) => Tensor::from_inner(c[i % N_BATCHES].clone()),
            None => Tensor::from_inner(teacher.forward(b.inputs.clone().inner())),
        };
        session
            .step_with(0.5, |pair| {
                let logits = pair.student.forward(b.inputs.clone());
                let out = pair.loss.forward(
                    DistillTargets::new(logits, teacher_logits).with_labels(b.targets.clone()),
                    1,
                )?;
                Ok(StepOutput::new(out.total, 0, B_MLP))
            })
            .expect("step runs")
            .loss
    }))
}

fn lin(b: usize, i: usize, o: usize) -> f64 {
    2.0 * (b * i * o) as f64
}

fn conv(b: usize, cin: usize, cout: usize, k: usize, h: usize, w: usize) -> f64 {
    2.0 * (b * cin * k * k * cout * h * w) as f64
}

/// The reference's FLOP model (GEMM and convolution MACs only).
pub fn flops(name: &str) -> f64 {
    let b = B_MLP;
    let mlp_fwd = lin(b, 784, 1024) + 2.0 * lin(b, 1024, 1024) + lin(b, 1024, 10);
    let student = lin(b, 784, 256) + lin(b, 256, 256) + lin(b, 256, 10);
    let student_bwd = lin(b, 784, 256) + 2.0 * lin(b, 256, 256) + 2.0 * lin(b, 256, 10);
    let teacher = lin(b, 784, 2048) + lin(b, 2048, 2048) + lin(b, 2048, 10);
    let c = B_CNN;
    let conv2 = conv(c, 32, 64, 3, 24, 24);
    let cnn_fwd = conv(c, 1, 32, 3, 26, 26) + conv2 + lin(c, 9216, 10);
    match name {
        "head_frozen_nograd" | "head_frozen_grad" => mlp_fwd + lin(b, 1024, 10),
        "full_ft" => {
            mlp_fwd + lin(b, 784, 1024) + 4.0 * lin(b, 1024, 1024) + 2.0 * lin(b, 1024, 10)
        }
        "distill" => teacher + student + student_bwd,
        "distill_cached" => student + student_bwd,
        "cnn_frozen_nograd" => cnn_fwd + lin(c, 9216, 10),
        "cnn_full" | "cnn_full_burn_conv" => {
            cnn_fwd + conv(c, 1, 32, 3, 26, 26) + 2.0 * conv2 + 2.0 * lin(c, 9216, 10)
        }
        _ => f64::NAN,
    }
}
