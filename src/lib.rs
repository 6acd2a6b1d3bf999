//! # burn-transfer
//!
//! Fine-tuning and knowledge distillation on [burn](https://burn.dev), on any backend.
//!
//! - [`freeze`]: freeze and unfreeze parameters by path on any module ([`Freeze`]), a
//!   [`Frozen`] wrapper that cannot be trained, parameter summaries, gradual unfreezing;
//! - [`backbone`] and [`head`]: the [`Backbone`] and [`Head`] traits, linear and MLP heads,
//!   sequence pooling, and [`TransferModel`], a typed backbone + head pair;
//! - [`finetune`]: [`FineTuner`], the training recipe (AdamW/SGD, schedules, per-group
//!   learning rates, clipping, accumulation, validation, early stopping, checkpoints,
//!   progress, history);
//! - [`checkpoint`]: atomic saving and loading of weights;
//! - [`import`]: loading PyTorch / safetensors checkpoints, with a report and strict mode;
//! - [`conv`] and [`pool`]: burn's `Conv2d` and `MaxPool2d` with the same weights and
//!   results, trained through backward passes of their own on the CPU backends;
//! - `models` (feature `models`, on by default): BERT/MiniLM, MobileNetV2 and ResNet with
//!   PyTorch's parameter names, loading the original checkpoints;
//! - [`allocator`]: keeping freed memory for the next step when training on the CPU;
//! - [`learner`]: running a [`TransferModel`] inside burn-train's `Learner`.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::tensor::{Int, Tensor};
//! use burn_transfer::prelude::*;
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! // A "pretrained" body, frozen; a new 3-way head.
//! let body = MlpBackbone::<B>::new(&[4, 16], &device)?;
//! let model = TransferModel::with_linear_head(body, 3, &device)?.freeze_matching("backbone")?;
//! println!("{}", model.param_summary().totals_line());
//!
//! let x = Tensor::<B, 2>::ones([8, 4], &device);
//! let y = Tensor::<B, 1, Int>::zeros([8], &device);
//! let train = vec![ClassificationBatch::new(x, y)];
//! let outcome = FineTuner::<B>::new()
//!     .learning_rate(1e-2)
//!     .epochs(2)
//!     .verbose(false)
//!     .monitor(Monitor::TrainLoss)
//!     .fit_without_validation(model, &train)?;
//! assert_eq!(outcome.history.epochs.len(), 2);
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```
#![deny(missing_docs)]

pub mod adapter;
pub mod allocator;
pub mod backbone;
pub mod checkpoint;
pub mod conv;
pub mod distill;
pub mod error;
pub mod finetune;
pub mod freeze;
pub mod head;
mod host;
pub mod import;
pub mod learner;
pub mod linear;
pub mod loss;
#[cfg(feature = "models")]
pub mod models;
pub mod pool;
pub mod threads;

pub use backbone::{Backbone, MlpBackbone};
pub use error::{Result, TransferError};
pub use finetune::FineTuner;
pub use freeze::{Freeze, Frozen};
pub use head::{Head, TransferModel};

/// The names most programs need, in one import.
pub mod prelude {
    pub use crate::backbone::{Backbone, MlpBackbone};
    pub use crate::error::{Result, TransferError};
    pub use crate::finetune::{
        BatchSource, ClassificationBatch, Classifier, EarlyStopping, FineTuneSession, FineTuner,
        FitOutcome, History, LrSchedule, Monitor, OptimizerKind,
    };
    pub use crate::freeze::{Freeze, Frozen, ParamSummary, Selector, UnfreezeSchedule};
    pub use crate::head::{
        Head, LinearHead, MlpHead, MlpHeadConfig, Pooled, Pooling, SequenceBackbone,
        SequenceFeatures, TransferModel,
    };
}
