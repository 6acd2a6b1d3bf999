//! What a frozen BatchNorm does in training.

/// How a BatchNorm whose scale and shift are frozen behaves while the rest of the model
/// trains (in this crate's CNNs: [`ResNet`](crate::models::ResNet) and
/// [`MobileNetV2`](crate::models::MobileNetV2), set with their `with_frozen_norm`).
///
/// A BatchNorm computes differently in training (each batch's statistics, running ones
/// updated) and in inference (the running statistics). Freezing its parameters alone does
/// not change that in burn or in PyTorch: a "frozen" layer then still normalises by the
/// statistics of small fine-tuning batches — from another domain — and its running
/// statistics drift, so the features the frozen layers were trained to give change under
/// the layers being trained, and the model evaluates on statistics it was not trained
/// with. Keras decided that a layer with `trainable = False` runs in inference mode;
/// torchvision's detection models replace BatchNorm with `FrozenBatchNorm2d` for the same
/// reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FrozenNorm {
    /// Normalise with the running statistics and leave them unchanged: the frozen layer
    /// computes what it computes in inference (Keras's `trainable = False`,
    /// `FrozenBatchNorm2d`). The default.
    #[default]
    RunningStatistics,
    /// Normalise with the batch's statistics and update the running ones, as a PyTorch
    /// model in `train()` mode does whatever `requires_grad` says (PEFT's LoRA on a CNN
    /// trains this way).
    BatchStatistics,
}
