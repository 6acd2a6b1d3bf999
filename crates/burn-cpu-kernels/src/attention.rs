//! Multi-head scaled dot-product attention as one operation on the CPU backends, with its
//! own backward pass: per sample and head, `softmax(Q·Kᵀ/√d + bias) → dropout → ·V`, read
//! from and written to the `[batch, seq, heads·d]` layout the projections produce.
//!
//! Why: written with tensor operations, attention splits the heads (a reshape and a
//! transposition, copied by the next product), runs a batched product on ndarray's slower
//! GEMM, scales, masks, softmaxes and drops out the largest tensor of the layer one
//! operation at a time, then merges the heads (another copy), and autodiff records each
//! step. Here every product is one call of the `gemm` crate on strided views of the
//! projections — a head is a block of columns — so nothing is copied; scale, mask, softmax
//! and dropout are one pass over each head's scores; the backward pass regenerates the
//! dropout mask from its seed and computes only the gradients that are needed.
//!
//! The probabilities are not an output: a model that needs the attention maps (to return
//! them, or to distil them) computes attention with tensor operations and
//! [`softmax_with_key_bias`](crate::softmax::softmax_with_key_bias).

use crate::cpu::gemm::{Mat, MatMut, product};
use crate::cpu::random::{DropMask, draw_seed};
use crate::cpu::route::{HostBackend, HostOp, record, route};
use crate::cpu::tensor::{from_host, host_values, primitive};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Distribution, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use gemm::Parallelism;
use rayon::prelude::*;

/// The shape of the attention: heads, dropout on the probabilities (training only), and
/// whether a query may attend only to keys at or before its own position.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionOptions {
    /// Heads; the width of `q`, `k` and `v` must be a multiple of it.
    pub heads: usize,
    /// Dropout probability on the attention probabilities, applied in training (autodiff)
    /// only, as burn's `Dropout`.
    pub dropout: f64,
    /// Causal (decoder) masking: query `i` of `sq` attends to keys `j ≤ i + sk − sq`.
    pub causal: bool,
}

impl AttentionOptions {
    /// `heads` heads, no dropout, not causal.
    pub fn new(heads: usize) -> Self {
        Self {
            heads,
            dropout: 0.0,
            causal: false,
        }
    }

    /// With dropout `p` on the probabilities.
    pub fn with_dropout(self, dropout: f64) -> Self {
        Self { dropout, ..self }
    }

    /// Causal or not.
    pub fn with_causal(self, causal: bool) -> Self {
        Self { causal, ..self }
    }
}

/// The attention's context `[batch, sq, width]` from projected queries `[batch, sq,
/// width]`, keys and values `[batch, sk, width]`, and an optional additive bias per key of
/// each sample `[batch, sk]` (0 where a key may be attended, a large negative number at
/// padding; it gets no gradient). The same values (to float rounding) and gradients as the
/// tensor operations of [`reference()`] with the same dropout mask.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
/// use burn::tensor::Distribution;
/// use burn_cpu_kernels::attention::{AttentionOptions, attention, reference};
///
/// let device = Default::default();
/// let x = Tensor::<NdArray, 3>::random([2, 5, 8], Distribution::Default, &device);
/// let options = AttentionOptions::new(2);
/// let fused = attention(x.clone(), x.clone(), x.clone(), None, options);
/// let unfused = reference(x.clone(), x.clone(), x, None, options);
/// fused.into_data().assert_approx_eq::<f32>(&unfused.into_data(), Default::default());
/// ```
pub fn attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    key_bias: Option<Tensor<B, 2>>,
    options: AttentionOptions,
) -> Tensor<B, 3> {
    let [batch, sq, width] = q.dims();
    let [kb, sk, kw] = k.dims();
    let fits = options.heads > 0
        && width % options.heads == 0
        && [kb, kw] == [batch, width]
        && v.dims() == [batch, sk, width]
        && key_bias.as_ref().is_none_or(|b| b.dims() == [batch, sk])
        && sk > 0
        && batch * sq * width > 0
        && (0.0..1.0).contains(&options.dropout)
        && [q.dtype(), k.dtype(), v.dtype()] == [DType::F32; 3]
        && key_bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !fits {
        return reference(q, k, v, key_bias, options);
    }
    let shape = Shape {
        batch,
        sq,
        sk,
        heads: options.heads,
        d: width / options.heads,
        causal: options.causal,
        dropout: options.dropout,
    };
    match route(&shape, (q, k, v, key_bias)) {
        Ok(out) => out,
        Err((q, k, v, key_bias)) => reference(q, k, v, key_bias, options),
    }
}

