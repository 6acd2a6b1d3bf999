//! The distillation modes: the batch a [`Distiller`](super::Distiller) is fed picks how the
//! teacher's outputs are obtained and which terms the loss gets.
//!
//! | training batch | mode | validation batch |
//! |---|---|---|
//! | [`ClassificationBatch`] | live teacher, `α·KD + (1-α)·CE` | [`ValidBatch`] (student's cross-entropy, accuracy) |
//! | [`Unlabelled`] | live teacher, soft targets only; accuracy = agreement with the teacher | [`ValidBatch`] |
//! | `(ClassificationBatch, teacher logits)` ([`CachedBatches`](super::CachedBatches)) | cached teacher | [`ValidBatch`] |
//! | [`TokenBatch`] | live causal-LM teacher, token-level `α·KD + (1-α)·CE` on every real next token | [`TokenBatch`] (student's next-token loss: `exp` = perplexity) |
//! | [`TeacherContinues`](super::TeacherContinues) | sequence-level: the teacher continues prompts, the student learns the continuations | [`TokenBatch`] |
//! | [`StudentContinues`](super::StudentContinues) | on-policy (GKD): the student continues prompts, the teacher scores each token, generalized JSD | [`TokenBatch`] |
//! | [`TopKBatch`](super::TopKBatch) ([`TopKCache::attach`](super::TopKCache::attach)) | token-level KD from a sparse teacher cache on disk (the teacher does not run) | [`TokenBatch`] |
//!
//! The classification modes with a live teacher also feed the feature terms (hint, cosine,
//! attention MSE, attention transfer) from both models' intermediate outputs under the
//! configuration's [`LayerMap`](crate::loss::LayerMap).

use crate::error::{Result, TransferError};
use crate::freeze::ToInner;
use crate::layer_outputs::{LayerOutputs, LayerRequest};
use crate::loss::{DistillLoss, DistillLossConfig, DistillTargets, IGNORE_INDEX, LayerPairs};
use crate::objective::{
    CrossEntropy, NextTokenLoss, Objective, StepAt, StepOutput, ValidBatch, batch_error,
    checked_logits, count_correct, next_token_correct,
};
use crate::task::{CausalLm, ClassificationBatch, Classifier, TokenBatch};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Inputs without labels: distilled on the teacher's soft targets alone.
#[derive(Clone, Debug)]
pub struct Unlabelled<X>(pub X);

/// A batch a [`Distiller`](super::Distiller) can train student `S` on with teacher `T` (a
/// module on the inner backend): how the teacher's outputs are obtained, which loss terms
/// apply, and how the student is validated. Implemented for the crate's modes (see the
/// module's table); implement it for your own batch type to add one.
pub trait DistillBatch<B: AutodiffBackend, S: AutodiffModule<B>, T>: Sized {
    /// What validation reads (inner backend).
    type Valid;

    /// Resolves the loss configuration's layer map against `student` and `teacher`, or
    /// rejects a configuration this mode or these models cannot feed (a term that needs
    /// hidden states when the mode gives logits only, a layer the student does not have),
    /// before any step runs. The default accepts the logit terms (KD, CE, MSE, DKD) and
    /// rejects the feature terms.
    fn layer_pairs(config: &DistillLossConfig, student: &S, teacher: &T) -> Result<LayerPairs> {
        let _ = (student, teacher);
        logits_only(config, "this distillation mode")?;
        Ok(LayerPairs::default())
    }

