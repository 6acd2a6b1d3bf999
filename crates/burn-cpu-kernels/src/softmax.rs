//! Attention's softmax as one operation on the CPU backends: `softmax(scores + bias, −1)`
//! over the keys of `[batch, heads, queries, keys]` scores, with an optional additive bias per
//! key of each sample (`[batch, keys]`: 0 where a key may be attended, a large negative
//! number at padding, as BERT's extended attention mask).
//!
//! Why: burn's softmax is five tensor operations (max, subtract, exp, sum, divide) and the
//! mask's broadcast addition a sixth, each recorded by autodiff with its own backward, over
//! the largest tensor of a transformer layer (`batch·heads·seq²` values). Here the forward
//! pass is one read and one write per score and the backward pass, from the probabilities
//! `y` themselves, `dx = y ⊙ (dy − Σ dy ⊙ y)` per row, one more.
//!
//! The bias gets no gradient (a mask is not trained). Other backends and element types get
//! burn's operations.

use crate::cpu::route::{HostBackend, HostOp, record, route};
use crate::cpu::tensor::{from_host, host_values, primitive};
use crate::cpu::{math, vector_isa};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use rayon::prelude::*;

/// Elements per parallel task.
const TASK_ELEMENTS: usize = 32 * 1024;

/// `softmax(scores + key_bias[:, None, None, :], 3)`: the same values (to float rounding)
/// and gradient for `scores` as burn's operations.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use burn::tensor::activation::softmax;
///
/// let device = Default::default();
/// let scores = Tensor::<NdArray, 4>::from_floats([[[[1.0, 2.0, 3.0]]]], &device);
/// let padding = Tensor::<NdArray, 2>::from_floats([[0.0, 0.0, -1e4]], &device);
/// let p = burn_cpu_kernels::softmax::softmax_with_key_bias(scores.clone(), Some(padding.clone()));
/// let expected = softmax(scores + padding.reshape([1, 1, 1, 3]), 3);
/// p.into_data().assert_approx_eq::<f32>(&expected.into_data(), Default::default());
/// ```
pub fn softmax_with_key_bias<B: Backend>(
    scores: Tensor<B, 4>,
    key_bias: Option<Tensor<B, 2>>,
) -> Tensor<B, 4> {
    let [batch, heads, queries, keys] = scores.dims();
    let fits = keys > 0
        && scores.dtype() == DType::F32
        && key_bias
            .as_ref()
            .is_none_or(|b| b.dims() == [batch, keys] && b.dtype() == DType::F32);
    if !fits {
        return reference(scores, key_bias);
    }
    let shape = SoftmaxShape {
        dims: [batch, heads, queries, keys],
        rows_per_sample: heads * queries,
        keys,
    };
    match route(&shape, (scores, key_bias)) {
        Ok(p) => p,
        Err((scores, key_bias)) => reference(scores, key_bias),
    }
}

/// burn's operations for the same thing.
fn reference<B: Backend>(scores: Tensor<B, 4>, key_bias: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
    let scores = match key_bias {
        Some(bias) => {
            let [batch, keys] = bias.dims();
            scores + bias.reshape([batch, 1, 1, keys])
        }
        None => scores,
    };
    softmax(scores, 3)
}

/// The sizes of one call: `[batch, heads, queries, keys]`, as samples of
/// `rows_per_sample` rows of `keys` scores.
#[derive(Clone, Copy, Debug)]
struct SoftmaxShape {
    dims: [usize; 4],
    rows_per_sample: usize,
    keys: usize,
}

type Operands<B> = (Tensor<B, 4>, Option<Tensor<B, 2>>);

impl SoftmaxShape {
    fn rows_per_task(&self) -> usize {
        (TASK_ELEMENTS / self.keys).max(1)
    }

    fn forward(&self, scores: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let keys = self.keys;
        let rows_per_task = self.rows_per_task();
        let mut out = vec![0.0f32; scores.len()];
        out.par_chunks_mut(rows_per_task * keys)
            .zip(scores.par_chunks(rows_per_task * keys))
            .enumerate()
            .for_each(|(task, (out, scores))| {
                let first_row = task * rows_per_task;
                for (i, (y, x)) in out.chunks_mut(keys).zip(scores.chunks(keys)).enumerate() {
                    let sample = (first_row + i) / self.rows_per_sample;
                    let bias = bias.map(|b| &b[sample * keys..(sample + 1) * keys]);
                    softmax_row(x, bias, y);
                }
            });
        out
    }

    fn backward(&self, y: &[f32], dy: &[f32]) -> Vec<f32> {
        let keys = self.keys;
        let block = self.rows_per_task() * keys;
        let mut dx = vec![0.0f32; y.len()];
        dx.par_chunks_mut(block)
            .zip(y.par_chunks(block).zip(dy.par_chunks(block)))
            .for_each(|(dx, (y, dy))| {
                for ((dx, y), dy) in dx.chunks_mut(keys).zip(y.chunks(keys)).zip(dy.chunks(keys)) {
                    let dot = y
                        .iter()
                        .zip(dy)
                        .map(|(&y, &d)| y as f64 * d as f64)
                        .sum::<f64>() as f32;
                    for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                        *dx = y * (dy - dot);
                    }
                }
            });
        dx
    }
}

/// `softmax(x + bias)` of one row into `y`.
fn softmax_row(x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    match bias {
        Some(b) => y
            .iter_mut()
            .zip(x.iter().zip(b))
            .for_each(|(y, (x, b))| *y = x + b),
        None => y.copy_from_slice(x),
    }
    let max = y.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum = exp_shifted(y, max);
    let inverse = 1.0 / sum;
    y.iter_mut().for_each(|v| *v *= inverse);
}

