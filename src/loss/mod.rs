//! Distillation objectives: [`DistillLoss`], a weighted sum of terms, and each term as a
//! function ([`functional`]).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use burn_transfer::loss::{DistillLossConfig, DistillTargets};
//!
//! let device = Default::default();
//! // The seed's objective: α·T²·KL(teacher ‖ student) + (1-α)·CE(student, y), T = 4, α = 0.7.
//! let loss = DistillLossConfig::new().with_temperature(4.0).with_alpha(0.7).init::<NdArray>(&device).unwrap();
//! let s = Tensor::<NdArray, 2>::from_floats([[1.0, 2.0, 0.5]], &device);
//! let t = Tensor::<NdArray, 2>::from_floats([[0.5, 3.0, 0.0]], &device);
//! let y = Tensor::<NdArray, 1, Int>::from_ints([1], &device);
//! let out = loss.forward(DistillTargets::new(s, t).with_labels(y), 1).unwrap();
//! assert!(out.total.into_scalar() > 0.0);
//! assert_eq!(out.terms.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["kd", "ce"]);
//! ```

pub mod functional;
mod layer_map;
mod schedule;

pub use layer_map::{LayerMap, LayerPair, LayerPairs};
pub use schedule::ParamSchedule;

use crate::error::{Result, TransferError};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Weights of the decoupled-KD term.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DkdWeights {
    /// Weight of the target-class term (paper default 1).
    pub alpha: f64,
    /// Weight of the non-target term (paper default 8).
    pub beta: f64,
    /// Weight of the whole DKD term in the sum.
    pub weight: f64,
}

/// A FitNets hint (TinyBERT's hidden-state MSE): the student's hidden states regress onto
/// the teacher's, through a learned linear projection for each pair whose widths differ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HintConfig {
    /// Weight of the hint term in the sum.
    pub weight: f64,
}

/// Which terms make up a [`DistillLoss`], and their weights.
///
/// The logit part is `α·KD + (1-α)·CE` when labels are given and `KD` alone when they are
/// not (soft targets only). The other terms are added with their own weights.
///
/// A burn `Config`: `save` / `load` write and read it as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillLossConfig {
    /// Softmax temperature `T` (default 4).
    pub temperature: ParamSchedule,
    /// Share of the KD term in the logit part, in `[0, 1]` (default 0.7).
    pub alpha: ParamSchedule,
    /// Label smoothing of the CE term.
    pub label_smoothing: f32,
    /// Weight of the logit-MSE term (0 = off).
    pub mse_weight: f64,
    /// Weight of the hidden-state cosine term (DistilBERT; 0 = off).
    pub cosine_weight: f64,
    /// FitNets hint / TinyBERT hidden-state MSE; a learned projection per pair whose widths
    /// differ.
    pub hint: Option<HintConfig>,
    /// Weight of the attention-transfer term between CNN stage maps (0 = off).
    pub attention_weight: f64,
    /// Weight of TinyBERT's attention-map MSE (0 = off).
    #[serde(default)]
    pub attention_mse_weight: f64,
    /// Which student layer learns from which teacher layer, for the feature terms.
    #[serde(default)]
    pub layer_map: LayerMap,
    /// Decoupled KD (needs labels).
    pub dkd: Option<DkdWeights>,
    /// β of on-policy distillation's generalized Jensen–Shannon divergence (TRL's GKD): 0 is
    /// the forward KL, 1 the reverse; `None` takes TRL's default 0.5.
    #[serde(default)]
    pub gkd_beta: Option<f64>,
}

impl burn::config::Config for DistillLossConfig {}

/// The file, inside a distillation run's checkpoint folder, that holds its
/// [`DistillLossConfig`] (beside the trainer's).
pub const DISTILL_LOSS_FILE: &str = "distill_loss.json";

impl Default for DistillLossConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl DistillLossConfig {
    /// Hinton KD at T = 4 mixed with CE at α = 0.7; nothing else.
    pub fn new() -> Self {
        Self {
            temperature: ParamSchedule::Constant(4.0),
            alpha: ParamSchedule::Constant(0.7),
            label_smoothing: 0.0,
            mse_weight: 0.0,
            cosine_weight: 0.0,
            hint: None,
            attention_weight: 0.0,
            attention_mse_weight: 0.0,
            layer_map: LayerMap::Uniform,
            dkd: None,
            gkd_beta: None,
        }
    }

