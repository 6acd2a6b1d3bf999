//! ViT's hyper-parameters, read from a Hugging Face `config.json` or built in code.

use crate::error::{Result, TransferError};
use crate::models::shared::{check_dropouts, check_heads, check_sizes};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A side length that `config.json` writes either as one number (square) or as
/// `[height, width]`, as transformers accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageSide {
    /// The same length both ways.
    Square(usize),
    /// `[height, width]`.
    Rect([usize; 2]),
}

impl ImageSide {
    /// `[height, width]`.
    pub fn pair(self) -> [usize; 2] {
        match self {
            Self::Square(n) => [n, n],
            Self::Rect(pair) => pair,
        }
    }
}

/// The shape of a Vision Transformer. Field names follow Hugging Face's `config.json` for
/// `ViTModel` / `ViTForImageClassification`, so the file that ships with a checkpoint loads
/// as is ([`ViTConfig::from_json_file`]); fields it lacks take ViT-Base/16's values.
///
/// A burn `Config`: `save` writes the same `config.json` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ViTConfig {
    /// Width of every hidden state (768 in ViT-Base).
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// The feed-forward activation; ViT uses the exact `gelu` (the only one accepted).
    pub hidden_act: String,
    /// Dropout on the embeddings and after each attention and feed-forward block.
    pub hidden_dropout_prob: f64,
    /// Dropout on the attention probabilities.
    pub attention_probs_dropout_prob: f64,
    /// Standard deviation of the initial weights.
    pub initializer_range: f64,
    /// LayerNorm epsilon (1e-12 in ViT).
    pub layer_norm_eps: f64,
    /// The image size the position embeddings were trained for.
    pub image_size: ImageSide,
    /// The side of a patch (one token per patch).
    pub patch_size: ImageSide,
    /// Colour channels of the input.
    pub num_channels: usize,
    /// Whether the query, key and value projections have biases.
    pub qkv_bias: bool,
    /// Width of the pooler's output (`None`: `hidden_size`).
    pub pooler_output_size: Option<usize>,
    /// The pooler's activation; `tanh` (the only one accepted).
    pub pooler_act: String,
    /// Class names of a classification checkpoint, by index (their number is the head's
    /// width: [`num_labels`](Self::num_labels)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id2label: Option<BTreeMap<String, String>>,
}

impl burn::config::Config for ViTConfig {}

impl Default for ViTConfig {
    /// `google/vit-base-patch16-224`: 12 layers, width 768, 12 heads, 224×224 images in
    /// 16×16 patches.
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            image_size: ImageSide::Square(224),
            patch_size: ImageSide::Square(16),
            num_channels: 3,
            qkv_bias: true,
            pooler_output_size: None,
            pooler_act: "tanh".into(),
            id2label: None,
        }
    }
}

impl ViTConfig {
    /// ViT-Base/16 at 224×224 (`google/vit-base-patch16-224`); the same as `Default`.
    pub fn vit_base_patch16_224() -> Self {
        Self::default()
    }

    /// A student for distillation: the same width and patches (so embeddings and layers can
    /// be copied from the teacher) with `layers` layers.
    pub fn shallower(&self, layers: usize) -> Self {
        Self {
            num_hidden_layers: layers,
            ..self.clone()
        }
    }

    /// A narrower model: `width` wide with `heads` heads and a 4× feed-forward block.
    pub fn narrower(&self, width: usize, heads: usize) -> Self {
        Self {
            hidden_size: width,
            num_attention_heads: heads,
            intermediate_size: 4 * width,
            pooler_output_size: None,
            ..self.clone()
        }
    }

    /// The same network for other images: `size × size` pixels in `patch × patch` patches
    /// with `channels` channels (1 for greyscale).
    pub fn for_images(&self, size: usize, patch: usize, channels: usize) -> Self {
        Self {
            image_size: ImageSide::Square(size),
            patch_size: ImageSide::Square(patch),
            num_channels: channels,
            ..self.clone()
        }
    }

