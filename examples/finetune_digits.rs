//! Transfer learning on real handwritten digits (UCI optdigits, 1797 images of 8×8).
//!
//! The seed's recipe at laptop scale: a network pretrained on a broad task (all ten digits,
//! on one half of the images: our "ImageNet") gets its 10-way head replaced by a 5-way head
//! for a new, small task (digits 5–9 on the *other* half, 10 labelled images per class).
//! Three ways to learn the new task, same budget, same seed: (a) a new head on the frozen
//! pretrained body, (b) the whole network fine-tuned at a small learning rate, (c) the same
//! network from scratch.
//!
//! For comparison it also pretrains on digits 0–4 only and transfers to 5–9: with classes
//! that disjoint, on raw 8×8 pixels, the pretrained features carry less than the pixels
//! themselves and transfer loses to scratch — the output shows it.
//!
//!     cargo run --release --example finetune_digits
//!
//! It exits with an error if transfer from the broad pretraining does not beat scratch.

#[path = "common/digits.rs"]
mod digits;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn_transfer::finetune::evaluate;
use burn_transfer::prelude::*;
use std::time::Instant;

type B = Autodiff<NdArray>;
type Inner = NdArray;
type Batches<Bk> = Vec<ClassificationBatch<Bk, Tensor<Bk, 2>>>;

const SEED: u64 = 7;
const LABELS_PER_CLASS: usize = 10;
const WIDTHS: [usize; 3] = [64, 128, 64];

struct Row {
    name: String,
    trainable: usize,
    total: usize,
    accuracy: f64,
    seconds: f64,
}

struct Target {
    train: Batches<B>,
    valid: Batches<Inner>,
    test: Batches<Inner>,
}

fn main() -> burn_transfer::Result<()> {
    let device = Default::default();
    let started = Instant::now();
    let mut all = digits::load();
    digits::Rng::new(SEED).shuffle(&mut all);
    let (pretrain_half, target_half) = all.split_at(all.len() / 2);

    let target_digits = digits::select(target_half, &[5, 6, 7, 8, 9]);
    let (labelled, rest) = digits::take_per_class(&target_digits, LABELS_PER_CLASS);
    let (valid, test) = digits::take_per_class(&rest, 20);
    println!(
        "pretraining images: {}; new task (digits 5–9, other images): {} labelled, {} validation, {} test",
        pretrain_half.len(),
        labelled.len(),
        valid.len(),
        test.len()
    );
    let target = Target {
        train: digits::batches::<B>(&labelled, 10, &device),
        valid: digits::batches::<Inner>(&valid, 100, &device),
        test: digits::batches::<Inner>(&test, 250, &device),
    };

    // The same network from random weights: the baseline both settings must beat.
    B::seed(&device, SEED);
    let scratch =
        TransferModel::with_linear_head(MlpBackbone::<B>::new(&WIDTHS, &device)?, 5, &device)?;
    let scratch = run("(c) from scratch".into(), scratch, tuner(1e-2), &target)?;

    println!("\n== pretrained on all ten digits (broad source task) ==");
    let broad = pretrain(pretrain_half.to_vec(), 10)?;
    let mut rows = transfer(broad, &target)?;
    rows.push(scratch);
    print_table(&rows);
    let best_broad = rows[0].accuracy.max(rows[1].accuracy);
    let scratch_acc = rows[2].accuracy;

    println!("\n== pretrained on digits 0–4 only (classes disjoint from the new task) ==");
    let narrow = pretrain(digits::select(pretrain_half, &[0, 1, 2, 3, 4]), 5)?;
    let narrow_rows = transfer(narrow, &target)?;
    print_table(&narrow_rows);
    println!(
        "(disjoint classes: best transfer {:.1}% vs scratch {:.1}%)",
        narrow_rows[0].accuracy.max(narrow_rows[1].accuracy) * 100.0,
        scratch_acc * 100.0
    );

    println!("\ntotal time {:.1}s", started.elapsed().as_secs_f64());
    if best_broad <= scratch_acc {
        eprintln!(
            "transfer ({:.1}%) did not beat training from scratch ({:.1}%)",
            best_broad * 100.0,
            scratch_acc * 100.0
        );
        std::process::exit(1);
    }
    println!(
        "transfer from broad pretraining beats scratch by {:.1} points with {} labels per class",
        (best_broad - scratch_acc) * 100.0,
        LABELS_PER_CLASS
    );
    Ok(())
}

