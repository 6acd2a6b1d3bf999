//! Transfer with a Vision Transformer: a ViT (Hugging Face's `ViTModel` layout, 4 layers,
//! width 64, 28×28 grey images in 7×7 patches) is pretrained here on five Fashion-MNIST
//! classes (sandal, shirt, sneaker, bag, ankle boot), then its classifier is replaced for the
//! other five (T-shirt, trouser, pullover, dress, coat: the classes of `image_transfer`),
//! learned from a few labelled images each.
//!
//!     apt-get install dataset-fashion-mnist         # once: the images (Debian)
//!     cargo run --release --example vit_transfer
//!
//! Compared on the same target images and budget: the frozen pretrained body with a new head
//! (its features computed once), the whole pretrained ViT fine-tuned (body at a tenth of the
//! head's learning rate), and the same ViT from random initialisation. Exits 1 if, on
//! average, the pretrained ViT does not beat random initialisation or fine-tuning does worse
//! than the frozen features.
//!
//! Sizes: `VIT_PRETRAIN=N` images per source class (default 6000: all of them) for `VIT_PRETRAIN_EPOCHS`
//! epochs (default 8), `VIT_TRAIN=N` labelled images per target class (default 40), on
//! `VIT_DRAWS` disjoint draws of them (default 5; the table gives the mean and the range).
//! CI runs a quick mode with less pretraining (same code path and check).

#[path = "common/fashion_mnist.rs"]
mod fashion_mnist;
#[path = "common/table.rs"]
mod table;
#[path = "common/transfer.rs"]
mod transfer;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn_transfer::finetune::evaluate;
use burn_transfer::models::{ViT, ViTConfig};
use burn_transfer::prelude::*;
use fashion_mnist::{NAMES, PIXELS};
use std::time::Instant;
use table::percent;
use transfer::{B, Budget, Draws, Inner, env_or, pretrainer, three_ways};

type Images<Bk> = Vec<ClassificationBatch<Bk, Tensor<Bk, 4>>>;

const SEED: u64 = 7;
const SOURCE: [u8; 5] = [5, 6, 7, 8, 9];
const TARGET: [u8; 5] = [0, 1, 2, 3, 4];
const BATCH: usize = 50;
const TEST_PER_CLASS: usize = 200;
/// The target task's rates and epochs (the head on frozen features trains on a cache, a
/// matrix product a step, so it gets more epochs).
const BUDGET: Budget = Budget {
    head_only: 1e-2,
    head_epochs: 200,
    fine_tune: (3e-4, 3e-3),
    scratch: 1e-3,
    epochs: 30,
    seed: SEED,
};
/// Fashion-MNIST's pixel mean and deviation (on 0..1), for normalising.
const MEAN: f32 = 0.286;
const STD: f32 = 0.353;

fn main() -> burn_transfer::Result<()> {
    // CPU training: this thread computes as one of rayon's, and freed buffers are kept for
    // the next step instead of paying page faults.
    burn_transfer::kernels::join_compute_pool();
    burn_transfer::kernels::reuse_freed_memory();
    let (pretrain_per_class, pretrain_epochs, per_class, splits) = (
        env_or("VIT_PRETRAIN", 6000),
        env_or("VIT_PRETRAIN_EPOCHS", 8),
        env_or("VIT_TRAIN", 40),
        env_or("VIT_DRAWS", 5).max(1),
    );
    let device = Default::default();
    let dir = fashion_mnist::data_dir();
    let names = |classes: &[u8]| {
        classes
            .iter()
            .map(|&c| NAMES[c as usize])
            .collect::<Vec<_>>()
            .join(", ")
    };

    // 1. Pretraining on the source classes.
    let source = fashion_mnist::load(&dir, "train", &SOURCE, 0, pretrain_per_class);
    let source_test = fashion_mnist::load(&dir, "t10k", &SOURCE, 0, TEST_PER_CLASS);
    let config = ViTConfig::vit_base_patch16_224()
        .for_images(28, 7, 1)
        .narrower(64, 4)
        .shallower(4);
    B::seed(&device, SEED);
    let vit = ViT::<B>::new(&config, false, &device)?;
    let model = TransferModel::with_linear_head(vit, SOURCE.len(), &device)?;
    println!(
        "pretraining a ViT ({} parameters) on {} ({} images, {pretrain_epochs} epochs)",
        model.param_summary().total(),
        names(&SOURCE),
        source.1.len()
    );
    let started = Instant::now();
    let pretrained = pretrainer(pretrain_epochs, SEED)
        .fit(model, &batches::<B>(&source, &device), None)?
        .model;
    let source_accuracy = evaluate(
        &pretrained.valid(),
        &batches::<Inner>(&source_test, &device),
    )?
    .accuracy;
    println!(
        "pretrained in {:.0} s: {} on the source classes' test images",
        started.elapsed().as_secs_f64(),
        percent(source_accuracy)
    );
    let (body, _) = pretrained.into_parts();

    // 2. Transfer to the target classes, from a few labels each, on several disjoint
    //    draws of the labelled images (one draw is too noisy to compare on).
    let test = batches::<Inner>(
        &fashion_mnist::load(&dir, "t10k", &TARGET, 0, TEST_PER_CLASS),
        &device,
    );
    println!(
        "transfer to {}: {per_class} labelled images per class, {splits} disjoint draws, {} test images",
        names(&TARGET),
        TARGET.len() * TEST_PER_CLASS
    );
    let mut draws = Draws::default();
    for split in 0..splits {
        let train = batches::<B>(
            &fashion_mnist::load(&dir, "train", &TARGET, split * per_class, per_class),
            &device,
        );
        let scratch = || ViT::<B>::new(&config, false, &device);
        draws.record(three_ways(
            &body,
            scratch,
            TARGET.len(),
            &train,
            &test,
            &BUDGET,
        )?);
    }
    draws.print();
    draws.check("ViT");
    Ok(())
}

/// Batches of `[BATCH, 1, 28, 28]` normalised images.
fn batches<Bk: Backend>((pixels, labels): &(Vec<u8>, Vec<i64>), device: &Bk::Device) -> Images<Bk> {
    labels
        .chunks(BATCH)
        .enumerate()
        .map(|(b, ys)| {
            let n = ys.len();
            let start = b * BATCH * PIXELS;
            let x: Vec<f32> = pixels[start..start + n * PIXELS]
                .iter()
                .map(|&p| (p as f32 / 255.0 - MEAN) / STD)
                .collect();
            ClassificationBatch::new(
                Tensor::from_data(TensorData::new(x, [n, 1, 28, 28]), device),
                Tensor::from_data(TensorData::new(ys.to_vec(), [n]), device),
            )
        })
        .collect()
}