/// The same attention written with burn's tensor operations (and burn's dropout): what
/// [`attention`] computes on other backends, and what it is tested against.
pub fn reference<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    key_bias: Option<Tensor<B, 2>>,
    options: AttentionOptions,
) -> Tensor<B, 3> {
    let [batch, sq, width] = q.dims();
    let sk = k.dims()[1];
    let heads = options.heads;
    let d = width / heads.max(1);
    let split = |x: Tensor<B, 3>, s: usize| x.reshape([batch, s, heads, d]).swap_dims(1, 2);
    let scores = split(q, sq).matmul(split(k, sk).swap_dims(2, 3)) / (d as f64).sqrt();
    let scores = match key_bias {
        Some(bias) => scores + bias.reshape([batch, 1, 1, sk]),
        None => scores,
    };
    let scores = if options.causal {
        let shape = Shape {
            batch,
            sq,
            sk,
            heads,
            d,
            causal: true,
            dropout: 0.0,
        };
        let future: Vec<bool> = (0..sq)
            .flat_map(|i| (0..sk).map(move |j| j >= shape.visible_keys(i)))
            .collect();
        let future = Tensor::<B, 4, Bool>::from_data(
            TensorData::new(future, [1, 1, sq, sk]),
            &scores.device(),
        );
        scores.mask_fill(future, f32::NEG_INFINITY)
    } else {
        scores
    };
    let probs = softmax(scores, 3);
    let probs = if options.dropout > 0.0 && B::ad_enabled(&probs.device()) {
        let keep = 1.0 - options.dropout;
        probs.clone() * probs.random_like(Distribution::Bernoulli(keep)) / keep
    } else {
        probs
    };
    probs
        .matmul(split(v, sk))
        .swap_dims(1, 2)
        .reshape([batch, sq, width])
}

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    sq: usize,
    sk: usize,
    heads: usize,
    d: usize,
    causal: bool,
    dropout: f64,
}

type Operands<B> = (
    Tensor<B, 3>,
    Tensor<B, 3>,
    Tensor<B, 3>,
    Option<Tensor<B, 2>>,
);

impl Shape {
    fn width(&self) -> usize {
        self.heads * self.d
    }

    /// The last key query `i` may attend to (exclusive).
    fn visible_keys(&self, i: usize) -> usize {
        if self.causal {
            (i + 1 + self.sk).saturating_sub(self.sq).min(self.sk)
        } else {
            self.sk
        }
    }

    /// Index of score `(sample, head, i, j)` in the `[batch, heads, sq, sk]` probabilities.
    fn score_index(&self, sample: usize, head: usize) -> usize {
        (sample * self.heads + head) * self.sq * self.sk
    }