    /// Sets the temperature (a constant or a [`ParamSchedule`]).
    pub fn with_temperature(mut self, t: impl Into<ParamSchedule>) -> Self {
        self.temperature = t.into();
        self
    }

    /// Sets α, the KD share (a constant or a [`ParamSchedule`]).
    pub fn with_alpha(mut self, alpha: impl Into<ParamSchedule>) -> Self {
        self.alpha = alpha.into();
        self
    }

    /// Label smoothing for the CE term.
    pub fn with_label_smoothing(mut self, epsilon: f32) -> Self {
        self.label_smoothing = epsilon;
        self
    }

    /// Adds the logit-MSE term.
    pub fn with_mse(mut self, weight: f64) -> Self {
        self.mse_weight = weight;
        self
    }

    /// Adds DistilBERT's hidden-state cosine term (`1 - cos` over the real tokens of each
    /// layer pair; student and teacher of one width). DistilBERT compares the last layers:
    /// [`LayerMap::Last`].
    pub fn with_cosine(mut self, weight: f64) -> Self {
        self.cosine_weight = weight;
        self
    }

    /// Adds a FitNets hint / TinyBERT's hidden-state MSE: each mapped student hidden state
    /// regresses onto its teacher's over the real tokens, through a learned linear
    /// projection (one per pair) where the widths differ.
    pub fn with_hint(mut self, weight: f64) -> Self {
        self.hint = Some(HintConfig { weight });
        self
    }

    /// Adds attention transfer (Zagoruyko & Komodakis) between CNN stage maps of the same
    /// resolution.
    pub fn with_attention(mut self, weight: f64) -> Self {
        self.attention_weight = weight;
        self
    }

    /// Adds TinyBERT's attention-map MSE: the mean squared difference between student and
    /// teacher attention probabilities of each mapped layer, over every head, the real
    /// query tokens and all keys (student and teacher with as many heads).
    pub fn with_attention_mse(mut self, weight: f64) -> Self {
        self.attention_mse_weight = weight;
        self
    }

    /// Sets which student layer learns from which teacher layer (default
    /// [`LayerMap::Uniform`]).
    pub fn with_layer_map(mut self, map: LayerMap) -> Self {
        self.layer_map = map;
        self
    }

    /// Adds decoupled KD with its `alpha` (target) and `beta` (non-target) weights.
    pub fn with_dkd(mut self, weight: f64, alpha: f64, beta: f64) -> Self {
        self.dkd = Some(DkdWeights {
            alpha,
            beta,
            weight,
        });
        self
    }

    /// Sets β of on-policy distillation's generalized Jensen–Shannon divergence (in
    /// `[0, 1]`: 0 = forward KL, 1 = reverse KL).
    pub fn with_gkd_beta(mut self, beta: f64) -> Self {
        self.gkd_beta = Some(beta);
        self
    }

    /// Writes this configuration to [`DISTILL_LOSS_FILE`] in `dir`, atomically.
    pub fn save_to_run_dir(&self, dir: impl AsRef<std::path::Path>) -> Result<()> {
        let path = dir.as_ref().join(DISTILL_LOSS_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|e| TransferError::Export {
            format: "JSON".into(),
            reason: e.to_string(),
        })?;
        crate::checkpoint::atomic_write(&path, json.as_bytes())
    }

