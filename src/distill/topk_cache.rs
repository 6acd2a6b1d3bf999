//! A causal-LM teacher's next-token distributions computed once and kept on disk sparsely:
//! per position its top-k log-probabilities at the distillation temperature and the log of
//! the mass left to every other token, in shard files read through memory maps. Training
//! on it needs neither the teacher nor the whole cache in memory: each batch's rows are read
//! from the maps when the batch is drawn.
//!
//! Layout of a cache folder: `manifest.json` (k, temperature, vocabulary, the teacher's
//! weight fingerprint, a hash of every batch's ids and mask, where each batch's rows start)
//! and `shard-NNNNN.bin` files (an 8-byte magic, then one row per position: `k` token ids
//! as little-endian `u32`, their `k` log-probabilities and the tail's log as `f32`). The
//! folder is written beside its final place and renamed into it, so a cache is whole or
//! absent.

use super::modes::{DistillBatch, student_tokens, token_terms_only};
use crate::adapter::Fingerprint;
use crate::error::{Result, TransferError};
use crate::loss::{DistillLoss, DistillLossConfig, LayerPairs, TopKTargets};
use crate::objective::{NextTokenLoss, Objective, StepAt, StepOutput, batch_error};
use crate::task::{BatchSource, CausalLm, TokenBatch};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// First bytes of a shard; the version changes with the row layout.
const MAGIC: &[u8; 8] = b"BTTOPK01";
const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "burn-transfer top-k teacher cache";
/// Positions per shard file.
const SHARD_ROWS: usize = 1 << 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    k: usize,
    vocab: usize,
    temperature: f64,
    /// The teacher's weights ([`Fingerprint`] hash).
    teacher: String,
    /// Every batch's ids and mask, hashed in order.
    data: String,
    batches: Vec<BatchEntry>,
    shards: Vec<ShardEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct BatchEntry {
    rows: usize,
    seq: usize,
    /// Hash of this batch's ids and mask.
    data: String,
    /// Where its first position's row is.
    shard: usize,
    row: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ShardEntry {
    file: String,
    rows: usize,
}

impl Manifest {
    fn row_bytes(&self) -> usize {
        8 * self.k + 4
    }
}

/// A teacher's top-k cache on disk, its shards memory-mapped (see the module's
/// documentation). Made by [`Distiller::cache_teacher_topk`](super::Distiller::cache_teacher_topk)
/// or opened with [`TopKCache::open`]; paired with its token batches by
/// [`TopKCache::attach`].
#[derive(Clone, Debug)]
pub struct TopKCache {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    shards: Arc<Vec<Mmap>>,
}

impl TopKCache {
    /// Tokens kept per position.
    pub fn k(&self) -> usize {
        self.manifest.k
    }

    /// The temperature the log-probabilities were computed at.
    pub fn temperature(&self) -> f64 {
        self.manifest.temperature
    }

    /// Number of cached batches.
    pub fn len(&self) -> usize {
        self.manifest.batches.len()
    }

    /// Whether no batch is cached.
    pub fn is_empty(&self) -> bool {
        self.manifest.batches.is_empty()
    }

    /// The teacher's weight fingerprint the cache was computed with.
    pub fn teacher_fingerprint(&self) -> &str {
        &self.manifest.teacher
    }

    /// Bytes on disk (the shards).
    pub fn disk_bytes(&self) -> u64 {
        self.shards.iter().map(|m| m.len() as u64).sum()
    }

    /// Opens the cache in `dir`: reads its manifest and maps its shards, checking each
    /// shard's header and length. A missing, foreign or truncated cache is an error.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TransferError::io("read the top-k cache's manifest", &path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| corrupt(&path, &e))?;
        if manifest.format != FORMAT || manifest.version != 1 {
            return Err(corrupt(&path, &"not a version-1 top-k cache"));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        for shard in &manifest.shards {
            let path = dir.join(&shard.file);
            let file = File::open(&path)
                .map_err(|e| TransferError::io("open a top-k cache shard", &path, e))?;
            // SAFETY: the map is read-only and the shard is never written after the cache's
            // folder was renamed into place; its length is checked below before any read.
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| TransferError::io("map a top-k cache shard", &path, e))?;
            let expected = MAGIC.len() + shard.rows * manifest.row_bytes();
            if map.len() != expected || &map[..MAGIC.len()] != MAGIC {
                return Err(corrupt(
                    &path,
                    &format!("{} bytes, the manifest promises {expected}", map.len()),
                ));
            }
            shards.push(map);
        }
        for (i, b) in manifest.batches.iter().enumerate() {
            let fits = manifest
                .shards
                .get(b.shard)
                .is_some_and(|s| b.row + b.rows * b.seq <= s.rows);
            if !fits {
                return Err(corrupt(&path, &format!("batch {i} lies outside its shard")));
            }
        }
        Ok(Self {
            dir,
            manifest: Arc::new(manifest),
            shards: Arc::new(shards),
        })
    }

    /// Computes the cache of `teacher` over `batches` at `temperature` into `dir`; an
    /// existing cache there for the same teacher, data, `k` and temperature is opened
    /// instead (the teacher does not run).
    pub(crate) fn build<B: Backend, T: CausalLm<B>>(
        teacher: &T,
        batches: &[TokenBatch<B>],
        k: usize,
        temperature: f64,
        dir: &Path,
    ) -> Result<Self> {
        let vocab = teacher.vocab_size();
        if k == 0 || k > vocab {
            return Err(TransferError::config(
                "top-k cache k",
                k,
                &format!("keep between 1 and the vocabulary's {vocab} tokens per position"),
            ));
        }
        let hashes = batches.iter().map(batch_hash).collect::<Result<Vec<_>>>()?;
        let data = fnv_hex(hashes.iter().flat_map(|h| h.bytes()));
        let teacher_print = Fingerprint::of(teacher).hash;
        if let Ok(existing) = Self::open(dir) {
            let m = &existing.manifest;
            if m.teacher == teacher_print
                && m.data == data
                && m.k == k
                && m.temperature == temperature
                && m.vocab == vocab
            {
                return Ok(existing);
            }
        }
        let staging = sibling(dir, "writing")?;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(|e| TransferError::io("clear an unfinished top-k cache", &staging, e))?;
        }
        std::fs::create_dir_all(&staging)
            .map_err(|e| TransferError::io("create the top-k cache folder", &staging, e))?;
        let mut writer = ShardWriter::new(&staging, k);
        let mut entries = Vec::with_capacity(batches.len());
        for (i, (batch, hash)) in batches.iter().zip(hashes).enumerate() {
            let logits = teacher
                .next_token_logits(batch.input_ids.clone(), batch.attention_mask.clone())
                .map_err(|e| batch_error(e, "teacher's caching", i))?;
            let [rows, seq, v] = logits.dims();
            if v != vocab {
                return Err(TransferError::WidthMismatch {
                    what: format!("teacher logits of batch {i}"),
                    expected: vocab,
                    actual: v,
                    hint: "the teacher's vocab_size must be the width of its logits".into(),
                });
            }
            let log_p = log_softmax(logits.div_scalar(temperature), 2)
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| {
                    TransferError::BatchShape(format!("unreadable teacher logits: {e:?}"))
                })?;
            // A batch's rows stay in one shard, so that reading it is one slice.
            writer.reserve(rows * seq)?;
            let (shard, row) = writer.position();
            entries.push(BatchEntry {
                rows,
                seq,
                data: hash,
                shard,
                row,
            });
            for position in log_p.chunks_exact(vocab) {
                writer.row(&top_k(position, k))?;
            }
        }
        let shards = writer.finish()?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: 1,
            k,
            vocab,
            temperature,
            teacher: teacher_print,
            data,
            batches: entries,
            shards,
        };
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| TransferError::BatchShape(format!("cannot write the manifest: {e}")))?;
        let path = staging.join(MANIFEST);
        std::fs::write(&path, text)
            .map_err(|e| TransferError::io("write the top-k cache's manifest", &path, e))?;
        replace_dir(&staging, dir)?;
        Self::open(dir)
    }

    /// Pairs the cache with the token batches it was computed from (in the same order),
    /// for [`Distiller::fit`](super::Distiller::fit). An error if a batch differs from the
    /// one cached (its ids, mask or shape), if the counts differ, or if `loss` distils at
    /// another temperature than the cache's (a constant one) or has terms token-level
    /// distillation cannot compute.
    pub fn attach<B: Backend>(
        &self,
        batches: Vec<TokenBatch<B>>,
        loss: &DistillLossConfig,
    ) -> Result<TopKBatches<B>> {
        token_terms_only(loss, "distillation from a top-k cache")?;
        let t = loss.temperature.at(1);
        if !loss.temperature.is_constant() || (t - self.manifest.temperature).abs() > 1e-12 {
            return Err(TransferError::config(
                "temperature",
                format!("{:?}", loss.temperature),
                &format!(
                    "this cache holds the teacher's probabilities at T = {}; distil at that constant temperature, or rebuild the cache",
                    self.manifest.temperature
                ),
            ));
        }
        if batches.len() != self.len() {
            return Err(TransferError::BatchShape(format!(
                "{} token batches for a cache of {}; attach the batches it was computed from, in order",
                batches.len(),
                self.len()
            )));
        }
        for (i, (batch, entry)) in batches.iter().zip(&self.manifest.batches).enumerate() {
            if batch.input_ids.dims() != [entry.rows, entry.seq] || batch_hash(batch)? != entry.data
            {
                return Err(TransferError::BatchShape(format!(
                    "batch {i} is not the one the cache in {} was computed from (other ids, mask or shape); attach the same batches in the same order, or rebuild the cache",
                    self.dir.display()
                )));
            }
        }
        Ok(TopKBatches {
            cache: self.clone(),
            tokens: batches,
        })
    }

    /// Batch `i`'s targets, read from the maps onto `device`.
    fn targets<B: Backend>(&self, i: usize, device: &B::Device) -> TopKTargets<B> {
        let m = &self.manifest;
        let entry = &m.batches[i];
        let (k, rows) = (m.k, entry.rows * entry.seq);
        let start = MAGIC.len() + entry.row * m.row_bytes();
        let bytes = &self.shards[entry.shard][start..start + rows * m.row_bytes()];
        let (mut ids, mut log_probs, mut tail) = (
            Vec::with_capacity(rows * k),
            Vec::with_capacity(rows * k),
            Vec::with_capacity(rows),
        );
        for row in bytes.chunks_exact(m.row_bytes()) {
            let word = |j: usize| [row[4 * j], row[4 * j + 1], row[4 * j + 2], row[4 * j + 3]];
            ids.extend((0..k).map(|j| u32::from_le_bytes(word(j)) as i64));
            log_probs.extend((k..2 * k).map(|j| f32::from_le_bytes(word(j))));
            tail.push(f32::from_le_bytes(word(2 * k)));
        }
        let shape3 = [entry.rows, entry.seq, k];
        TopKTargets {
            indices: Tensor::from_data(
                TensorData::new(ids, shape3).convert::<B::IntElem>(),
                device,
            ),
            log_probs: Tensor::from_data(TensorData::new(log_probs, shape3), device),
            tail: Tensor::from_data(TensorData::new(tail, [entry.rows, entry.seq]), device),
        }
    }
}