    /// Head `h` of one sample's `[s, width]` block, as an `s × d` view.
    fn head<'a>(&self, block: &'a [f32], s: usize, h: usize) -> Mat<'a> {
        Mat::with_row_stride(&block[h * self.d..], s, self.d, self.width())
    }

    fn head_mut<'a>(&self, block: &'a mut [f32], s: usize, h: usize) -> MatMut<'a> {
        MatMut::with_row_stride(&mut block[h * self.d..], s, self.d, self.width())
    }

    /// Scale, bias, causal mask and softmax of one head's `sq × sk` scores, in place.
    fn softmax_scores(&self, scores: &mut [f32], bias: Option<&[f32]>) {
        let scale = 1.0 / (self.d as f32).sqrt();
        for (i, row) in scores.chunks_mut(self.sk).enumerate() {
            let visible = self.visible_keys(i);
            let (live, hidden) = row.split_at_mut(visible);
            match bias {
                Some(b) => live
                    .iter_mut()
                    .zip(b)
                    .for_each(|(s, b)| *s = *s * scale + b),
                None => live.iter_mut().for_each(|s| *s *= scale),
            }
            let max = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let sum = crate::softmax::exp_shifted(live, max);
            let inverse = 1.0 / sum;
            live.iter_mut().for_each(|v| *v *= inverse);
            hidden.fill(0.0);
        }
    }

    /// The context, and the probabilities (for the backward pass).
    fn forward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: Option<&[f32]>,
        mask: Option<DropMask>,
    ) -> (Vec<f32>, Vec<f32>) {
        let (sq, sk, width) = (self.sq, self.sk, self.width());
        let mut out = vec![0.0f32; self.batch * sq * width];
        let mut probs = vec![0.0f32; self.batch * self.heads * sq * sk];
        out.par_chunks_mut(sq * width)
            .zip(probs.par_chunks_mut(self.heads * sq * sk))
            .enumerate()
            .for_each(|(n, (out, probs))| {
                let (q, k, v) = (
                    &q[n * sq * width..][..sq * width],
                    &k[n * sk * width..][..sk * width],
                    &v[n * sk * width..][..sk * width],
                );
                let bias = bias.map(|b| &b[n * sk..][..sk]);
                let mut dropped = mask.map(|_| vec![0.0f32; sq * sk]);
                for (h, p) in probs.chunks_mut(sq * sk).enumerate() {
                    product(
                        MatMut::row_major(p, sq, sk),
                        self.head(q, sq, h),
                        self.head(k, sk, h).transposed(),
                        false,
                        Parallelism::None,
                    );
                    self.softmax_scores(p, bias);
                    let weights: &[f32] = match (&mut dropped, mask) {
                        (Some(buffer), Some(mask)) => {
                            buffer.copy_from_slice(p);
                            mask.apply(buffer, self.score_index(n, h) as u64);
                            buffer
                        }
                        _ => p,
                    };
                    product(
                        self.head_mut(out, sq, h),
                        Mat::row_major(weights, sq, sk),
                        self.head(v, sk, h),
                        false,
                        Parallelism::None,
                    );
                }
            });
        (out, probs)
    }

    /// The wanted gradients of `q`, `k`, `v` from the context's gradient `dy`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        probs: &[f32],
        mask: Option<DropMask>,
        dy: &[f32],
        wanted: [bool; 3],
    ) -> [Option<Vec<f32>>; 3] {
        let (sq, sk, width) = (self.sq, self.sk, self.width());
        let zeros = |wanted: bool, len: usize| {
            if wanted {
                vec![0.0f32; len]
            } else {
                Vec::new()
            }
        };
        let mut dq = zeros(wanted[0], self.batch * sq * width);
        let mut dk = zeros(wanted[1], self.batch * sk * width);
        let mut dv = zeros(wanted[2], self.batch * sk * width);
        let scale = 1.0 / (self.d as f32).sqrt();
        let dq_blocks = per_sample(&mut dq, sq * width, self.batch);
        let dk_blocks = per_sample(&mut dk, sk * width, self.batch);
        let dv_blocks = per_sample(&mut dv, sk * width, self.batch);
        dq_blocks
            .into_par_iter()
            .zip(dk_blocks.into_par_iter().zip(dv_blocks.into_par_iter()))
            .enumerate()
            .for_each(|(n, (mut dq, (mut dk, mut dv)))| {
                let (q, k, v, dy) = (
                    &q[n * sq * width..][..sq * width],
                    &k[n * sk * width..][..sk * width],
                    &v[n * sk * width..][..sk * width],
                    &dy[n * sq * width..][..sq * width],
                );
                let mut dropped = vec![0.0f32; sq * sk];
                let mut ds = vec![0.0f32; sq * sk];
                for h in 0..self.heads {
                    let first = self.score_index(n, h);
                    let p = &probs[first..][..sq * sk];
                    // dV = (dropout(P))ᵀ · dY
                    if let Some(dv) = dv.as_deref_mut() {
                        let weights: &[f32] = match mask {
                            Some(mask) => {
                                dropped.copy_from_slice(p);
                                mask.apply(&mut dropped, first as u64);
                                &dropped
                            }
                            None => p,
                        };
                        product(
                            self.head_mut(dv, sk, h),
                            Mat::row_major(weights, sq, sk).transposed(),
                            self.head(dy, sq, h),
                            false,
                            Parallelism::None,
                        );
                    }
                    if dq.is_none() && dk.is_none() {
                        continue;
                    }
                    // dP = mask ⊙ (dY · Vᵀ)
                    product(
                        MatMut::row_major(&mut ds, sq, sk),
                        self.head(dy, sq, h),
                        self.head(v, sk, h).transposed(),
                        false,
                        Parallelism::None,
                    );
                    if let Some(mask) = mask {
                        mask.apply(&mut ds, first as u64);
                    }
                    // dS = P ⊙ (dP − Σ dP ⊙ P) · scale, row by row.
                    for (ds, p) in ds.chunks_mut(sk).zip(p.chunks(sk)) {
                        let dot = ds
                            .iter()
                            .zip(p)
                            .map(|(&g, &p)| g as f64 * p as f64)
                            .sum::<f64>() as f32;
                        ds.iter_mut()
                            .zip(p)
                            .for_each(|(g, &p)| *g = p * (*g - dot) * scale);
                    }
                    if let Some(dq) = dq.as_deref_mut() {
                        product(
                            self.head_mut(dq, sq, h),
                            Mat::row_major(&ds, sq, sk),
                            self.head(k, sk, h),
                            false,
                            Parallelism::None,
                        );
                    }
                    if let Some(dk) = dk.as_deref_mut() {
                        product(
                            self.head_mut(dk, sk, h),
                            Mat::row_major(&ds, sq, sk).transposed(),
                            self.head(q, sq, h),
                            false,
                            Parallelism::None,
                        );
                    }
                }
            });
        let keep = |wanted: bool, values: Vec<f32>| wanted.then_some(values);
        [
            keep(wanted[0], dq),
            keep(wanted[1], dk),
            keep(wanted[2], dv),
        ]
    }
}