    /// The loss a distillation run was configured with, read from [`DISTILL_LOSS_FILE`] in
    /// its checkpoint folder.
    pub fn from_run_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = dir.as_ref().join(DISTILL_LOSS_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TransferError::io("read distillation configuration", &path, e))?;
        serde_json::from_str(&text).map_err(|e| TransferError::Checkpoint {
            path: path.clone(),
            reason: format!("not a DistillLossConfig: {e}"),
        })
    }

    /// The active terms that need hidden states or activation maps (`cosine`, `hint`,
    /// `attention`): what a mode that gives logits only cannot feed.
    pub fn feature_terms(&self) -> Vec<&'static str> {
        let mut terms = Vec::new();
        if self.cosine_weight > 0.0 {
            terms.push("cosine");
        }
        if self.hint.is_some() {
            terms.push("hint");
        }
        if self.attention_weight > 0.0 {
            terms.push("attention");
        }
        if self.attention_mse_weight > 0.0 {
            terms.push("attention_mse");
        }
        terms
    }

    /// The active terms defined for classification logits only (`mse`, `dkd`).
    pub fn classification_only_terms(&self) -> Vec<&'static str> {
        let mut terms = Vec::new();
        if self.mse_weight > 0.0 {
            terms.push("mse");
        }
        if self.dkd.is_some() {
            terms.push("dkd");
        }
        terms
    }

    /// Checks every value; `init` calls it.
    pub fn validate(&self) -> Result<()> {
        self.temperature.check(
            "temperature",
            |t| t > 0.0 && t.is_finite(),
            "T must be finite and > 0 (typical: 2–4)",
        )?;
        self.alpha.check(
            "alpha",
            |a| (0.0..=1.0).contains(&a),
            "α is the KD share, in [0, 1] (typical: 0.5–0.9)",
        )?;
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(TransferError::config(
                "label_smoothing",
                self.label_smoothing,
                "must be in [0, 1)",
            ));
        }
        let weights = [
            ("mse weight", self.mse_weight),
            ("cosine weight", self.cosine_weight),
            ("attention weight", self.attention_weight),
            ("attention_mse weight", self.attention_mse_weight),
            ("hint weight", self.hint.map_or(0.0, |h| h.weight)),
            ("dkd weight", self.dkd.map_or(0.0, |d| d.weight)),
            ("dkd alpha", self.dkd.map_or(0.0, |d| d.alpha)),
            ("dkd beta", self.dkd.map_or(0.0, |d| d.beta)),
        ];
        for (name, w) in weights {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(TransferError::config(
                    name,
                    w,
                    "weights must be finite and ≥ 0",
                ));
            }
        }
        if let Some(beta) = self.gkd_beta.filter(|b| !(0.0..=1.0).contains(b)) {
            return Err(TransferError::config(
                "gkd_beta",
                beta,
                "β must lie in [0, 1] (0 = forward KL, 1 = reverse KL; TRL's default 0.5)",
            ));
        }
        Ok(())
    }

    /// Builds the loss module on `device`, without hint projectors: hidden states given to
    /// the hint term must then be as wide as the teacher's.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<DistillLoss<B>> {
        self.init_with_projectors(&[], device)
    }

    /// Builds the loss module on `device` with one hint projector per `(student, teacher)`
    /// width pair, in the order the hidden-state pairs are given to
    /// [`DistillTargets::with_hidden`] (none where the widths are equal). A
    /// [`Distiller`](crate::distill::Distiller) builds it from its [`LayerPairs`].
    pub fn init_with_projectors<B: Backend>(
        &self,
        widths: &[(usize, usize)],
        device: &B::Device,
    ) -> Result<DistillLoss<B>> {
        let pairs = LayerPairs {
            hidden_widths: widths.to_vec(),
            ..LayerPairs::default()
        };
        self.init_for_layers(pairs, device)
    }

    /// Builds the loss module on `device` for resolved layer pairs
    /// ([`LayerMap::resolve`]): one hint projector per hidden-state pair whose widths
    /// differ. What a [`Distiller`](crate::distill::Distiller) does before training.
    pub fn init_for_layers<B: Backend>(
        &self,
        pairs: LayerPairs,
        device: &B::Device,
    ) -> Result<DistillLoss<B>> {
        let widths = &pairs.hidden_widths;
        self.validate()?;
        if let Some(&(s, t)) = widths.iter().find(|(s, t)| *s == 0 || *t == 0) {
            return Err(TransferError::config(
                "hint widths",
                format!("{s}→{t}"),
                "widths must be ≥ 1",
            ));
        }
        let projectors = match self.hint {
            Some(_) => widths
                .iter()
                .map(|&(s, t)| (s != t).then(|| LinearConfig::new(s, t).init(device)))
                .collect(),
            None => Vec::new(),
        };
        let loss = DistillLoss {
            projectors,
            config: self.clone(),
            pairs,
        };
        crate::freeze::materialize(&loss);
        Ok(loss)
    }
}

