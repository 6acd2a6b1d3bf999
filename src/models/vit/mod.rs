//! The Vision Transformer, loading Hugging Face checkpoints as they are.
//!
//! [`ViT`] keeps `ViTModel`'s module names (`embeddings.cls_token`,
//! `encoder.layer.N.attention.attention.query`, `layernorm_before`, `layernorm`, …), the
//! names of the checkpoints on the hub, so `google/vit-base-patch16-224`'s
//! `model.safetensors` loads with [`ViT::from_pretrained`] (the body alone, for a new head)
//! or [`ViT::classifier_from_pretrained`] (with its `classifier`, as a
//! [`TransferModel`] whose head
//! [`replace_linear_head`](crate::head::TransferModel::replace_linear_head) swaps). Files
//! saved by transformers 5 with its own names (`layers.N.attention.q_proj`, `mlp.fc1`) load
//! too. Images of another size than the configured one get their position embeddings
//! resampled bicubically, as transformers' `interpolate_pos_encoding=True`. The output keeps
//! every hidden state and, when asked, every attention map, for distillation.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use burn_transfer::backbone::Backbone;
//! use burn_transfer::models::vit::{ViT, ViTConfig};
//!
//! let device = Default::default();
//! let config = ViTConfig::vit_base_patch16_224()
//!     .for_images(32, 8, 3)
//!     .shallower(2)
//!     .narrower(32, 4);
//! let vit = ViT::<NdArray>::new(&config, false, &device)?;
//! let images = Tensor::<NdArray, 4>::zeros([2, 3, 32, 32], &device);
//! let out = vit.forward(images.clone(), true);
//! assert_eq!(out.last_hidden_state.dims(), [2, 17, 32]); // [CLS] + 4×4 patches
//! assert_eq!(out.attentions[0].dims(), [2, 4, 17, 17]);
//! assert_eq!(vit.features(images).dims(), [2, 32]); // the [CLS] state, for a head
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

mod config;
mod layers;
mod positions;

pub use config::{ImageSide, ViTConfig};
pub use layers::{
    ViTAttention, ViTDense, ViTEmbeddings, ViTLayer, ViTPatchEmbeddings, ViTPooler,
    ViTSelfAttention,
};

use crate::backbone::Backbone;
use crate::error::{Result, TransferError};
use crate::head::TransferModel;
use crate::import::{ImportOptions, ImportReport, import_weights, inspect_weights};
use crate::kernels::layer_norm as norm;
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use crate::models::WithLinearHead;
use burn::module::Module;
use burn::nn::LayerNorm;
use burn::prelude::*;
use std::path::Path;

/// The layer stack (HF `ViTEncoder`).
#[derive(Module, Debug)]
pub struct ViTEncoder<B: Backend> {
    /// The transformer layers, `encoder.layer.0` … (HF's singular name).
    pub layer: Vec<ViTLayer<B>>,
}

/// A Vision Transformer with Hugging Face's parameter names (HF `ViTModel`).
#[derive(Module, Debug)]
pub struct ViT<B: Backend> {
    /// Class token, patch and position embeddings.
    pub embeddings: ViTEmbeddings<B>,
    /// The transformer layers.
    pub encoder: ViTEncoder<B>,
    /// The norm after the last layer.
    pub layernorm: LayerNorm<B>,
    /// The `[CLS]` pooler of `ViTModel` checkpoints saved with one.
    pub pooler: Option<ViTPooler<B>>,
    hidden_size: usize,
    num_channels: usize,
    /// The final norm's `ε` (burn's `LayerNorm` keeps its own private), for the CPU kernel.
    layer_norm_eps: f64,
}

/// Everything a forward pass produces; what distillation losses read.
#[derive(Clone, Debug)]
pub struct ViTOutput<B: Backend> {
    /// The final norm's output `[batch, 1 + patches, hidden]`, `[CLS]` first.
    pub last_hidden_state: Tensor<B, 3>,
    /// The embeddings' output followed by each layer's, before the final norm, as
    /// transformers returns them (`layers + 1` tensors).
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// Each layer's attention probabilities `[batch, heads, seq, seq]`, when asked for.
    pub attentions: Vec<Tensor<B, 4>>,
    /// The pooler's output `[batch, pooler_output_size]`, when the model has a pooler.
    pub pooler_output: Option<Tensor<B, 2>>,
}

