//! LoRA on any burn module, by reparametrisation: no model code changes.
//!
//! burn modules are concrete types, so a LoRA layer cannot be slipped into someone else's
//! struct. Instead [`LoraModel`] keeps the base model frozen and, for each forward pass,
//! builds its *effective* weights `W = W0 + (α/r)·ΔW` with `ΔW` from the trainable
//! factors `A` (`[r, fan_in]`) and `B` (`[fan_out, r]`) — PEFT's layouts and names — so
//! gradients flow to `A` and `B` only, through the unmodified forward code of the model.

use super::fingerprint::Fingerprint;
use crate::backbone::Backbone;
use crate::error::{Result, TransferError};
use crate::freeze::{Freeze, GlobPattern, ParamInfo};
use crate::kernels::{LoraOrientation as Orientation, lora_weight as effective_weight};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use crate::task::{CausalLm, Classifier};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// LoRA hyper-parameters (PEFT's `LoraConfig`); a burn
/// `Config`, saved and loaded as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    pub r: usize,
    /// Scale numerator: the update is `(lora_alpha / r)·B·A`.
    pub lora_alpha: f64,
    /// Dropout on the LoRA path (see [`LoraModel`] for how it is applied).
    pub lora_dropout: f64,
    /// Glob patterns over *module* paths (e.g. `*.attention.query`, `layers.*`): every
    /// selected module's `weight` is adapted.
    pub target_modules: Vec<String>,
}

impl burn::config::Config for LoraConfig {}

impl LoraConfig {
    /// Rank `r`, `lora_alpha`, no dropout, and the modules to adapt.
    pub fn new<S: AsRef<str>>(
        r: usize,
        lora_alpha: f64,
        targets: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            r,
            lora_alpha,
            lora_dropout: 0.0,
            target_modules: targets
                .into_iter()
                .map(|s| s.as_ref().to_string())
                .collect(),
        }
    }

    /// Sets the LoRA dropout probability.
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.lora_dropout = p;
        self
    }

    /// The update's scale, `lora_alpha / r`.
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(TransferError::config(
                "r",
                0,
                "the LoRA rank must be at least 1 (typical: 4–16)",
            ));
        }
        if !(self.lora_alpha > 0.0 && self.lora_alpha.is_finite()) {
            return Err(TransferError::config(
                "lora_alpha",
                self.lora_alpha,
                "must be finite and > 0 (often 2·r)",
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(TransferError::config(
                "lora_dropout",
                self.lora_dropout,
                "must be in [0, 1)",
            ));
        }
        if self.target_modules.is_empty() {
            return Err(TransferError::config(
                "target_modules",
                "[]",
                "name at least one module pattern",
            ));
        }
        Ok(())
    }
}

/// The kind of layer a LoRA target is; it fixes how `B·A` maps onto the weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoraKind {
    /// `Linear`: burn weight `[in, out]`; `ΔW = (B·A)ᵀ`.
    Linear,
    /// `Embedding`: weight `[num, dim]`; `ΔW = (B·A)ᵀ` (PEFT's `lora_embedding_A/B`).
    Embedding,
    /// `Conv2d`: weight `[out, in, kh, kw]`; `ΔW = B·A` reshaped, `A` being `[r, in·kh·kw]`.
    Conv2d,
}

/// One adapted weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraTarget {
    /// Module path (the weight is `<module>.weight`).
    pub module: String,
    /// Layer kind.
    pub kind: LoraKind,
    /// The base weight's shape (burn layout).
    pub shape: Vec<usize>,
}

impl LoraTarget {
    /// `(fan_in, fan_out)`: the widths of `A`'s columns and `B`'s rows.
    pub fn fans(&self) -> (usize, usize) {
        match self.kind {
            LoraKind::Linear | LoraKind::Embedding => (self.shape[0], self.shape[1]),
            LoraKind::Conv2d => (self.shape[1..].iter().product(), self.shape[0]),
        }
    }

    /// The adapted parameter's path.
    pub fn weight_path(&self) -> String {
        format!("{}.weight", self.module)
    }
}

/// The trainable factors of one target, in PEFT's layouts.
#[derive(Module, Debug)]
pub struct LoraWeights<B: Backend> {
    /// `[r, fan_in]`, Kaiming-uniform initialised.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `[fan_out, r]`, zero initialised (so training starts at the base model).
    pub lora_b: Param<Tensor<B, 2>>,
}

