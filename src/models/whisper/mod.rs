//! Whisper's audio encoder and its log-mel front end, loading Hugging Face checkpoints as
//! they are.
//!
//! [`WhisperEncoder`] keeps `WhisperModel.encoder`'s module names (`conv1`, `conv2`,
//! `embed_positions`, `layers.N.self_attn.q_proj`, `layer_norm`, …), so the encoder of
//! `openai/whisper-tiny`'s `model.safetensors` (a `WhisperForConditionalGeneration`: keys
//! `model.encoder.*`) loads with [`WhisperEncoder::from_pretrained`], the decoder's keys left
//! out. [`WhisperFeatureExtractor`] turns raw 16 kHz audio into the log-mel features it reads,
//! as transformers' extractor of the same name. As a [`Backbone`] the encoder gives the mean
//! of its final states over time, for an audio classification head (a new `Linear`, or an
//! MLP as `WhisperForAudioClassification`'s projector + classifier).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn_transfer::backbone::Backbone;
//! use burn_transfer::models::whisper::{
//!     WhisperEncoder, WhisperEncoderConfig, WhisperFeatureConfig,
//! };
//!
//! let device = Default::default();
//! // A small encoder for one-second clips: 100 frames, 50 positions.
//! let config = WhisperEncoderConfig::whisper_tiny().for_seconds(1).shallower(2).narrower(32, 4);
//! let encoder = WhisperEncoder::<NdArray>::new(&config, &device)?;
//! let extractor = WhisperFeatureConfig::default().with_chunk_length(1).init()?;
//! let beep: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.3).sin()).collect();
//! let features = extractor.batch::<NdArray>(&[&beep], &device)?;
//! assert_eq!(features.dims(), [1, 80, 100]);
//! let out = encoder.forward(features.clone(), false);
//! assert_eq!(out.last_hidden_state.dims(), [1, 50, 32]);
//! assert_eq!(encoder.features(features).dims(), [1, 32]); // mean over time, for a head
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

mod config;
mod features;
mod layers;

pub use config::WhisperEncoderConfig;
pub use features::{WhisperFeatureConfig, WhisperFeatureExtractor};
pub use layers::{WhisperAttention, WhisperEncoderLayer};

use crate::backbone::Backbone;
use crate::error::{Result, TransferError};
use crate::import::{ImportOptions, ImportReport, import_weights};
use crate::kernels::{dropout, gelu, layer_norm as norm};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, PaddingConfig1d,
};
use burn::prelude::*;
use std::path::Path;

/// Whisper's audio encoder (HF `WhisperEncoder`): two convolutions over the mel frames (the
/// second halving time), fixed sinusoidal positions, pre-norm layers, a final norm.
#[derive(Module, Debug)]
pub struct WhisperEncoder<B: Backend> {
    /// `num_mel_bins → d_model`, kernel 3, padding 1.
    pub conv1: Conv1d<B>,
    /// `d_model → d_model`, kernel 3, stride 2, padding 1.
    pub conv2: Conv1d<B>,
    /// The sinusoidal position table `[max_source_positions, d_model]`; not trained (as in
    /// transformers).
    pub embed_positions: Embedding<B>,
    /// The encoder layers, `layers.0` ….
    pub layers: Vec<WhisperEncoderLayer<B>>,
    /// Norm after the last layer.
    pub layer_norm: LayerNorm<B>,
    dropout: Dropout,
    num_mel_bins: usize,
    d_model: usize,
}

/// Everything a forward pass produces; what distillation losses read.
#[derive(Clone, Debug)]
pub struct WhisperEncoderOutput<B: Backend> {
    /// The final norm's output `[batch, positions, d_model]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// The embeddings' output, then each layer's, the last one after the final norm, as
    /// transformers returns them (`layers + 1` tensors).
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// Each layer's attention probabilities `[batch, heads, positions, positions]`, when
    /// asked for.
    pub attentions: Vec<Tensor<B, 4>>,
}

/// A kernel-3 convolution over time with padding 1, initialised as Whisper's (`N(0,
/// init_std)` weights, zero bias).
fn conv_over_time<B: Backend>(
    c: &WhisperEncoderConfig,
    d_in: usize,
    stride: usize,
    device: &B::Device,
) -> Conv1d<B> {
    let mut conv = Conv1dConfig::new(d_in, c.d_model, 3)
        .with_stride(stride)
        .with_padding(PaddingConfig1d::Explicit(1, 1))
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: c.init_std,
        })
        .init(device);
    if let Some(b) = conv.bias.take() {
        conv.bias = Some(Param::from_tensor(b.val().zeros_like()));
    }
    conv
}