    /// The loss of this batch: the student's outputs (tracked), the teacher's (constants).
    /// `loss` carries the resolved layer pairs ([`DistillLoss::layer_pairs`]).
    fn distill_step(
        self,
        student: &S,
        teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>>;

    /// The student's validation loss on `batch` (inference mode).
    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>>;
}

/// Rejects terms that need hidden states or activation maps, which `mode` does not give.
pub(crate) fn logits_only(config: &DistillLossConfig, mode: &str) -> Result<()> {
    let features = config.feature_terms();
    if features.is_empty() {
        return Ok(());
    }
    Err(TransferError::config(
        "loss",
        features.join(", "),
        &format!(
            "{mode} gives the loss logits only, and these terms need hidden states or activation maps; drop them from the DistillLossConfig, or compute them yourself with DistillLoss::forward and DistillTargets::with_hidden / with_attention in an Objective of your own"
        ),
    ))
}

/// Terms a language-model mode can compute: KD and CE (the token modes), nothing that needs
/// hidden states or classification logits.
pub(crate) fn token_terms_only(config: &DistillLossConfig, mode: &str) -> Result<()> {
    logits_only(config, mode)?;
    if let Some(term) = config.classification_only_terms().first() {
        return Err(TransferError::config(
            "loss",
            *term,
            &format!(
                "{mode} has the KD and cross-entropy terms only; drop this term from the DistillLossConfig"
            ),
        ));
    }
    Ok(())
}

/// The step shared by the classification modes with a live teacher: the teacher's logits
/// (and intermediate outputs for the feature terms), then [`logits_step`].
fn classification_step<B, S, T>(
    student: &S,
    teacher: &T,
    inputs: S::Input,
    labels: Option<Tensor<B, 1, Int>>,
    loss: &DistillLoss<B>,
    at: StepAt,
) -> Result<StepOutput<B>>
where
    B: AutodiffBackend,
    S: Classifier<B>,
    S::Input: ToInner<B> + Clone,
    T: Classifier<B::InnerBackend, Input = <S::Input as ToInner<B>>::Inner>,
{
    let request = loss.layer_pairs().request();
    let (logits, layers) = checked_layers(
        teacher,
        inputs.clone().to_inner(),
        request,
        at.batch,
        "teacher's training",
    )?;
    let teacher_side = (Tensor::from_inner(logits), LayerOutputs::from_inner(layers));
    logits_step(student, inputs, teacher_side, labels, loss, at)
}

/// The logits of `model` and the intermediate outputs `request` asks for (none: the plain
/// forward of [`checked_logits`]), its input checked first and a panic inside the forward
/// pass turned into an error naming the batch.
fn checked_layers<B: Backend, M: Classifier<B>>(
    model: &M,
    inputs: M::Input,
    request: LayerRequest,
    batch: usize,
    split: &str,
) -> Result<(Tensor<B, 2>, LayerOutputs<B>)> {
    if request.is_empty() {
        let logits = checked_logits(model, inputs, batch, split)?;
        return Ok((logits, LayerOutputs::default()));
    }
    model
        .check_input(&inputs)
        .map_err(|e| batch_error(e, split, batch))?;
    crate::guard::quietly(|| model.logits_with_layers(inputs, request)).map_err(|panic| {
        TransferError::BatchShape(format!(
            "{split} batch {batch} does not fit the model ({panic}); check the inputs' shape against the model's input"
        ))
    })
}

/// The step shared by the classification modes, given the teacher's logits and
/// intermediate outputs (live, or cached logits with none): the student's side, the label
/// checks, the loss.
fn logits_step<B, S>(
    student: &S,
    inputs: S::Input,
    (teacher_logits, teacher_layers): (Tensor<B, 2>, LayerOutputs<B>),
    labels: Option<Tensor<B, 1, Int>>,
    loss: &DistillLoss<B>,
    at: StepAt,
) -> Result<StepOutput<B>>
where
    B: AutodiffBackend,
    S: Classifier<B>,
{
    let pairs = loss.layer_pairs();
    let (logits, student_layers) =
        checked_layers(student, inputs, pairs.request(), at.batch, "training")?;
    same_classes(&logits, &teacher_logits)?;
    let count = logits.dims()[0];
    let (targets, correct) = match labels {
        Some(labels) => {
            let correct = count_correct(&logits, &labels, at.batch)?;
            (
                DistillTargets::new(logits, teacher_logits).with_labels(labels),
                correct,
            )
        }
        None => {
            let agree = teacher_logits.clone().argmax(1).reshape([count]);
            let correct = count_correct(&logits, &agree, at.batch)?;
            (DistillTargets::new(logits, teacher_logits), correct)
        }
    };
    // Without layer pairs this adds nothing.
    let targets = pairs
        .targets(targets, student_layers, teacher_layers)
        .map_err(|e| batch_error(e, "training", at.batch))?;
    let out = loss.forward(targets, at.epoch)?;
    Ok(StepOutput::new(out.total, correct, count).with_terms(out.terms))
}

/// The feature terms of `config` resolved against the student's and the teacher's layers
/// (no pair when the configuration has no feature term).
pub(crate) fn classifier_pairs<B, S, T>(
    config: &DistillLossConfig,
    student: &S,
    teacher: &T,
) -> Result<LayerPairs>
where
    B: AutodiffBackend,
    S: Classifier<B>,
    T: Classifier<B::InnerBackend>,
{
    if config.feature_terms().is_empty() {
        return Ok(LayerPairs::default());
    }
    config
        .layer_map
        .resolve(config, &student.layer_spec(), &teacher.layer_spec())
}

fn classifier_valid<B, S>(
    batch: ValidBatch<B, S>,
    student: &S::InnerModule,
    at: StepAt,
) -> Result<StepOutput<B::InnerBackend>>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + Classifier<B>,
    S::InnerModule: Classifier<B::InnerBackend>,
{
    <CrossEntropy as Objective<B, S>>::valid_step(&CrossEntropy::new(), student, batch, at)
}

impl<B, S, T> DistillBatch<B, S, T> for ClassificationBatch<B, S::Input>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + Classifier<B>,
    S::Input: ToInner<B> + Clone,
    S::InnerModule: Classifier<B::InnerBackend>,
    T: Classifier<B::InnerBackend, Input = <S::Input as ToInner<B>>::Inner>,
{
    type Valid = ValidBatch<B, S>;

    fn layer_pairs(config: &DistillLossConfig, student: &S, teacher: &T) -> Result<LayerPairs> {
        classifier_pairs::<B, S, T>(config, student, teacher)
    }

    fn distill_step(
        self,
        student: &S,
        teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        classification_step(student, teacher, self.inputs, Some(self.targets), loss, at)
    }

    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        classifier_valid::<B, S>(batch, student, at)
    }
}