    /// Patches per column and per row at the configured image size: the grid the position
    /// embeddings were trained on.
    pub fn patch_grid(&self) -> [usize; 2] {
        let [h, w] = self.image_size.pair();
        let [ph, pw] = self.patch_size.pair();
        [h / ph, w / pw]
    }

    /// The pooler's width (`pooler_output_size`, or `hidden_size`).
    pub fn pooler_size(&self) -> usize {
        self.pooler_output_size.unwrap_or(self.hidden_size)
    }

    /// Number of classes of a classification checkpoint (`id2label`), if it names them.
    pub fn num_labels(&self) -> Option<usize> {
        self.id2label.as_ref().map(BTreeMap::len)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let config: Self = crate::models::read_config_json(path.as_ref(), "ViT")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sizes fit together and that the options are ones this model has.
    pub fn validate(&self) -> Result<()> {
        let [h, w] = self.image_size.pair();
        let [ph, pw] = self.patch_size.pair();
        check_sizes(&[
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("num_channels", self.num_channels),
            ("pooler_output_size", self.pooler_size()),
            ("patch_size", ph.min(pw)),
        ])?;
        if h < ph || w < pw {
            return Err(TransferError::config(
                "image_size",
                format!("{h}×{w}"),
                &format!("must hold at least one {ph}×{pw} patch"),
            ));
        }
        check_heads(
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        check_dropouts(&[
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ])?;
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(TransferError::config(
                "layer_norm_eps",
                self.layer_norm_eps,
                "must be > 0 (ViT: 1e-12)",
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(TransferError::config(
                "hidden_act",
                &self.hidden_act,
                "this ViT runs the exact gelu, as every released ViT checkpoint does",
            ));
        }
        if self.pooler_act != "tanh" {
            return Err(TransferError::config(
                "pooler_act",
                &self.pooler_act,
                "this ViT's pooler runs tanh, transformers' default",
            ));
        }
        if self.num_labels() == Some(0) {
            return Err(TransferError::config(
                "id2label",
                "{}",
                "a classification checkpoint names at least one class",
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
            r#"{"architectures":["ViTForImageClassification"],"model_type":"vit",
                "image_size":[224,224],"patch_size":16,"encoder_stride":16,
                "id2label":{"0":"tench","1":"goldfish"},"label2id":{"tench":0,"goldfish":1}}"#,
        )
        .unwrap();
        let config = ViTConfig::from_json_file(&path).unwrap();
        assert_eq!(config.patch_grid(), [14, 14]);
        assert_eq!(config.num_labels(), Some(2));
        assert_eq!(config.pooler_size(), 768);
        assert_eq!(config.hidden_act, "gelu");
        for (json, what) in [
            (r#"{"hidden_size":100}"#, "multiple"),
            (r#"{"hidden_act":"relu"}"#, "gelu"),
            (r#"{"pooler_act":"relu"}"#, "tanh"),
            (r#"{"image_size":8}"#, "at least one 16×16 patch"),
            (r#"{"patch_size":[0,16]}"#, "at least 1"),
            (r#"{"hidden_dropout_prob":1.5}"#, "dropout"),
            (r#"{"layer_norm_eps":0}"#, "> 0"),
            (r#"{"id2label":{}}"#, "at least one class"),
            (r#"{"image_size":"large"}"#, "not a ViT config.json"),
        ] {
            std::fs::write(&path, json).unwrap();
            let err = ViTConfig::from_json_file(&path).unwrap_err().to_string();
            assert!(err.contains(what), "{json}: {err}");
        }
    }

    #[test]
    fn burn_config_round_trips_through_json() {
        use burn::config::Config;
        let config = ViTConfig::default().for_images(28, 7, 1).shallower(2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vit.json");
        config.save(&path).unwrap();
        assert_eq!(ViTConfig::load(&path).unwrap(), config);
        assert_eq!(config.patch_grid(), [4, 4]);
    }
}