/// What one batch gives the loss: student outputs (tracked), teacher outputs (constants),
/// and optionally labels, hidden states and attention maps.
#[derive(Clone, Debug)]
pub struct DistillTargets<B: Backend> {
    /// Student logits `[batch, classes]`.
    pub student_logits: Tensor<B, 2>,
    /// Teacher logits `[batch, classes]`.
    pub teacher_logits: Tensor<B, 2>,
    /// Class labels `[batch]` (absent for unlabelled data).
    pub labels: Option<Tensor<B, 1, Int>>,
    /// Student and teacher hidden states `[rows, width]`, one entry per layer pair (cosine,
    /// hint terms).
    pub hidden: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
    /// Student and teacher activation maps `[batch, channels, positions]`, one entry per
    /// pair (attention transfer).
    pub attention: Vec<(Tensor<B, 3>, Tensor<B, 3>)>,
    /// Student and teacher attention probabilities, one row per (sample, query) with every
    /// head's distribution over the keys `[rows, heads · keys]`, one entry per layer pair
    /// (attention MSE).
    pub attention_probs: Vec<(Tensor<B, 2>, Tensor<B, 2>)>,
}

impl<B: Backend> DistillTargets<B> {
    /// Logits only (soft targets).
    pub fn new(student_logits: Tensor<B, 2>, teacher_logits: Tensor<B, 2>) -> Self {
        Self {
            student_logits,
            teacher_logits,
            labels: None,
            hidden: Vec::new(),
            attention: Vec::new(),
            attention_probs: Vec::new(),
        }
    }

    /// Adds labels (enables the CE and DKD terms).
    pub fn with_labels(mut self, labels: Tensor<B, 1, Int>) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Adds a pair of hidden states (student, teacher) `[rows, width]`; call once per
    /// layer pair.
    pub fn with_hidden(mut self, student: Tensor<B, 2>, teacher: Tensor<B, 2>) -> Self {
        self.hidden.push((student, teacher));
        self
    }

    /// Adds a pair of activation maps (student, teacher) `[batch, channels, positions]`;
    /// call once per pair.
    pub fn with_attention(mut self, student: Tensor<B, 3>, teacher: Tensor<B, 3>) -> Self {
        self.attention.push((student, teacher));
        self
    }

    /// Adds a pair of attention-probability rows (student, teacher) `[rows, heads · keys]`;
    /// call once per layer pair.
    pub fn with_attention_probs(mut self, student: Tensor<B, 2>, teacher: Tensor<B, 2>) -> Self {
        self.attention_probs.push((student, teacher));
        self
    }
}

/// The total loss and each weighted term, by name, for logging.
#[derive(Clone, Debug)]
pub struct DistillLossOutput<B: Backend> {
    /// The sum to call `backward` on.
    pub total: Tensor<B, 1>,
    /// `(name, weighted value)` of each active term: `kd`, `ce`, `mse`, `cosine`, `hint`,
    /// `attention`, `attention_mse`, `dkd`.
    pub terms: Vec<(&'static str, Tensor<B, 1>)>,
}

/// A weighted sum of distillation terms; a burn [`Module`] so that the hint projectors train
/// with the student (put both in one module, or give both to the optimizer).
///
/// Each feature term is summed over its layer pairs (as TinyBERT and attention transfer
/// sum over layers).
#[derive(Module, Debug)]
pub struct DistillLoss<B: Backend> {
    /// Student → teacher width projection of each hidden-state pair for the hint term
    /// (`None` where the widths are equal).
    pub projectors: Vec<Option<Linear<B>>>,
    config: DistillLossConfig,
    pairs: LayerPairs,
}

impl<B: Backend> DistillLoss<B> {
    /// The configuration it was built from.
    pub fn config(&self) -> &DistillLossConfig {
        &self.config
    }

    /// The layer pairs it was built for (none unless built with
    /// [`DistillLossConfig::init_for_layers`]).
    pub fn layer_pairs(&self) -> &LayerPairs {
        &self.pairs
    }