impl<B, S, T> DistillBatch<B, S, T> for Unlabelled<S::Input>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + Classifier<B>,
    S::Input: ToInner<B> + Clone,
    S::InnerModule: Classifier<B::InnerBackend>,
    T: Classifier<B::InnerBackend, Input = <S::Input as ToInner<B>>::Inner>,
{
    type Valid = ValidBatch<B, S>;

    fn layer_pairs(config: &DistillLossConfig, student: &S, teacher: &T) -> Result<LayerPairs> {
        classifier_pairs::<B, S, T>(config, student, teacher)
    }

    fn distill_step(
        self,
        student: &S,
        teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        classification_step(student, teacher, self.0, None, loss, at)
    }

    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        classifier_valid::<B, S>(batch, student, at)
    }
}

impl<B, S, T> DistillBatch<B, S, T>
    for (ClassificationBatch<B, S::Input>, Tensor<B::InnerBackend, 2>)
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + Classifier<B>,
    S::InnerModule: Classifier<B::InnerBackend>,
{
    type Valid = ValidBatch<B, S>;

    fn distill_step(
        self,
        student: &S,
        _teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        let (batch, cached) = self;
        logits_step(
            student,
            batch.inputs,
            (Tensor::from_inner(cached), LayerOutputs::default()),
            Some(batch.targets),
            loss,
            at,
        )
    }

    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        classifier_valid::<B, S>(batch, student, at)
    }
}

impl<B, S, T> DistillBatch<B, S, T> for TokenBatch<B>
where
    B: AutodiffBackend,
    S: AutodiffModule<B> + CausalLm<B>,
    S::InnerModule: CausalLm<B::InnerBackend>,
    T: CausalLm<B::InnerBackend>,
{
    type Valid = TokenBatch<B::InnerBackend>;

    fn layer_pairs(config: &DistillLossConfig, _: &S, _: &T) -> Result<LayerPairs> {
        token_terms_only(config, "token-level distillation")?;
        Ok(LayerPairs::default())
    }

    fn distill_step(
        self,
        student: &S,
        teacher: &T,
        loss: &DistillLoss<B>,
        at: StepAt,
    ) -> Result<StepOutput<B>> {
        let TokenBatch {
            input_ids,
            attention_mask,
        } = self;
        let teacher_logits = teacher
            .next_token_logits(input_ids.clone().inner(), attention_mask.clone().inner())
            .map_err(|e| batch_error(e, "teacher's training", at.batch))?;
        let s = student_tokens(student, &input_ids, &attention_mask, at)?;
        let vocab = s.logits.dims()[2];
        let teacher_vocab = teacher_logits.dims()[2];
        if teacher_vocab != vocab {
            return Err(TransferError::WidthMismatch {
                what: "student vs teacher vocabulary".into(),
                expected: teacher_vocab,
                actual: vocab,
                hint: "token-level distillation compares the two distributions token by token: both models must share the tokenizer".into(),
            });
        }
        let out = loss.forward_tokens(
            s.logits,
            Tensor::from_inner(teacher_logits),
            Some(s.kd_mask),
            Some(s.labels),
            at.epoch,
        )?;
        Ok(StepOutput::new(out.total, s.correct, s.count).with_terms(out.terms))
    }

    fn valid_step(
        batch: Self::Valid,
        student: &S::InnerModule,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        <NextTokenLoss as Objective<B, S>>::valid_step(&NextTokenLoss, student, batch, at)
    }
}

