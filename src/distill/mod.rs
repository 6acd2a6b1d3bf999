//! Knowledge distillation: a small student learns to imitate a big, frozen teacher.
//!
//! The teacher is held as its **inner** module (`teacher.valid()`, on `B::InnerBackend`):
//! a different type from anything an optimizer for `B` accepts, so it cannot be trained by
//! mistake; it builds no autodiff graph, keeps no activations for backward, and its
//! BatchNorm and dropout run in inference mode. Its outputs enter the loss as constants.
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
pub mod init;
mod student;

pub use cache::{CachedBatches, TeacherCache};
pub use student::DistillStudent;

use crate::error::{Result, TransferError};
use crate::finetune::fit::{TrainTotals, ValidBatch};
use crate::finetune::session::{check_batch, guarded_forward};
use crate::finetune::{FineTuner, FitOutcome, Objective};
use crate::freeze::ToInner;
use crate::loss::{DistillLossConfig, DistillTargets};
use crate::task::{BatchSource, ClassificationBatch, Classifier};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Teaches students from a frozen teacher `T` (a module on `B::InnerBackend`), with the
/// training options of a [`FineTuner`] (optimizer, schedule, groups, clipping,
/// accumulation, early stopping, checkpoints, progress, history).
///
/// Modes: live teacher on labelled data ([`Distiller::fit`]), live teacher on unlabelled
/// data, soft targets only ([`Distiller::fit_unlabelled`]), and cached teacher outputs
/// ([`Distiller::cache_teacher`] + [`Distiller::fit_cached`]). Each loss term is logged per
/// epoch in the history (`terms`).
#[derive(Clone, Debug)]
pub struct Distiller<B: AutodiffBackend, T> {
    teacher: T,
    loss: DistillLossConfig,
    tuner: FineTuner<B>,
}

/// A distillation batch: inputs, labels when there are any, and the teacher's logits when
/// they were cached.
struct DistillItem<B: AutodiffBackend, X> {
    inputs: X,
    labels: Option<Tensor<B, 1, Int>>,
    cached: Option<Tensor<B::InnerBackend, 2>>,
}

