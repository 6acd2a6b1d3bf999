//! The UCI digits set (`data/digits.csv.gz`): loading, splitting and batching.
//! Shared by the examples and the integration tests.
#![allow(dead_code)]

use burn::prelude::*;
use burn_transfer::task::ClassificationBatch;
use std::io::Read;
use std::path::Path;

/// One image (64 pixels scaled to [0, 1]) and its digit.
#[derive(Clone, Debug)]
pub struct Sample {
    pub pixels: Vec<f32>,
    pub label: usize,
}

/// Reads the committed CSV (gzip): 64 pixels then the label per row.
pub fn load() -> Vec<Sample> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .expect("digits.csv.gz is valid gzip");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let values: Vec<f32> = line
                .split(',')
                .map(|v| v.parse().expect("number"))
                .collect();
            assert_eq!(values.len(), 65, "each row has 64 pixels and a label");
            Sample {
                pixels: values[..64].iter().map(|v| v / 16.0).collect(),
                label: values[64] as usize,
            }
        })
        .collect()
}

/// A small deterministic generator (xorshift64*), so splits do not depend on a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// The samples whose label is in `classes`, relabelled 0.. in the order of `classes`.
pub fn select(samples: &[Sample], classes: &[usize]) -> Vec<Sample> {
    samples
        .iter()
        .filter_map(|s| {
            classes.iter().position(|&c| c == s.label).map(|i| Sample {
                pixels: s.pixels.clone(),
                label: i,
            })
        })
        .collect()
}

/// Takes `per_class` samples of each class (in order) and returns (taken, rest).
pub fn take_per_class(samples: &[Sample], per_class: usize) -> (Vec<Sample>, Vec<Sample>) {
    let mut counts = std::collections::HashMap::new();
    let (mut taken, mut rest) = (Vec::new(), Vec::new());
    for s in samples {
        let c = counts.entry(s.label).or_insert(0usize);
        if *c < per_class {
            *c += 1;
            taken.push(s.clone());
        } else {
            rest.push(s.clone());
        }
    }
    (taken, rest)
}

/// Batches of `size` (the last may be smaller), inputs `[n, 64]`.
pub fn batches<B: Backend>(
    samples: &[Sample],
    size: usize,
    device: &B::Device,
) -> Vec<ClassificationBatch<B, Tensor<B, 2>>> {
    samples
        .chunks(size)
        .map(|chunk| {
            let pixels: Vec<f32> = chunk
                .iter()
                .flat_map(|s| s.pixels.iter().copied())
                .collect();
            let labels: Vec<i64> = chunk.iter().map(|s| s.label as i64).collect();
            ClassificationBatch::new(
                Tensor::from_data(TensorData::new(pixels, [chunk.len(), 64]), device),
                Tensor::from_data(TensorData::new(labels, [chunk.len()]), device),
            )
        })
        .collect()
}
