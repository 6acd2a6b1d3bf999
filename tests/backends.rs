//! The crate on burn's other backends (`cargo test --features "wgpu flex" --test backends`):
//! the same model, data and steps give what ndarray gives, within float tolerance, and a
//! seeded run on Flex trains to the same weights every time. burn-wgpu
//! on a machine without a GPU runs on Mesa's software Vulkan driver (lavapipe; Debian
//! `mesa-vulkan-drivers`), which is slow to start, so everything is checked in one test per
//! backend on tiny shapes.
#![cfg(all(feature = "cpu-kernels", any(feature = "wgpu", feature = "flex")))]

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::MaxPool2dConfig;
use burn::prelude::*;
use burn::tensor::Tolerance;
use burn::tensor::backend::AutodiffBackend;
use burn_transfer::adapter::{LoraConfig, LoraModel};
use burn_transfer::checkpoint::{load_model_bytes, model_to_bytes};
use burn_transfer::distill::TeacherOn;
use burn_transfer::finetune::Monitor;
use burn_transfer::kernels::cpu::{
    activation::{gelu, gelu_tanh},
    conv::conv2d,
    pool::max_pool2d,
};
use burn_transfer::loss::{DistillLossConfig, DistillTargets};
use burn_transfer::prelude::*;
use burn_transfer::task::Classifier;
use std::path::Path;

type C = Autodiff<NdArray>;

#[cfg(all(feature = "flex", feature = "models"))]
#[path = "shared/seeded_run.rs"]
mod seeded_run;

/// The same module on another backend, through the checkpoint bytes.
fn moved<G: Backend, M1: Module<C>, M2: Module<G>>(from: &M1, empty: M2) -> M2 {
    let bytes = model_to_bytes::<C, M1>(from).unwrap();
    load_model_bytes(empty, bytes, Path::new("memory"), &Default::default()).unwrap()
}

