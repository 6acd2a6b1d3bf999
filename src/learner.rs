//! Running a [`TransferModel`] inside burn-train's `Learner`.
//!
//! [`FineTuner`](crate::finetune::FineTuner) is this crate's own loop (per-group learning rates,
//! gradual unfreezing, frozen parts on the inner backend). When you would rather use
//! burn-train's `Learner` — its metrics, TUI, checkpointer, multi-device strategies — a
//! [`TransferModel`] plugs straight in: it implements `TrainStep` (on an autodiff backend)
//! and `InferenceStep` (on any backend) with [`ClassificationBatch`] items and
//! `ClassificationOutput`, so `AccuracyMetric` and `LossMetric` work unchanged. Freezing
//! carries over: frozen parameters get no gradient, so the Learner's optimizer leaves them be.
//!
//! ```no_run
//! # use burn::backend::{Autodiff, NdArray};
//! # use burn::data::dataloader::DataLoader;
//! # use burn::optim::AdamWConfig;
//! # use burn::train::{Learner, SupervisedTraining, metric::{AccuracyMetric, LossMetric}};
//! # use burn_transfer::prelude::*;
//! # use std::sync::Arc;
//! # type B = Autodiff<NdArray>;
//! # type X<B> = burn::tensor::Tensor<B, 2>;
//! # fn go(model: TransferModel<B, MlpBackbone<B>, LinearHead<B>>,
//! #       train: Arc<dyn DataLoader<B, ClassificationBatch<B, X<B>>>>,
//! #       valid: Arc<dyn DataLoader<NdArray, ClassificationBatch<NdArray, X<NdArray>>>>) {
//! let model = model.freeze_matching("backbone").unwrap();
//! let result = SupervisedTraining::new("runs/learner", train, valid)
//!     .metrics((AccuracyMetric::new(), LossMetric::new()))
//!     .num_epochs(3)
//!     .launch(Learner::new(model, AdamWConfig::new().init(), 1e-3));
//! let trained = result.model; // TransferModel on the inner backend
//! # }
//! ```

use crate::backbone::Backbone;
use crate::head::{Head, TransferModel};
use crate::loss::functional::cross_entropy;
use crate::task::ClassificationBatch;
use burn::module::{AutodiffModule, ModuleDisplay};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

fn classify<B: Backend, Bb: Backbone<B>, H: Head<B>>(
    model: &TransferModel<B, Bb, H>,
    batch: ClassificationBatch<B, Bb::Input>,
) -> ClassificationOutput<B> {
    let output = model.forward(batch.inputs);
    let loss = cross_entropy(output.clone(), batch.targets.clone(), 0.0);
    ClassificationOutput::new(loss, output, batch.targets)
}

impl<B, Bb, H> TrainStep for TransferModel<B, Bb, H>
where
    B: AutodiffBackend,
    Bb: Backbone<B> + AutodiffModule<B>,
    Bb::Input: Send,
    H: Head<B> + AutodiffModule<B>,
    Bb::InnerModule: ModuleDisplay,
    H::InnerModule: ModuleDisplay,
{
    type Input = ClassificationBatch<B, Bb::Input>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> TrainOutput<Self::Output> {
        let out = classify(self, batch);
        TrainOutput::new(self, out.loss.backward(), out)
    }
}

impl<B, Bb, H> InferenceStep for TransferModel<B, Bb, H>
where
    B: Backend,
    Bb: Backbone<B>,
    Bb::Input: Send,
    H: Head<B>,
{
    type Input = ClassificationBatch<B, Bb::Input>;
    type Output = ClassificationOutput<B>;

    fn step(&self, batch: Self::Input) -> Self::Output {
        classify(self, batch)
    }
}