/// The hidden state of the `[CLS]` token: `[batch, seq, hidden]` → `[batch, hidden]`.
pub(crate) fn class_token<B: Backend>(hidden: Tensor<B, 3>) -> Tensor<B, 2> {
    let [batch, _, width] = hidden.dims();
    hidden
        .slice([0..batch, 0..1, 0..width])
        .reshape([batch, width])
}

impl<B: Backend> ViT<B> {
    /// A randomly initialised ViT (weights `N(0, initializer_range)`, biases 0, norms at
    /// identity, as transformers'); `add_pooling_layer` as in `ViTModel(config,
    /// add_pooling_layer)` (`ViTForImageClassification` has none).
    pub fn new(config: &ViTConfig, add_pooling_layer: bool, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let model = Self {
            embeddings: ViTEmbeddings::new(config, device),
            encoder: ViTEncoder {
                layer: (0..config.num_hidden_layers)
                    .map(|_| ViTLayer::new(config, device))
                    .collect(),
            },
            layernorm: layers::layer_norm(config, device),
            pooler: add_pooling_layer.then(|| ViTPooler::new(config, device)),
            hidden_size: config.hidden_size,
            num_channels: config.num_channels,
            layer_norm_eps: config.layer_norm_eps,
        };
        crate::freeze::materialize(&model);
        Ok(model)
    }

    /// Loads the body of a Hugging Face ViT folder (`config.json` + `model.safetensors`),
    /// from a `ViTModel` (with its pooler if the file has one) or a
    /// `ViTForImageClassification` (whose `classifier` is left out, listed as ignored):
    /// strictly, every parameter must come from the file.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, ImportReport)> {
        let dir = dir.as_ref();
        let config = ViTConfig::from_json_file(dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        let options = vit_import_options()?.with_strict(true);
        let has_pooler = inspect_weights(&weights, &options)?
            .iter()
            .any(|t| t.key.starts_with("pooler."));
        let model = Self::new(&config, has_pooler, device)?;
        import_weights(model, weights, &options)
    }

    /// Loads a `ViTForImageClassification` folder with its classifier (as many classes as
    /// `config.json`'s `id2label` names, 2 without it, transformers' default), strictly.
    /// For another task, [`replace_linear_head`](TransferModel::replace_linear_head).
    pub fn classifier_from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(WithLinearHead<B, Self>, ImportReport)> {
        let dir = dir.as_ref();
        let config = ViTConfig::from_json_file(dir.join("config.json"))?;
        let classes = config.num_labels().unwrap_or(2);
        let model =
            TransferModel::with_linear_head(Self::new(&config, false, device)?, classes, device)?;
        import_weights(
            model,
            dir.join("model.safetensors"),
            &vit_classifier_import_options()?.with_strict(true),
        )
    }

    /// Runs the transformer on `[batch, channels, h, w]` images (of any size holding at least
    /// one patch: see [`check_images`](Self::check_images)); attention maps are kept only
    /// when `output_attentions` is true.
    pub fn forward(&self, pixels: Tensor<B, 4>, output_attentions: bool) -> ViTOutput<B> {
        let mut x = self.embeddings.forward(pixels);
        let mut hidden_states = vec![x.clone()];
        let mut attentions = Vec::new();
        for layer in &self.encoder.layer {
            let (y, probs) = layer.forward(x, output_attentions);
            x = y;
            hidden_states.push(x.clone());
            attentions.extend(probs);
        }
        let last_hidden_state = norm(&self.layernorm, self.layer_norm_eps, x);
        let pooler_output = self
            .pooler
            .as_ref()
            .map(|p| p.forward(last_hidden_state.clone()));
        ViTOutput {
            last_hidden_state,
            hidden_states,
            attentions,
            pooler_output,
        }
    }