/// The student's side of a token-level step.
pub(crate) struct StudentTokens<B: Backend> {
    /// Next-token logits `[batch, seq, vocab]` (tracked).
    pub logits: Tensor<B, 3>,
    /// 1 where the next token is real.
    pub kd_mask: Tensor<B, 2, Int>,
    /// The ids shifted left, [`IGNORE_INDEX`] where there is no next token.
    pub labels: Tensor<B, 2, Int>,
    /// Next tokens predicted right.
    pub correct: usize,
    /// Real next tokens.
    pub count: usize,
}

/// The student's next-token logits on a token batch with the KD mask, the labels and the
/// accuracy counts: what every token-level mode (live teacher, top-k cache) needs; an error
/// naming the batch when no position has a real next token.
pub(crate) fn student_tokens<B, S>(
    student: &S,
    input_ids: &Tensor<B, 2, Int>,
    attention_mask: &Tensor<B, 2, Int>,
    at: StepAt,
) -> Result<StudentTokens<B>>
where
    B: Backend,
    S: CausalLm<B>,
{
    let logits = student
        .next_token_logits(input_ids.clone(), attention_mask.clone())
        .map_err(|e| batch_error(e, "training", at.batch))?;
    let [batch, seq, _] = logits.dims();
    let (kd_mask, labels) = next_token_targets(input_ids, attention_mask);
    let (correct, count) = next_token_correct(&logits, input_ids, attention_mask);
    if count == 0 {
        return Err(TransferError::BatchShape(format!(
            "training batch {}: no position has a real next token ({batch} sequences of {seq}); give sequences of at least two real tokens",
            at.batch
        )));
    }
    Ok(StudentTokens {
        logits,
        kd_mask,
        labels,
        correct,
        count,
    })
}

/// Position `t` of a causal LM scores token `t + 1`: the KD mask is 1 where that next token
/// is real, and the labels are the ids shifted left, [`IGNORE_INDEX`] where there is none.
fn next_token_targets<B: Backend>(
    input_ids: &Tensor<B, 2, Int>,
    attention_mask: &Tensor<B, 2, Int>,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let [batch, seq] = input_ids.dims();
    let next_real = attention_mask
        .clone()
        .slice([0..batch, 1..seq])
        .not_equal_elem(0)
        .int();
    let last = Tensor::<B, 2, Int>::zeros([batch, 1], &input_ids.device());
    let mask = Tensor::cat(vec![next_real, last], 1);
    let labels = shifted_labels(input_ids, &mask);
    (mask, labels)
}

/// The ids shifted left (position `t` labelled with token `t + 1`), [`IGNORE_INDEX`] where
/// `targets` is 0 (no next token, padding, or a token the mode does not train on).
pub(crate) fn shifted_labels<B: Backend>(
    input_ids: &Tensor<B, 2, Int>,
    targets: &Tensor<B, 2, Int>,
) -> Tensor<B, 2, Int> {
    let [rows, width] = input_ids.dims();
    let last = Tensor::<B, 2, Int>::zeros([rows, 1], &input_ids.device());
    let next = Tensor::cat(vec![input_ids.clone().slice([0..rows, 1..width]), last], 1);
    next.mask_fill(targets.clone().equal_elem(0), IGNORE_INDEX)
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