/// Whisper's position table: for position `t` and `i < d/2`, `sin(t·e^{-i·ln(10⁴)/(d/2−1)})`
/// in the first half, the cosines in the second.
fn sinusoids(positions: usize, d_model: usize) -> Vec<f32> {
    let half = d_model / 2;
    let step = 10_000f64.ln() / (half.max(2) - 1) as f64;
    let mut table = Vec::with_capacity(positions * d_model);
    for t in 0..positions {
        let angles: Vec<f64> = (0..half)
            .map(|i| t as f64 * (-step * i as f64).exp())
            .collect();
        table.extend(angles.iter().map(|a| a.sin() as f32));
        table.extend(angles.iter().map(|a| a.cos() as f32));
    }
    table
}

impl<B: Backend> WhisperEncoder<B> {
    /// A randomly initialised encoder (weights `N(0, init_std)`, biases 0, norms at
    /// identity, the sinusoidal positions), as transformers'.
    pub fn new(config: &WhisperEncoderConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let mut embed_positions =
            EmbeddingConfig::new(config.max_source_positions, config.d_model).init(device);
        embed_positions.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(
                sinusoids(config.max_source_positions, config.d_model),
                [config.max_source_positions, config.d_model],
            ),
            device,
        ));
        let encoder = Self {
            conv1: conv_over_time(config, config.num_mel_bins, 1, device),
            conv2: conv_over_time(config, config.d_model, 2, device),
            embed_positions: embed_positions.no_grad(),
            layers: (0..config.encoder_layers)
                .map(|_| WhisperEncoderLayer::new(config, device))
                .collect(),
            layer_norm: layers::layer_norm(config, device),
            dropout: DropoutConfig::new(config.dropout).init(),
            num_mel_bins: config.num_mel_bins,
            d_model: config.d_model,
        };
        crate::freeze::materialize(&encoder);
        Ok(encoder)
    }

    /// Loads the encoder of a Hugging Face Whisper folder (`config.json` +
    /// `model.safetensors`): `WhisperForConditionalGeneration` (`model.encoder.*`),
    /// `WhisperModel` or `WhisperForAudioClassification` (`encoder.*`); the decoder and heads
    /// are left out (listed as ignored). Strict: every encoder parameter must come from the
    /// file.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, ImportReport)> {
        let dir = dir.as_ref();
        let config = WhisperEncoderConfig::from_json_file(dir.join("config.json"))?;
        let encoder = Self::new(&config, device)?;
        let (mut encoder, report) = import_weights(
            encoder,
            dir.join("model.safetensors"),
            &whisper_encoder_import_options()?.with_strict(true),
        )?;
        // The positions stay fixed, as in transformers, whatever the loader did to the flag.
        encoder.embed_positions = encoder.embed_positions.no_grad();
        Ok((encoder, report))
    }

    /// Runs the encoder on log-mel features `[batch, num_mel_bins, frames]`
    /// ([`WhisperFeatureExtractor::batch`]; see [`check_features`](Self::check_features));
    /// attention maps are kept only when `output_attentions` is true. Transformers takes
    /// exactly `2 · max_source_positions` frames; shorter inputs are taken too, with the
    /// first positions.
    pub fn forward(
        &self,
        input_features: Tensor<B, 3>,
        output_attentions: bool,
    ) -> WhisperEncoderOutput<B> {
        let x = gelu(self.conv1.forward(input_features));
        let x = gelu(self.conv2.forward(x)).swap_dims(1, 2);
        let [batch, positions, width] = x.dims();
        let table = self
            .embed_positions
            .weight
            .val()
            .slice([0..positions, 0..width])
            .reshape([1, positions, width])
            .expand([batch, positions, width]);
        let mut x = dropout(&self.dropout, x + table);
        let mut hidden_states = vec![x.clone()];
        let mut attentions = Vec::new();
        for layer in &self.layers {
            let (y, probs) = layer.forward(x, output_attentions);
            x = y;
            hidden_states.push(x.clone());
            attentions.extend(probs);
        }
        let last_hidden_state = norm(&self.layer_norm, layers::LAYER_NORM_EPS, x);
        // transformers' hidden states end with the normed output.
        if let Some(last) = hidden_states.last_mut() {
            *last = last_hidden_state.clone();
        }
        WhisperEncoderOutput {
            last_hidden_state,
            hidden_states,
            attentions,
        }
    }

    /// Checks a feature batch before it runs: features present, the configured mel bins,
    /// no more frames than the positions cover.
    pub fn check_features(&self, features: &Tensor<B, 3>) -> Result<()> {
        let [n, mels, frames] = features.dims();
        let max_frames = 2 * self.max_source_positions();
        if n == 0 || frames == 0 {
            return Err(TransferError::BatchShape(format!(
                "the feature batch is [{n}, {mels}, {frames}]: give at least one clip of one frame"
            )));
        }
        if mels != self.num_mel_bins {
            return Err(TransferError::BatchShape(format!(
                "the features have {mels} mel bins but this encoder takes {}; build them with \
                 WhisperFeatureConfig {{ feature_size: {}, .. }}",
                self.num_mel_bins, self.num_mel_bins
            )));
        }
        if frames > max_frames {
            return Err(TransferError::BatchShape(format!(
                "the features have {frames} frames but this encoder's {} positions cover {max_frames}; \
                 cut the clips (WhisperFeatureConfig::with_chunk_length)",
                self.max_source_positions()
            )));
        }
        Ok(())
    }

    /// Width of the hidden states.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// Positions the table covers (half the input frames).
    pub fn max_source_positions(&self) -> usize {
        self.embed_positions.weight.dims()[0]
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// A shallower copy for distillation: the convolutions, positions, final norm and the
    /// layers at `indices`, with their weights. An error for an empty selection or an index
    /// past the end.
    pub fn keep_layers(&self, indices: &[usize]) -> Result<Self> {
        let layers = super::shared::layers_at(&self.layers, indices, "layers")?;
        Ok(Self {
            conv1: self.conv1.clone(),
            conv2: self.conv2.clone(),
            embed_positions: self.embed_positions.clone(),
            layers,
            layer_norm: self.layer_norm.clone(),
            dropout: self.dropout.clone(),
            num_mel_bins: self.num_mel_bins,
            d_model: self.d_model,
        })
    }
}

