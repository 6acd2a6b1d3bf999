//! Pooling a sequence of hidden states into one feature vector (for BERT/GPT/ViT-style
//! encoders).

use crate::backbone::Backbone;
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
}

/// How a sequence of hidden states becomes one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The first position (BERT's `[CLS]` token, ViT's class token).
    Cls,
    /// The mean over non-padding positions (sentence-transformers' mean pooling).
    Mean,
}

impl Pooling {
    /// Pools `[batch, seq, hidden]` into `[batch, hidden]`.
    pub fn pool<B: Backend>(&self, features: SequenceFeatures<B>) -> Tensor<B, 2> {
        let [batch, seq, hidden] = features.hidden.dims();
        match self {
            Pooling::Cls => features
                .hidden
                .slice([0..batch, 0..1, 0..hidden])
                .reshape([batch, hidden]),
            Pooling::Mean => {
                let keep = match features.padding_mask {
                    Some(mask) => mask.bool_not().float(),
                    None => Tensor::ones([batch, seq], &features.hidden.device()),
                };
                let keep = keep.unsqueeze_dim::<3>(2);
                let summed = (features.hidden * keep.clone()).sum_dim(1);
                // A row that is all padding would divide by zero; its sum is zero anyway.
                let count = keep.sum_dim(1).clamp_min(1e-9);
                (summed / count).reshape([batch, hidden])
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
    /// Pools `encoder`'s hidden states with `pooling`.
    pub fn new(encoder: E, pooling: Pooling) -> Self {
        Self {
            encoder,
            pooling,
            _backend: PhantomData,
        }
    }
}

impl<B: Backend, E: SequenceBackbone<B>> Backbone<B> for Pooled<B, E> {
    type Input = E::Input;

    fn features(&self, input: Self::Input) -> Tensor<B, 2> {
        self.pooling.pool(self.encoder.hidden_states(input))
    }

    fn feature_dim(&self) -> usize {
        self.encoder.hidden_dim()
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
