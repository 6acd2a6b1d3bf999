//! A LoRA target's effective weight, `W0 + s·ΔW`, as one operation on the CPU backends.
//!
//! Why: written as tensor operations, the effective weight is a product of the two factors,
//! a scaling and a sum — three weight-sized tensors allocated per target and per pass, and
//! as many backward steps — and on ndarray the thin product (inner size `r`) runs through
//! `matrixmultiply` with transposed copies of the factors, so that a LoRA step cost more
//! than a step that trains every weight. Here the forward
//! pass is one copy of `W0` and one GEMM accumulating `s·ΔW` into it, and the backward pass
//! two thin GEMMs reading the weight's gradient in place (the `gemm` crate on strided
//! views: no transposed copies). Other backends (wgpu), element types and shapes take the
//! same arithmetic as tensor operations.

use crate::cpu::gemm::{Mat, MatMut, parallelism_for, product};
use crate::cpu::route::{HostBackend, HostOp, record, route};
use crate::cpu::tensor::{from_host, host_values, primitive};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};

/// How the factors `A` (`[r, fan_in]`) and `B` (`[fan_out, r]`) — PEFT's layouts — map onto
/// the weight, seen as a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    /// `W [fan_in, fan_out] = W0 + s·Aᵀ·Bᵀ`: burn's `Linear` and `Embedding` store the
    /// weight transposed with respect to PyTorch.
    Transposed,
    /// `W [fan_out, fan_in] = W0 + s·B·A`: a convolution's weight, flattened per output
    /// channel.
    Direct,
}

/// `W0 + scale·ΔW` for a weight `w0` seen as a matrix (see [`Orientation`]), with
/// gradients reaching `a` and `b` (and `w0`, should it be trainable).
pub fn effective_weight<B: Backend>(
    w0: Tensor<B, 2>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scale: f64,
    orientation: Orientation,
) -> Tensor<B, 2> {
    let ([rank, fan_in], [fan_out, b_rank]) = (a.dims(), b.dims());
    let sizes = Sizes {
        rank,
        fan_in,
        fan_out,
        orientation,
    };
    let fits = rank == b_rank && w0.dims() == sizes.weight_dims();
    let all_f32 = [&w0, &a, &b].iter().all(|t| t.dtype() == DType::F32);
    if !(fits && all_f32) {
        return with_tensor_ops(w0, a, b, scale, orientation);
    }
    let call = EffectiveWeight {
        sizes,
        scale: scale as f32,
    };
    match route(&call, (w0, a, b)) {
        Ok(w) => w,
        Err((w0, a, b)) => with_tensor_ops(w0, a, b, scale, orientation),
    }
}

/// The same arithmetic as burn tensor operations, for every other backend.
fn with_tensor_ops<B: Backend>(
    w0: Tensor<B, 2>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    scale: f64,
    orientation: Orientation,
) -> Tensor<B, 2> {
    let delta = match orientation {
        // `Aᵀ·Bᵀ` rather than `(B·A)ᵀ`: the transposes are of the small factors, and the
        // product comes out row-major (a transposed weight-sized view would be copied).
        Orientation::Transposed => a.transpose().matmul(b.transpose()),
        Orientation::Direct => b.matmul(a),
    };
    w0 + delta.mul_scalar(scale)
}

/// The sizes of one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sizes {
    rank: usize,
    fan_in: usize,
    fan_out: usize,
    orientation: Orientation,
}

impl Sizes {
    fn weight_dims(&self) -> [usize; 2] {
        match self.orientation {
            Orientation::Transposed => [self.fan_in, self.fan_out],
            Orientation::Direct => [self.fan_out, self.fan_in],
        }
    }

    fn parallelism(&self) -> gemm::Parallelism {
        parallelism_for(
            self.rank
                .saturating_mul(self.fan_in)
                .saturating_mul(self.fan_out),
        )
    }