impl HostOp for SoftmaxShape {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = Tensor<B, 4>;

    fn infers_on(&self, backend: HostBackend) -> bool {
        // Flex's own softmax is one fused pass; the mask's addition is not.
        matches!(backend, HostBackend::NdArray | HostBackend::Flex)
    }

    fn inference<B: Backend>(&self, (scores, bias): Operands<B>) -> Tensor<B, 4> {
        let device = scores.device();
        let scores = primitive(scores);
        let bias = bias.map(primitive);
        let y = self.forward(
            &host_values::<B, 4>(&scores),
            bias.as_ref().map(host_values::<B, 2>).as_deref(),
        );
        from_host(y, self.dims, &device)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (scores, bias): Operands<Autodiff<B, C>>,
    ) -> Tensor<Autodiff<B, C>, 4> {
        let device: B::Device = scores.device();
        let scores = primitive(scores);
        // The mask is a constant: its values only.
        let bias = bias.map(|b| primitive(b).primitive);
        let y = self.forward(
            &host_values::<B, 4>(&scores.primitive),
            bias.as_ref().map(host_values::<B, 2>).as_deref(),
        );
        let y = primitive(from_host::<B, 4>(y, self.dims, &device));
        let saved = SoftmaxSaved::<B> {
            probabilities: y.clone(),
            shape: *self,
            device,
        };
        let output = record(SoftmaxBackward.prepare::<C>([scores.node]), saved, y);
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

/// The probabilities (shared with the output, not copied) and the call's shape.
#[derive(Clone)]
struct SoftmaxSaved<B: Backend> {
    probabilities: B::FloatTensorPrimitive,
    shape: SoftmaxShape,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for SoftmaxSaved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftmaxSaved")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: Backend> Backward<B, 1> for SoftmaxBackward {
    type State = SoftmaxSaved<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let SoftmaxSaved {
            probabilities,
            shape,
            device,
        } = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let [Some(parent)] = ops.parents else {
            return;
        };
        let dx = shape.backward(
            &host_values::<B, 4>(&probabilities),
            &host_values::<B, 4>(&dy),
        );
        grads.register::<B>(
            parent.id,
            primitive(from_host::<B, 4>(dx, shape.dims, &device)),
        );
    }
}

/// `v ← e^(v − max)` over a row, and the row's sum: one vectorised pass ([`math::exp`]),
/// the sum in 16 lanes.
pub(crate) fn exp_shifted(row: &mut [f32], max: f32) -> f32 {
    vector_isa::widest(
        #[inline(always)]
        || {
            row.iter_mut().for_each(|v| *v = math::exp(*v - max));
            let (chunks, tail) = row.as_chunks::<16>();
            let mut lanes = [0.0f32; 16];
            for chunk in chunks {
                for (l, v) in lanes.iter_mut().zip(chunk) {
                    *l += v;
                }
            }
            lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    fn close<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(4e-5));
    }

    fn random<B: Backend, const D: usize>(dims: [usize; D], std: f64) -> Tensor<B, D> {
        Tensor::random(dims, Distribution::Normal(0.0, std), &Default::default())
    }

    type A64 = Autodiff<NdArray<f64>>;

    fn in_f64<const D: usize>(t: Tensor<NdArray, D>) -> Tensor<A64, D> {
        Tensor::from_data(
            t.into_data().convert::<f64>(),
            (&Default::default(), burn::tensor::DType::F64),
        )
    }

    /// Values and the scores' gradient against burn's softmax computed in `f64` (so that
    /// the comparison measures this kernel, not `f32` rounding), with a padding mask that
    /// differs per sample and without one, over more rows than one task.
    #[test]
    fn training_matches_burns_softmax() {
        let device = Default::default();
        let mask = Tensor::<NdArray, 2>::from_floats(
            [
                [0.0; 33],
                {
                    let mut m = [0.0; 33];
                    m[20..].iter_mut().for_each(|v| *v = -1e4);
                    m
                },
                [-3.0; 33],
            ],
            &device,
        );
        for bias in [Some(mask), None] {
            let x = random::<NdArray, 4>([3, 5, 41, 33], 3.0);
            let dy = random::<NdArray, 4>([3, 5, 41, 33], 1.0);
            let (x64, dy64) = (in_f64(x.clone()).require_grad(), in_f64(dy.clone()));
            let x = Tensor::<A, 4>::from_inner(x).require_grad();
            let ours = softmax_with_key_bias(x.clone(), bias.clone().map(Tensor::from_inner));
            let expected = reference(x64.clone(), bias.map(in_f64));
            let accurate = |a: Tensor<NdArray, 4>, b: Tensor<NdArray<f64>, 4>| {
                a.into_data().assert_approx_eq::<f32>(
                    &b.into_data().convert::<f32>(),
                    Tolerance::rel_abs(1e-5, 1e-6),
                )
            };
            accurate(ours.clone().inner(), expected.clone().inner());
            let g = (ours * Tensor::from_inner(dy)).sum().backward();
            let r = (expected * dy64).sum().backward();
            accurate(x.grad(&g).unwrap(), x64.grad(&r).unwrap());
        }
    }

    #[test]
    fn inference_matches_burns_softmax() {
        let x = random::<NdArray, 4>([2, 3, 4, 7], 2.0);
        let bias = random::<NdArray, 2>([2, 7], 1.0);
        close(
            softmax_with_key_bias(x.clone(), Some(bias.clone())),
            reference(x, Some(bias)),
        );
    }
}