/// The key rules that map a Hugging Face Whisper checkpoint onto [`WhisperEncoder`]: the
/// `model.encoder.` or `encoder.` prefix dropped; the decoder, `proj_out` and the audio
/// classification heads ignored.
pub fn whisper_encoder_import_options() -> Result<ImportOptions> {
    ImportOptions::new()
        .with_remap(r"^(model\.)?encoder\.", "")?
        .with_ignore(r"^(model\.)?decoder\.")?
        .with_ignore(r"^(proj_out|projector|classifier)\.")?
        .with_ignore(r"^layer_weights$")
}

impl<B: Backend> Backbone<B> for WhisperEncoder<B> {
    type Input = Tensor<B, 3>;

    /// The mean of the final states over time `[batch, d_model]`.
    fn features(&self, input_features: Tensor<B, 3>) -> Tensor<B, 2> {
        let hidden = self.forward(input_features, false).last_hidden_state;
        let [batch, _, width] = hidden.dims();
        hidden.mean_dim(1).reshape([batch, width])
    }

    fn feature_dim(&self) -> usize {
        self.d_model
    }

    fn check_input(&self, input_features: &Tensor<B, 3>) -> Result<()> {
        self.check_features(input_features)
    }

    /// The embeddings' output and every layer's (the last after the final norm, as
    /// transformers returns them), every layer's attention probabilities.
    fn layer_spec(&self) -> LayerSpec {
        let heads = self.layers.first().map_or(0, |l| l.self_attn.heads);
        LayerSpec::transformer(self.layers.len(), self.d_model, heads)
    }

    fn features_with_layers(
        &self,
        input_features: Tensor<B, 3>,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let out = self.forward(input_features, request.attentions);
        let [batch, _, width] = out.last_hidden_state.dims();
        let features = out.last_hidden_state.mean_dim(1).reshape([batch, width]);
        let layers = LayerOutputs::transformer(out.hidden_states, out.attentions, None, request);
        (features, layers)
    }
}

#[cfg(test)]
mod tests;
