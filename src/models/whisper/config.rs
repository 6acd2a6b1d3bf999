//! The encoder's hyper-parameters, read from a Whisper `config.json` or built in code.

use crate::error::{Result, TransferError};
use crate::models::shared::{check_dropouts, check_heads, check_sizes};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The shape of Whisper's audio encoder. Field names follow Hugging Face's `config.json`
/// for Whisper (the decoder's fields are read past), so the file that ships with a
/// checkpoint loads as is ([`WhisperEncoderConfig::from_json_file`]); fields it lacks take
/// whisper-tiny's values.
///
/// A burn `Config`: `save` writes the same `config.json` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WhisperEncoderConfig {
    /// Mel bins of the input features (80; 128 in large-v3).
    pub num_mel_bins: usize,
    /// Width of every hidden state.
    pub d_model: usize,
    /// Number of encoder layers.
    pub encoder_layers: usize,
    /// Attention heads per layer (`d_model` must be a multiple).
    pub encoder_attention_heads: usize,
    /// Width of the feed-forward block.
    pub encoder_ffn_dim: usize,
    /// Positions after the stride-2 convolution: half the input frames (1500 for 30 s).
    pub max_source_positions: usize,
    /// The activation after the convolutions and in the feed-forward block; `gelu` (the only
    /// one accepted, as every released Whisper).
    pub activation_function: String,
    /// Dropout on the hidden states.
    pub dropout: f64,
    /// Dropout on the attention probabilities.
    pub attention_dropout: f64,
    /// Dropout after the feed-forward activation.
    pub activation_dropout: f64,
    /// Standard deviation of the initial weights.
    pub init_std: f64,
}

impl burn::config::Config for WhisperEncoderConfig {}

impl Default for WhisperEncoderConfig {
    /// `openai/whisper-tiny`'s encoder: 4 layers, width 384, 6 heads, 30 s of audio.
    fn default() -> Self {
        Self {
            num_mel_bins: 80,
            d_model: 384,
            encoder_layers: 4,
            encoder_attention_heads: 6,
            encoder_ffn_dim: 1536,
            max_source_positions: 1500,
            activation_function: "gelu".into(),
            dropout: 0.0,
            attention_dropout: 0.0,
            activation_dropout: 0.0,
            init_std: 0.02,
        }
    }
}

impl WhisperEncoderConfig {
    /// whisper-tiny's encoder; the same as `Default`.
    pub fn whisper_tiny() -> Self {
        Self::default()
    }

    /// whisper-base's encoder: 6 layers, width 512, 8 heads.
    pub fn whisper_base() -> Self {
        Self {
            d_model: 512,
            encoder_layers: 6,
            encoder_attention_heads: 8,
            encoder_ffn_dim: 2048,
            ..Self::default()
        }
    }

    /// A student: the same width (so layers can be copied from the teacher) with `layers`
    /// layers.
    pub fn shallower(&self, layers: usize) -> Self {
        Self {
            encoder_layers: layers,
            ..self.clone()
        }
    }

    /// A narrower encoder: `width` wide with `heads` heads and a 4× feed-forward block.
    pub fn narrower(&self, width: usize, heads: usize) -> Self {
        Self {
            d_model: width,
            encoder_attention_heads: heads,
            encoder_ffn_dim: 4 * width,
            ..self.clone()
        }
    }

    /// For clips of `seconds` (at Whisper's 100 frames a second: `50 · seconds` positions).
    pub fn for_seconds(&self, seconds: usize) -> Self {
        Self {
            max_source_positions: 50 * seconds,
            ..self.clone()
        }
    }

    /// Input frames a clip has: twice the positions (the second convolution has stride 2).
    pub fn input_frames(&self) -> usize {
        2 * self.max_source_positions
    }

    /// Reads a Hugging Face Whisper `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let config: Self = crate::models::read_config_json(path.as_ref(), "Whisper")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sizes fit together and that the options are ones this model has.
    pub fn validate(&self) -> Result<()> {
        check_sizes(&[
            ("num_mel_bins", self.num_mel_bins),
            ("d_model", self.d_model),
            ("encoder_layers", self.encoder_layers),
            ("encoder_attention_heads", self.encoder_attention_heads),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("max_source_positions", self.max_source_positions),
        ])?;
        check_heads(
            "d_model",
            self.d_model,
            "encoder_attention_heads",
            self.encoder_attention_heads,
        )?;
        if !self.d_model.is_multiple_of(2) {
            return Err(TransferError::config(
                "d_model",
                self.d_model,
                "must be even: the sinusoidal positions pair a sine with a cosine",
            ));
        }
        check_dropouts(&[
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
            ("activation_dropout", self.activation_dropout),
        ])?;
        if self.activation_function != "gelu" {
            return Err(TransferError::config(
                "activation_function",
                &self.activation_function,
                "this encoder runs the exact gelu, as every released Whisper does",
            ));
        }
        Ok(())
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
            r#"{"architectures":["WhisperForConditionalGeneration"],"model_type":"whisper",
                "d_model":512,"encoder_layers":6,"encoder_attention_heads":8,
                "encoder_ffn_dim":2048,"decoder_layers":6,"vocab_size":51865,
                "begin_suppress_tokens":[220,50257]}"#,
        )
        .unwrap();
        let config = WhisperEncoderConfig::from_json_file(&path).unwrap();
        assert_eq!(config, WhisperEncoderConfig::whisper_base());
        assert_eq!(config.input_frames(), 3000);
        for (json, what) in [
            (r#"{"d_model":100}"#, "multiple"),
            (r#"{"d_model":21,"encoder_attention_heads":7}"#, "even"),
            (r#"{"activation_function":"relu"}"#, "gelu"),
            (r#"{"dropout":1.0}"#, "dropout"),
            (r#"{"max_source_positions":0}"#, "at least 1"),
        ] {
            std::fs::write(&path, json).unwrap();
            let err = WhisperEncoderConfig::from_json_file(&path)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{json}: {err}");
        }
    }
}
