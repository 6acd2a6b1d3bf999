//! # burn-transfer
//!
//! Fine-tuning and knowledge distillation on [burn](https://burn.dev), on any backend.
//!
//! - [`freeze`]: freeze and unfreeze parameters by path on any module
//!   ([`Freeze`](freeze::Freeze)), a [`Frozen`](freeze::Frozen) wrapper that cannot be
//!   trained, parameter summaries, gradual unfreezing;
//! - [`backbone`], [`head`] and [`task`]: the [`Backbone`](backbone::Backbone) and
//!   [`Head`](head::Head) traits, linear and MLP heads, sequence pooling,
//!   [`TransferModel`](head::TransferModel) (a typed backbone + head pair), and the contracts
//!   between models, data and the training loop;
//! - [`finetune`]: [`FineTuner`](finetune::FineTuner), the training recipe (AdamW/SGD,
//!   schedules, per-group learning rates, clipping, accumulation, validation, early stopping,
//!   checkpoints, exact resume, history);
//! - [`distill`] and [`loss`]: a [`Distiller`](distill::Distiller) whose teacher cannot be
//!   trained (on the student's backend, or another one through
//!   [`TeacherOn`](distill::TeacherOn)), logit, feature and layer KD, token- and
//!   sequence-level KD for language models, a sparse top-k teacher cache on disk, and the
//!   distillation losses;
//! - [`exact`]: `log_softmax`, `logsumexp` with exact, reproducible gradients on every
//!   backend (burn-ndarray 0.21's reciprocal is an estimate), the base of every loss here;
//! - [`layer_outputs`]: the hidden states, attention maps and stage maps a model exposes for
//!   feature distillation;
//! - [`cross_backend`]: inputs and outputs copied between backends and devices;
//! - [`adapter`]: LoRA and bottleneck adapters, PEFT's file format;
//! - [`checkpoint`]: atomic saving and loading of weights;
//! - [`import`]: loading PyTorch / safetensors checkpoints, with a report and strict mode;
//! - `models` (feature `models`, on by default): BERT/MiniLM, multilingual-e5, GPT-2, ViT,
//!   the Whisper encoder, MobileNetV2 and ResNet with PyTorch's parameter names, loading the
//!   original checkpoints;
//! - [`kernels`]: the CPU kernels (feature `cpu-kernels`, on by default) that train burn's
//!   layers fast on ndarray and Flex, and the two process settings for CPU training;
//! - [`learner`]: running a [`TransferModel`](head::TransferModel) inside burn-train's
//!   `Learner`.
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
//!     .fit(model, &train, None)?;
//! assert_eq!(outcome.history.epochs.len(), 2);
//! # Ok::<(), burn_transfer::TransferError>(())
//! ```
#![deny(missing_docs)]

pub mod adapter;
pub mod backbone;
pub mod checkpoint;
pub mod cross_backend;
pub mod distill;
pub mod error;
pub mod exact;
pub mod finetune;
pub mod freeze;
pub mod generation;
mod guard;
pub mod head;
pub mod import;
pub mod kernels;
pub mod layer_outputs;
pub mod learner;
pub mod loss;
#[cfg(feature = "models")]
pub mod models;
pub mod objective;
pub mod task;

pub use error::{Result, TransferError};

/// The names most programs need, in one import: fine-tuning, freezing, heads, adapters,
/// distillation and its losses, saving and loading, importing PyTorch weights.
pub mod prelude {
    pub use crate::adapter::{BottleneckConfig, LoraConfig, LoraModel};
    pub use crate::backbone::{Backbone, MlpBackbone};
    pub use crate::checkpoint::{load_model, load_trainable, save_model, save_trainable};
    pub use crate::distill::Distiller;
    pub use crate::error::{Result, TransferError};
    pub use crate::finetune::{
        EarlyStopping, FineTuneSession, FineTuner, FitOutcome, History, LrSchedule, Monitor,
        OptimizerKind, ValidBatch,
    };
    pub use crate::freeze::{Freeze, Frozen, FrozenNorm, ParamSummary, Selector, UnfreezeSchedule};
    pub use crate::head::{
        Head, LinearHead, MlpHead, MlpHeadConfig, Pooled, Pooling, SequenceBackbone,
        SequenceFeatures, TransferModel,
    };
    pub use crate::import::{ImportOptions, ImportReport, import_weights};
    pub use crate::loss::{DistillLoss, DistillLossConfig, DistillTargets};
    pub use crate::objective::{CrossEntropy, NextTokenLoss, Objective, StepAt, StepOutput};
    pub use crate::task::{BatchSource, CausalLm, ClassificationBatch, Classifier, TokenBatch};
}

// README's snippets are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeSnippets;
