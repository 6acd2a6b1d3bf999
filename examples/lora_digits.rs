//! LoRA vs full fine-tuning vs head-only, on real handwritten digits (UCI optdigits).
//!
//! As in `finetune_digits`: a 64→256→256 body is pretrained on all ten digits (one half of
//! the images), then adapted to a new 5-way task (digits 5–9 on the other half, 20 labels
//! per class). Prints accuracy, trainable parameters, the size of what must be saved, and
//! the time of one training step.
//!
//!     cargo run --release --example lora_digits

#[path = "common/digits.rs"]
mod digits;

#[path = "common/table.rs"]
mod table;
use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn_transfer::adapter::{LoraConfig, LoraModel, WEIGHTS_FILE};
use burn_transfer::checkpoint::save_model;
use burn_transfer::finetune::evaluate;
use burn_transfer::prelude::*;
use std::time::Instant;
use table::{Table, percent};

type B = Autodiff<NdArray>;
type Inner = NdArray;
type Batches<Bk> = Vec<ClassificationBatch<Bk, Tensor<Bk, 2>>>;
type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;

const SEED: u64 = 5;
const WIDTHS: [usize; 3] = [64, 256, 256];

struct Row {
    name: &'static str,
    trainable: usize,
    total: usize,
    accuracy: f64,
    saved_bytes: u64,
    step_ms: f64,
}

fn main() -> burn_transfer::Result<()> {
    let device = Default::default();
    let out_dir = std::env::temp_dir().join(format!("lora_digits_{}", std::process::id()));
    let mut all = digits::load();
    digits::Rng::new(SEED).shuffle(&mut all);
    let (pretrain_half, target_half) = all.split_at(all.len() / 2);
    let target = digits::select(target_half, &[5, 6, 7, 8, 9]);
    let (labelled, rest) = digits::take_per_class(&target, 20);
    let (valid, test) = digits::take_per_class(&rest, 20);
    let train_b = digits::batches::<B>(&labelled, 20, &device);
    let valid_b = digits::batches::<Inner>(&valid, 100, &device);
    let test_b = digits::batches::<Inner>(&test, 300, &device);

    B::seed(&device, SEED);
    let pretrain =
        TransferModel::with_linear_head(MlpBackbone::<B>::new(&WIDTHS, &device)?, 10, &device)?;
    let body = FineTuner::<B>::new()
        .learning_rate(1e-3)
        .epochs(15)
        .monitor(Monitor::TrainLoss)
        .verbose(false)
        .fit(
            pretrain,
            &digits::batches::<B>(pretrain_half, 32, &device),
            None,
        )?
        .model
        .into_parts()
        .0;
    println!(
        "pretrained on all ten digits; new task 5–9: {} labelled, {} validation, {} test",
        labelled.len(),
        valid.len(),
        test.len()
    );
    let new_model = |body: MlpBackbone<B>| -> burn_transfer::Result<Net<B>> {
        B::seed(&device, SEED);
        TransferModel::with_linear_head(body, 5, &device)
    };
    let tuner = |lr: f64| {
        FineTuner::<B>::new()
            .learning_rate(lr)
            .epochs(40)
            .seed(SEED)
            .verbose(false)
    };
    let mut rows = Vec::new();

    // Full fine-tuning: everything trains; everything must be saved.
    let full = new_model(body.clone())?;
    let (trainable, total) = counts(&full);
    let step_ms = step_time(full.clone(), tuner(3e-4).group("head", 1e-2)?, &train_b)?;
    let model = tuner(3e-4)
        .group("head", 1e-2)?
        .fit(full, &train_b, Some(&valid_b))?
        .best_model;
    let path = out_dir.join("full.mpk");
    save_model(&model, &path)?;
    rows.push(Row {
        name: "full fine-tune",
        trainable,
        total,
        accuracy: evaluate(&model.valid(), &test_b)?.accuracy,
        saved_bytes: size(&path),
        step_ms,
    });

    // LoRA r = 4 on both body layers, plus the new head.
    let lora = LoraModel::new(
        new_model(body.clone())?,
        "digits59",
        LoraConfig::new(4, 8.0, ["backbone.layers.*"]),
    )?
    .unfreeze_base("head")?;
    let (trainable, total) = counts(&lora);
    let step_ms = step_time(lora.clone(), tuner(1e-2), &train_b)?;
    let model = tuner(1e-2).fit(lora, &train_b, Some(&valid_b))?.best_model;
    model.save_adapter(&out_dir.join("lora"))?;
    rows.push(Row {
        name: "LoRA r=4 + head",
        trainable,
        total,
        accuracy: evaluate(&model.valid(), &test_b)?.accuracy,
        saved_bytes: size(&out_dir.join("lora").join(WEIGHTS_FILE)),
        step_ms,
    });

    // Head only: the body is frozen by type.
    B::seed(&device, SEED);
    let head_only = TransferModel::new(Frozen::new(body), LinearHead::new(WIDTHS[2], 5, &device)?)?;
    let (trainable, total) = counts(&head_only);
    let step_ms = step_time(head_only.clone(), tuner(1e-2), &train_b)?;
    let model = tuner(1e-2)
        .fit(head_only, &train_b, Some(&valid_b))?
        .best_model;
    let path = out_dir.join("head.mpk");
    save_model(&model.head, &path)?;
    rows.push(Row {
        name: "head only (frozen body)",
        trainable,
        total,
        accuracy: evaluate(&model.valid(), &test_b)?.accuracy,
        saved_bytes: size(&path),
        step_ms,
    });

    let mut table = Table::new(&[
        "strategy",
        "trainable / total",
        "test acc",
        "saved bytes",
        "ms/step",
    ]);
    for r in &rows {
        table.row(vec![
            r.name.to_string(),
            format!("{} / {}", r.trainable, r.total),
            percent(r.accuracy),
            r.saved_bytes.to_string(),
            format!("{:.3}", r.step_ms),
        ]);
    }
    table.print();
    println!(
        "\nthe LoRA file is {:.1}% of the full checkpoint",
        100.0 * rows[1].saved_bytes as f64 / rows[0].saved_bytes as f64
    );
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(())
}

fn counts<M: Freeze<B>>(m: &M) -> (usize, usize) {
    let s = m.param_summary();
    (s.trainable(), s.total())
}

fn size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Mean wall time of one optimizer step (after two warm-up steps).
fn step_time<M>(model: M, tuner: FineTuner<B>, train: &Batches<B>) -> burn_transfer::Result<f64>
where
    M: AutodiffModule<B> + Classifier<B, Input = Tensor<B, 2>>,
{
    let mut s = tuner.session(model)?;
    s.begin_epoch(1)?;
    let steps = 30;
    let mut batches = train.iter().cycle();
    for b in batches.by_ref().take(2) {
        s.train_step(b.clone(), 0.5)?;
    }
    let started = Instant::now();
    for b in batches.take(steps) {
        s.train_step(b.clone(), 0.5)?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / steps as f64)
}