/// A token batch with its teacher's top-k targets: what a [`Distiller`](super::Distiller)
/// trains a student on without running the teacher.
#[derive(Clone, Debug)]
pub struct TopKBatch<B: Backend> {
    /// The token ids and mask.
    pub tokens: TokenBatch<B>,
    /// The teacher's sparse next-token distributions.
    pub teacher: TopKTargets<B>,
}

/// The token batches of a [`TopKCache`], each drawn with its targets read from the maps at
/// that moment (in the cached order).
#[derive(Clone, Debug)]
pub struct TopKBatches<B: Backend> {
    cache: TopKCache,
    tokens: Vec<TokenBatch<B>>,
}

impl<B: Backend> BatchSource<TopKBatch<B>> for TopKBatches<B> {
    fn epoch(&self) -> Box<dyn Iterator<Item = (TopKBatch<B>, f64)> + '_> {
        let n = self.tokens.len();
        Box::new(self.tokens.iter().enumerate().map(move |(i, tokens)| {
            let device = tokens.input_ids.device();
            let batch = TopKBatch {
                tokens: tokens.clone(),
                teacher: self.cache.targets(i, &device),
            };
            (batch, (i + 1) as f64 / n as f64)
        }))
    }
}

/// One position's `k` most likely tokens (most likely first), their log-probabilities and
/// the log of the mass of all the others (summed in f64).
fn top_k(log_p: &[f32], k: usize) -> (Vec<u32>, Vec<f32>, f32) {
    let mut order: Vec<u32> = (0..log_p.len() as u32).collect();
    let by_prob = |a: &u32, b: &u32| log_p[*b as usize].total_cmp(&log_p[*a as usize]);
    if k < order.len() {
        order.select_nth_unstable_by(k, by_prob);
    }
    let (top, rest) = order.split_at_mut(k);
    top.sort_unstable_by(by_prob);
    let tail: f64 = rest.iter().map(|&j| (log_p[j as usize] as f64).exp()).sum();
    let values = top.iter().map(|&j| log_p[j as usize]).collect();
    (top.to_vec(), values, tail.ln() as f32)
}

