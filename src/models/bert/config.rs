//! BERT's hyper-parameters, read from a Hugging Face `config.json` or built in code.

use crate::error::{Result, TransferError};
use crate::models::shared::{check_heads, check_sizes};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The shape of a BERT encoder. Field names follow Hugging Face's `config.json`, so the file
/// that ships with a checkpoint loads as is ([`BertConfig::from_json_file`]); fields it lacks
/// take BERT's defaults.
///
/// A burn `Config`: `save` writes the same `config.json` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// Size of the token vocabulary.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Longest sequence the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Number of segment (token type) ids.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12 in BERT).
    pub layer_norm_eps: f64,
    /// Dropout after embeddings, attention output and feed-forward output.
    pub hidden_dropout_prob: f64,
    /// Dropout on the attention probabilities.
    pub attention_probs_dropout_prob: f64,
    /// Whether the model has BERT's pooler (`pooler.dense`, tanh over `[CLS]`). Checkpoints
    /// that include it load cleanly only when this is true.
    pub with_pooler: bool,
    /// Bottleneck width of Houlsby adapters after every attention and feed-forward block;
    /// `None` (the default, and what checkpoints hold) builds none.
    pub adapter_size: Option<usize>,
}

impl burn::config::Config for BertConfig {}

impl Default for BertConfig {
    /// BERT-base (uncased): 12 layers, hidden 768, 12 heads.
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            with_pooler: true,
            adapter_size: None,
        }
    }
}

impl BertConfig {
    /// sentence-transformers' `all-MiniLM-L6-v2`: 6 layers, hidden 384, 12 heads, ffn 1536
    /// (22.7M parameters).
    pub fn all_minilm_l6_v2() -> Self {
        Self {
            hidden_size: 384,
            num_hidden_layers: 6,
            intermediate_size: 1536,
            ..Self::default()
        }
    }

    /// A student for distillation: the same width and vocabulary (so embeddings and layers
    /// can be copied from the teacher, as DistilBERT does) with `layers` layers.
    pub fn shallower(&self, layers: usize) -> Self {
        Self {
            num_hidden_layers: layers,
            ..self.clone()
        }
    }

    /// A narrower student (trained from scratch or by feature distillation with a
    /// projector): `hidden` wide with `heads` heads and a 4× feed-forward block.
    pub fn narrower(&self, hidden: usize, heads: usize) -> Self {
        Self {
            hidden_size: hidden,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            ..self.clone()
        }
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let config: Self = crate::models::read_config_json(path.as_ref(), "BERT")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        check_sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ])?;
        if self.adapter_size == Some(0) {
            return Err(TransferError::config(
                "adapter_size",
                0,
                "an adapter needs a bottleneck of at least 1 (or None for no adapters)",
            ));
        }
        check_heads(
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_config_json_is_read_with_defaults_for_missing_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"architectures":["BertModel"],"hidden_size":384,"num_hidden_layers":6,
                "intermediate_size":1536,"model_type":"bert"}"#,
        )
        .unwrap();
        let config = BertConfig::from_json_file(&path).unwrap();
        assert_eq!(config, BertConfig::all_minilm_l6_v2());
        std::fs::write(&path, r#"{"hidden_size":100,"num_attention_heads":12}"#).unwrap();
        let err = BertConfig::from_json_file(&path).unwrap_err().to_string();
        assert!(err.contains("multiple"), "{err}");
    }
}
