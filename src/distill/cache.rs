//! Teacher outputs computed once and reused every epoch.

use crate::checkpoint::{atomic_write, checked};
use crate::error::{Result, TransferError};
use crate::task::BatchSource;
use burn::prelude::*;
use std::path::Path;

/// First bytes of a cache file; the version changes with the layout.
const MAGIC: &[u8; 8] = b"BTTCACH2";

/// Teacher logits for a fixed sequence of batches, computed once (one teacher forward per
/// sample) and kept in memory on the inner backend.
#[derive(Clone, Debug)]
pub struct TeacherCache<B: Backend> {
    pub(crate) logits: Vec<Tensor<B, 2>>,
}

impl<B: Backend> TeacherCache<B> {
    /// A cache of logits computed elsewhere (another process, another backend), one
    /// `[batch, classes]` tensor per batch, in the order of the batches they belong to.
    pub fn from_logits(logits: Vec<Tensor<B, 2>>) -> Self {
        Self { logits }
    }

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

    /// Writes the cache to `path` atomically: a header with each batch's shape, then the
    /// logits as little-endian f32, then a checksum that [`TeacherCache::load`] checks.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend((self.logits.len() as u64).to_le_bytes());
        let mut data = Vec::new();
        for l in &self.logits {
            let [rows, cols] = l.dims();
            bytes.extend((rows as u64).to_le_bytes());
            bytes.extend((cols as u64).to_le_bytes());
            let values = l.to_data().convert::<f32>();
            let values = values
                .as_slice::<f32>()
                .map_err(|e| TransferError::Checkpoint {
                    path: path.into(),
                    reason: format!("cannot read the cached logits: {e:?}"),
                })?;
            data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        }
        bytes.extend(data);
        atomic_write(path, &checked::seal(&[&bytes]))
    }

    /// Reads a cache written by [`TeacherCache::save`] onto `device`. A missing, truncated,
    /// damaged (checksum) or foreign file is an error.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let file =
            std::fs::read(path).map_err(|e| TransferError::io("read teacher cache", path, e))?;
        let [bytes] = checked::open_sealed(&file, path)?[..] else {
            return Err(TransferError::Checkpoint {
                path: path.into(),
                reason: "not a teacher cache (wrong number of sections); recompute it with Distiller::cache_teacher".into(),
            });
        };
        let corrupt = |why: &str| TransferError::Checkpoint {
            path: path.into(),
            reason: format!(
                "not a valid teacher cache ({why}); recompute it with Distiller::cache_teacher"
            ),
        };
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(corrupt("wrong header"));
        }
        let n = r.u64().ok_or_else(|| corrupt("truncated header"))? as usize;
        let shapes: Vec<[usize; 2]> = (0..n)
            .map(|_| Some([r.u64()? as usize, r.u64()? as usize]))
            .collect::<Option<_>>()
            .ok_or_else(|| corrupt("truncated shapes"))?;
        let logits = shapes
            .into_iter()
            .map(|[rows, cols]| {
                let len = rows
                    .checked_mul(cols)
                    .and_then(|n| n.checked_mul(4))
                    .ok_or_else(|| corrupt("impossible shape"))?;
                let raw = r.take(len).ok_or_else(|| corrupt("truncated data"))?;
                let values: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Tensor::from_data(
                    TensorData::new(values, [rows, cols]),
                    device,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if r.at != bytes.len() {
            return Err(corrupt("trailing bytes"));
        }
        Ok(Self { logits })
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

/// A cursor over a byte slice that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn disk_round_trip_is_exact_and_damage_is_an_error() {
        let device = Default::default();
        let cache = TeacherCache::<NdArray> {
            logits: vec![
                Tensor::from_floats([[1.0, -2.5, 3.25], [0.0, 1e-7, -1e9]], &device),
                Tensor::from_floats([[4.0, 5.0, 6.0]], &device),
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("teacher.cache");
        cache.save(&path).unwrap();
        let back = TeacherCache::<NdArray>::load(&path, &device).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.samples(), 3);
        for (a, b) in cache.logits.iter().zip(&back.logits) {
            assert_eq!(a.to_data(), b.to_data());
        }
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 5, 12, 30, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = TeacherCache::<NdArray>::load(&path, &device).unwrap_err();
            assert!(err.to_string().contains("teacher.cache"), "{err}");
        }
        // Any flipped byte, in the header, the logits or the footer, is an error.
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            std::fs::write(&path, &flipped).unwrap();
            let err = TeacherCache::<NdArray>::load(&path, &device).unwrap_err();
            assert!(err.to_string().contains("is damaged"), "byte {at}: {err}");
        }
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        assert!(TeacherCache::<NdArray>::load(&path, &device).is_err());
        assert!(TeacherCache::<NdArray>::load(&dir.path().join("none"), &device).is_err());
    }
}
