//! Building a student from the teacher: copying a subset of layers (DistilBERT takes every
//! other layer) and structured magnitude pruning of hidden units.

use crate::backbone::MlpBackbone;
use crate::error::{Result, TransferError};
use crate::freeze::Freeze;
use crate::head::LinearHead;
use burn::module::{AutodiffModule, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// `0, 2, 4, …` below `n`: DistilBERT's choice of teacher layers for a half-depth student.
pub fn every_other(n: usize) -> Vec<usize> {
    (0..n).step_by(2).collect()
}

/// A student on the autodiff backend from a module on the inner backend (a teacher, a
/// shallower copy of one such as `Gpt2LmHeadModel::keep_layers`'s), with every parameter
/// trainable (buffers such as BatchNorm statistics stay buffers).
///
/// Why not `M::from_inner` alone: burn keeps a parameter's trainable flag through
/// `valid()` → `from_inner`, but drops it when the inference module's parameter is
/// *cloned* in between (burn's `Param::clone` reads the flag from the inner tensor), so the
/// student of a trained teacher would come out frozen and train nothing.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::AutodiffModule;
/// use burn::nn::{Linear, LinearConfig};
/// use burn_transfer::distill::init::trainable;
/// use burn_transfer::freeze::Freeze;
///
/// type B = Autodiff<NdArray>;
/// let trained: Linear<B> = LinearConfig::new(4, 2).init(&Default::default());
/// let teacher = trained.valid();
/// let frozen = Linear::<B>::from_inner(teacher.clone());
/// assert_eq!(frozen.param_summary().trainable(), 0);
/// let student: Linear<B> = trainable(teacher.clone());
/// assert_eq!(student.param_summary().trainable(), 10);
/// ```
pub fn trainable<B, M>(inner: M::InnerModule) -> M
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    M::from_inner(inner).unfreeze()
}

/// Copies the layers at `indices` of a teacher stack (on the inner backend) into a student
/// stack on the autodiff backend, exact weights included, every parameter trainable (see
/// [`trainable`]). An error for an empty selection or an index past the end.
pub fn copy_layers<B, M>(teacher_layers: &[M::InnerModule], indices: &[usize]) -> Result<Vec<M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    if indices.is_empty() {
        return Err(TransferError::config(
            "layer indices",
            "[]",
            "pick at least one teacher layer",
        ));
    }
    indices
        .iter()
        .map(|&i| {
            teacher_layers
                .get(i)
                .map(|l| trainable::<B, M>(l.clone()))
                .ok_or(TransferError::StackTooShort {
                    prefix: "teacher layers".into(),
                    requested: i + 1,
                    available: teacher_layers.len(),
                })
        })
        .collect()
}

/// An [`MlpBackbone`] student made of the teacher backbone's layers at `indices` (their
/// widths must chain: layer k's output width is layer k+1's input width).
pub fn mlp_from_teacher<B: AutodiffBackend>(
    teacher: &MlpBackbone<B::InnerBackend>,
    indices: &[usize],
) -> Result<MlpBackbone<B>> {
    let layers: Vec<Linear<B>> = copy_layers::<B, Linear<B>>(&teacher.layers, indices)?;
    MlpBackbone::from_layers(layers)
}

/// Keeps the `keep` hidden units of `layer` (output columns) with the largest L2 norm of
/// their incoming weights, and drops the matching input rows of `next`, so that the pair
/// computes the same function restricted to the kept units. Kept units stay in their
/// original order, so `keep` = all units reproduces the pair exactly.
pub fn prune_units<B: Backend>(
    layer: &Linear<B>,
    next: &Linear<B>,
    keep: usize,
) -> Result<(Linear<B>, Linear<B>)> {
    let [_, units] = layer.weight.dims();
    let [next_in, _] = next.weight.dims();
    if next_in != units {
        return Err(TransferError::WidthMismatch {
            what: "pruned layer's outputs vs next layer's inputs".into(),
            expected: units,
            actual: next_in,
            hint: "prune a layer together with the layer that reads its output".into(),
        });
    }
    if keep == 0 || keep > units {
        return Err(TransferError::config(
            "keep",
            keep,
            &format!("keep between 1 and the layer's {units} units"),
        ));
    }
    let w = layer.weight.val();
    let norms: Vec<f32> = w
        .clone()
        .powi_scalar(2)
        .sum_dim(0)
        .to_data()
        .to_vec::<f32>()
        .map_err(|e| TransferError::BatchShape(format!("cannot read weights: {e:?}")))?;
    let mut order: Vec<usize> = (0..units).collect();
    // Largest norm first; ties broken by index so the result is deterministic.
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    let mut kept: Vec<i64> = order[..keep].iter().map(|&i| i as i64).collect();
    kept.sort_unstable();
    let device = w.device();
    let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(kept, [keep]), &device);
    let pruned = Linear {
        weight: Param::from_tensor(w.select(1, idx.clone())),
        bias: layer
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(b.val().select(0, idx.clone()))),
    };
    let next = Linear {
        weight: Param::from_tensor(next.weight.val().select(0, idx)),
        bias: next.bias.as_ref().map(|b| Param::from_tensor(b.val())),
    };
    Ok((pruned, next))
}

/// Prunes every hidden layer of an MLP backbone + linear head to `widths` (one width per
/// backbone layer; the last one is the feature width the head reads).
pub fn prune_mlp<B: Backend>(
    backbone: &MlpBackbone<B>,
    head: &LinearHead<B>,
    widths: &[usize],
) -> Result<(MlpBackbone<B>, LinearHead<B>)> {
    if widths.len() != backbone.layers.len() {
        return Err(TransferError::config(
            "widths",
            format!("{widths:?}"),
            &format!(
                "give one width per backbone layer ({})",
                backbone.layers.len()
            ),
        ));
    }
    let mut layers: Vec<Linear<B>> = backbone.layers.clone();
    let mut head_layer = head.linear.clone();
    for (i, &keep) in widths.iter().enumerate() {
        let next = layers
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| head_layer.clone());
        let (pruned, next) = prune_units(&layers[i], &next, keep)?;
        layers[i] = pruned;
        match layers.get_mut(i + 1) {
            Some(slot) => *slot = next,
            None => head_layer = next,
        }
    }
    let backbone = MlpBackbone::from_layers(layers)?;
    let head = LinearHead::from_linear(head_layer);
    Ok((backbone, head))
}
