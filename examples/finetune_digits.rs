//! Transfer learning on real handwritten digits (UCI optdigits, 1797 images of 8×8).
//!
//! The seed's recipe at laptop scale: a network pretrained on a broad task (all ten digits,
//! on one half of the images: our "ImageNet") gets its 10-way head replaced by a 5-way head
//! for a new, small task (digits 5–9 on the *other* half, 5 labelled images per class).
//! Three ways to learn the new task, same budget, same seed: (a) a new head on the frozen
//! pretrained body, (b) the whole network fine-tuned at a small learning rate, (c) the same
//! network from scratch. Each is run on five random splits and the means are compared.
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

#[path = "common/table.rs"]
mod table;
use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::Backend;
use burn::tensor::Tensor;
use burn_transfer::finetune::evaluate;
use burn_transfer::prelude::*;
use std::time::Instant;
use table::{Table, percent};

type B = Autodiff<NdArray>;
type Inner = NdArray;
type Batches<Bk> = Vec<ClassificationBatch<Bk, Tensor<Bk, 2>>>;

const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];
const LABELS_PER_CLASS: usize = 5;
const WIDTHS: [usize; 3] = [64, 128, 64];

struct Row {
    name: &'static str,
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
    // CPU training: this thread computes as one of rayon's, and freed buffers are kept for
    // the next step instead of paying page faults.
    burn_transfer::kernels::join_compute_pool();
    burn_transfer::kernels::reuse_freed_memory();
    let device = Default::default();
    let started = Instant::now();
    let all = digits::load();
    // Five random splits: one split's test set has only ~300 images, and burn's CPU
    // kernels are not bitwise reproducible from run to run, so single-split differences
    // of a point or two are noise. Means over splits are what the check compares.
    let mut broad_rows: Vec<Vec<Row>> = Vec::new();
    let mut narrow_rows: Vec<Vec<Row>> = Vec::new();
    for seed in SEEDS {
        let mut all = all.clone();
        digits::Rng::new(seed).shuffle(&mut all);
        let (pretrain_half, target_half) = all.split_at(all.len() / 2);
        let target_digits = digits::select(target_half, &[5, 6, 7, 8, 9]);
        let (labelled, rest) = digits::take_per_class(&target_digits, LABELS_PER_CLASS);
        let (valid, test) = digits::take_per_class(&rest, 20);
        if seed == SEEDS[0] {
            println!(
                "per split: {} pretraining images; new task (digits 5–9, other images): {} labelled, {} validation, {} test",
                pretrain_half.len(),
                labelled.len(),
                valid.len(),
                test.len()
            );
        }
        let target = Target {
            train: digits::batches::<B>(&labelled, 10, &device),
            valid: digits::batches::<Inner>(&valid, 100, &device),
            test: digits::batches::<Inner>(&test, 250, &device),
        };
        // The same network from random weights: the baseline.
        B::seed(&device, seed);
        let scratch =
            TransferModel::with_linear_head(MlpBackbone::<B>::new(&WIDTHS, &device)?, 5, &device)?;
        let scratch = run("(c) from scratch", scratch, tuner(1e-2, seed), &target)?;

        let broad = pretrain(pretrain_half.to_vec(), 10, seed)?;
        let mut rows = transfer(broad, &target, seed)?;
        rows.push(scratch);
        let narrow = pretrain(digits::select(pretrain_half, &[0, 1, 2, 3, 4]), 5, seed)?;
        let narrow = transfer(narrow, &target, seed)?;
        println!(
            "split {seed}: broad (a) {:.1}% (b) {:.1}% | disjoint (a) {:.1}% (b) {:.1}% | scratch (c) {:.1}%",
            rows[0].accuracy * 100.0,
            rows[1].accuracy * 100.0,
            narrow[0].accuracy * 100.0,
            narrow[1].accuracy * 100.0,
            rows[2].accuracy * 100.0
        );
        broad_rows.push(rows);
        narrow_rows.push(narrow);
    }

    println!(
        "
== pretrained on all ten digits (broad source task), mean of {} splits ==",
        SEEDS.len()
    );
    let broad = mean_rows(&broad_rows);
    print_table(&broad);
    println!(
        "
== pretrained on digits 0–4 only (classes disjoint from the new task) =="
    );
    let narrow = mean_rows(&narrow_rows);
    print_table(&narrow);

    let best_broad = broad[0].accuracy.max(broad[1].accuracy);
    let scratch_acc = broad[2].accuracy;
    println!(
        "(disjoint classes: best transfer {:.1}% vs scratch {:.1}%)",
        narrow[0].accuracy.max(narrow[1].accuracy) * 100.0,
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
        "transfer from broad pretraining beats scratch by {:.1} points (mean of {} splits, {} labels per class)",
        (best_broad - scratch_acc) * 100.0,
        SEEDS.len(),
        LABELS_PER_CLASS
    );
    Ok(())
}

/// Per-strategy means over splits.
fn mean_rows(per_split: &[Vec<Row>]) -> Vec<Row> {
    let n = per_split.len() as f64;
    (0..per_split[0].len())
        .map(|i| Row {
            name: per_split[0][i].name,
            trainable: per_split[0][i].trainable,
            total: per_split[0][i].total,
            accuracy: per_split.iter().map(|r| r[i].accuracy).sum::<f64>() / n,
            seconds: per_split.iter().map(|r| r[i].seconds).sum::<f64>() / n,
        })
        .collect()
}

/// Trains backbone + `classes`-way head on the pretraining images; returns the backbone.
fn pretrain(
    samples: Vec<digits::Sample>,
    classes: usize,
    seed: u64,
) -> burn_transfer::Result<MlpBackbone<B>> {
    let device = Default::default();
    B::seed(&device, seed);
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
        .fit(model, &train, None)?;
    Ok(outcome.model.into_parts().0)
}

/// (a) head only on the frozen body and (b) full fine-tuning, from `backbone`.
fn transfer(
    backbone: MlpBackbone<B>,
    target: &Target,
    seed: u64,
) -> burn_transfer::Result<Vec<Row>> {
    let device = Default::default();
    // (a) The body is Frozen: it runs on the inner backend and cannot change.
    B::seed(&device, seed);
    let head_only = TransferModel::new(
        Frozen::new(backbone.clone()),
        LinearHead::new(WIDTHS[2], 5, &device)?,
    )?;
    let a = run(
        "(a) head only, frozen body",
        head_only,
        tuner(1e-2, seed),
        target,
    )?;
    // (b) The pretrained head is replaced (10 → 5 outputs); body at a small rate, head larger.
    B::seed(&device, seed);
    let full = TransferModel::with_linear_head(backbone, 5, &device)?;
    let b = run(
        "(b) full fine-tune",
        full,
        tuner(3e-4, seed).group("head", 1e-2)?,
        target,
    )?;
    Ok(vec![a, b])
}

fn tuner(lr: f64, seed: u64) -> FineTuner<B> {
    FineTuner::<B>::new()
        .learning_rate(lr)
        .epochs(40)
        .monitor(Monitor::ValidLoss)
        .seed(seed)
        .verbose(false)
}

fn run<M>(
    name: &'static str,
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
    let outcome = tuner.fit(model, &target.train, Some(&target.valid))?;
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
    let mut table = Table::new(&["strategy", "trainable / total", "test acc", "time"]);
    for r in rows {
        table.row(vec![
            r.name.to_string(),
            format!("{} / {}", r.trainable, r.total),
            percent(r.accuracy),
            format!("{:.2}s", r.seconds),
        ]);
    }
    table.print();
}
