//! Classification: cross-entropy on class labels, and the checks every objective on a
//! [`Classifier`] wants (a batch that does not fit is an error naming it, not a panic).

use super::{EvalStats, Objective, StepAt, StepOutput, mean_over};
use crate::error::{Result, TransferError};
use crate::loss::functional::cross_entropy;
use crate::task::{BatchSource, ClassificationBatch, Classifier};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

type InnerInput<B, M> = <<M as AutodiffModule<B>>::InnerModule as Classifier<
    <B as AutodiffBackend>::InnerBackend,
>>::Input;

/// Validation batches for model `M`: on the inner backend, with the inner model's input.
pub type ValidBatch<B, M> =
    ClassificationBatch<<B as AutodiffBackend>::InnerBackend, InnerInput<B, M>>;

/// Cross-entropy on class labels, with optional label smoothing in training (validation
/// reports the plain cross-entropy, comparable across runs): what
/// [`FineTuner::fit`](crate::finetune::FineTuner::fit) trains a [`Classifier`] with.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropy {
    /// Label smoothing ε in training (`None`: hard labels).
    pub smoothing: Option<f32>,
}

impl CrossEntropy {
    /// Hard labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Label smoothing ε in training.
    pub fn with_smoothing(epsilon: f32) -> Self {
        Self {
            smoothing: Some(epsilon),
        }
    }
}

pub(crate) fn classification_step<B: Backend, M: Classifier<B>>(
    model: &M,
    batch: ClassificationBatch<B, M::Input>,
    smoothing: Option<f32>,
    at: StepAt,
    split: &str,
) -> Result<StepOutput<B>> {
    if batch.targets.dims()[0] == 0 {
        return Err(TransferError::BatchShape(format!(
            "{split} batch {} has no rows; a data source must not yield empty batches (check the batcher's filtering and the data set length)",
            at.batch
        )));
    }
    let logits = checked_logits(model, batch.inputs, at.batch, split)?;
    let correct = count_correct(&logits, &batch.targets, at.batch)?;
    let count = logits.dims()[0];
    if let Some(e) = smoothing
        && !(0.0..1.0).contains(&e)
    {
        return Err(TransferError::config(
            "CrossEntropy::smoothing",
            e,
            "must be in [0, 1)",
        ));
    }
    // The crate's cross-entropy, not burn's `CrossEntropyLoss`: its `log_softmax` has an
    // exact gradient on ndarray (see `crate::exact`).
    let loss = cross_entropy(logits, batch.targets, smoothing.unwrap_or(0.0));
    Ok(StepOutput::new(loss, correct, count))
}

impl<B, M> Objective<B, M> for CrossEntropy
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B>,
    M::InnerModule: Classifier<B::InnerBackend>,
{
    type Batch = ClassificationBatch<B, M::Input>;
    type ValidBatch = ValidBatch<B, M>;

    fn train_step(&self, model: &M, batch: Self::Batch, at: StepAt) -> Result<StepOutput<B>> {
        classification_step(model, batch, self.smoothing, at, "training")
    }

    fn valid_step(
        &self,
        model: &M::InnerModule,
        batch: Self::ValidBatch,
        at: StepAt,
    ) -> Result<StepOutput<B::InnerBackend>> {
        classification_step(model, batch, None, at, "validation")
    }
}

/// Plain cross-entropy and accuracy of a classifier over a data source, on any backend: pass
/// `model.valid()` and inner-backend batches to measure in inference mode.
pub fn evaluate<B: Backend, M: Classifier<B>>(
    model: &M,
    data: &dyn BatchSource<ClassificationBatch<B, M::Input>>,
) -> Result<EvalStats> {
    mean_over(data.epoch().enumerate().map(|(i, (batch, _))| {
        let at = StepAt {
            epoch: 0,
            batch: i + 1,
        };
        classification_step(model, batch, None, at, "validation")
    }))
}

/// The model's logits for batch number `batch` of `split` ("training", "validation"): its
/// [`Classifier::check_input`] first, for a precise message, then the forward with a panic
/// inside burn (an input of another width, rank or length) caught, not printed, and
/// returned as an error naming the batch.
pub fn checked_logits<B: Backend, M: Classifier<B>>(
    model: &M,
    inputs: M::Input,
    batch: usize,
    split: &str,
) -> Result<Tensor<B, 2>> {
    model
        .check_input(&inputs)
        .map_err(|e| super::batch_error(e, split, batch))?;
    crate::guard::quietly(|| model.logits(inputs)).map_err(|panic| {
        TransferError::BatchShape(format!(
            "{split} batch {batch} does not fit the model ({panic}); check the inputs' shape against the model's input (feature width, image size, sequence length)"
        ))
    })
}

/// Checks logits `[rows, classes]` against labels `[rows]` (same rows, every label in
/// `0..classes`) and counts the correct top-1 predictions; errors name batch `batch`.
pub fn count_correct<B: Backend>(
    logits: &Tensor<B, 2>,
    labels: &Tensor<B, 1, Int>,
    batch: usize,
) -> Result<usize> {
    let [rows, classes] = logits.dims();
    let [n] = labels.dims();
    if rows != n {
        return Err(TransferError::BatchShape(format!(
            "batch {batch}: the model gave {rows} rows of logits for {n} labels; inputs and targets must have the same batch size"
        )));
    }
    let labels = labels.to_data();
    let predictions = logits.clone().argmax(1).to_data();
    let mut correct = 0;
    for (label, pred) in labels.iter::<i64>().zip(predictions.iter::<i64>()) {
        if label < 0 || label as usize >= classes {
            return Err(TransferError::LabelOutOfRange {
                label,
                batch,
                num_classes: classes,
                max: classes.saturating_sub(1),
            });
        }
        correct += usize::from(label == pred);
    }
    Ok(correct)
}