/// Trains backbone + `classes`-way head on the pretraining images; returns the backbone.
fn pretrain(samples: Vec<digits::Sample>, classes: usize) -> burn_transfer::Result<MlpBackbone<B>> {
    let device = Default::default();
    B::seed(&device, SEED);
    let started = Instant::now();
    let model = TransferModel::with_linear_head(
        MlpBackbone::<B>::new(&WIDTHS, &device)?,
        classes,
        &device,
    )?;
    let train = digits::batches::<B>(&samples, 32, &device);
    let outcome = FineTuner::<B>::new()
        .learning_rate(1e-3)
        .epochs(15)
        .monitor(Monitor::TrainLoss)
        .verbose(false)
        .fit_without_validation(model, &train)?;
    let last = outcome.history.epochs.last().expect("15 epochs ran");
    println!(
        "pretrained {classes}-way on {} images: train accuracy {:.1}% in {:.1}s",
        samples.len(),
        last.train_accuracy * 100.0,
        started.elapsed().as_secs_f64()
    );
    Ok(outcome.model.into_parts().0)
}

/// (a) head only on the frozen body and (b) full fine-tuning, from `backbone`.
fn transfer(backbone: MlpBackbone<B>, target: &Target) -> burn_transfer::Result<Vec<Row>> {
    let device = Default::default();
    // (a) The body is Frozen: it runs on the inner backend and cannot change.
    B::seed(&device, SEED);
    let head_only = TransferModel::new(
        Frozen::new(backbone.clone()),
        LinearHead::new(WIDTHS[2], 5, &device)?,
    )?;
    let a = run(
        "(a) head only, frozen body".into(),
        head_only,
        tuner(1e-2),
        target,
    )?;
    // (b) The pretrained head is replaced (10 → 5 outputs); body at a small rate, head larger.
    B::seed(&device, SEED);
    let full = TransferModel::with_linear_head(backbone, 5, &device)?;
    let b = run(
        "(b) full fine-tune".into(),
        full,
        tuner(3e-4).group("head", 1e-2)?,
        target,
    )?;
    Ok(vec![a, b])
}

fn tuner(lr: f64) -> FineTuner<B> {
    FineTuner::<B>::new()
        .learning_rate(lr)
        .epochs(40)
        .monitor(Monitor::ValidLoss)
        .seed(SEED)
        .verbose(false)
}

fn run<M>(
    name: String,
    model: M,
    tuner: FineTuner<B>,
    target: &Target,
) -> burn_transfer::Result<Row>
where
    M: AutodiffModule<B> + Classifier<B, Input = Tensor<B, 2>>,
    M::InnerModule: Classifier<Inner, Input = Tensor<Inner, 2>>,
{
    let summary = model.param_summary();
    let started = Instant::now();
    let outcome = tuner.fit(model, &target.train, &target.valid)?;
    let seconds = started.elapsed().as_secs_f64();
    let accuracy = evaluate(&outcome.best_model.valid(), &target.test)?.accuracy;
    Ok(Row {
        name,
        trainable: summary.trainable(),
        total: summary.total(),
        accuracy,
        seconds,
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<28} {:>19} {:>9} {:>7}",
        "strategy", "trainable / total", "test acc", "time"
    );
    for r in rows {
        println!(
            "{:<28} {:>19} {:>8.1}% {:>6.2}s",
            r.name,
            format!("{} / {}", r.trainable, r.total),
            r.accuracy * 100.0,
            r.seconds
        );
    }
}
