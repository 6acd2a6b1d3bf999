//! Knowledge distillation: a small student learns to imitate a big, frozen teacher.
//!
//! The teacher is held as its **inner** module (`teacher.valid()`, on `B::InnerBackend`):
//! a different type from anything an optimizer for `B` accepts, so it cannot be trained by
//! mistake; it builds no autodiff graph, keeps no activations for backward, and its
//! BatchNorm and dropout run in inference mode. Its outputs enter the loss as constants.
//! A teacher on another backend or device (a GPU teacher for a CPU student, or the reverse)
//! goes through [`TeacherOn`], which copies inputs there and outputs back.
//!
//! Handing the teacher to an optimizer does not compile:
//!
//! ```compile_fail,E0308
//! use burn::backend::{Autodiff, NdArray};
//! use burn::module::AutodiffModule;
//! use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
//! use burn_transfer::prelude::*;
//! use burn_transfer::distill::Distiller;
//! use burn_transfer::loss::DistillLossConfig;
//! type B = Autodiff<NdArray>;
//! type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;
//!
//! let device = Default::default();
//! let teacher: Net<B> = TransferModel::with_linear_head(MlpBackbone::new(&[4, 8], &device).unwrap(), 3, &device).unwrap();
//! let distiller = Distiller::new(teacher.valid(), DistillLossConfig::new(), FineTuner::<B>::new()).unwrap();
//! let mut optim = AdamWConfig::new().init::<B, Net<B>>();
//! // error[E0308]: expected `TransferModel<Autodiff<NdArray>, ..>`, found `TransferModel<NdArray, ..>`
//! let _ = optim.step(1e-3, distiller.teacher().clone(), GradientsParams::new());
//! ```
//!
//! while the same call with the student compiles:
//!
//! ```no_run
//! # use burn::backend::{Autodiff, NdArray};
//! # use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
//! # use burn_transfer::prelude::*;
//! # type B = Autodiff<NdArray>;
//! # type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;
//! # let device = Default::default();
//! let student: Net<B> = TransferModel::with_linear_head(MlpBackbone::new(&[4, 8], &device).unwrap(), 3, &device).unwrap();
//! let mut optim = AdamWConfig::new().init::<B, Net<B>>();
//! let _ = optim.step(1e-3, student, GradientsParams::new());
//! ```

mod cache;
mod generated;
pub mod init;
mod learner;
mod modes;
mod student;
mod teacher_on;
mod topk_cache;

pub use cache::{CachedBatches, TeacherCache};
pub use generated::{StudentContinues, TeacherContinues};
pub use learner::LearnerDistillation;
pub use modes::{DistillBatch, Unlabelled};
pub use student::DistillStudent;
pub use teacher_on::TeacherOn;
pub use topk_cache::{TopKBatch, TopKBatches, TopKCache};

use crate::error::{Result, TransferError};
use crate::finetune::{FineTuner, FitOutcome};
use crate::freeze::ToInner;
use crate::loss::{DistillLossConfig, LayerPairs};
use crate::objective::{Objective, StepAt, StepOutput};
use crate::task::{BatchSource, CausalLm, ClassificationBatch, Classifier, TokenBatch};
use burn::module::{AutodiffModule, Module, ModuleDisplay};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use core::marker::PhantomData;

