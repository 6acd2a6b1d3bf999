//! Distillation inside burn-train's `Learner`: the student, the loss's weights and the
//! teacher as one model that implements `TrainStep` and `InferenceStep`.

use super::Distiller;
use super::modes::logits_only;
use crate::error::{Result, TransferError};
use crate::freeze::ToInner;
use crate::loss::functional::cross_entropy;
use crate::loss::{DistillLoss, DistillTargets};
use crate::task::{ClassificationBatch, Classifier};
use burn::module::{AutodiffModule, Module, ModuleDisplay};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

/// A student with its [`DistillLoss`] and its teacher, as one model for burn-train's
/// `Learner` (metrics, TUI, checkpointer, several devices): `TrainStep` on an autodiff
/// backend runs the live teacher and the student on a [`ClassificationBatch`] and returns
/// `α·KD + (1-α)·CE` (plus the configured logit terms) with the student's logits as a
/// `ClassificationOutput`, so `AccuracyMetric` and `LossMetric` work unchanged;
/// `InferenceStep` (validation) is the student's cross-entropy. Build it with
/// [`Distiller::learner_model`].
///
/// The teacher is not a parameter (`#[module(skip)]`): the Learner's optimizer, records and
/// checkpoints never see it, and it stays on the inner backend (no graph).
///
/// ```no_run
/// # use burn::backend::{Autodiff, NdArray};
/// # use burn::data::dataloader::DataLoader;
/// # use burn::optim::AdamWConfig;
/// # use burn::train::{Learner, SupervisedTraining, metric::{AccuracyMetric, LossMetric}};
/// # use burn_transfer::prelude::*;
/// # use std::sync::Arc;
/// # type B = Autodiff<NdArray>;
/// # type X<B> = burn::tensor::Tensor<B, 2>;
/// # type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;
/// # fn go(teacher: Net<NdArray>, student: Net<B>,
/// #       train: Arc<dyn DataLoader<B, ClassificationBatch<B, X<B>>>>,
/// #       valid: Arc<dyn DataLoader<NdArray, ClassificationBatch<NdArray, X<NdArray>>>>) -> burn_transfer::Result<()> {
/// let distiller = Distiller::new(teacher, DistillLossConfig::new(), FineTuner::<B>::new())?;
/// let model = distiller.learner_model(student)?;
/// let result = SupervisedTraining::new("runs/distill", train, valid)
///     .metrics((AccuracyMetric::new(), LossMetric::new()))
///     .num_epochs(3)
///     .launch(Learner::new(model, AdamWConfig::new().init(), 1e-3));
/// let student = result.model.student; // on the inner backend
/// # Ok(()) }
/// ```
#[derive(Module, Debug)]
pub struct LearnerDistillation<B: Backend, M, T> {
    /// The network being taught.
    pub student: M,
    /// The objective, with its trainable projector.
    pub loss: DistillLoss<B>,
    /// The frozen teacher (inner backend), not a parameter.
    #[module(skip)]
    teacher: T,
}

impl<B: Backend, M, T> LearnerDistillation<B, M, T> {
    /// The teacher.
    pub fn teacher(&self) -> &T {
        &self.teacher
    }
}

impl<B, T> Distiller<B, T>
where
    B: AutodiffBackend,
    T: Module<B::InnerBackend>,
{
    /// `student` with this distiller's teacher and loss, as one model for burn-train's
    /// `Learner` ([`LearnerDistillation`]). An error for a configuration the Learner's step
    /// cannot feed: terms that need hidden states, or a temperature or α that changes with
    /// the epoch (a `Learner` step is not told its epoch).
    pub fn learner_model<M>(&self, student: M) -> Result<LearnerDistillation<B, M, T>>
    where
        M: AutodiffModule<B>,
        T: Clone,
    {
        logits_only(&self.loss, "distillation inside the Learner")?;
        for (name, schedule) in [
            ("temperature", &self.loss.temperature),
            ("alpha", &self.loss.alpha),
        ] {
            if !schedule.is_constant() {
                return Err(TransferError::config(
                    name,
                    format!("{schedule:?}"),
                    "a Learner step is not told its epoch: give a constant value, or distil with Distiller::fit, whose schedules follow the epochs",
                ));
            }
        }
        let device = student.devices().into_iter().next().unwrap_or_default();
        Ok(LearnerDistillation {
            student,
            loss: self.loss.init(&device)?,
            teacher: self.teacher.clone(),
        })
    }
}

impl<B, M, T> TrainStep for LearnerDistillation<B, M, T>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B>,
    M::Input: ToInner<B> + Clone + Send,
    M::InnerModule: ModuleDisplay,
    T: Classifier<B::InnerBackend, Input = <M::Input as ToInner<B>>::Inner>
        + Clone
        + Send
        + Sync
        + core::fmt::Debug,
{
    type Input = ClassificationBatch<B, M::Input>;
    type Output = ClassificationOutput<B>;

    /// # Panics
    /// On a batch the models cannot take (a `Learner` step returns no error; the
    /// configuration was checked when the model was built).
    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let teacher = Tensor::from_inner(self.teacher.logits(batch.inputs.clone().to_inner()));
        let logits = self.student.logits(batch.inputs);
        let targets =
            DistillTargets::new(logits.clone(), teacher).with_labels(batch.targets.clone());
        let out = self
            .loss
            .forward(targets, 1)
            .unwrap_or_else(|e| panic!("distillation step: {e}"));
        let grads = out.total.backward();
        TrainOutput::new(
            self,
            grads,
            ClassificationOutput::new(out.total, logits, batch.targets),
        )
    }
}

impl<B, M, T> InferenceStep for LearnerDistillation<B, M, T>
where
    B: Backend,
    M: Classifier<B>,
    M::Input: Send,
    T: Clone + Send + Sync + core::fmt::Debug,
{
    type Input = ClassificationBatch<B, M::Input>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> Self::Output {
        let logits = self.student.logits(batch.inputs);
        let loss = cross_entropy(logits.clone(), batch.targets.clone(), 0.0);
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}
