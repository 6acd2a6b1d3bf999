//! Head-only fine-tuning on cached features.
//!
//! A backbone wrapped in [`Frozen`] runs in inference mode and can never change, so for
//! inputs that are the same every epoch (no augmentation) its features are too. Computing
//! them once per sample and training the head on the cache turns every epoch after the
//! first pass into a few small matrix products: PyTorch's usual loop runs the whole backbone
//! again at every step.

use super::FineTuner;
use super::FitOutcome;
use crate::backbone::Backbone;
use crate::error::Result;
use crate::freeze::{Frozen, ToInner};
use crate::head::{Head, TransferModel};
use crate::task::{BatchSource, ClassificationBatch};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use core::marker::PhantomData;

/// The "backbone" of a head trained on cached features: its input is the features.
#[derive(Module, Debug)]
pub struct CachedFeatures<B: Backend> {
    dim: usize,
    _backend: PhantomData<B>,
}

impl<B: Backend> CachedFeatures<B> {
    /// Features of width `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            _backend: PhantomData,
        }
    }
}

impl<B: Backend> Backbone<B> for CachedFeatures<B> {
    type Input = Tensor<B, 2>;

    fn features(&self, input: Tensor<B, 2>) -> Tensor<B, 2> {
        input
    }

    fn feature_dim(&self) -> usize {
        self.dim
    }
}

/// A head on cached features: what [`FineTuner::fit_frozen_backbone`] trains.
pub type HeadOnCache<B, H> = TransferModel<B, CachedFeatures<B>, H>;

/// Features of every batch of `source`, computed once by `body` on the inner backend.
fn cache_batches<IB, Bb, X>(
    body: &Bb,
    source: &dyn BatchSource<ClassificationBatch<IB, X>>,
) -> Vec<ClassificationBatch<IB, Tensor<IB, 2>>>
where
    IB: Backend,
    Bb: Backbone<IB, Input = X>,
{
    source
        .epoch()
        .map(|(b, _)| ClassificationBatch::new(body.features(b.inputs), b.targets))
        .collect()
}

/// A validation batch for a frozen body `Bb`: its inner input, on the inner backend.
type InnerBatch<B, Bb> = ClassificationBatch<
    <B as AutodiffBackend>::InnerBackend,
    <<Bb as Backbone<B>>::Input as ToInner<B>>::Inner,
>;

impl<B: AutodiffBackend> FineTuner<B> {
    /// Trains the head of a model whose backbone is [`Frozen`], running the backbone once
    /// per training and validation sample instead of once per sample and epoch.
    ///
    /// The features of every batch are computed up front (inference mode, inner backend)
    /// and kept in memory (`samples × feature width` floats); each epoch then trains the
    /// head on them, in the order the source gave the batches. The result is the model
    /// [`FineTuner::fit`] would give on the same batches (same head, same steps), at a
    /// fraction of the cost. Use it only for data that is the same every epoch: a source
    /// that augments or reshuffles would have its first epoch reused.
    ///
    /// Validation is optional as in [`FineTuner::fit`].
    ///
    /// Checkpoint files written during the run (`checkpoint_dir`) hold the head model
    /// ([`HeadOnCache`], paths `head.…`): the backbone never changes.
    ///
    /// ```
    /// use burn::backend::{Autodiff, NdArray};
    /// use burn::prelude::*;
    /// use burn_transfer::prelude::*;
    ///
    /// type B = Autodiff<NdArray>;
    /// let device = Default::default();
    /// let body = Frozen::new(MlpBackbone::<B>::new(&[8, 16], &device)?);
    /// let model = TransferModel::with_linear_head(body, 3, &device)?;
    /// let x = Tensor::<B, 2>::ones([4, 8], &device);
    /// let y = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 0], &device);
    /// let train = vec![ClassificationBatch::new(x, y)];
    /// let valid = vec![ClassificationBatch::new(
    ///     Tensor::<NdArray, 2>::ones([2, 8], &device),
    ///     Tensor::<NdArray, 1, Int>::from_ints([0, 1], &device),
    /// )];
    /// let outcome = FineTuner::<B>::new()
    ///     .epochs(3)
    ///     .learning_rate(1e-2)
    ///     .verbose(false)
    ///     .fit_frozen_backbone(model, &train, Some(&valid))?;
    /// assert_eq!(outcome.history.epochs.len(), 3);
    /// # Ok::<(), burn_transfer::TransferError>(())
    /// ```
    pub fn fit_frozen_backbone<Bb, H>(
        &self,
        model: TransferModel<B, Frozen<Bb>, H>,
        train: &dyn BatchSource<ClassificationBatch<B, Bb::Input>>,
        valid: Option<&dyn BatchSource<InnerBatch<B, Bb>>>,
    ) -> Result<FitOutcome<TransferModel<B, Frozen<Bb>, H>>>
    where
        Bb: AutodiffModule<B> + Backbone<B>,
        Bb::Input: ToInner<B>,
        Bb::InnerModule: Backbone<B::InnerBackend, Input = <Bb::Input as ToInner<B>>::Inner>,
        H: Head<B> + AutodiffModule<B>,
        H::InnerModule: Head<B::InnerBackend>,
    {
        // Fail on a bad configuration before the (possibly long) caching pass.
        self.validate()?;
        let (backbone, head) = model.into_parts();
        // One inference-mode copy of the body for the whole pass (not one per batch).
        let body = backbone.get().valid();
        let train_cache: Vec<ClassificationBatch<B, Tensor<B, 2>>> = train
            .epoch()
            .map(|(b, _)| {
                let features = body.features(b.inputs.to_inner());
                ClassificationBatch::new(Tensor::from_inner(features), b.targets)
            })
            .collect();
        let valid_cache = valid.map(|v| cache_batches(&body, v));
        drop(body);
        let dim = backbone.feature_dim();
        let head_model = TransferModel::new(CachedFeatures::new(dim), head)?;
        let valid_cache = valid_cache.as_ref().map(|v| v as &dyn BatchSource<_>);
        let outcome = self.fit(head_model, &train_cache, valid_cache)?;
        // The widths were checked when `model` was built; the same head goes back on.
        Ok(outcome.map(|m| TransferModel::from_checked_parts(backbone.clone(), m.into_parts().1)))
    }
}
