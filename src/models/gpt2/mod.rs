//! GPT-2, the decoder language model, loading Hugging Face checkpoints as they are.
//!
//! [`Gpt2LmHeadModel`] keeps `GPT2LMHeadModel`'s module names (`transformer.wte`,
//! `transformer.h.N.attn.c_attn`, …), so a `model.safetensors` written by `transformers`
//! loads with [`Gpt2LmHeadModel::from_pretrained`] (the rules are in
//! [`gpt2_import_options`]); the LM head is the token embedding matrix, as in every GPT-2.
//! It runs causal attention with padding masks and a key/value cache
//! ([`KeyValueCache`]), generates text ([`GenerationConfig`]: greedy, temperature, top-k,
//! top-p, seeded), reads GPT-2's byte-level BPE through [`Gpt2Tokenizer`], takes LoRA by
//! path (`*.attn.c_attn`), and makes students with fewer blocks copied from a teacher
//! ([`Gpt2LmHeadModel::keep_layers`]).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn_transfer::models::gpt2::{GenerationConfig, Gpt2Config, Gpt2Input, Gpt2LmHeadModel};
//!
//! let device = Default::default();
//! let config = Gpt2Config::gpt2().shallower(2).narrower(32, 4);
//! let model = Gpt2LmHeadModel::<NdArray>::new(&config, &device)?;
//! let input = Gpt2Input::from_ids(&[vec![464, 3290, 318]], config.vocab_size, &device)?;
//! let out = model.forward(input, None, false)?;
//! assert_eq!(out.logits.dims(), [1, 3, 50257]);
//! let continuation = model.generate(&[vec![464, 3290, 318]], &GenerationConfig::greedy(5))?;
//! assert_eq!(continuation[0].len(), 5);
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```

mod config;
mod generate;
mod layers;
mod tokenizer;

pub use crate::generation::GenerationConfig;
pub use config::{Gpt2Activation, Gpt2Config};
pub use layers::{Gpt2Attention, Gpt2Block, Gpt2Mlp, LayerCache};
pub use tokenizer::Gpt2Tokenizer;

use super::shared::normal_linear;
use crate::error::{Result, TransferError};
use crate::import::{ImportOptions, ImportReport, Layout, import_weights};
use crate::kernels::layer_norm as norm;
use crate::task::CausalLm;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm};
use burn::prelude::*;
use std::path::Path;

/// What a padded key adds to the attention scores: GPT-2's and BERT's constant, whose
/// exponential is 0 in f32 and which stays finite in f16.
const PADDING_BIAS: f32 = -10_000.0;

/// Token ids `[batch, seq]` with their mask and, optionally, their positions.
#[derive(Clone, Debug)]
pub struct Gpt2Input<B: Backend> {
    /// Token ids, each below the vocabulary size.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for real tokens, 0 for padding (Hugging Face's `attention_mask`), for the new
    /// positions only: a [`KeyValueCache`] keeps the mask of the positions before.
    pub attention_mask: Tensor<B, 2, Int>,
    /// Position of each token; `None` numbers them on from the cache's length, as
    /// transformers does without `position_ids`.
    pub position_ids: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> Gpt2Input<B> {
    /// Ids without padding: every position is attended.
    pub fn new(input_ids: Tensor<B, 2, Int>) -> Self {
        let attention_mask = input_ids.ones_like();
        Self {
            input_ids,
            attention_mask,
            position_ids: None,
        }
    }

    /// Ids with their mask (1 = token, 0 = padding).
    pub fn with_mask(input_ids: Tensor<B, 2, Int>, attention_mask: Tensor<B, 2, Int>) -> Self {
        Self {
            input_ids,
            attention_mask,
            position_ids: None,
        }
    }

    /// With explicit positions (e.g. counted from the first real token of a left-padded
    /// row, as transformers' `generate` does).
    pub fn with_positions(self, position_ids: Tensor<B, 2, Int>) -> Self {
        Self {
            position_ids: Some(position_ids),
            ..self
        }
    }

    /// Rows of equal length from host ids, checked against the vocabulary: an error for
    /// an empty batch, rows of different lengths or an id `≥ vocab_size`.
    pub fn from_ids(rows: &[Vec<u32>], vocab_size: usize, device: &B::Device) -> Result<Self> {
        let len = rows.first().map_or(0, Vec::len);
        if len == 0 || rows.iter().any(|r| r.len() != len) {
            return Err(TransferError::BatchShape(format!(
                "token rows must be non-empty and of one length (got lengths {:?}); pad them \
                 with a mask (Gpt2Input::with_mask)",
                rows.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        check_ids(rows, vocab_size)?;
        let ids: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
        let ids = Tensor::from_data(TensorData::new(ids, [rows.len(), len]), device);
        Ok(Self::new(ids))
    }
}

pub(crate) fn check_ids(rows: &[Vec<u32>], vocab_size: usize) -> Result<()> {
    match rows.iter().flatten().find(|&&t| t as usize >= vocab_size) {
        Some(&id) => Err(TransferError::config(
            "token id",
            id,
            &format!(
                "must be below the vocabulary size {vocab_size}; was the text tokenized for this model?"
            ),
        )),
        None => Ok(()),
    }
}

/// The keys and values of every position a model has seen, per block, and their padding:
/// what lets generation feed one new token per step instead of the whole sequence.
#[derive(Clone, Debug)]
pub struct KeyValueCache<B: Backend> {
    state: Option<CacheState<B>>,
}

#[derive(Clone, Debug)]
struct CacheState<B: Backend> {
    layers: Vec<LayerCache<B>>,
    /// `[batch, positions]`: 0 at real tokens, [`PADDING_BIAS`] at padding.
    key_bias: Tensor<B, 2>,
}

impl<B: Backend> Default for KeyValueCache<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> KeyValueCache<B> {
    /// An empty cache: the next forward pass starts at position 0.
    pub fn new() -> Self {
        Self { state: None }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.key_bias.dims()[1])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.state.is_none()
    }

    /// Each block's cached keys and values (none before the first forward pass).
    pub fn layers(&self) -> &[LayerCache<B>] {
        self.state.as_ref().map_or(&[], |s| &s.layers)
    }
}

/// Everything the decoder's forward pass produces (HF `BaseModelOutputWithPast`).
#[derive(Clone, Debug)]
pub struct Gpt2Output<B: Backend> {
    /// The final norm's output `[batch, seq, n_embd]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// The embeddings' output, then each block's, the last one after the final norm, as
    /// transformers returns them (`n_layer + 1` tensors).
    pub hidden_states: Vec<Tensor<B, 3>>,
    /// Each block's attention probabilities `[batch, heads, seq, past + seq]`, when asked.
    pub attentions: Vec<Tensor<B, 4>>,
    /// `[batch, past + seq]`, true at padding.
    pub padding_mask: Tensor<B, 2, Bool>,
}

