//! Pretrained architectures with PyTorch / Hugging Face parameter names (crate feature
//! `models`, on by default).
//!
//! Each loads its original checkpoint through [`import`](crate::import) with the key rules
//! it ships (no hand-written map), is a [`Backbone`](crate::backbone::Backbone) or
//! [`SequenceBackbone`](crate::head::SequenceBackbone), and has smaller configurations for
//! students:
//!
//! - [`bert`]: BERT encoders; `all-MiniLM-L6-v2` loads from its `model.safetensors`, text
//!   goes in through [`bert::BertTokenizer`];
//! - [`gpt2`]: GPT-2 (`GPT2LMHeadModel`'s names) from a Hugging Face folder, with a key/value
//!   cache, generation and its byte-level BPE through [`gpt2::Gpt2Tokenizer`];
//! - [`mobilenet_v2`]: torchvision's MobileNetV2 with its ImageNet `.pth`;
//! - [`resnet`]: torchvision's ResNet-18/34/50/101;
//! - [`whisper`]: Whisper's audio encoder (`WhisperModel.encoder`'s names) from a Hugging
//!   Face folder, with the log-mel front end computed from raw 16 kHz audio;
//! - [`vit`]: the Vision Transformer (`ViTModel` / `ViTForImageClassification`'s names)
//!   from a Hugging Face folder, with position embeddings resampled for other image sizes.
//!
//! Where the weights come from: `scripts/fetch-weights.sh` (README).

pub mod bert;
pub mod conv_bn;
pub mod gpt2;
pub mod mobilenet_v2;
pub mod resnet;
mod shared;
pub mod vit;
pub mod whisper;

/// A backbone with a linear head, as the ImageNet checkpoints come (`fc`, `classifier.1`).
pub type WithLinearHead<B, Bb> = crate::head::TransferModel<B, Bb, crate::head::LinearHead<B>>;

pub use bert::{Bert, BertConfig, BertInput, BertTokenizer};
pub use gpt2::{GenerationConfig, Gpt2Config, Gpt2LmHeadModel, Gpt2Tokenizer};
pub use mobilenet_v2::{MobileNetV2, MobileNetV2Config};
pub use resnet::{ResNet, ResNetConfig};
pub use vit::{ViT, ViTConfig};
pub use whisper::{WhisperEncoder, WhisperEncoderConfig, WhisperFeatureExtractor};

/// Reads a Hugging Face `config.json` into `T` (fields it lacks take `T`'s defaults); `what`
/// names the model in errors ("BERT", "GPT-2").
pub(crate) fn read_config_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &str,
) -> crate::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::TransferError::io(&format!("read {what} config"), path, e))?;
    serde_json::from_str(&text).map_err(|e| crate::TransferError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("not a {what} config.json: {e}"),
    })
}

/// Loads a Hugging Face `tokenizer.json` with its padding and truncation switched off (the
/// model's tokenizer wrapper decides both); an error for a missing or unreadable file.
pub(crate) fn read_tokenizer_json(path: &std::path::Path) -> crate::Result<tokenizers::Tokenizer> {
    if !path.is_file() {
        return Err(crate::TransferError::io(
            "open tokenizer",
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(path).map_err(|e| crate::TransferError::WeightFile {
            path: path.to_path_buf(),
            reason: format!("not a tokenizer.json: {e}"),
        })?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| crate::TransferError::WeightFile {
            path: path.to_path_buf(),
            reason: format!("cannot switch truncation off: {e}"),
        })?;
    Ok(tokenizer)
}

/// The folder where `scripts/fetch-weights.sh` puts pretrained weights: `$BURN_TRANSFER_WEIGHTS`
/// if set, else `~/.cache/burn-transfer/weights`. `None` when neither can be determined.
pub fn weights_dir() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("BURN_TRANSFER_WEIGHTS") {
        return Some(dir.into());
    }
    std::env::var_os("HOME").map(|home| {
        std::path::PathBuf::from(home)
            .join(".cache")
            .join("burn-transfer")
            .join("weights")
    })
}