/// Teaches students from a frozen teacher `T` (a module on `B::InnerBackend`), with the
/// training options of a [`FineTuner`] (optimizer, schedule, groups, clipping,
/// accumulation, early stopping, checkpoints, progress, history).
///
/// One entry point, [`Distiller::fit`]; the batches it is given pick the mode
/// ([`DistillBatch`]): labelled classification batches (live teacher, `α·KD + (1-α)·CE`),
/// [`Unlabelled`] inputs (soft targets only), batches paired with cached teacher logits
/// ([`Distiller::cache_teacher`] + [`TeacherCache::attach`]), and for causal language models
/// token batches (token-level KD), prompts the teacher continues ([`TeacherContinues`]:
/// sequence-level KD) and prompts the student continues ([`StudentContinues`]: on-policy
/// KD, TRL's GKD). Each loss term is logged per epoch in the history (`terms`).
///
/// Feature distillation goes through the same `fit`: the loss configuration's feature terms
/// compare the intermediate outputs both models expose
/// ([`Classifier::layer_spec`]) under a
/// [`LayerMap`](crate::loss::LayerMap), checked against both models before the first batch:
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::AutodiffModule;
/// use burn::tensor::{Distribution, Int, Tensor};
/// use burn_transfer::loss::LayerMap;
/// use burn_transfer::prelude::*;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let net = |widths: &[usize]| TransferModel::with_linear_head(MlpBackbone::<B>::new(widths, &device).unwrap(), 3, &device).unwrap();
/// let (teacher, student) = (net(&[8, 64, 64]), net(&[8, 16]));
/// // FitNets: the student's hidden layer 1 regresses onto the teacher's layer 2 through a
/// // learned 16 → 64 projection, beside KD + CE on the logits.
/// let loss = DistillLossConfig::new()
///     .with_hint(1.0)
///     .with_layer_map(LayerMap::Pairs(vec![(1, 2)]));
/// let tuner = FineTuner::<B>::new().epochs(1).monitor(Monitor::TrainLoss).verbose(false);
/// let distiller = Distiller::new(teacher.valid(), loss, tuner)?;
/// assert_eq!(distiller.layer_pairs(&student)?.hidden_widths, [(16, 64)]);
/// let x = Tensor::<B, 2>::random([16, 8], Distribution::Normal(0.0, 1.0), &device);
/// let y = Tensor::<B, 1, Int>::random([16], Distribution::Uniform(0.0, 3.0), &device);
/// let outcome = distiller.fit(student, &vec![ClassificationBatch::new(x, y)], None)?;
/// assert!(outcome.history.epochs[0].terms.contains_key("hint"));
/// # Ok::<(), burn_transfer::TransferError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Distiller<B: AutodiffBackend, T> {
    teacher: T,
    loss: DistillLossConfig,
    tuner: FineTuner<B>,
}

impl<B: AutodiffBackend> Distiller<B, PhantomData<B::InnerBackend>> {
    /// A distiller without a teacher, for batches that carry the teacher's outputs (a
    /// [`TopKCache`], cached logits): the teacher's weights need not stay in memory.
    pub fn without_teacher(loss: DistillLossConfig, tuner: FineTuner<B>) -> Result<Self> {
        Self::new(PhantomData, loss, tuner)
    }
}