/// A named set of LoRA factors for a set of targets.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// One entry per target, in [`LoraAdapter::targets`] order.
    pub weights: Vec<LoraWeights<B>>,
    name: String,
    config: LoraConfig,
    targets: Vec<LoraTarget>,
}

impl<B: Backend> LoraAdapter<B> {
    /// The adapter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The weights it adapts.
    pub fn targets(&self) -> &[LoraTarget] {
        &self.targets
    }

    /// The factors `(A, B)` of target `i` for this pass, detached unless `track`. With
    /// dropout, in training, columns of `A` are dropped (and the rest rescaled).
    fn factors(&self, i: usize, track: bool) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let w = &self.weights[i];
        let (mut a, mut b) = (w.lora_a.val(), w.lora_b.val());
        if !track {
            a = a.detach();
            b = b.detach();
        }
        let p = self.config.lora_dropout;
        if track && p > 0.0 && B::ad_enabled(&a.device()) {
            let [_, fan_in] = a.dims();
            let keep =
                Tensor::<B, 2>::random([1, fan_in], Distribution::Bernoulli(1.0 - p), &a.device());
            a = a * keep.div_scalar(1.0 - p);
        }
        (a, b)
    }
}

impl LoraKind {
    /// How `B·A` lies on this kind of weight, seen as a matrix.
    fn orientation(self) -> Orientation {
        match self {
            LoraKind::Linear | LoraKind::Embedding => Orientation::Transposed,
            LoraKind::Conv2d => Orientation::Direct,
        }
    }
}

/// A base model with LoRA adapters. The base is frozen; the active adapter's `A`/`B`
/// train (and any base parameters you unfreeze, such as a new head).
///
/// Dropout: PEFT drops elements of each sample's input to the LoRA path. Working in weight
/// space, this crate drops *input features* of the LoRA path, one mask per forward pass
/// shared by the batch (a column mask on `A`), scaled by `1/(1-p)`; it is active only on an
/// autodiff backend (training), as burn's `Dropout`.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn_transfer::adapter::{LoraConfig, LoraModel};
/// use burn_transfer::prelude::*;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let body = MlpBackbone::<B>::new(&[64, 256, 256], &device).unwrap();
/// let model = TransferModel::with_linear_head(body, 10, &device).unwrap();
/// let lora = LoraModel::new(model, "default", LoraConfig::new(8, 16.0, ["backbone.layers.*"]))
///     .unwrap()
///     .unfreeze_base("head")
///     .unwrap();
/// println!("{}", lora.param_summary().totals_line());
/// // A, B of both layers (8·64 + 256·8, 8·256 + 256·8) and the head (256·10 + 10).
/// assert_eq!(lora.param_summary().trainable(), 2560 + 4096 + 2570);
/// ```
#[derive(Module, Debug)]
pub struct LoraModel<B: Backend, M> {
    /// The frozen base model.
    pub base: M,
    /// The adapters, in the order they were added.
    pub adapters: Vec<LoraAdapter<B>>,
    active: Option<usize>,
}

impl<B: Backend, M: Module<B>> LoraModel<B, M> {
    /// Freezes `base` and adds a first adapter, named `name`, which becomes active.
    pub fn new(base: M, name: &str, config: LoraConfig) -> Result<Self> {
        let mut model = Self {
            base: base.freeze(),
            adapters: Vec::new(),
            active: None,
        };
        model.add_adapter(name, config)?;
        Ok(model)
    }

