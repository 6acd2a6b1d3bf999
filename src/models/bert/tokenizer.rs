//! Text → [`BertInput`] through Hugging Face's `tokenizers` (a `tokenizer.json` file).

use super::BertInput;
use crate::error::{Result, TransferError};
use burn::prelude::*;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// A WordPiece tokenizer loaded from a `tokenizer.json`, producing padded batches.
///
/// The file's own padding is switched off (sentence-transformers ship it padded to 128) and
/// each batch is padded to its longest sequence instead: a 7-token sentence costs 7
/// positions, not 128.
pub struct BertTokenizer {
    inner: Tokenizer,
    pad_id: u32,
}

impl std::fmt::Debug for BertTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertTokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl BertTokenizer {
    /// Loads `tokenizer.json`; sequences longer than `max_len` tokens are truncated (the
    /// special tokens kept).
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        if max_len < 2 {
            return Err(TransferError::config(
                "max_len",
                max_len,
                "must leave room for [CLS] and [SEP] (at least 2)",
            ));
        }
        let mut inner = crate::models::read_tokenizer_json(path.as_ref())?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| TransferError::config("max_len", max_len, &e.to_string()))?;
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0);
        Ok(Self { inner, pad_id })
    }

    /// Token ids of one text, with `[CLS]` and `[SEP]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, true)
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
        self.inner.token_to_id(token)
    }
}
