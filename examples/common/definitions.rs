//! The WordNet examples' data: WordNet 3.0's noun definitions (Debian's `wordnet-base`,
//! fetched by `scripts/fetch-data.sh`) labelled with the kind of thing they describe (their
//! lexicographer file), deduplicated and split with a fixed seed; and their token batches.
#![allow(dead_code)]

use crate::data_dir::data_dir;
use crate::digits::Rng;
use burn::prelude::*;
use burn_transfer::models::{BertInput, BertTokenizer};
use burn_transfer::task::ClassificationBatch;
use std::collections::HashSet;

/// WordNet's lexicographer files used as classes: (file number in `data.noun`, name).
pub const CLASSES: [(&str, &str); 5] = [
    ("05", "animal"),
    ("06", "artifact"),
    ("13", "food"),
    ("18", "person"),
    ("20", "plant"),
];

/// A fixed split of the definitions.
pub struct Definitions {
    pub train: Vec<(String, i64)>,
    pub test: Vec<(String, i64)>,
    /// Further definitions whose labels a teacher will give (a distillation transfer set).
    pub unlabelled: Vec<String>,
    /// Unique definitions of the five classes.
    pub available: usize,
}

/// WordNet's noun definitions of the five classes: the text after `|` in `data.noun` up to
/// the first quoted usage example; a definition found twice is dropped (some synsets share
/// one, within a class or across two), the rest shuffled with `seed`; `test_per_class` test
/// and `per_class` training definitions of each class, then `extra_per_class` more without
/// their label. Exits with a hint when missing.
pub fn load(
    seed: u64,
    per_class: usize,
    test_per_class: usize,
    extra_per_class: usize,
) -> Definitions {
    let dir = data_dir("wordnet");
    let Ok(text) = std::fs::read_to_string(dir.join("data.noun")) else {
        eprintln!(
            "WordNet's nouns are not in {}; run `scripts/fetch-data.sh` first (or set BURN_TRANSFER_DATA)",
            dir.display()
        );
        std::process::exit(2);
    };
    let mut by_class: Vec<Vec<String>> = vec![Vec::new(); CLASSES.len()];
    let mut seen = HashSet::new();
    let mut ambiguous = HashSet::new();
    // Lines that start with spaces are the licence header.
    for line in text.lines().filter(|l| !l.starts_with(' ')) {
        let (Some(file), Some((_, gloss))) = (line.split(' ').nth(1), line.split_once(" | "))
        else {
            continue;
        };
        let Some(class) = CLASSES.iter().position(|(f, _)| *f == file) else {
            continue;
        };
        let definition = gloss.split("; \"").next().unwrap_or("").trim();
        if definition.is_empty() {
            continue;
        }
        if !seen.insert(definition.to_string()) {
            ambiguous.insert(definition.to_string());
        }
        by_class[class].push(definition.to_string());
    }
    let mut rng = Rng::new(seed);
    let (mut train, mut test, mut unlabelled) = (Vec::new(), Vec::new(), Vec::new());
    for (label, mut definitions) in by_class.into_iter().enumerate() {
        definitions.retain(|d| !ambiguous.contains(d));
        rng.shuffle(&mut definitions);
        let label = label as i64;
        let mut it = definitions.into_iter();
        test.extend(it.by_ref().take(test_per_class).map(|d| (d, label)));
        train.extend(it.by_ref().take(per_class).map(|d| (d, label)));
        unlabelled.extend(it.take(extra_per_class));
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut unlabelled);
    Definitions {
        train,
        test,
        unlabelled,
        available: seen.len() - ambiguous.len(),
    }
}

/// Batches of `batch` definitions, tokenized (padded to the longest in each batch).
pub fn batches<Bk: Backend>(
    tokenizer: &BertTokenizer,
    samples: &[(String, i64)],
    batch: usize,
    device: &Bk::Device,
) -> burn_transfer::Result<Vec<ClassificationBatch<Bk, BertInput<Bk>>>> {
    samples
        .chunks(batch)
        .map(|chunk| {
            let texts: Vec<&str> = chunk.iter().map(|(t, _)| t.as_str()).collect();
            let labels: Vec<i64> = chunk.iter().map(|(_, y)| *y).collect();
            Ok(ClassificationBatch::new(
                tokenizer.batch::<Bk>(&texts, device)?,
                Tensor::from_data(TensorData::new(labels, [chunk.len()]), device),
            ))
        })
        .collect()
}