    /// Adds an adapter (it does not become active; see [`LoraModel::set_active`]).
    /// Errors: rank 0 or above `min(fan_in, fan_out)`, patterns that select no weight,
    /// a selected weight of an unsupported kind, a name already used.
    pub fn add_adapter(&mut self, name: &str, config: LoraConfig) -> Result<()> {
        config.validate()?;
        if self.adapters.iter().any(|a| a.name == name) {
            return Err(TransferError::config(
                "adapter name",
                name,
                "already used; pick another name",
            ));
        }
        let targets = find_targets(&self.base.param_summary().entries, &config)?;
        let device = self.base.devices().into_iter().next().unwrap_or_default();
        let weights = targets
            .iter()
            .map(|t| {
                let (fan_in, fan_out) = t.fans();
                // PEFT: kaiming_uniform(a = √5) on A, i.e. U(-1/√fan_in, 1/√fan_in); B = 0.
                let bound = 1.0 / (fan_in as f64).sqrt();
                LoraWeights {
                    lora_a: Param::from_tensor(Tensor::random(
                        [config.r, fan_in],
                        Distribution::Uniform(-bound, bound),
                        &device,
                    )),
                    lora_b: Param::from_tensor(Tensor::zeros([fan_out, config.r], &device)),
                }
            })
            .collect();
        self.adapters.push(LoraAdapter {
            weights,
            name: name.to_string(),
            config,
            targets,
        });
        if self.active.is_none() {
            self.active = Some(self.adapters.len() - 1);
        } else {
            let last = self.adapters.len() - 1;
            let adapter = self.adapters.pop().expect("just pushed");
            self.adapters.push(adapter.freeze());
            debug_assert_eq!(self.adapters.len() - 1, last);
        }
        Ok(())
    }

    /// Makes the adapter `name` the active (and only trainable) one.
    pub fn set_active(mut self, name: &str) -> Result<Self> {
        let i = self.index_of(name)?;
        self.adapters = self
            .adapters
            .into_iter()
            .enumerate()
            .map(|(j, a)| if j == i { a.unfreeze() } else { a.freeze() })
            .collect();
        self.active = Some(i);
        Ok(self)
    }

    /// Turns every adapter off: the model computes exactly the base model (no copy).
    pub fn disable_adapters(mut self) -> Self {
        self.active = None;
        self
    }

    /// The active adapter, if any.
    pub fn active(&self) -> Option<&LoraAdapter<B>> {
        self.active.map(|i| &self.adapters[i])
    }

    /// Makes base parameters trainable too (e.g. a new head: `unfreeze_base("head")`).
    pub fn unfreeze_base(mut self, selector: &str) -> Result<Self> {
        self.base = self.base.unfreeze_matching(selector)?;
        Ok(self)
    }

    /// The model the active adapter produces, for this forward pass (its weights depend on
    /// `A` and `B`, so gradients reach them). Without an active adapter: the base itself.
    pub fn effective(&self) -> M {
        self.with_deltas(true)
    }

    /// A plain model with the active adapter folded in: `W0 + (α/r)·B·A`, no LoRA
    /// overhead at inference. The base stays as it is (see [`LoraModel::into_base`]).
    pub fn merge(&self) -> M {
        self.with_deltas(false)
    }

    /// The base model, bitwise as it was given (LoRA never writes into it).
    pub fn into_base(self) -> M {
        self.base
    }

    /// The base weights' fingerprint (names, shapes, hashes), as adapter files record it.
    pub fn base_fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.base)
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.adapters
            .iter()
            .position(|a| a.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.adapters.iter().map(|a| a.name.as_str()).collect();
                TransferError::config("adapter", name, &format!("no such adapter; have {names:?}"))
            })
    }

    fn with_deltas(&self, track: bool) -> M {
        let Some(adapter) = self.active() else {
            return self.base.clone();
        };
        let factors = (0..adapter.targets.len())
            .map(|i| {
                let (a, b) = adapter.factors(i, track);
                let orientation = adapter.targets[i].kind.orientation();
                (adapter.targets[i].weight_path(), (a, b, orientation))
            })
            .collect();
        self.base.clone().map(&mut AddDeltas {
            stack: Vec::new(),
            factors,
            scale: adapter.config.scale(),
        })
    }
}

/// Replaces the weights at the targets' paths by `W0 + scale·ΔW`, from their factors.
struct AddDeltas<B: Backend> {
    stack: Vec<String>,
    factors: HashMap<String, (Tensor<B, 2>, Tensor<B, 2>, Orientation)>,
    scale: f64,
}

impl<B: Backend> ModuleMapper<B> for AddDeltas<B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.factors.remove(&self.stack.join(".")) {
            Some((a, b, orientation)) => param.map(|w| {
                // As a matrix: a convolution's `[out, in, kh, kw]` is `[out, in·kh·kw]`.
                let dims: [usize; D] = w.dims();
                let matrix = [dims[0], dims[1..].iter().product()];
                effective_weight(w.reshape(matrix), a, b, self.scale, orientation).reshape(dims)
            }),
            None => param,
        }
    }
}