    /// The loss for a classification batch at `epoch` (for the T and α schedules).
    ///
    /// Errors: logits of different widths, hidden states or maps of mismatched shapes, a
    /// term that needs labels (DKD) without them.
    pub fn forward(
        &self,
        targets: DistillTargets<B>,
        epoch: usize,
    ) -> Result<DistillLossOutput<B>> {
        let c = &self.config;
        let t = c.temperature.at(epoch);
        let [bs, cs] = targets.student_logits.dims();
        let [bt, ct] = targets.teacher_logits.dims();
        if (bs, cs) != (bt, ct) {
            return Err(TransferError::WidthMismatch {
                what: "teacher vs student logits".into(),
                expected: ct,
                actual: cs,
                hint: format!(
                    "the teacher gives [{bt}, {ct}] and the student [{bs}, {cs}]; both must predict the same classes for the same batch"
                ),
            });
        }
        let mut terms = Vec::new();
        if let Some(labels) = &targets.labels {
            check_labels(labels, bs)?;
        }
        let (kd_weight, ce_weight) = match &targets.labels {
            Some(_) => {
                let alpha = c.alpha.at(epoch);
                (alpha, 1.0 - alpha)
            }
            None => (1.0, 0.0),
        };
        let constants = crate::kernels::KdCeWeights {
            temperature: t,
            kd_weight,
            ce_weight,
            smoothing: c.label_smoothing as f64,
        };
        match crate::kernels::kd_ce(
            constants,
            targets.student_logits.clone(),
            targets.teacher_logits.clone(),
            targets.labels.clone(),
        ) {
            // CPU backends: both terms from one operation, `[kd, ce]`.
            Some(pair) => {
                let pair = pair?;
                terms.push(("kd", pair.clone().slice(0..1)));
                if targets.labels.is_some() {
                    terms.push(("ce", pair.slice(1..2)));
                }
            }
            None => {
                let kd = functional::kd_kl(
                    targets.student_logits.clone(),
                    targets.teacher_logits.clone(),
                    t,
                );
                terms.push(("kd", kd.mul_scalar(kd_weight)));
                if let Some(labels) = &targets.labels {
                    let ce = functional::cross_entropy(
                        targets.student_logits.clone(),
                        labels.clone(),
                        c.label_smoothing,
                    );
                    terms.push(("ce", ce.mul_scalar(ce_weight)));
                }
            }
        }
        if c.mse_weight > 0.0 {
            let mse = functional::mse(
                targets.student_logits.clone(),
                targets.teacher_logits.clone(),
            );
            terms.push(("mse", mse.mul_scalar(c.mse_weight)));
        }
        if let Some(d) = c.dkd {
            let labels = targets
                .labels
                .clone()
                .ok_or_else(|| missing("decoupled KD", "labels", "DistillTargets::with_labels"))?;
            let v = functional::dkd(
                targets.student_logits.clone(),
                targets.teacher_logits.clone(),
                labels,
                d.alpha,
                d.beta,
                t,
            );
            terms.push(("dkd", v.mul_scalar(d.weight)));
        }
        let hidden = || {
            missing(
                "cosine/hint",
                "hidden states",
                "DistillTargets::with_hidden",
            )
        };
        if c.cosine_weight > 0.0 {
            let cosine = sum_over_pairs(&targets.hidden, hidden, |_, (hs, ht)| {
                same_shape(
                    "cosine term: student vs teacher hidden states",
                    &hs.dims(),
                    &ht.dims(),
                )?;
                Ok(functional::cosine_distance(hs.clone(), ht.clone()))
            })?;
            terms.push(("cosine", cosine.mul_scalar(c.cosine_weight)));
        }
        if let Some(HintConfig { weight }) = c.hint {
            let hint = sum_over_pairs(&targets.hidden, hidden, |k, (hs, ht)| {
                let projected = self.project(k, hs.clone(), ht)?;
                Ok(functional::mse(projected, ht.clone()))
            })?;
            terms.push(("hint", hint.mul_scalar(weight)));
        }
        if c.attention_weight > 0.0 {
            let maps = || {
                missing(
                    "attention transfer",
                    "activation maps",
                    "DistillTargets::with_attention",
                )
            };
            let attention = sum_over_pairs(&targets.attention, maps, |_, (a_s, a_t)| {
                let ([b1, _, p1], [b2, _, p2]) = (a_s.dims(), a_t.dims());
                same_shape("attention maps (batch, positions)", &[b1, p1], &[b2, p2])?;
                Ok(functional::attention_transfer(a_s.clone(), a_t.clone()))
            })?;
            terms.push(("attention", attention.mul_scalar(c.attention_weight)));
        }
        if c.attention_mse_weight > 0.0 {
            let probs = || {
                missing(
                    "attention MSE",
                    "attention probabilities",
                    "DistillTargets::with_attention_probs",
                )
            };
            let attention = sum_over_pairs(&targets.attention_probs, probs, |_, (a_s, a_t)| {
                same_shape("attention probabilities", &a_s.dims(), &a_t.dims())?;
                Ok(functional::mse(a_s.clone(), a_t.clone()))
            })?;
            terms.push((
                "attention_mse",
                attention.mul_scalar(c.attention_mse_weight),
            ));
        }
        let total = terms
            .iter()
            .map(|(_, v)| v.clone())
            .reduce(|a, b| a + b)
            .expect("the KD term is always present");
        Ok(DistillLossOutput { total, terms })
    }