    /// `ΔW`'s two factors as the matrices whose product it is: `(Aᵀ, Bᵀ)` or `(B, A)`,
    /// read in place.
    fn factors<'a>(&self, a: &'a [f32], b: &'a [f32]) -> (Mat<'a>, Mat<'a>) {
        let a = Mat::row_major(a, self.rank, self.fan_in);
        let b = Mat::row_major(b, self.fan_out, self.rank);
        match self.orientation {
            Orientation::Transposed => (a.transposed(), b.transposed()),
            Orientation::Direct => (b, a),
        }
    }

    /// `W0 + scale·ΔW`, row-major in [`weight_dims`](Self::weight_dims). The scale goes
    /// onto `B` (`fan_out × r` values), not onto the weight-sized product.
    fn forward(&self, w0: &[f32], a: &[f32], b: &[f32], scale: f32) -> Vec<f32> {
        let [rows, cols] = self.weight_dims();
        let mut w = w0.to_vec();
        let b = scaled(b, scale);
        let (left, right) = self.factors(a, &b);
        product(
            MatMut::row_major(&mut w, rows, cols),
            left,
            right,
            true,
            self.parallelism(),
        );
        w
    }

    /// The factors' gradients from the weight's gradient `g`: with `W = W0 + s·L·R`,
    /// `dL = s·g·Rᵀ` and `dR = s·Lᵀ·g`, written back in `A`'s and `B`'s own layouts.
    fn backward(&self, a: &[f32], b: &[f32], g: &[f32], scale: f32, wanted: [bool; 2]) -> Grads {
        let [rows, cols] = self.weight_dims();
        let g = Mat::row_major(g, rows, cols);
        let (rank, fan_in, fan_out) = (self.rank, self.fan_in, self.fan_out);
        let a_mat = Mat::row_major(a, rank, fan_in);
        let b_mat = Mat::row_major(b, fan_out, rank);
        let grad = |rows: usize, cols: usize, left: Mat<'_>, right: Mat<'_>| {
            let mut out = vec![0.0; rows * cols];
            product(
                MatMut::row_major(&mut out, rows, cols),
                left,
                right,
                false,
                self.parallelism(),
            );
            out.iter_mut().for_each(|v| *v *= scale);
            out
        };
        let (da, db) = match self.orientation {
            // W = W0 + s·Aᵀ·Bᵀ: dA = s·Bᵀ·gᵀ, dB = s·gᵀ·Aᵀ.
            Orientation::Transposed => (
                wanted[0].then(|| grad(rank, fan_in, b_mat.transposed(), g.transposed())),
                wanted[1].then(|| grad(fan_out, rank, g.transposed(), a_mat.transposed())),
            ),
            // W = W0 + s·B·A: dA = s·Bᵀ·g, dB = s·g·Aᵀ.
            Orientation::Direct => (
                wanted[0].then(|| grad(rank, fan_in, b_mat.transposed(), g)),
                wanted[1].then(|| grad(fan_out, rank, g, a_mat.transposed())),
            ),
        };
        Grads { a: da, b: db }
    }
}

/// `values · scale`, a copy.
fn scaled(values: &[f32], scale: f32) -> Vec<f32> {
    values.iter().map(|v| v * scale).collect()
}

/// The factors' gradients that were wanted.
struct Grads {
    a: Option<Vec<f32>>,
    b: Option<Vec<f32>>,
}

/// One call, for [`route`].
struct EffectiveWeight {
    sizes: Sizes,
    scale: f32,
}

type Operands<B> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>);

impl HostOp for EffectiveWeight {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = Tensor<B, 2>;

    fn infers_on(&self, _: HostBackend) -> bool {
        // Both: one pass instead of three weight-sized tensors on either backend.
        true
    }

    fn inference<B: Backend>(&self, (w0, a, b): Operands<B>) -> Tensor<B, 2> {
        let device = w0.device();
        let (w0, a, b) = (primitive(w0), primitive(a), primitive(b));
        let w = self.sizes.forward(
            &host_values::<B, 2>(&w0),
            &host_values::<B, 2>(&a),
            &host_values::<B, 2>(&b),
            self.scale,
        );
        from_host(w, self.sizes.weight_dims(), &device)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (w0, a, b): Operands<Autodiff<B, C>>,
    ) -> Tensor<Autodiff<B, C>, 2> {
        let device: B::Device = w0.device();
        let (w0, a, b) = (primitive(w0), primitive(a), primitive(b));
        let w = self.sizes.forward(
            &host_values::<B, 2>(&w0.primitive),
            &host_values::<B, 2>(&a.primitive),
            &host_values::<B, 2>(&b.primitive),
            self.scale,
        );
        let w = primitive(from_host::<B, 2>(w, self.sizes.weight_dims(), &device));
        let saved = Saved {
            a: a.primitive.clone(),
            b: b.primitive.clone(),
            sizes: self.sizes,
            scale: self.scale,
            device,
        };
        let prep = EffectiveWeightBackward.prepare::<C>([w0.node, a.node, b.node]);
        Tensor::from_primitive(TensorPrimitive::Float(record(prep, saved, w)))
    }
}

/// What the backward pass needs: the factors as the forward pass read them (shared, not
/// copied), the sizes and the scale.
#[derive(Clone)]
struct Saved<B: Backend> {
    a: B::FloatTensorPrimitive,
    b: B::FloatTensorPrimitive,
    sizes: Sizes,
    scale: f32,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for Saved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("sizes", &self.sizes)
            .field("scale", &self.scale)
            .finish_non_exhaustive()
    }
}

/// The backward step (parents: `W0`, `A`, `B`).
#[derive(Debug)]
struct EffectiveWeightBackward;