/// The decoder stack (HF `GPT2Model`): token and position embeddings, blocks, final norm.
#[derive(Module, Debug)]
pub struct Gpt2Model<B: Backend> {
    /// Token embeddings `[vocab, n_embd]`, also the LM head.
    pub wte: Embedding<B>,
    /// Learned absolute position embeddings `[n_positions, n_embd]`.
    pub wpe: Embedding<B>,
    /// The transformer blocks, `h.0` ….
    pub h: Vec<Gpt2Block<B>>,
    /// Norm after the last block.
    pub ln_f: LayerNorm<B>,
    drop: Dropout,
    config: Gpt2Config,
}

impl<B: Backend> Gpt2Model<B> {
    /// A decoder with GPT-2's initialisation: weights `N(0, 0.02)`, the residual
    /// projections `N(0, 0.02/√(2·n_layer))`, biases 0, norms at identity.
    pub fn new(config: &Gpt2Config, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let activation = config.activation()?;
        let normal = |std: f64| Initializer::Normal { mean: 0.0, std };
        let residual_std = 0.02 / (2.0 * config.n_layer as f64).sqrt();
        let h = (0..config.n_layer)
            .map(|_| {
                let mut block = Gpt2Block::new(config, activation, device);
                block.attn.c_attn =
                    normal_linear(config.n_embd, 3 * config.n_embd, true, 0.02, device);
                block.attn.c_proj =
                    normal_linear(config.n_embd, config.n_embd, true, residual_std, device);
                block.mlp.c_fc =
                    normal_linear(config.n_embd, config.inner_size(), true, 0.02, device);
                block.mlp.c_proj = normal_linear(
                    config.inner_size(),
                    config.n_embd,
                    true,
                    residual_std,
                    device,
                );
                block
            })
            .collect();
        let model = Self {
            wte: EmbeddingConfig::new(config.vocab_size, config.n_embd)
                .with_initializer(normal(0.02))
                .init(device),
            wpe: EmbeddingConfig::new(config.n_positions, config.n_embd)
                .with_initializer(normal(0.02))
                .init(device),
            h,
            ln_f: layers::layer_norm(config, device),
            drop: DropoutConfig::new(config.embd_pdrop).init(),
            config: config.clone(),
        };
        crate::freeze::materialize(&model);
        Ok(model)
    }