fn tensor<Bk: Backend, const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<Bk, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn tol() -> Tolerance<f32> {
    Tolerance::rel_abs(1e-3, 1e-4)
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_gives_what_ndarray_gives() {
    gives_what_ndarray_gives::<Autodiff<burn::backend::Wgpu>>();
}

#[cfg(feature = "flex")]
#[test]
fn flex_gives_what_ndarray_gives() {
    gives_what_ndarray_gives::<Autodiff<burn::backend::Flex>>();
}

fn gives_what_ndarray_gives<G: AutodiffBackend>() {
    let (cd, gd) = (Default::default(), Default::default());

    // Fine-tuning steps (AdamW, head group, flag-frozen first layer).
    let cpu =
        TransferModel::with_linear_head(MlpBackbone::<C>::new(&[6, 12, 8], &cd).unwrap(), 3, &cd)
            .unwrap();
    let gpu = moved(
        &cpu,
        TransferModel::with_linear_head(MlpBackbone::<G>::new(&[6, 12, 8], &gd).unwrap(), 3, &gd)
            .unwrap(),
    );
    let (cpu, gpu) = (
        cpu.freeze_matching("backbone.layers.0").unwrap(),
        gpu.freeze_matching("backbone.layers.0").unwrap(),
    );
    let x = values(5 * 6, 7);
    let y = [0i64, 1, 2, 1, 0];
    train_alike(cpu, gpu, &x, &y);

    // LoRA (both body layers adapted, and the new head trains): after the first step `B` is
    // no longer zero, so the later steps check the gradients of both factors.
    let config = LoraConfig::new(2, 4.0, ["backbone.layers.*"]);
    let lora = |base| {
        LoraModel::new(base, "a", config.clone())
            .unwrap()
            .unfreeze_base("head")
            .unwrap()
    };
    let cpu = lora(
        TransferModel::with_linear_head(MlpBackbone::<C>::new(&[6, 12, 8], &cd).unwrap(), 3, &cd)
            .unwrap(),
    );
    let gpu = moved(
        &cpu,
        LoraModel::new(
            TransferModel::with_linear_head(
                MlpBackbone::<G>::new(&[6, 12, 8], &gd).unwrap(),
                3,
                &gd,
            )
            .unwrap(),
            "a",
            config.clone(),
        )
        .unwrap()
        .unfreeze_base("head")
        .unwrap(),
    );
    train_alike(cpu, gpu, &x, &y);

    // The distillation loss, forward and gradient.
    let (loss_c, grad_c) = kd_loss_and_grad::<C>();
    let (loss_g, grad_g) = kd_loss_and_grad::<G>();
    loss_g.assert_approx_eq::<f32>(&loss_c, tol());
    grad_g.assert_approx_eq::<f32>(&grad_c, tol());

    // The kernels' convolution on this backend against burn's on ndarray, forward and weight
    // gradient.
    let config = Conv2dConfig::new([2, 3], [3, 3]).with_stride([2, 1]);
    let conv_c: Conv2d<C> = config.init(&cd);
    let conv_g = moved(&conv_c, config.init::<G>(&gd));
    let xi = values(2 * 2 * 7 * 6, 5);
    let yc = conv_c.forward(tensor::<C, 4>(&xi, [2, 2, 7, 6]));
    let yg = conv2d(&conv_g, tensor::<G, 4>(&xi, [2, 2, 7, 6]));
    let wc = conv_c
        .weight
        .val()
        .grad(&yc.clone().sum().backward())
        .unwrap();
    let wg = conv_g
        .weight
        .val()
        .grad(&yg.clone().sum().backward())
        .unwrap();
    yg.into_data()
        .assert_approx_eq::<f32>(&yc.into_data(), tol());
    wg.into_data()
        .assert_approx_eq::<f32>(&wc.into_data(), tol());

    // MaxPool2d on this backend against burn's on ndarray: forward, input gradient, and the
    // forward without autodiff.
    let pool = MaxPool2dConfig::new([3, 3])
        .with_strides([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init();
    let xc = tensor::<C, 4>(&xi, [2, 2, 7, 6]).require_grad();
    let xg = tensor::<G, 4>(&xi, [2, 2, 7, 6]).require_grad();
    let pc = pool.forward(xc.clone());
    let pg = max_pool2d(&pool, xg.clone());
    let dxc = xc
        .grad(&(pc.clone() * pc.clone()).sum().backward())
        .unwrap();
    let dxg = xg
        .grad(&(pg.clone() * pg.clone()).sum().backward())
        .unwrap();
    pg.into_data()
        .assert_approx_eq::<f32>(&pc.clone().into_data(), tol());
    dxg.into_data()
        .assert_approx_eq::<f32>(&dxc.into_data(), tol());
    max_pool2d(&pool, xg.inner())
        .into_data()
        .assert_approx_eq::<f32>(&pc.into_data(), tol());

    // GELU, exact (BERT's, ViT's) and the tanh approximation (GPT-2's), the kernels' on this
    // backend against ndarray. The exact one against the kernel on ndarray, whose derivative
    // is the exact one; wgpu trains with burn's `gelu`, whose derivative approximates it
    // within 2e-3 (the kernel's unit test checks both bounds), so its gradient here (the
    // derivative times 6·y) gets 1e-3 relative, 2e-3 near zero. Flex runs the kernel.
    activation_gives_what_ndarray_gives::<G>(
        &xi[..60],
        (gelu, gelu, gelu),
        Tolerance::rel_abs(1e-3, 2e-3),
    );
    activation_gives_what_ndarray_gives::<G>(
        &xi[..60],
        (
            burn::tensor::activation::gelu_approximate,
            gelu_tanh,
            gelu_tanh,
        ),
        tol(),
    );

    // Head-only training on cached features runs on this backend and learns.
    let body = Frozen::new(MlpBackbone::<G>::new(&[6, 12], &gd).unwrap());
    let model = TransferModel::with_linear_head(body, 3, &gd).unwrap();
    let train = vec![ClassificationBatch::new(
        tensor::<G, 2>(&x, [5, 6]),
        Tensor::from_data(TensorData::new(y.to_vec(), [5]), &gd),
    )];
    let outcome = FineTuner::<G>::new()
        .epochs(20)
        .learning_rate(5e-2)
        .verbose(false)
        .monitor(Monitor::TrainLoss)
        .fit_frozen_backbone(model, &train, None)
        .unwrap();
    let h = &outcome.history.epochs;
    assert!(h.last().unwrap().train_loss < h[0].train_loss, "{h:?}");

    distils_across_backends::<G>(&x, &y);
}

/// One activation: the reference on ndarray, the one under test on `G` and on its inner
/// backend (a frozen body's path).
type Activations<G> = (
    fn(Tensor<C, 2>) -> Tensor<C, 2>,
    fn(Tensor<G, 2>) -> Tensor<G, 2>,
    fn(
        Tensor<<G as AutodiffBackend>::InnerBackend, 2>,
    ) -> Tensor<<G as AutodiffBackend>::InnerBackend, 2>,
);

/// An element-wise activation on `G` against the reference on ndarray: forward (to
/// [`tol`]), input gradient (to `gradient_tolerance`) and the forward without autodiff, on
/// 60 values spread over ±3.
fn activation_gives_what_ndarray_gives<G: AutodiffBackend>(
    values: &[f32],
    (reference, kernel, inner): Activations<G>,
    gradient_tolerance: Tolerance<f32>,
) {
    let xc = tensor::<C, 2>(values, [6, 10]).require_grad();
    let xg = tensor::<G, 2>(values, [6, 10]).require_grad();
    let yc = reference(xc.clone() * 3.0);
    let yg = kernel(xg.clone() * 3.0);
    let dxc = xc
        .grad(&(yc.clone() * yc.clone()).sum().backward())
        .unwrap();
    let dxg = xg
        .grad(&(yg.clone() * yg.clone()).sum().backward())
        .unwrap();
    yg.into_data()
        .assert_approx_eq::<f32>(&yc.clone().into_data(), tol());
    dxg.into_data()
        .assert_approx_eq::<f32>(&dxc.into_data(), gradient_tolerance);
    inner(xg.inner() * 3.0)
        .into_data()
        .assert_approx_eq::<f32>(&yc.into_data(), tol());
}

/// A teacher on `G` teaches a student on ndarray, and a teacher on ndarray a student on `G`
/// (`TeacherOn`): both runs follow the run with teacher and student on ndarray.
fn distils_across_backends<G: AutodiffBackend>(x: &[f32], y: &[i64]) {
    let (cd, gd) = (Default::default(), Default::default());
    C::seed(&cd, 5);
    let teacher_c =
        TransferModel::with_linear_head(MlpBackbone::<C>::new(&[6, 10], &cd).unwrap(), 3, &cd)
            .unwrap();
    let teacher_g = moved(
        &teacher_c,
        TransferModel::with_linear_head(MlpBackbone::<G>::new(&[6, 10], &gd).unwrap(), 3, &gd)
            .unwrap(),
    );
    let student_c =
        TransferModel::with_linear_head(MlpBackbone::<C>::new(&[6, 4], &cd).unwrap(), 3, &cd)
            .unwrap();
    let student_g = moved(
        &student_c,
        TransferModel::with_linear_head(MlpBackbone::<G>::new(&[6, 4], &gd).unwrap(), 3, &gd)
            .unwrap(),
    );
    let rows = y.len();
    let batch_c = vec![ClassificationBatch::new(
        tensor::<C, 2>(x, [rows, 6]),
        Tensor::from_data(TensorData::new(y.to_vec(), [rows]), &cd),
    )];
    let batch_g = vec![ClassificationBatch::new(
        tensor::<G, 2>(x, [rows, 6]),
        Tensor::from_data(TensorData::new(y.to_vec(), [rows]), &gd),
    )];
    let loss = DistillLossConfig::new()
        .with_temperature(2.0)
        .with_alpha(0.5);
    let losses = |h: &burn_transfer::finetune::History| -> Vec<f64> {
        h.epochs.iter().map(|e| e.train_loss).collect()
    };
    let tuner_c = || {
        FineTuner::<C>::new()
            .learning_rate(1e-2)
            .epochs(3)
            .verbose(false)
            .monitor(Monitor::TrainLoss)
    };
    let tuner_g = || {
        FineTuner::<G>::new()
            .learning_rate(1e-2)
            .epochs(3)
            .verbose(false)
            .monitor(Monitor::TrainLoss)
    };
    let local = Distiller::new(teacher_c.valid(), loss.clone(), tuner_c())
        .unwrap()
        .fit(student_c.clone(), &batch_c, None)
        .unwrap();
    let teacher_there = Distiller::new(
        TeacherOn::<NdArray, G::InnerBackend, _>::new(teacher_g.valid()),
        loss.clone(),
        tuner_c(),
    )
    .unwrap()
    .fit(student_c, &batch_c, None)
    .unwrap();
    let student_there = Distiller::new(
        TeacherOn::<G::InnerBackend, NdArray, _>::new(teacher_c.valid()),
        loss,
        tuner_g(),
    )
    .unwrap()
    .fit(student_g, &batch_g, None)
    .unwrap();
    let expected = losses(&local.history);
    for run in [&teacher_there.history, &student_there.history] {
        assert_eq!(run.epochs.len(), expected.len());
        for (a, b) in losses(run).iter().zip(&expected) {
            assert!((a - b).abs() < 1e-4, "{:?} vs {expected:?}", losses(run));
        }
    }
    let probe = |m: &TransferModel<NdArray, MlpBackbone<NdArray>, LinearHead<NdArray>>| {
        m.logits(tensor::<NdArray, 2>(x, [rows, 6])).into_data()
    };
    probe(&teacher_there.model.valid())
        .assert_approx_eq::<f32>(&probe(&local.model.valid()), tol());
    student_there
        .model
        .valid()
        .logits(tensor::<G::InnerBackend, 2>(x, [rows, 6]))
        .into_data()
        .assert_approx_eq::<f32>(&probe(&local.model.valid()), tol());
}

/// Three fine-tuning steps (AdamW, lr 1e-2) of the same model on ndarray and on `G`: the
/// losses and then the logits agree.
fn train_alike<G, MC, MG>(cpu: MC, gpu: MG, x: &[f32], y: &[i64])
where
    G: AutodiffBackend,
    MC: AutodiffModule<C> + Classifier<C, Input = Tensor<C, 2>>,
    MG: AutodiffModule<G> + Classifier<G, Input = Tensor<G, 2>>,
{
    let (cd, gd) = (Default::default(), Default::default());
    let rows = y.len();
    let cols = x.len() / rows;
    let tuner_c = FineTuner::<C>::new().learning_rate(1e-2).verbose(false);
    let tuner_g = FineTuner::<G>::new().learning_rate(1e-2).verbose(false);
    let mut sc = tuner_c.session(cpu).unwrap();
    let mut sg = tuner_g.session(gpu).unwrap();
    sc.begin_epoch(1).unwrap();
    sg.begin_epoch(1).unwrap();
    for _ in 0..3 {
        let bc = ClassificationBatch::new(
            tensor::<C, 2>(x, [rows, cols]),
            Tensor::from_data(TensorData::new(y.to_vec(), [rows]), &cd),
        );
        let bg = ClassificationBatch::new(
            tensor::<G, 2>(x, [rows, cols]),
            Tensor::from_data(TensorData::new(y.to_vec(), [rows]), &gd),
        );
        let (lc, lg) = (
            sc.train_step(bc, 0.5).unwrap(),
            sg.train_step(bg, 0.5).unwrap(),
        );
        assert!(
            (lc.loss - lg.loss).abs() < 1e-4,
            "{} vs {}",
            lc.loss,
            lg.loss
        );
    }
    let (mc, mg) = (sc.into_model(), sg.into_model());
    let probe_c = mc.logits(tensor::<C, 2>(x, [rows, cols]));
    let probe_g = mg.logits(tensor::<G, 2>(x, [rows, cols]));
    probe_g
        .into_data()
        .assert_approx_eq::<f32>(&probe_c.into_data(), tol());
}

/// KD loss (T = 4, α = 0.7, with labels) on fixed logits, and its gradient w.r.t. the
/// student's logits, on backend `A`.
fn kd_loss_and_grad<A: AutodiffBackend>() -> (TensorData, TensorData) {
    let device = Default::default();
    let student = tensor::<A, 2>(&values(4 * 5, 3), [4, 5]).require_grad();
    let labels = Tensor::from_data(TensorData::new(vec![0i64, 4, 2, 1], [4]), &device);
    let loss = DistillLossConfig::new()
        .with_temperature(4.0)
        .with_alpha(0.7)
        .init::<A>(&device)
        .unwrap()
        .forward(
            DistillTargets::new(student.clone(), tensor(&values(4 * 5, 11), [4, 5]))
                .with_labels(labels),
            1,
        )
        .unwrap()
        .total;
    let grad = student.grad(&loss.backward()).unwrap();
    (loss.into_data(), grad.into_data())
}

/// On Flex too, seeded runs train to the same weights bit for bit (a MobileNetV2 with batch
/// norm and a small BERT, AdamW: the runs `tests/suite/reproducible.rs` checks on ndarray).
/// Run in a child process: burn's generators are global, and the other tests here draw
/// initial weights from them in parallel.
#[cfg(all(feature = "flex", feature = "models"))]
#[test]
fn flex_seeded_training_gives_the_same_weights_twice() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flex_seeded_training_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BURN_TRANSFER_FLEX_SEEDED_TEST", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child of the test above; does nothing in a normal run.
#[cfg(all(feature = "flex", feature = "models"))]
#[test]
fn flex_seeded_training_child() {
    if std::env::var("BURN_TRANSFER_FLEX_SEEDED_TEST").is_err() {
        return;
    }
    type F = Autodiff<burn::backend::Flex>;
    let cnn = seeded_run::seeded_cnn_checksum::<F>;
    assert_eq!(cnn(), cnn());
    let bert = seeded_run::seeded_bert_checksum::<F>;
    assert_eq!(bert(), bert());
}
