//! GPT-2's hyper-parameters, read from a Hugging Face `config.json` or built in code.

use crate::error::{Result, TransferError};
use crate::models::shared::{check_dropouts, check_heads, check_sizes};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The shape of a GPT-2 decoder. Field names follow Hugging Face's `config.json` for
/// `GPT2LMHeadModel`, so the file that ships with a checkpoint loads as is
/// ([`Gpt2Config::from_json_file`]); fields it lacks take GPT-2's defaults.
///
/// A burn `Config`: `save` writes the same `config.json` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    /// Size of the token vocabulary (50257 for GPT-2's byte-level BPE).
    pub vocab_size: usize,
    /// Longest sequence the position embeddings cover (past tokens of a cache included).
    pub n_positions: usize,
    /// Width of every hidden state.
    pub n_embd: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block (`n_embd` must be a multiple).
    pub n_head: usize,
    /// Width of the feed-forward block; `None` means `4 · n_embd`, as in transformers.
    pub n_inner: Option<usize>,
    /// The feed-forward activation: `gelu_new` (GPT-2's tanh approximation, also spelled
    /// `gelu_pytorch_tanh`), `gelu` (exact) or `relu`.
    pub activation_function: String,
    /// Dropout after each block's attention and feed-forward projections.
    pub resid_pdrop: f64,
    /// Dropout after the token + position embeddings.
    pub embd_pdrop: f64,
    /// Dropout on the attention probabilities.
    pub attn_pdrop: f64,
    /// LayerNorm epsilon (1e-5 in GPT-2).
    pub layer_norm_epsilon: f64,
    /// The begin-of-text token (GPT-2 uses `<|endoftext|>` for both ends).
    pub bos_token_id: Option<u32>,
    /// The end-of-text token that stops generation.
    pub eos_token_id: Option<u32>,
    /// Scores divided by `√head_dim` (true in every released GPT-2).
    pub scale_attn_weights: bool,
    /// Scores also divided by the layer's index + 1 (a Mistral-era option of transformers'
    /// GPT-2; refused by [`validate`](Self::validate), no released checkpoint sets it).
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Whether the LM head shares the token embedding matrix (true for every GPT-2).
    pub tie_word_embeddings: bool,
}

impl burn::config::Config for Gpt2Config {}

impl Default for Gpt2Config {
    /// The 124M-parameter `gpt2`: 12 blocks, width 768, 12 heads, 1024 positions.
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: "gelu_new".into(),
            resid_pdrop: 0.1,
            embd_pdrop: 0.1,
            attn_pdrop: 0.1,
            layer_norm_epsilon: 1e-5,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
        }
    }
}

/// The feed-forward activations GPT-2 checkpoints name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gpt2Activation {
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, GPT-2's own (`gelu_new`).
    GeluTanh,
    /// `x·Φ(x)`, the exact GELU.
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

impl Gpt2Config {
    /// `gpt2` (124M parameters); the same as `Default`.
    pub fn gpt2() -> Self {
        Self::default()
    }

    /// `distilgpt2`: GPT-2 with 6 blocks (82M parameters), distilled from `gpt2`.
    pub fn distilgpt2() -> Self {
        Self::default().shallower(6)
    }

    /// A student for distillation: the same width and vocabulary (so embeddings and blocks
    /// can be copied from the teacher, as DistilGPT-2 was) with `layers` blocks.
    pub fn shallower(&self, layers: usize) -> Self {
        Self {
            n_layer: layers,
            ..self.clone()
        }
    }

    /// A narrower model: `width` wide with `heads` heads and a 4× feed-forward block.
    pub fn narrower(&self, width: usize, heads: usize) -> Self {
        Self {
            n_embd: width,
            n_head: heads,
            n_inner: None,
            ..self.clone()
        }
    }

    /// The feed-forward width (`n_inner`, or `4 · n_embd`).
    pub fn inner_size(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// The activation `activation_function` names; an error for one GPT-2 does not use.
    pub fn activation(&self) -> Result<Gpt2Activation> {
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Gpt2Activation::GeluTanh),
            "gelu" => Ok(Gpt2Activation::Gelu),
            "relu" => Ok(Gpt2Activation::Relu),
            other => Err(TransferError::config(
                "activation_function",
                other,
                "use gelu_new (GPT-2's), gelu_pytorch_tanh, gelu or relu",
            )),
        }
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let config: Self = crate::models::read_config_json(path.as_ref(), "GPT-2")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sizes fit together and that the options are ones this model has.
    pub fn validate(&self) -> Result<()> {
        check_sizes(&[
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_size()),
        ])?;
        check_heads("n_embd", self.n_embd, "n_head", self.n_head)?;
        check_dropouts(&[
            ("resid_pdrop", self.resid_pdrop),
            ("embd_pdrop", self.embd_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ])?;
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return Err(TransferError::config(
                "layer_norm_epsilon",
                self.layer_norm_epsilon,
                "must be > 0 (GPT-2: 1e-5)",
            ));
        }
        if let Some(id) = self
            .eos_token_id
            .filter(|&id| id as usize >= self.vocab_size)
        {
            return Err(TransferError::config(
                "eos_token_id",
                id,
                &format!("must be below vocab_size {}", self.vocab_size),
            ));
        }
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx {
            return Err(TransferError::config(
                "scale_attn_weights / scale_attn_by_inverse_layer_idx",
                format!(
                    "{} / {}",
                    self.scale_attn_weights, self.scale_attn_by_inverse_layer_idx
                ),
                "this GPT-2 scales scores by 1/√head_dim only (true / false), as every released \
                 checkpoint does",
            ));
        }
        if !self.tie_word_embeddings {
            return Err(TransferError::config(
                "tie_word_embeddings",
                false,
                "this GPT-2's LM head is the token embedding matrix (true), as in every released \
                 checkpoint",
            ));
        }
        self.activation().map(|_| ())
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
            r#"{"architectures":["GPT2LMHeadModel"],"model_type":"gpt2","n_ctx":1024,
                "n_layer":6,"n_inner":null,"task_specific_params":{"text-generation":{}}}"#,
        )
        .unwrap();
        let config = Gpt2Config::from_json_file(&path).unwrap();
        assert_eq!(config, Gpt2Config::distilgpt2());
        assert_eq!(config.inner_size(), 3072);
        assert_eq!(config.activation().unwrap(), Gpt2Activation::GeluTanh);
        for (json, what) in [
            (r#"{"n_embd":100}"#, "multiple"),
            (r#"{"activation_function":"swish"}"#, "gelu_new"),
            (r#"{"tie_word_embeddings":false}"#, "LM head"),
            (r#"{"eos_token_id":60000}"#, "below vocab_size"),
            (r#"{"attn_pdrop":1.0}"#, "dropout"),
        ] {
            std::fs::write(&path, json).unwrap();
            let err = Gpt2Config::from_json_file(&path).unwrap_err().to_string();
            assert!(err.contains(what), "{json}: {err}");
        }
    }
}