impl<B: Backend> Backward<B, 3> for EffectiveWeightBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved {
            a,
            b,
            sizes,
            scale,
            device,
        } = ops.state;
        let [w0_node, a_node, b_node] = ops.parents.map(|p| p.map(|p| p.id));
        let g = grads.consume::<B>(&ops.node);
        let found = sizes.backward(
            &host_values::<B, 2>(&a),
            &host_values::<B, 2>(&b),
            &host_values::<B, 2>(&g),
            scale,
            [a_node.is_some(), b_node.is_some()],
        );
        let mut register = |node, values: Option<Vec<f32>>, dims: [usize; 2]| {
            if let (Some(node), Some(values)) = (node, values) {
                grads.register::<B>(node, primitive(from_host::<B, 2>(values, dims, &device)));
            }
        };
        register(a_node, found.a, [sizes.rank, sizes.fan_in]);
        register(b_node, found.b, [sizes.fan_out, sizes.rank]);
        // `W0` is frozen under LoRA, unless the user unfroze it too: then its gradient is
        // the weight's own.
        if let Some(node) = w0_node {
            grads.register::<B>(node, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    fn random<B: Backend>(dims: [usize; 2], seed: u64) -> Tensor<B, 2> {
        let device = Default::default();
        B::seed(&device, seed);
        Tensor::random(dims, Distribution::Uniform(-1.0, 1.0), &device)
    }

    /// The kernel and the tensor operations agree on values and on every
    /// gradient, for both orientations and for `W0` trainable or not.
    #[test]
    fn host_operation_matches_tensor_operations() {
        let (rank, fan_in, fan_out, scale) = (3, 7, 5, 1.75);
        for orientation in [Orientation::Transposed, Orientation::Direct] {
            let dims = match orientation {
                Orientation::Transposed => [fan_in, fan_out],
                Orientation::Direct => [fan_out, fan_in],
            };
            for w0_trains in [false, true] {
                let w0 = random::<A>(dims, 1);
                let w0 = if w0_trains { w0.require_grad() } else { w0 };
                let a = random::<A>([rank, fan_in], 2).require_grad();
                let b = random::<A>([fan_out, rank], 3).require_grad();
                let weights = random::<A>(dims, 4);
                let run = |host: bool| {
                    let (w0, a, b) = (w0.clone(), a.clone(), b.clone());
                    let w = if host {
                        effective_weight(w0.clone(), a.clone(), b.clone(), scale, orientation)
                    } else {
                        with_tensor_ops(w0.clone(), a.clone(), b.clone(), scale, orientation)
                    };
                    // A loss that weighs each element differently, so every gradient
                    // element is checked.
                    let grads = (w.clone() * weights.clone()).sum().backward();
                    let grad = |t: &Tensor<A, 2>| t.grad(&grads).map(|g| g.into_data());
                    (w.into_data(), grad(&w0), grad(&a), grad(&b))
                };
                let (host, reference) = (run(true), run(false));
                let tolerance = Tolerance::<f32>::absolute(1e-5);
                host.0.assert_approx_eq::<f32>(&reference.0, tolerance);
                for (h, r) in [
                    (host.1, reference.1),
                    (host.2, reference.2),
                    (host.3, reference.3),
                ] {
                    match (h, r) {
                        (Some(h), Some(r)) => h.assert_approx_eq::<f32>(&r, tolerance),
                        (h, r) => assert_eq!(h.is_some(), r.is_some(), "{orientation:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn forward_without_autodiff_matches_and_zero_b_gives_w0_exactly() {
        let w0 = random::<NdArray>([6, 4], 5);
        let a = random::<NdArray>([2, 6], 6);
        let b = random::<NdArray>([4, 2], 7);
        let o = Orientation::Transposed;
        effective_weight(w0.clone(), a.clone(), b.clone(), 0.5, o)
            .into_data()
            .assert_approx_eq::<f32>(
                &with_tensor_ops(w0.clone(), a.clone(), b.clone(), 0.5, o).into_data(),
                Tolerance::absolute(1e-6),
            );
        let w = effective_weight(w0.clone(), a, b.zeros_like(), 0.5, o);
        assert_eq!(w.into_data(), w0.into_data());
    }

    #[test]
    fn other_element_types_take_the_tensor_operations_with_the_same_result() {
        // `f64` tensors are not the kernel path's: they are handed back to burn's operations.
        let w0 = random::<NdArray>([4, 5], 8);
        let a = random::<NdArray>([2, 5], 9);
        let b = random::<NdArray>([4, 2], 10);
        let f64s = |t: &Tensor<NdArray, 2>| {
            Tensor::<NdArray<f64>, 2>::from_data(t.to_data().convert::<f64>(), &Default::default())
        };
        let o = Orientation::Direct;
        let wide = effective_weight(f64s(&w0), f64s(&a), f64s(&b), 2.0, o);
        effective_weight(w0, a, b, 2.0, o)
            .into_data()
            .convert::<f64>()
            .assert_approx_eq::<f64>(&wide.into_data(), Tolerance::absolute(1e-5));
    }
}