impl<B: AutodiffBackend, X> DistillItem<B, X> {
    fn labelled(
        inputs: X,
        labels: Tensor<B, 1, Int>,
        cached: Option<Tensor<B::InnerBackend, 2>>,
    ) -> Self {
        Self {
            inputs,
            labels: Some(labels),
            cached,
        }
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

    /// Distils on labelled data with a live teacher: `α·KD + (1-α)·CE` plus the configured
    /// terms. Validation (student, inference mode) as in [`FineTuner::fit`].
    pub fn fit<S, Tr, V>(&self, student: S, train: &Tr, valid: &V) -> Result<FitOutcome<S>>
    where
        S: AutodiffModule<B> + Classifier<B>,
        S::Input: ToInner<B> + Clone,
        S::InnerModule: Classifier<B::InnerBackend>,
        T: Classifier<B::InnerBackend, Input = <S::Input as ToInner<B>>::Inner>,
        Tr: BatchSource<ClassificationBatch<B, S::Input>> + ?Sized,
        V: BatchSource<ValidBatch<B, S>> + ?Sized,
    {
        self.run(student, valid, || {
            Box::new(
                train.epoch().map(|(b, fraction)| {
                    (DistillItem::labelled(b.inputs, b.targets, None), fraction)
                }),
            )
        })
    }

    /// Distils on unlabelled inputs (soft targets only: no labels anywhere). The epoch's
    /// `train_accuracy` is then the student's top-1 agreement with the teacher.
    pub fn fit_unlabelled<S, Tr, V>(
        &self,
        student: S,
        train: &Tr,
        valid: &V,
    ) -> Result<FitOutcome<S>>
    where
        S: AutodiffModule<B> + Classifier<B>,
        S::Input: ToInner<B> + Clone,
        S::InnerModule: Classifier<B::InnerBackend>,
        T: Classifier<B::InnerBackend, Input = <S::Input as ToInner<B>>::Inner>,
        Tr: BatchSource<S::Input> + ?Sized,
        V: BatchSource<ValidBatch<B, S>> + ?Sized,
    {
        self.run(student, valid, || {
            Box::new(train.epoch().map(|(inputs, fraction)| {
                let item = DistillItem {
                    inputs,
                    labels: None,
                    cached: None,
                };
                (item, fraction)
            }))
        })
    }

    /// Distils on labelled batches paired with cached teacher logits
    /// ([`TeacherCache::attach`]): the teacher does not run during training.
    pub fn fit_cached<S, V>(
        &self,
        student: S,
        train: &CachedBatches<ClassificationBatch<B, S::Input>, B::InnerBackend>,
        valid: &V,
    ) -> Result<FitOutcome<S>>
    where
        S: AutodiffModule<B> + Classifier<B>,
        S::Input: ToInner<B> + Clone,
        S::InnerModule: Classifier<B::InnerBackend>,
        T: Classifier<B::InnerBackend, Input = <S::Input as ToInner<B>>::Inner>,
        V: BatchSource<ValidBatch<B, S>> + ?Sized,
    {
        self.run(student, valid, || {
            Box::new(train.epoch().map(|((b, logits), fraction)| {
                (
                    DistillItem::labelled(b.inputs, b.targets, Some(logits)),
                    fraction,
                )
            }))
        })
    }

    /// The shared loop over the items `epoch` yields for each epoch.
    fn run<'a, S, V, E>(&self, student: S, valid: &V, epoch: E) -> Result<FitOutcome<S>>
    where
        S: AutodiffModule<B> + Classifier<B>,
        S::Input: ToInner<B> + Clone,
        S::InnerModule: Classifier<B::InnerBackend>,
        T: Classifier<B::InnerBackend, Input = <S::Input as ToInner<B>>::Inner>,
        V: BatchSource<ValidBatch<B, S>> + ?Sized,
        E: Fn() -> Box<dyn Iterator<Item = (DistillItem<B, S::Input>, f64)> + 'a>,
    {
        if let Some(dir) = &self.tuner.checkpoint_dir {
            self.loss.save_to_run_dir(dir)?;
        }
        let device = student.devices().into_iter().next().unwrap_or_default();
        let pair = DistillStudent {
            student,
            loss: self.loss.init(&device)?,
        };
        let session = self.tuner.session(pair)?;
        let outcome = self.tuner.drive(
            session,
            true,
            |session, bar| {
                let mut totals = TrainTotals::default();
                let epoch_no = session.epoch();
                for (index, (item, fraction)) in (1..).zip(epoch()) {
                    let teacher = match item.cached {
                        Some(logits) => Tensor::from_inner(logits),
                        None => Tensor::from_inner(guarded_forward(
                            &self.teacher,
                            item.inputs.clone().to_inner(),
                            index,
                            "teacher's training",
                        )?),
                    };
                    let stats = session.step_with(fraction, |pair| {
                        let logits =
                            guarded_forward(&pair.student, item.inputs, index, "training")?;
                        let count = logits.dims()[0];
                        same_classes(&logits, &teacher)?;
                        let (targets, correct) = match item.labels {
                            Some(labels) => {
                                let correct = check_batch(&logits, &labels, index)?;
                                (
                                    DistillTargets::new(logits, teacher).with_labels(labels),
                                    correct,
                                )
                            }
                            None => {
                                let agree = teacher.clone().argmax(1).reshape([count]);
                                let correct = check_batch(&logits, &agree, index)?;
                                (DistillTargets::new(logits, teacher), correct)
                            }
                        };
                        let out = pair.loss.forward(targets, epoch_no)?;
                        Ok(Objective {
                            loss: out.total,
                            correct,
                            count,
                            terms: out.terms,
                        })
                    })?;
                    totals.add(&stats, fraction, bar);
                }
                Ok(totals)
            },
            |session| crate::finetune::evaluate(&session.model().student.valid(), valid).map(Some),
        )?;
        Ok(outcome.map(|pair| pair.student))
    }
}

/// The student must predict the teacher's classes: checked before the labels, so that the
/// error names the real cause rather than a label (the teacher's argmax) out of range.
fn same_classes<B: Backend>(student: &Tensor<B, 2>, teacher: &Tensor<B, 2>) -> Result<()> {
    let ([s_rows, s_classes], [t_rows, t_classes]) = (student.dims(), teacher.dims());
    if s_classes != t_classes {
        return Err(TransferError::WidthMismatch {
            what: "student logits vs teacher logits (classes)".into(),
            expected: t_classes,
            actual: s_classes,
            hint: "the student's head must predict the teacher's classes: build it with the teacher's class count".into(),
        });
    }
    if s_rows != t_rows {
        return Err(TransferError::BatchShape(format!(
            "the student gave {s_rows} rows of logits and the teacher {t_rows}; a cached teacher must come from the same batches"
        )));
    }
    Ok(())
}