    /// Checks an image batch before it runs: images present, the configured number of
    /// channels, at least one patch each way.
    pub fn check_images(&self, pixels: &Tensor<B, 4>) -> Result<()> {
        let [n, c, h, w] = pixels.dims();
        let [ph, pw] = self.embeddings.patch_size();
        if n == 0 {
            return Err(TransferError::BatchShape(
                "the image batch has no images".into(),
            ));
        }
        if c != self.num_channels {
            return Err(TransferError::BatchShape(format!(
                "the images are [{n}, {c}, {h}, {w}] but this ViT takes {} channels; give \
                 [batch, {}, height, width]",
                self.num_channels, self.num_channels
            )));
        }
        if h < ph || w < pw {
            return Err(TransferError::BatchShape(format!(
                "the images are {h}×{w} pixels, smaller than one {ph}×{pw} patch; resize them \
                 (the model was trained on {}×{} patches of them)",
                self.embeddings.grid()[0],
                self.embeddings.grid()[1]
            )));
        }
        Ok(())
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    /// A shallower copy for distillation (DistilBERT's and DeiT-style initialisation): the
    /// embeddings, the final norm, the pooler and the layers at `indices` (e.g.
    /// [`every_other`](crate::distill::init::every_other)), with their weights. An error for
    /// an empty selection or an index past the end.
    pub fn keep_layers(&self, indices: &[usize]) -> Result<Self> {
        let layer = super::shared::layers_at(&self.encoder.layer, indices, "encoder.layer")?;
        Ok(Self {
            embeddings: self.embeddings.clone(),
            encoder: ViTEncoder { layer },
            layernorm: self.layernorm.clone(),
            pooler: self.pooler.clone(),
            hidden_size: self.hidden_size,
            num_channels: self.num_channels,
            layer_norm_eps: self.layer_norm_eps,
        })
    }
}

/// Rules shared by both loaders: transformers 5's own names (`layers.N`,
/// `attention.{q,k,v,o}_proj`, `mlp.fc{1,2}`), written by `save_pretrained(...,
/// save_original_format=False)`, back to the hub's.
fn with_transformers5_names(options: ImportOptions) -> Result<ImportOptions> {
    options
        .with_remap(r"(^|\.)layers\.(\d+)\.", "${1}encoder.layer.${2}.")?
        .with_remap(r"\.attention\.q_proj\.", ".attention.attention.query.")?
        .with_remap(r"\.attention\.k_proj\.", ".attention.attention.key.")?
        .with_remap(r"\.attention\.v_proj\.", ".attention.attention.value.")?
        .with_remap(r"\.attention\.o_proj\.", ".attention.output.dense.")?
        .with_remap(r"\.mlp\.fc1\.", ".intermediate.dense.")?
        .with_remap(r"\.mlp\.fc2\.", ".output.dense.")
}

/// The key rules that map a Hugging Face ViT checkpoint onto [`ViT`]: a leading `vit.`
/// (task models) dropped, transformers 5's own names mapped back, a task model's
/// `classifier` ignored.
pub fn vit_import_options() -> Result<ImportOptions> {
    with_transformers5_names(ImportOptions::new().with_remap(r"^vit\.", "")?)?
        .with_ignore(r"^classifier\.")
}

/// The key rules that map a `ViTForImageClassification` checkpoint onto a
/// `TransferModel<ViT, LinearHead>`: `vit.` → `backbone.`, `classifier` → `head.linear`,
/// transformers 5's own names mapped back.
pub fn vit_classifier_import_options() -> Result<ImportOptions> {
    with_transformers5_names(
        ImportOptions::new()
            .with_remap(r"^vit\.", "backbone.")?
            .with_remap(r"^classifier\.", "head.linear.")?,
    )
}

impl<B: Backend> Backbone<B> for ViT<B> {
    type Input = Tensor<B, 4>;

    /// The final hidden state of `[CLS]`, what `ViTForImageClassification` classifies.
    fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        class_token(self.forward(pixels, false).last_hidden_state)
    }

    fn feature_dim(&self) -> usize {
        self.hidden_size
    }

    fn check_input(&self, pixels: &Tensor<B, 4>) -> Result<()> {
        self.check_images(pixels)
    }

    /// The embeddings' output and every layer's (before the final norm, as transformers
    /// returns them), every layer's attention probabilities; positions are `[CLS]` and the
    /// patches.
    fn layer_spec(&self) -> LayerSpec {
        let heads = self
            .encoder
            .layer
            .first()
            .map_or(0, |l| l.attention.attention.heads);
        LayerSpec::transformer(self.encoder.layer.len(), self.hidden_size, heads)
    }

    fn features_with_layers(
        &self,
        pixels: Tensor<B, 4>,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let out = self.forward(pixels, request.attentions);
        let layers = LayerOutputs::transformer(out.hidden_states, out.attentions, None, request);
        (class_token(out.last_hidden_state), layers)
    }
}

#[cfg(test)]
mod tests;