    /// The configuration the model was built from (with `n_layer` following
    /// [`Gpt2LmHeadModel::keep_layers`]).
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// Runs the decoder on `input`, after the positions in `cache` (which then holds them
    /// too); attention maps are kept only when `output_attentions` is true.
    ///
    /// An error when the sequence (with the cached positions) is longer than
    /// `n_positions`, when the mask or the positions do not have the ids' shape, or when
    /// the cache belongs to another model or batch.
    pub fn forward(
        &self,
        input: Gpt2Input<B>,
        cache: Option<&mut KeyValueCache<B>>,
        output_attentions: bool,
    ) -> Result<Gpt2Output<B>> {
        let [batch, seq] = input.input_ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        self.check_input(&input, cache.as_deref(), past)?;
        let device = input.input_ids.device();
        let positions = input.position_ids.unwrap_or_else(|| {
            Tensor::<B, 1, Int>::arange(past as i64..(past + seq) as i64, &device)
                .reshape([1, seq])
                .expand([batch, seq])
        });
        let new_bias = input
            .attention_mask
            .equal_elem(0)
            .float()
            .mul_scalar(PADDING_BIAS);
        let (pasts, key_bias) = match cache.as_ref().and_then(|c| c.state.clone()) {
            Some(state) => (state.layers, Tensor::cat(vec![state.key_bias, new_bias], 1)),
            None => (Vec::new(), new_bias),
        };
        let mut pasts = pasts.into_iter();
        let mut x = crate::kernels::dropout(
            &self.drop,
            self.wte.forward(input.input_ids) + self.wpe.forward(positions),
        );
        let mut hidden_states = vec![x.clone()];
        let mut attentions = Vec::new();
        let mut presents = Vec::with_capacity(self.h.len());
        for block in &self.h {
            let (y, present, probs) =
                block.forward(x, key_bias.clone(), pasts.next(), output_attentions);
            x = y;
            hidden_states.push(x.clone());
            presents.push(present);
            attentions.extend(probs);
        }
        let x = norm(&self.ln_f, self.config.layer_norm_epsilon, x);
        // transformers returns the final norm's output as the last hidden state of the list.
        if let Some(last) = hidden_states.last_mut() {
            *last = x.clone();
        }
        let padding_mask = key_bias.clone().lower_elem(PADDING_BIAS / 2.0);
        if let Some(cache) = cache {
            cache.state = Some(CacheState {
                layers: presents,
                key_bias,
            });
        }
        Ok(Gpt2Output {
            last_hidden_state: x,
            hidden_states,
            attentions,
            padding_mask,
        })
    }

    fn check_input(
        &self,
        input: &Gpt2Input<B>,
        cache: Option<&KeyValueCache<B>>,
        past: usize,
    ) -> Result<()> {
        let dims = input.input_ids.dims();
        let [batch, seq] = dims;
        if batch == 0 || seq == 0 {
            return Err(TransferError::BatchShape(format!(
                "input_ids {dims:?}: a batch needs at least one row of one token"
            )));
        }
        if input.attention_mask.dims() != dims {
            return Err(TransferError::BatchShape(format!(
                "attention_mask {:?} must have the ids' shape {dims:?} (the cache keeps the mask \
                 of earlier positions)",
                input.attention_mask.dims()
            )));
        }
        if let Some(positions) = &input.position_ids
            && positions.dims() != dims
        {
            return Err(TransferError::BatchShape(format!(
                "position_ids {:?} must have the ids' shape {dims:?}",
                positions.dims()
            )));
        }
        if past + seq > self.config.n_positions {
            return Err(TransferError::config(
                "sequence length",
                past + seq,
                &format!(
                    "{past} cached + {seq} new positions exceed the model's n_positions {}; \
                     truncate the input or start a new cache",
                    self.config.n_positions
                ),
            ));
        }
        if let Some(state) = cache.and_then(|c| c.state.as_ref()) {
            let cached_batch = state.key_bias.dims()[0];
            if state.layers.len() != self.h.len() || cached_batch != batch {
                return Err(TransferError::BatchShape(format!(
                    "the cache holds {} blocks for a batch of {cached_batch}; this model has {} \
                     blocks and the input a batch of {batch}: use a new cache",
                    state.layers.len(),
                    self.h.len()
                )));
            }
        }
        Ok(())
    }
}

/// The decoder's output with next-token logits (HF `CausalLMOutputWithPast`).
#[derive(Clone, Debug)]
pub struct Gpt2LmOutput<B: Backend> {
    /// Next-token scores `[batch, seq, vocab]`.
    pub logits: Tensor<B, 3>,
    /// The decoder's hidden states, attention maps and padding.
    pub decoder: Gpt2Output<B>,
}