    /// Token-level KD for sequence models: logits `[batch, seq, vocab]`, an optional
    /// `attention_mask` `[batch, seq]` in Hugging Face's convention (1 = token, 0 = padding,
    /// as a tokenizer returns it) and token labels `[batch, seq]`. Padding positions count
    /// in neither term; means are over the tokens. A label of
    /// [`IGNORE_INDEX`] (PyTorch's `-100`) leaves its position out of the cross-entropy, as
    /// does padding whatever its label; any other label outside `0..vocab` is an error
    /// naming its row and position.
    pub fn forward_tokens(
        &self,
        student: Tensor<B, 3>,
        teacher: Tensor<B, 3>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        labels: Option<Tensor<B, 2, Int>>,
        epoch: usize,
    ) -> Result<DistillLossOutput<B>> {
        let c = &self.config;
        let t = c.temperature.at(epoch);
        same_shape(
            "token logits: student vs teacher",
            &student.dims(),
            &teacher.dims(),
        )?;
        let [batch, seq, _] = student.dims();
        if let Some(m) = &attention_mask {
            same_shape(
                "attention mask vs logits [batch, seq]",
                &m.dims(),
                &[batch, seq],
            )?;
        }
        let kd = functional::kd_kl_tokens(student.clone(), teacher, attention_mask.clone(), t);
        self.with_token_ce(kd, student, labels, attention_mask, epoch)
    }

    /// The token KD term alone without labels, else `α·KD + (1-α)·CE`.
    fn with_token_ce(
        &self,
        kd: Tensor<B, 1>,
        student: Tensor<B, 3>,
        labels: Option<Tensor<B, 2, Int>>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        epoch: usize,
    ) -> Result<DistillLossOutput<B>> {
        let Some(labels) = labels else {
            return Ok(DistillLossOutput {
                total: kd.clone(),
                terms: vec![("kd", kd)],
            });
        };
        let alpha = self.config.alpha.at(epoch);
        let ce = token_cross_entropy(student, labels, attention_mask)?;
        let (kd, ce) = (kd.mul_scalar(alpha), ce.mul_scalar(1.0 - alpha));
        Ok(DistillLossOutput {
            total: kd.clone() + ce.clone(),
            terms: vec![("kd", kd), ("ce", ce)],
        })
    }