/// Writes rows into shard files of at most [`SHARD_ROWS`] positions.
struct ShardWriter {
    dir: PathBuf,
    k: usize,
    done: Vec<ShardEntry>,
    current: Option<(BufWriter<File>, ShardEntry)>,
}

impl ShardWriter {
    fn new(dir: &Path, k: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            k,
            done: Vec::new(),
            current: None,
        }
    }

    /// The shard and row the next row goes to.
    fn position(&self) -> (usize, usize) {
        match &self.current {
            Some((_, entry)) => (self.done.len(), entry.rows),
            None => (self.done.len(), 0),
        }
    }

    /// Starts a new shard unless `rows` more fit in the current one (a batch larger than a
    /// shard gets one of its own).
    fn reserve(&mut self, rows: usize) -> Result<()> {
        let fits =
            matches!(&self.current, Some((_, e)) if e.rows == 0 || e.rows + rows <= SHARD_ROWS);
        if fits {
            return Ok(());
        }
        self.close()?;
        let file = format!("shard-{:05}.bin", self.done.len());
        let path = self.dir.join(&file);
        let mut out = BufWriter::new(
            File::create(&path)
                .map_err(|e| TransferError::io("create a top-k cache shard", &path, e))?,
        );
        out.write_all(MAGIC)
            .map_err(|e| TransferError::io("write a top-k cache shard", &path, e))?;
        self.current = Some((out, ShardEntry { file, rows: 0 }));
        Ok(())
    }

    fn row(&mut self, (ids, log_probs, tail): &(Vec<u32>, Vec<f32>, f32)) -> Result<()> {
        let (out, entry) = self.current.as_mut().expect("reserve opens a shard");
        let mut bytes = Vec::with_capacity(8 * self.k + 4);
        bytes.extend(ids.iter().flat_map(|i| i.to_le_bytes()));
        bytes.extend(log_probs.iter().flat_map(|v| v.to_le_bytes()));
        bytes.extend(tail.to_le_bytes());
        out.write_all(&bytes).map_err(|e| {
            TransferError::io("write a top-k cache shard", self.dir.join(&entry.file), e)
        })?;
        entry.rows += 1;
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if let Some((out, entry)) = self.current.take() {
            let path = self.dir.join(&entry.file);
            let file = out.into_inner().map_err(|e| {
                TransferError::io("write a top-k cache shard", &path, e.into_error())
            })?;
            file.sync_all()
                .map_err(|e| TransferError::io("write a top-k cache shard", &path, e))?;
            self.done.push(entry);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<ShardEntry>> {
        self.close()?;
        Ok(self.done)
    }
}

/// A folder beside `dir` named after it (`NAME.what`).
fn sibling(dir: &Path, what: &str) -> Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| {
        TransferError::config(
            "top-k cache folder",
            dir.display(),
            "give a folder with a name",
        )
    })?;
    Ok(dir.with_file_name(format!("{}.{what}", name.to_string_lossy())))
}

