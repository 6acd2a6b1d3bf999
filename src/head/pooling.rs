//! Pooling a sequence of hidden states into one feature vector (for BERT/GPT/ViT-style
//! encoders).

use crate::backbone::Backbone;
use crate::error::{Result, TransferError};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use burn::module::{Module, ModuleDisplay};
use burn::prelude::*;
use core::marker::PhantomData;

/// Hidden states of a sequence encoder and which positions are padding.
#[derive(Clone, Debug)]
pub struct SequenceFeatures<B: Backend> {
    /// `[batch, seq, hidden]`.
    pub hidden: Tensor<B, 3>,
    /// `[batch, seq]`, `true` at padding positions (burn's `mask_pad` convention); `None`
    /// when no position is padding.
    pub padding_mask: Option<Tensor<B, 2, Bool>>,
}

/// An encoder that produces one hidden vector per position.
pub trait SequenceBackbone<B: Backend>: Module<B> + ModuleDisplay {
    /// What the encoder reads (token ids and mask, patches, ...).
    type Input: 'static;
    /// Hidden states and padding mask.
    fn hidden_states(&self, input: Self::Input) -> SequenceFeatures<B>;
    /// Width of each hidden vector.
    fn hidden_dim(&self) -> usize;

    /// Whether the encoder has a pooler of its own ([`Pooling::Pooler`]); none by default.
    fn has_pooler(&self) -> bool {
        false
    }

    /// The encoder's own pooler (BERT's `tanh(dense(·))`) over the first position's hidden
    /// state `[batch, hidden]`; `None` when it has none (the default).
    fn pool_first(&self, first: Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        let _ = first;
        None
    }

    /// The encoder with its pooler's parameters frozen (a pooling that does not use them
    /// must not count them as trainable); unchanged by default.
    fn freeze_pooler(self) -> Self
    where
        Self: Sized,
    {
        self
    }

    /// The intermediate outputs this encoder exposes for feature distillation; none by
    /// default.
    fn layer_spec(&self) -> LayerSpec {
        LayerSpec::default()
    }

    /// The hidden states together with the intermediate outputs `request` asks for; by
    /// default the hidden states and nothing else.
    fn hidden_states_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (SequenceFeatures<B>, LayerOutputs<B>) {
        let _ = request;
        (self.hidden_states(input), LayerOutputs::default())
    }

    /// Sentence embeddings as sentence-transformers computes them with
    /// `normalize_embeddings=True`: the mean over the real tokens, divided by its L2 norm
    /// (`[batch, hidden]`, rows of length 1; [`Pooling::MeanNormalized`]).
    fn sentence_embeddings(&self, input: Self::Input) -> Tensor<B, 2> {
        Pooling::MeanNormalized.pool(self.hidden_states(input))
    }
}

/// How a sequence of hidden states becomes one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first position (BERT's `[CLS]` token, ViT's class token).
    Cls,
    /// The mean over non-padding positions (sentence-transformers' mean pooling).
    Mean,
    /// [`Mean`](Self::Mean) divided by its L2 norm (sentence-transformers' `Normalize`
    /// after mean pooling: the embedding cosine similarity is read from).
    MeanNormalized,
    /// The encoder's own pooler over the first position: BERT's `tanh(dense([CLS]))`, what
    /// `BertForSequenceClassification` classifies. Only through [`Pooled`], and only for an
    /// encoder that has one.
    Pooler,
}

impl Pooling {
    /// Pools `[batch, seq, hidden]` into `[batch, hidden]`. [`Pooling::Pooler`] needs the
    /// encoder's weights: here (without them) it takes the first position, as
    /// [`Pooling::Cls`]; [`Pooled`] applies the pooler.
    pub fn pool<B: Backend>(&self, features: SequenceFeatures<B>) -> Tensor<B, 2> {
        let [batch, seq, hidden] = features.hidden.dims();
        match self {
            Pooling::Cls | Pooling::Pooler => features
                .hidden
                .slice([0..batch, 0..1, 0..hidden])
                .reshape([batch, hidden]),
            Pooling::MeanNormalized => {
                let mean = Pooling::Mean.pool(features);
                // torch's `F.normalize`: x / max(‖x‖, 1e-12).
                let norm = mean
                    .clone()
                    .powi_scalar(2)
                    .sum_dim(1)
                    .sqrt()
                    .clamp_min(1e-12);
                crate::exact::div(mean, norm)
            }
            Pooling::Mean => {
                let keep = match features.padding_mask {
                    Some(mask) => mask.bool_not().float(),
                    None => Tensor::ones([batch, seq], &features.hidden.device()),
                };
                let keep = keep.unsqueeze_dim::<3>(2);
                let summed = (features.hidden * keep.clone()).sum_dim(1);
                // A row that is all padding would divide by zero; its sum is zero anyway.
                let count = keep.sum_dim(1).clamp_min(1e-9);
                crate::exact::div(summed, count).reshape([batch, hidden])
            }
        }
    }
}