    /// Token-level KD against a sparse teacher (a top-k cache,
    /// [`TopKCache`](crate::distill::TopKCache)): as [`forward_tokens`](Self::forward_tokens)
    /// with the KD term of [`functional::kd_kl_topk_tokens`]. The temperature is the
    /// cache's, which [`TopKCache::attach`](crate::distill::TopKCache::attach) checks against
    /// this configuration.
    pub fn forward_topk_tokens(
        &self,
        student: Tensor<B, 3>,
        teacher: TopKTargets<B>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        labels: Option<Tensor<B, 2, Int>>,
        epoch: usize,
    ) -> Result<DistillLossOutput<B>> {
        let [batch, seq, vocab] = student.dims();
        let [ib, is, k] = teacher.indices.dims();
        same_shape(
            "top-k indices vs logits [batch, seq]",
            &[ib, is],
            &[batch, seq],
        )?;
        same_shape(
            "top-k log-probabilities vs indices",
            &teacher.log_probs.dims(),
            &[ib, is, k],
        )?;
        same_shape(
            "top-k tail vs logits [batch, seq]",
            &teacher.tail.dims(),
            &[batch, seq],
        )?;
        if k == 0 || k > vocab {
            return Err(TransferError::WidthMismatch {
                what: "teacher's top-k vs student vocabulary".into(),
                expected: vocab,
                actual: k,
                hint: "the cache keeps k of the teacher's tokens per position, 1 ≤ k ≤ the student's vocabulary: both models must share the tokenizer".into(),
            });
        }
        if let Some(m) = &attention_mask {
            same_shape(
                "attention mask vs logits [batch, seq]",
                &m.dims(),
                &[batch, seq],
            )?;
        }
        let t = self.config.temperature.at(epoch);
        let kd = functional::kd_kl_topk_tokens(
            student.clone(),
            teacher.indices,
            teacher.log_probs,
            teacher.tail,
            attention_mask.clone(),
            t,
        );
        self.with_token_ce(kd, student, labels, attention_mask, epoch)
    }
}

/// A sparse teacher's next-token distributions for one token batch: per position its top-k
/// tokens, their log-probabilities at the distillation temperature, and the log of the
/// probability left to the others (what a [`TopKCache`](crate::distill::TopKCache) holds).
#[derive(Clone, Debug)]
pub struct TopKTargets<B: Backend> {
    /// Token ids `[batch, seq, k]`, most likely first.
    pub indices: Tensor<B, 3, Int>,
    /// Their log-probabilities `[batch, seq, k]`.
    pub log_probs: Tensor<B, 3>,
    /// Log of the remaining mass `[batch, seq]` (`-inf` when none is left).
    pub tail: Tensor<B, 2>,
}

/// The next-token cross-entropy of `student` `[batch, seq, vocab]` against `labels`
/// `[batch, seq]`, a mean over the counted positions (not padding, not
/// [`IGNORE_INDEX`]); a counted label outside the vocabulary is an error.
fn token_cross_entropy<B: Backend>(
    student: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    attention_mask: Option<Tensor<B, 2, Int>>,
) -> Result<Tensor<B, 1>> {
    let [batch, seq, vocab] = student.dims();
    same_shape(
        "token labels vs logits [batch, seq]",
        &labels.dims(),
        &[batch, seq],
    )?;
    let device = student.device();
    let (safe_labels, keep) = token_targets(labels, attention_mask, vocab)?;
    let log_p = crate::exact::log_softmax(student.reshape([batch * seq, vocab]), 1);
    let nll = log_p
        .gather(
            1,
            Tensor::from_data(
                TensorData::new(safe_labels, [batch * seq, 1]).convert::<B::IntElem>(),
                &device,
            ),
        )
        .reshape([batch * seq])
        .neg();
    let count = keep.iter().filter(|k| **k > 0.0).count().max(1) as f64;
    let keep = Tensor::<B, 1>::from_data(
        TensorData::new(keep, [batch * seq]).convert::<B::FloatElem>(),
        &device,
    );
    Ok((nll * keep).sum().div_scalar(count))
}

impl<B: Backend> DistillLoss<B> {
    /// On-policy distillation's loss (TRL's GKD): the generalized Jensen–Shannon divergence
    /// between student and teacher token distributions at temperature `T`, with the
    /// configured β (default 0.5), averaged over the positions whose `attention_mask` is 1.
    /// Logits `[batch, seq, vocab]`; mask `[batch, seq]`.
    pub fn forward_gkd(
        &self,
        student: Tensor<B, 3>,
        teacher: Tensor<B, 3>,
        attention_mask: Tensor<B, 2, Int>,
        epoch: usize,
    ) -> Result<DistillLossOutput<B>> {
        same_shape(
            "token logits: student vs teacher",
            &student.dims(),
            &teacher.dims(),
        )?;
        let [batch, seq, _] = student.dims();
        same_shape(
            "attention mask vs logits [batch, seq]",
            &attention_mask.dims(),
            &[batch, seq],
        )?;
        let t = self.config.temperature.at(epoch);
        let beta = self.config.gkd_beta.unwrap_or(0.5);
        let jsd =
            functional::generalized_jsd_tokens(student, teacher, Some(attention_mask), beta, t);
        Ok(DistillLossOutput {
            total: jsd.clone(),
            terms: vec![("gkd", jsd)],
        })
    }
}

/// The label PyTorch's `cross_entropy` (and transformers' language models) skip: positions
/// with it count in no cross-entropy term.
pub const IGNORE_INDEX: i64 = -100;

/// Token labels made safe to gather (ignored positions read class 0) and the weight of each
/// position in the cross-entropy (1 counted, 0 ignored), after checking every counted label.
fn token_targets<B: Backend>(
    labels: Tensor<B, 2, Int>,
    attention_mask: Option<Tensor<B, 2, Int>>,
    vocab: usize,
) -> Result<(Vec<i64>, Vec<f32>)> {
    let [_, seq] = labels.dims();
    let labels: Vec<i64> = labels
        .into_data()
        .convert::<i64>()
        .into_vec()
        .map_err(|e| TransferError::BatchShape(format!("unreadable token labels: {e:?}")))?;
    let padded: Vec<bool> =
        match attention_mask {
            Some(m) => m.equal_elem(0).into_data().into_vec().map_err(|e| {
                TransferError::BatchShape(format!("unreadable attention mask: {e:?}"))
            })?,
            None => vec![false; labels.len()],
        };
    let mut safe = Vec::with_capacity(labels.len());
    let mut keep = Vec::with_capacity(labels.len());
    for (i, (&label, &pad)) in labels.iter().zip(&padded).enumerate() {
        let counted = !pad && label != IGNORE_INDEX;
        if counted && (label < 0 || label as u64 >= vocab as u64) {
            return Err(TransferError::TokenLabelOutOfRange {
                label,
                row: i / seq.max(1),
                position: i % seq.max(1),
                vocab,
            });
        }
        safe.push(if counted { label } else { 0 });
        keep.push(if counted { 1.0 } else { 0.0 });
    }
    Ok((safe, keep))
}

impl<B: Backend> DistillLoss<B> {
    /// Hidden-state pair `k`'s student side mapped to the teacher's width by its projector
    /// (unchanged where the widths are equal).
    fn project(&self, k: usize, hs: Tensor<B, 2>, ht: &Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let ([rows_s, s_width], [rows_t, t_width]) = (hs.dims(), ht.dims());
        same_shape("hint term: student vs teacher rows", &[rows_s], &[rows_t])?;
        match self.projectors.get(k).and_then(Option::as_ref) {
            Some(p) => {
                let [sd, td] = p.weight.dims();
                if (sd, td) != (s_width, t_width) {
                    return Err(TransferError::WidthMismatch {
                        what: format!("hint projector {k} vs hidden states"),
                        expected: sd,
                        actual: s_width,
                        hint: format!(
                            "the projector maps {sd} → {td} but the hidden states are {s_width} (student) and {t_width} (teacher) wide; build the loss with init_with_projectors(&[({s_width}, {t_width})])"
                        ),
                    });
                }
                Ok(p.forward(hs))
            }
            None if s_width == t_width => Ok(hs),
            None => Err(TransferError::WidthMismatch {
                what: format!("hint pair {k}: student vs teacher hidden states"),
                expected: t_width,
                actual: s_width,
                hint: format!(
                    "there is no projector for this pair; build the loss with init_with_projectors(&[({s_width}, {t_width})]) (a Distiller does it from its layer map)"
                ),
            }),
        }
    }
}

/// A feature term summed over its layer pairs (`term` of pair `k`); `none` when there is
/// no pair.
fn sum_over_pairs<B: Backend, P>(
    pairs: &[P],
    none: impl FnOnce() -> TransferError,
    mut term: impl FnMut(usize, &P) -> Result<Tensor<B, 1>>,
) -> Result<Tensor<B, 1>> {
    let mut sum: Option<Tensor<B, 1>> = None;
    for (k, pair) in pairs.iter().enumerate() {
        let value = term(k, pair)?;
        sum = Some(match sum {
            Some(sum) => sum + value,
            None => value,
        });
    }
    sum.ok_or_else(none)
}

fn missing(term: &str, what: &str, how: &str) -> TransferError {
    TransferError::config(
        term,
        format!("no {what}"),
        &format!("this term needs {what}; pass them with {how}, or turn the term off"),
    )
}

fn same_shape(what: &str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(TransferError::BatchShape(format!(
            "{what}: {a:?} vs {b:?}; they must match"
        )));
    }
    Ok(())
}

fn check_labels<B: Backend>(labels: &Tensor<B, 1, Int>, batch: usize) -> Result<()> {
    let [n] = labels.dims();
    if n != batch {
        return Err(TransferError::BatchShape(format!(
            "{n} labels for {batch} rows of logits; give one label per row"
        )));
    }
    Ok(())
}