/// The weights the config selects, with their kinds; every error names what to change.
fn find_targets(params: &[ParamInfo], config: &LoraConfig) -> Result<Vec<LoraTarget>> {
    let patterns = config
        .target_modules
        .iter()
        .map(|p| GlobPattern::new(p))
        .collect::<Result<Vec<_>>>()?;
    let mut targets = Vec::new();
    for p in params.iter().filter(|p| !p.buffer) {
        let Some(module) = p.path.strip_suffix(".weight") else {
            continue;
        };
        if !patterns.iter().any(|g| g.matches(module)) {
            continue;
        }
        let kind = match (p.owner.as_str(), p.shape.len()) {
            ("Linear", 2) => LoraKind::Linear,
            ("Embedding", 2) => LoraKind::Embedding,
            ("Conv2d", 4) => LoraKind::Conv2d,
            (owner, _) => {
                return Err(TransferError::config(
                    "target_modules",
                    &p.path,
                    &format!(
                        "LoRA supports Linear, Embedding and Conv2d weights; `{}` is a {owner} weight of shape {:?}: narrow the pattern",
                        p.path, p.shape
                    ),
                ));
            }
        };
        let target = LoraTarget {
            module: module.to_string(),
            kind,
            shape: p.shape.clone(),
        };
        let (fan_in, fan_out) = target.fans();
        if config.r > fan_in.min(fan_out) {
            return Err(TransferError::config(
                "r",
                config.r,
                &format!(
                    "`{}` is {fan_in}→{fan_out}: the rank must be at most {}",
                    p.path,
                    fan_in.min(fan_out)
                ),
            ));
        }
        targets.push(target);
    }
    if targets.is_empty() {
        let weights: Vec<String> = params
            .iter()
            .filter_map(|p| p.path.strip_suffix(".weight").map(str::to_string))
            .collect();
        return Err(TransferError::SelectorMatchedNothing {
            selector: config.target_modules.join(" | "),
            available: weights,
        });
    }
    Ok(targets)
}

impl<B: Backend, M: Classifier<B>> Classifier<B> for LoraModel<B, M> {
    type Input = M::Input;

    fn logits(&self, input: Self::Input) -> Tensor<B, 2> {
        match self.active {
            None => self.base.logits(input),
            Some(_) => self.effective().logits(input),
        }
    }

    fn check_input(&self, input: &Self::Input) -> Result<()> {
        self.base.check_input(input)
    }

    fn layer_spec(&self) -> LayerSpec {
        self.base.layer_spec()
    }

    /// The intermediate outputs of the model with the active adapter applied: a LoRA
    /// student distils its features too.
    fn logits_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        match self.active {
            None => self.base.logits_with_layers(input, request),
            Some(_) => self.effective().logits_with_layers(input, request),
        }
    }
}

impl<B: Backend, M: CausalLm<B>> CausalLm<B> for LoraModel<B, M> {
    fn vocab_size(&self) -> usize {
        self.base.vocab_size()
    }

    fn next_token_logits(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>> {
        match self.active {
            None => self.base.next_token_logits(input_ids, attention_mask),
            Some(_) => self
                .effective()
                .next_token_logits(input_ids, attention_mask),
        }
    }
}

impl<B: Backend, M: Backbone<B>> Backbone<B> for LoraModel<B, M> {
    type Input = M::Input;

    fn features(&self, input: Self::Input) -> Tensor<B, 2> {
        match self.active {
            None => self.base.features(input),
            Some(_) => self.effective().features(input),
        }
    }

    fn feature_dim(&self) -> usize {
        self.base.feature_dim()
    }

    fn check_input(&self, input: &Self::Input) -> Result<()> {
        self.base.check_input(input)
    }
}

/// Lets `merge` on an autodiff model be compared with the inner one in tests and examples.
impl<B: burn::tensor::backend::AutodiffBackend, M: AutodiffModule<B>> LoraModel<B, M>
where
    Self: AutodiffModule<B>,
{
    /// The merged model on the inner backend, ready for fast inference.
    pub fn merge_for_inference(&self) -> M::InnerModule {
        self.merge().valid()
    }
}