impl<B, T> Distiller<B, T>
where
    B: AutodiffBackend,
    T: Module<B::InnerBackend>,
{
    /// A distiller for `teacher` (take it with `teacher.valid()` from an autodiff model).
    /// An error if the loss configuration is invalid (T ≤ 0, α outside [0, 1], ...).
    pub fn new(teacher: T, loss: DistillLossConfig, tuner: FineTuner<B>) -> Result<Self> {
        loss.validate()?;
        tuner.validate()?;
        crate::freeze::materialize(&teacher);
        Ok(Self {
            teacher,
            loss,
            tuner,
        })
    }

    /// Runs the causal-LM teacher once over `batches` and keeps, per position, its `k` most
    /// likely next tokens with their log-probabilities at the loss configuration's
    /// temperature and the log of the remaining mass, in memory-mapped shards in `dir`
    /// ([`TopKCache`]). A cache already in `dir` for the same teacher weights, batches, `k`
    /// and temperature is opened instead, without running the teacher. Train on it with
    /// [`TopKCache::attach`] and [`fit`](Self::fit) — from a
    /// [`without_teacher`](Distiller::without_teacher) distiller if the teacher is not
    /// needed any more. An error for a scheduled temperature, `k` outside `1..=vocab`, or
    /// what the disk refuses.
    pub fn cache_teacher_topk(
        &self,
        batches: &[TokenBatch<B>],
        k: usize,
        dir: impl AsRef<std::path::Path>,
    ) -> Result<TopKCache>
    where
        T: CausalLm<B::InnerBackend>,
    {
        if !self.loss.temperature.is_constant() {
            return Err(TransferError::config(
                "temperature",
                format!("{:?}", self.loss.temperature),
                "a top-k cache holds the teacher's probabilities at one temperature; distil from it at a constant one",
            ));
        }
        let inner: Vec<TokenBatch<B::InnerBackend>> = batches
            .iter()
            .map(|b| {
                TokenBatch::new(
                    b.input_ids.clone().inner(),
                    b.attention_mask.clone().inner(),
                )
            })
            .collect();
        TopKCache::build(
            &self.teacher,
            &inner,
            k,
            self.loss.temperature.at(1),
            dir.as_ref(),
        )
    }

    /// The teacher (inner backend: it cannot be optimised).
    pub fn teacher(&self) -> &T {
        &self.teacher
    }

    /// The loss configuration.
    pub fn loss_config(&self) -> &DistillLossConfig {
        &self.loss
    }

    /// The teacher's logits for `inputs`, as a constant on `B`.
    pub fn teacher_logits<X>(&self, inputs: X) -> Tensor<B, 2>
    where
        X: ToInner<B>,
        T: Classifier<B::InnerBackend, Input = X::Inner>,
    {
        Tensor::from_inner(self.teacher.logits(inputs.to_inner()))
    }

    /// Which student layer learns from which teacher layer under the loss configuration's
    /// feature terms and [`LayerMap`](crate::loss::LayerMap), checked against both models:
    /// an error for a configuration they cannot satisfy (a layer out of range, a model that
    /// exposes no hidden states, head counts that differ). [`fit`](Self::fit) resolves the
    /// same pairs before any step; call it to check a student when building the run.
    pub fn layer_pairs<S>(&self, student: &S) -> Result<LayerPairs>
    where
        S: Classifier<B>,
        T: Classifier<B::InnerBackend>,
    {
        modes::classifier_pairs::<B, S, T>(&self.loss, student, &self.teacher)
    }

    /// Runs the teacher once over `batches` (one forward per sample) and keeps its logits.
    pub fn cache_teacher<X>(
        &self,
        batches: &[ClassificationBatch<B, X>],
    ) -> TeacherCache<B::InnerBackend>
    where
        X: ToInner<B> + Clone,
        T: Classifier<B::InnerBackend, Input = X::Inner>,
    {
        TeacherCache {
            logits: batches
                .iter()
                .map(|b| self.teacher.logits(b.inputs.clone().to_inner()))
                .collect(),
        }
    }

    /// Distils the teacher into `student` on `train`, in the mode its batches pick (see
    /// [`DistillBatch`]), validating the student after every epoch on `valid` when given
    /// (without it, the monitor must be [`Monitor::TrainLoss`](crate::finetune::Monitor)).
    ///
    /// A loss configuration the mode or the two models cannot feed (a hidden-state term for
    /// a logits-only mode, a layer map the models cannot satisfy) is an error before any
    /// step runs. Feature terms (`hint`, `cosine`, `attention_mse`, `attention`) compare
    /// the layer pairs [`layer_pairs`](Self::layer_pairs) gives; their projectors train
    /// with the student.
    pub fn fit<S, D>(
        &self,
        student: S,
        train: &dyn BatchSource<D>,
        valid: Option<&dyn BatchSource<D::Valid>>,
    ) -> Result<FitOutcome<S>>
    where
        S: AutodiffModule<B> + ModuleDisplay,
        S::InnerModule: ModuleDisplay,
        D: DistillBatch<B, S, T>,
    {
        let layers = D::layer_pairs(&self.loss, &student, &self.teacher)?;
        if let Some(dir) = &self.tuner.checkpoint_dir {
            self.loss.save_to_run_dir(dir)?;
        }
        let device = student.devices().into_iter().next().unwrap_or_default();
        let pair = DistillStudent {
            student,
            loss: self.loss.init_for_layers(layers, &device)?,
        };
        let objective = TeacherObjective::<T, D> {
            teacher: &self.teacher,
            batch: PhantomData,
        };
        let outcome = self.tuner.train(pair, &objective, train, valid)?;
        Ok(outcome.map(|pair| pair.student))
    }
}

/// A [`Distiller`]'s mode `D` as the training loop's [`Objective`] on the student and the
/// loss's own weights.
struct TeacherObjective<'a, T, D> {
    teacher: &'a T,
    batch: PhantomData<fn(D)>,
}

impl<B, S, T, D> Objective<B, DistillStudent<B, S>> for TeacherObjective<'_, T, D>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + ModuleDisplay,
    S::InnerModule: ModuleDisplay,
    D: DistillBatch<B, S, T>,
{
    type Batch = D;
    type ValidBatch = D::Valid;

    fn train_step(
        &self,
        pair: &DistillStudent<B, S>,
        batch: D,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        batch.distill_step(&pair.student, self.teacher, &pair.loss, at)
    }

    fn valid_step(
        &self,
        pair: &DistillStudent<B::InnerBackend, S::InnerModule>,
        batch: D::Valid,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        D::valid_step(batch, &pair.student, at)
    }
}
