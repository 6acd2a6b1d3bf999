//! A backbone with a head on top: the model fine-tuning trains.

use super::{Head, LinearHead};
use crate::backbone::Backbone;
use crate::error::{Result, TransferError};
use burn::module::Module;
use burn::prelude::*;
use core::marker::PhantomData;

/// A backbone and a head, checked to fit together.
///
/// Parameter paths are `backbone.…` and `head.…`, so `freeze_matching("backbone")` freezes
/// the body and a learning-rate group on `"head"` speeds up the new layer.
///
/// ```
/// use burn::backend::NdArray;
/// use burn_transfer::backbone::MlpBackbone;
/// use burn_transfer::head::{LinearHead, TransferModel};
///
/// let device = Default::default();
/// let body = MlpBackbone::<NdArray>::new(&[64, 32], &device).unwrap();
/// let model = TransferModel::with_linear_head(body, 1000, &device).unwrap();
/// // The seed's operation: the 1000-way head becomes a 5-way head, nothing else changes.
/// let model = model.replace_linear_head(5, &device).unwrap();
/// assert_eq!(model.num_outputs(), 5);
/// // A head of the wrong width is refused with both widths named.
/// let wrong = LinearHead::new(48, 5, &device).unwrap();
/// let err = model.replace_head(wrong).unwrap_err().to_string();
/// assert!(err.contains("32") && err.contains("48"), "{err}");
/// ```
#[derive(Module, Debug)]
pub struct TransferModel<B: Backend, Bb, H> {
    /// The (usually pretrained) body.
    pub backbone: Bb,
    /// The task head.
    pub head: H,
    _backend: PhantomData<B>,
}

impl<B: Backend, Bb: Backbone<B>, H: Head<B>> TransferModel<B, Bb, H> {
    /// Puts `head` on `backbone`; an error if the head's input width is not the backbone's
    /// feature width.
    pub fn new(backbone: Bb, head: H) -> Result<Self> {
        check_widths(backbone.feature_dim(), head.input_dim())?;
        crate::freeze::materialize(&backbone);
        crate::freeze::materialize(&head);
        Ok(Self {
            backbone,
            head,
            _backend: PhantomData,
        })
    }

    /// Logits (or whatever the head outputs) for a batch.
    pub fn forward(&self, input: Bb::Input) -> Tensor<B, 2> {
        self.head.forward(self.backbone.features(input))
    }

    /// The head's output width.
    pub fn num_outputs(&self) -> usize {
        self.head.num_outputs()
    }

    /// Swaps the head for another (of any type), keeping the backbone as it is.
    pub fn replace_head<H2: Head<B>>(self, head: H2) -> Result<TransferModel<B, Bb, H2>> {
        TransferModel::new(self.backbone, head)
    }

    /// Swaps the head for a fresh linear one with `num_outputs` outputs: ResNet-50's
    /// `fc: Linear(2048, 1000)` → `Linear(2048, 5)` in one call.
    pub fn replace_linear_head(
        self,
        num_outputs: usize,
        device: &B::Device,
    ) -> Result<TransferModel<B, Bb, LinearHead<B>>> {
        let head = LinearHead::new(self.backbone.feature_dim(), num_outputs, device)?;
        TransferModel::new(self.backbone, head)
    }

    /// Rebuilds a model from parts that came out of one whose widths were checked.
    pub(crate) fn from_checked_parts(backbone: Bb, head: H) -> Self {
        Self {
            backbone,
            head,
            _backend: PhantomData,
        }
    }

    /// The parts, for reuse elsewhere.
    pub fn into_parts(self) -> (Bb, H) {
        (self.backbone, self.head)
    }

    /// Applies `f` to the backbone (e.g. wrapping it in [`Frozen`](crate::freeze::Frozen)),
    /// checking again that the head fits.
    pub fn map_backbone<Bb2: Backbone<B>>(
        self,
        f: impl FnOnce(Bb) -> Bb2,
    ) -> Result<TransferModel<B, Bb2, H>> {
        TransferModel::new(f(self.backbone), self.head)
    }
}

impl<B: Backend, Bb: Backbone<B>> TransferModel<B, Bb, LinearHead<B>> {
    /// `backbone` with a fresh linear head of `num_outputs` outputs.
    pub fn with_linear_head(backbone: Bb, num_outputs: usize, device: &B::Device) -> Result<Self> {
        let head = LinearHead::new(backbone.feature_dim(), num_outputs, device)?;
        Self::new(backbone, head)
    }
}

fn check_widths(features: usize, head_input: usize) -> Result<()> {
    if features != head_input {
        return Err(TransferError::WidthMismatch {
            what: "head input width vs backbone feature width".into(),
            expected: features,
            actual: head_input,
            hint: format!(
                "the backbone produces {features} features but the head reads {head_input}; build the head with input width {features}"
            ),
        });
    }
    Ok(())
}