/// A sequence encoder followed by pooling: a [`Backbone`] ready for any head.
#[derive(Module, Debug)]
pub struct Pooled<B: Backend, E> {
    /// The encoder.
    pub encoder: E,
    pooling: Pooling,
    _backend: PhantomData<B>,
}

impl<B: Backend, E: SequenceBackbone<B>> Pooled<B, E> {
    /// Pools `encoder`'s hidden states with `pooling`. Unless the pooling is
    /// [`Pooling::Pooler`], the encoder's pooler (if any) is frozen: it takes no part in the
    /// features, so it must not count as trainable. An error when [`Pooling::Pooler`] is
    /// asked of an encoder without a pooler.
    pub fn new(encoder: E, pooling: Pooling) -> Result<Self> {
        let encoder = match pooling {
            Pooling::Pooler if !encoder.has_pooler() => {
                return Err(TransferError::config(
                    "pooling",
                    "Pooler",
                    "this encoder has no pooler of its own (e.g. a BERT built without one, or a checkpoint saved without `pooler.*`); pool with Cls, Mean or MeanNormalized instead",
                ));
            }
            Pooling::Pooler => encoder,
            _ => encoder.freeze_pooler(),
        };
        Ok(Self {
            encoder,
            pooling,
            _backend: PhantomData,
        })
    }

    /// The pooling.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }
}

impl<B: Backend, E: SequenceBackbone<B>> Backbone<B> for Pooled<B, E> {
    type Input = E::Input;

    fn features(&self, input: Self::Input) -> Tensor<B, 2> {
        self.pool(self.encoder.hidden_states(input))
    }

    fn feature_dim(&self) -> usize {
        self.encoder.hidden_dim()
    }

    fn layer_spec(&self) -> LayerSpec {
        self.encoder.layer_spec()
    }

    fn features_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let (hidden, layers) = self.encoder.hidden_states_with_layers(input, request);
        (self.pool(hidden), layers)
    }
}

impl<B: Backend, E: SequenceBackbone<B>> Pooled<B, E> {
    fn pool(&self, hidden: SequenceFeatures<B>) -> Tensor<B, 2> {
        let pooled = self.pooling.pool(hidden);
        match self.pooling {
            // `new` checked that the pooler exists; an encoder swapped in since without one
            // gets the first position, as `Pooling::pool` gives it.
            Pooling::Pooler => match self.encoder.pool_first(pooled.clone()) {
                Some(out) => out,
                None => pooled,
            },
            _ => pooled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn cls_takes_first_position_and_mean_skips_padding() {
        let device = Default::default();
        // batch 2, seq 3, hidden 2
        let hidden = Tensor::<NdArray, 3>::from_floats(
            [
                [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]],
            ],
            &device,
        );
        let mask = Tensor::<NdArray, 2, Bool>::from_bool(
            TensorData::from([[false, false, true], [false, false, false]]),
            &device,
        );
        let cls = Pooling::Cls.pool(SequenceFeatures {
            hidden: hidden.clone(),
            padding_mask: Some(mask.clone()),
        });
        assert_eq!(
            cls.to_data().to_vec::<f32>().unwrap(),
            vec![1.0, 2.0, 5.0, 6.0]
        );
        let mean = Pooling::Mean.pool(SequenceFeatures {
            hidden,
            padding_mask: Some(mask),
        });
        assert_eq!(
            mean.to_data().to_vec::<f32>().unwrap(),
            vec![2.0, 3.0, 7.0, 8.0]
        );
    }
}
