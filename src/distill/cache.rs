//! Teacher outputs computed once and reused every epoch.

use crate::error::{Result, TransferError};
use crate::finetune::BatchSource;
use burn::prelude::*;

/// Teacher logits for a fixed sequence of batches, computed once (one teacher forward per
/// sample) and kept in memory on the inner backend.
#[derive(Clone, Debug)]
pub struct TeacherCache<B: Backend> {
    pub(crate) logits: Vec<Tensor<B, 2>>,
}

impl<B: Backend> TeacherCache<B> {
    /// Number of cached batches.
    pub fn len(&self) -> usize {
        self.logits.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.logits.is_empty()
    }

    /// Number of cached samples.
    pub fn samples(&self) -> usize {
        self.logits.iter().map(|l| l.dims()[0]).sum()
    }

    /// The cached logits of batch `i`.
    pub fn get(&self, i: usize) -> Option<&Tensor<B, 2>> {
        self.logits.get(i)
    }

    /// Pairs the cache with the batches it was computed from. An error if the cache holds
    /// fewer (or more) batches than the data, or a batch's size differs.
    pub fn attach<T, F>(&self, batches: Vec<T>, batch_size: F) -> Result<CachedBatches<T, B>>
    where
        F: Fn(&T) -> usize,
    {
        if batches.len() != self.logits.len() {
            return Err(TransferError::BatchShape(format!(
                "the teacher cache holds {} batches but the data set has {}; compute the cache from this data set (Distiller::cache_teacher)",
                self.logits.len(),
                batches.len()
            )));
        }
        for (i, (b, l)) in batches.iter().zip(&self.logits).enumerate() {
            let (n, m) = (batch_size(b), l.dims()[0]);
            if n != m {
                return Err(TransferError::BatchShape(format!(
                    "batch {} has {n} samples but its cached teacher logits have {m} rows; compute the cache from this data set",
                    i + 1
                )));
            }
        }
        Ok(CachedBatches {
            items: batches
                .into_iter()
                .zip(self.logits.iter().cloned())
                .collect(),
            shuffle_seed: None,
            epoch: std::cell::Cell::new(0),
        })
    }
}

/// Batches paired with their cached teacher logits, optionally reshuffled (as pairs) every
/// epoch.
pub struct CachedBatches<T, B: Backend> {
    items: Vec<(T, Tensor<B, 2>)>,
    shuffle_seed: Option<u64>,
    epoch: std::cell::Cell<u64>,
}

impl<T, B: Backend> CachedBatches<T, B> {
    /// Shuffles the order of the (batch, logits) pairs every epoch, reproducibly.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Number of batches.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is no batch.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl<T: Clone + 'static, B: Backend> BatchSource<(T, Tensor<B, 2>)> for CachedBatches<T, B> {
    fn epoch(&self) -> Box<dyn Iterator<Item = ((T, Tensor<B, 2>), f64)> + '_> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        if let Some(seed) = self.shuffle_seed {
            let e = self.epoch.get();
            self.epoch.set(e + 1);
            shuffle(&mut order, seed ^ e.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        let n = order.len() as f64;
        Box::new(
            order
                .into_iter()
                .enumerate()
                .map(move |(k, i)| (self.items[i].clone(), (k + 1) as f64 / n)),
        )
    }
}

/// Fisher–Yates with a splitmix64 stream: reproducible, no extra dependency.
fn shuffle(items: &mut [usize], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
