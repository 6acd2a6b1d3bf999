//! Text ↔ token ids through Hugging Face's `tokenizers` (GPT-2's byte-level BPE, from a
//! `tokenizer.json`).

use super::Gpt2Input;
use crate::error::{Result, TransferError};
use burn::prelude::*;
use std::path::Path;
use tokenizers::Tokenizer;

/// GPT-2's end-of-text token, which also begins and separates documents.
const END_OF_TEXT: &str = "<|endoftext|>";

/// A byte-level BPE tokenizer loaded from a `tokenizer.json` (what `save_pretrained` of
/// `GPT2TokenizerFast` writes). Every string encodes (bytes, not characters, are the
/// alphabet) and `decode(encode(s)) == s`.
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
    end_of_text: Option<u32>,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt2Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("end_of_text", &self.end_of_text)
            .finish()
    }
}

impl Gpt2Tokenizer {
    /// Loads `tokenizer.json`. The file's padding and truncation are switched off: a batch
    /// is padded by [`batch`](Self::batch), and the model checks the length.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let inner = crate::models::read_tokenizer_json(path.as_ref())?;
        let end_of_text = inner.token_to_id(END_OF_TEXT);
        Ok(Self { inner, end_of_text })
    }

    /// Size of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `<|endoftext|>`, if the vocabulary has it.
    pub fn end_of_text(&self) -> Option<u32> {
        self.end_of_text
    }

    /// Token ids of one text (GPT-2 adds no special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TransferError::BatchShape(format!("cannot tokenize {text:?}: {e}")))
    }

    /// The text of token ids; special tokens are kept when `skip_special` is false.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TransferError::BatchShape(format!("cannot decode {ids:?}: {e}")))
    }

    /// Texts as one batch padded on the right to the longest (mask 0 at padding), for
    /// training and scoring; [`generate`](super::Gpt2LmHeadModel::generate) pads on the left
    /// itself. An error for an empty batch or a text with no tokens.
    pub fn batch<B: Backend>(&self, texts: &[&str], device: &B::Device) -> Result<Gpt2Input<B>> {
        let rows = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() || rows.iter().any(Vec::is_empty) {
            return Err(TransferError::BatchShape(
                "a batch needs at least one text, each with at least one token".into(),
            ));
        }
        let longest = rows.iter().map(Vec::len).max().unwrap_or(1);
        let pad = self.end_of_text.unwrap_or(0) as i64;
        let mut ids = Vec::with_capacity(rows.len() * longest);
        let mut mask = Vec::with_capacity(ids.capacity());
        for row in &rows {
            for i in 0..longest {
                ids.push(row.get(i).map_or(pad, |&t| t as i64));
                mask.push(i64::from(i < row.len()));
            }
        }
        let shape = [rows.len(), longest];
        Ok(Gpt2Input::with_mask(
            Tensor::from_data(TensorData::new(ids, shape), device),
            Tensor::from_data(TensorData::new(mask, shape), device),
        ))
    }
}