/// Moves the finished `staging` folder to `dir`, replacing what was there.
fn replace_dir(staging: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        let old = sibling(dir, "old")?;
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .map_err(|e| TransferError::io("remove an old top-k cache", &old, e))?;
        }
        std::fs::rename(dir, &old)
            .map_err(|e| TransferError::io("move the old top-k cache aside", dir, e))?;
        std::fs::rename(staging, dir)
            .map_err(|e| TransferError::io("move the top-k cache into place", dir, e))?;
        std::fs::remove_dir_all(&old)
            .map_err(|e| TransferError::io("remove the old top-k cache", &old, e))?;
    } else {
        std::fs::rename(staging, dir)
            .map_err(|e| TransferError::io("move the top-k cache into place", dir, e))?;
    }
    Ok(())
}

fn batch_hash<B: Backend>(batch: &TokenBatch<B>) -> Result<String> {
    let ints = |t: &Tensor<B, 2, Int>| -> Result<Vec<u8>> {
        let values: Vec<i64> = t
            .to_data()
            .convert::<i64>()
            .into_vec()
            .map_err(|e| TransferError::BatchShape(format!("unreadable token batch: {e:?}")))?;
        Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    };
    let dims = batch.input_ids.dims();
    let mut bytes: Vec<u8> = dims
        .iter()
        .flat_map(|d| (*d as u64).to_le_bytes())
        .collect();
    bytes.extend(ints(&batch.input_ids)?);
    bytes.extend(ints(&batch.attention_mask)?);
    Ok(fnv_hex(bytes))
}