/// Each sample's block of a gradient buffer, or `None` for every sample when the gradient
/// is not wanted (the buffer is empty).
fn per_sample(buffer: &mut [f32], len: usize, batch: usize) -> Vec<Option<&mut [f32]>> {
    if buffer.is_empty() {
        (0..batch).map(|_| None).collect()
    } else {
        buffer.chunks_mut(len).map(Some).collect()
    }
}

impl HostOp for Shape {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = Tensor<B, 3>;

    fn infers_on(&self, _: HostBackend) -> bool {
        true
    }

    fn inference<B: Backend>(&self, (q, k, v, bias): Operands<B>) -> Tensor<B, 3> {
        let device = q.device();
        let (q, k, v) = (primitive(q), primitive(k), primitive(v));
        let bias = bias.map(primitive);
        let (out, _) = self.forward(
            &host_values::<B, 3>(&q),
            &host_values::<B, 3>(&k),
            &host_values::<B, 3>(&v),
            bias.as_ref().map(host_values::<B, 2>).as_deref(),
            None,
        );
        from_host(out, [self.batch, self.sq, self.width()], &device)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (q, k, v, bias): Operands<Autodiff<B, C>>,
    ) -> Tensor<Autodiff<B, C>, 3> {
        let device: B::Device = q.device();
        let mask =
            (self.dropout > 0.0).then(|| DropMask::new(draw_seed::<B>(&device), self.dropout));
        let (q, k, v) = (primitive(q), primitive(k), primitive(v));
        let bias = bias.map(|b| primitive(b).primitive);
        let (out, probs) = self.forward(
            &host_values::<B, 3>(&q.primitive),
            &host_values::<B, 3>(&k.primitive),
            &host_values::<B, 3>(&v.primitive),
            bias.as_ref().map(host_values::<B, 2>).as_deref(),
            mask,
        );
        let out = primitive(from_host::<B, 3>(
            out,
            [self.batch, self.sq, self.width()],
            &device,
        ));
        let saved = AttentionSaved::<B> {
            q: q.primitive.clone(),
            k: k.primitive.clone(),
            v: v.primitive.clone(),
            probs,
            mask,
            shape: *self,
            device,
        };
        let output = record(
            AttentionBackward.prepare::<C>([q.node, k.node, v.node]),
            saved,
            out,
        );
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

/// The projections (shared, not copied), the probabilities, the dropout mask's seed.
#[derive(Clone)]
struct AttentionSaved<B: Backend> {
    q: B::FloatTensorPrimitive,
    k: B::FloatTensorPrimitive,
    v: B::FloatTensorPrimitive,
    probs: Vec<f32>,
    mask: Option<DropMask>,
    shape: Shape,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for AttentionSaved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttentionSaved")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: Backend> Backward<B, 3> for AttentionBackward {
    type State = AttentionSaved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let AttentionSaved {
            q,
            k,
            v,
            probs,
            mask,
            shape,
            device,
        } = ops.state;
        let nodes: [Option<NodeId>; 3] =
            std::array::from_fn(|i| ops.parents[i].as_ref().map(|p| p.id));
        let dy = grads.consume::<B>(&ops.node);
        let found = shape.backward(
            &host_values::<B, 3>(&q),
            &host_values::<B, 3>(&k),
            &host_values::<B, 3>(&v),
            &probs,
            mask,
            &host_values::<B, 3>(&dy),
            nodes.map(|n| n.is_some()),
        );
        let dims = [
            [shape.batch, shape.sq, shape.width()],
            [shape.batch, shape.sk, shape.width()],
            [shape.batch, shape.sk, shape.width()],
        ];
        for ((node, values), dims) in nodes.into_iter().zip(found).zip(dims) {
            if let (Some(node), Some(values)) = (node, values) {
                grads.register::<B>(node, primitive(from_host::<B, 3>(values, dims, &device)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Tolerance;

    type A = Autodiff<NdArray>;

    fn random<B: Backend, const D: usize>(dims: [usize; D]) -> Tensor<B, D> {
        Tensor::random(dims, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// `f32` against `f32`: both sides round (the accuracy itself is checked against
    /// `f64` in `training_matches_the_tensor_operations`); a wrong mask or gradient is off
    /// by far more.
    fn close<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(5e-4, 5e-5));
    }

    type A64 = Autodiff<NdArray<f64>>;

    /// `t`'s values on the `f64` backend, tracked.
    fn in_f64(t: &Tensor<A, 3>) -> Tensor<A64, 3> {
        Tensor::<A64, 3>::from_data(
            t.to_data().convert::<f64>(),
            (&Default::default(), DType::F64),
        )
        .require_grad()
    }

    /// `f32` results against the tensor operations run in `f64` (so that the comparison
    /// measures the kernel, not the rounding of either).
    fn accurate(ours: Tensor<NdArray, 3>, reference: Tensor<NdArray<f64>, 3>) {
        ours.into_data().assert_approx_eq::<f32>(
            &reference.into_data().convert::<f32>(),
            Tolerance::rel_abs(1e-5, 2e-6),
        );
    }

    /// Values and the gradients of q, k and v against the tensor operations, without
    /// dropout: padding that differs per sample, causal masking, queries shorter than keys.
    #[test]
    fn training_matches_the_tensor_operations() {
        let mut bias = vec![0.0f32; 3 * 11];
        bias[11 + 7..2 * 11].iter_mut().for_each(|b| *b = -10_000.0);
        bias[2 * 11 + 2] = -1.5;
        let bias = TensorData::new(bias, [3, 11]);
        for (sq, causal, with_bias) in [(11, false, true), (11, true, false), (4, true, true)] {
            let options = AttentionOptions::new(3).with_causal(causal);
            let q = random::<A, 3>([3, sq, 12]).require_grad();
            let k = random::<A, 3>([3, 11, 12]).require_grad();
            let v = random::<A, 3>([3, 11, 12]).require_grad();
            let dy = random::<A, 3>([3, sq, 12]);
            let (q64, k64, v64, dy64) = (in_f64(&q), in_f64(&k), in_f64(&v), in_f64(&dy));
            let b = with_bias.then(|| Tensor::<A, 2>::from_data(bias.clone(), &Default::default()));
            let b64 = with_bias.then(|| {
                Tensor::<A64, 2>::from_data(
                    bias.clone().convert::<f64>(),
                    (&Default::default(), DType::F64),
                )
            });
            let ours = attention(q.clone(), k.clone(), v.clone(), b, options);
            let expected = reference(q64.clone(), k64.clone(), v64.clone(), b64, options);
            accurate(ours.clone().inner(), expected.clone().inner());
            let g = (ours * dy).sum().backward();
            let r = (expected * dy64).sum().backward();
            for (t, t64) in [(&q, &q64), (&k, &k64), (&v, &v64)] {
                accurate(t.grad(&g).unwrap(), t64.grad(&r).unwrap());
            }
        }
    }

    /// With dropout: the kernel's mask, rebuilt from the same seed, applied to the tensor
    /// operations' probabilities (in `f64`, so that an unlucky cancellation in an `f32`
    /// reference cannot fail the test), gives the same values and gradients; about `p` of
    /// the probabilities are dropped.
    #[test]
    fn dropout_follows_its_seed() {
        let device = Default::default();
        let shape = [2, 9, 8];
        let options = AttentionOptions::new(2).with_dropout(0.25);
        let q = random::<A, 3>(shape).require_grad();
        let k = random::<A, 3>(shape).require_grad();
        let v = random::<A, 3>(shape).require_grad();
        let ours = crate::cpu::random::with_seed(21, || {
            attention(q.clone(), k.clone(), v.clone(), None, options)
        });
        let mask = DropMask::new(21, 0.25);
        let factors: Vec<f64> = (0..2 * 2 * 9 * 9).map(|i| mask.factor(i) as f64).collect();
        let dropped = factors.iter().filter(|&&f| f == 0.0).count();
        assert!(
            (55..=110).contains(&dropped),
            "dropped {dropped} of 324, expected about 81"
        );
        let factors = Tensor::<A64, 4>::from_data(
            TensorData::new(factors, [2, 2, 9, 9]),
            (&device, DType::F64),
        );
        let (q64, k64, v64) = (in_f64(&q), in_f64(&k), in_f64(&v));
        let split = |x: Tensor<A64, 3>| x.reshape([2, 9, 2, 4]).swap_dims(1, 2);
        let probs = softmax(
            split(q64.clone()).matmul(split(k64.clone()).swap_dims(2, 3)) / 2.0,
            3,
        );
        let expected = (probs * factors)
            .matmul(split(v64.clone()))
            .swap_dims(1, 2)
            .reshape(shape);
        accurate(ours.clone().inner(), expected.clone().inner());
        let dy = random::<A, 3>(shape);
        let dy64 = in_f64(&dy);
        let g = (ours * dy).sum().backward();
        let r = (expected * dy64).sum().backward();
        for (t, t64) in [(&q, &q64), (&k, &k64), (&v, &v64)] {
            accurate(t.grad(&g).unwrap(), t64.grad(&r).unwrap());
        }
    }

    /// Frozen projections get no gradient; only the tracked ones are computed.
    #[test]
    fn only_tracked_inputs_get_gradients() {
        let options = AttentionOptions::new(2);
        let q = random::<A, 3>([2, 5, 4]).require_grad();
        let k = random::<A, 3>([2, 5, 4]);
        let v = random::<A, 3>([2, 5, 4]);
        let g = attention(q.clone(), k.clone(), v.clone(), None, options)
            .sum()
            .backward();
        assert!(q.grad(&g).is_some());
        assert!(k.grad(&g).is_none() && v.grad(&g).is_none());
        let r = reference(q.clone(), k, v, None, options).sum().backward();
        close(q.grad(&g).unwrap(), q.grad(&r).unwrap());
    }

    /// Without autodiff (a frozen encoder), and shapes the kernel does not take (a width
    /// that is not a multiple of the heads) left to the tensor operations, which report it.
    #[test]
    fn inference_and_handed_back_shapes() {
        let q = random::<NdArray, 3>([2, 6, 8]);
        let k = random::<NdArray, 3>([2, 7, 8]);
        let bias = random::<NdArray, 2>([2, 7]);
        let options = AttentionOptions::new(4);
        close(
            attention(q.clone(), k.clone(), k.clone(), Some(bias.clone()), options),
            reference(q.clone(), k.clone(), k.clone(), Some(bias), options),
        );
        let uneven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            attention(
                q.clone(),
                k.clone(),
                k.clone(),
                None,
                AttentionOptions::new(3),
            )
        }));
        assert!(uneven.is_err());
    }
}