/// GPT-2 with its language-modelling head (HF `GPT2LMHeadModel`); the head is the token
/// embedding matrix (`lm_head` tied to `transformer.wte`).
#[derive(Module, Debug)]
pub struct Gpt2LmHeadModel<B: Backend> {
    /// The decoder, under transformers' name.
    pub transformer: Gpt2Model<B>,
}

impl<B: Backend> Gpt2LmHeadModel<B> {
    /// A randomly initialised model (GPT-2's initialisation, see [`Gpt2Model::new`]).
    pub fn new(config: &Gpt2Config, device: &B::Device) -> Result<Self> {
        Ok(Self {
            transformer: Gpt2Model::new(config, device)?,
        })
    }

    /// Loads a Hugging Face folder (`config.json` + `model.safetensors`, as
    /// `save_pretrained` writes them) strictly: every parameter must come from the file.
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<(Self, ImportReport)> {
        let dir = dir.as_ref();
        let config = Gpt2Config::from_json_file(dir.join("config.json"))?;
        let model = Self::new(&config, device)?;
        import_weights(
            model,
            dir.join("model.safetensors"),
            &gpt2_import_options()?.with_strict(true),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &Gpt2Config {
        self.transformer.config()
    }

    /// Runs the decoder and the head; see [`Gpt2Model::forward`] for the cache and errors.
    pub fn forward(
        &self,
        input: Gpt2Input<B>,
        cache: Option<&mut KeyValueCache<B>>,
        output_attentions: bool,
    ) -> Result<Gpt2LmOutput<B>> {
        let decoder = self.transformer.forward(input, cache, output_attentions)?;
        let logits = self.logits(decoder.last_hidden_state.clone());
        Ok(Gpt2LmOutput { logits, decoder })
    }

    /// `[batch, seq, n_embd]` final hidden states → `[batch, seq, vocab]` logits through the
    /// tied embedding matrix.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, width] = hidden.dims();
        let vocab = self.config().vocab_size;
        hidden
            .reshape([batch * seq, width])
            .matmul(self.transformer.wte.weight.val().transpose())
            .reshape([batch, seq, vocab])
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.transformer.h.len()
    }

    /// A shallower copy for distillation (DistilGPT-2's initialisation): the embeddings,
    /// the final norm and the blocks at `indices` (e.g.
    /// [`every_other`](crate::distill::init::every_other)), with their weights. An error for
    /// an empty selection or an index past the end.
    pub fn keep_layers(&self, indices: &[usize]) -> Result<Self> {
        let model = &self.transformer;
        let h = super::shared::layers_at(&model.h, indices, "transformer.h")?;
        Ok(Self {
            transformer: Gpt2Model {
                wte: model.wte.clone(),
                wpe: model.wpe.clone(),
                h,
                ln_f: model.ln_f.clone(),
                drop: model.drop.clone(),
                config: model.config.shallower(indices.len()),
            },
        })
    }
}

/// The key rules that map a Hugging Face GPT-2 checkpoint onto [`Gpt2LmHeadModel`]: burn's
/// layout (GPT-2's `Conv1D` weights are already `[in, out]`), LayerNorm `weight`/`bias` →
/// `gamma`/`beta`, a bare `GPT2Model` file's keys put under `transformer.`, and the
/// attention-mask buffers of older files (`attn.bias`, `attn.masked_bias`) and a stored
/// copy of the tied `lm_head.weight` ignored.
pub fn gpt2_import_options() -> Result<ImportOptions> {
    ImportOptions::new()
        .with_layout(Layout::Burn)
        .with_remap(r"^(wte|wpe|h|ln_f)\.", "transformer.$1.")?
        .with_remap(r"\.(ln_1|ln_2|ln_f)\.weight$", ".$1.gamma")?
        .with_remap(r"\.(ln_1|ln_2|ln_f)\.bias$", ".$1.beta")?
        .with_ignore(r"\.attn\.(bias|masked_bias)$")?
        .with_ignore(r"^lm_head\.weight$")
}

impl<B: Backend> CausalLm<B> for Gpt2LmHeadModel<B> {
    fn vocab_size(&self) -> usize {
        self.config().vocab_size
    }

    fn next_token_logits(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>> {
        let input = Gpt2Input::with_mask(input_ids, attention_mask);
        Ok(self.forward(input, None, false)?.logits)
    }

    /// GPT-2's own generation, with the key/value cache.
    fn generate(&self, prompts: &[Vec<u32>], config: &GenerationConfig) -> Result<Vec<Vec<u32>>> {
        Gpt2LmHeadModel::generate(self, prompts, config)
    }
}

#[cfg(test)]
mod tests;