fn fnv_hex(bytes: impl IntoIterator<Item = u8>) -> String {
    format!("{:016x}", crate::adapter::fnv(bytes))
}

fn corrupt(path: &Path, why: &dyn std::fmt::Display) -> TransferError {
    TransferError::Checkpoint {
        path: path.into(),
        reason: format!(
            "not a valid top-k teacher cache ({why}); rebuild it with Distiller::cache_teacher_topk"
        ),
    }
}

/// Token-level distillation from the cache: `α·KD + (1-α)·CE` on every real next token, the
/// KD term against the teacher's top-k and tail ([`DistillLoss::forward_topk_tokens`]);
/// validated as the live token mode is (next-token loss, `exp` = perplexity). The teacher
/// is not run: a [`Distiller::without_teacher`](super::Distiller::without_teacher) will do.
impl<B, S, T> DistillBatch<B, S, T> for TopKBatch<B>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + CausalLm<B>,
    S::InnerModule: CausalLm<B::InnerBackend>,
{
    type Valid = TokenBatch<B::InnerBackend>;

    fn layer_pairs(config: &DistillLossConfig, _: &S, _: &T) -> Result<LayerPairs> {
        token_terms_only(config, "distillation from a top-k cache")?;
        Ok(LayerPairs::default())
    }

    fn distill_step(
        self,
        student: &S,
        _teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        let TokenBatch {
            input_ids,
            attention_mask,
        } = self.tokens;
        let s = student_tokens(student, &input_ids, &attention_mask, at)?;
        let out = loss
            .forward_topk_tokens(
                s.logits,
                self.teacher,
                Some(s.kd_mask),
                Some(s.labels),
                at.epoch,
            )
            .map_err(|e| batch_error(e, "training", at.batch))?;
        Ok(StepOutput::new(out.total, s.correct, s.count).with_terms(out.terms))
    }

    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        <NextTokenLoss as Objective<B, S>>::valid_step(&NextTokenLoss, student, batch, at)
    }
}
