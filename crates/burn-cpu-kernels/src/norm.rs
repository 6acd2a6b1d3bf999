//! Layer normalisation over the last dimension as one operation on the CPU backends:
//! `y = (x − mean) / sqrt(var + ε) · γ + β`, burn's `LayerNorm` (biased variance, `ε`
//! inside the root).
//!
//! Why: burn's `layer_norm` is seven tensor operations (mean, subtract, square, mean, add,
//! root, divide, then scale and shift), and autodiff records each with its own backward;
//! a transformer runs two or three norms per layer. Here the forward pass is one read of
//! each row (mean and variance in `f64`), and the backward pass one more, from the
//! normalised rows it kept: with `x̂` the normalised row, `g = dy ⊙ γ` and `r = 1/σ`,
//! `dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))`, `dγ = Σ dy ⊙ x̂`, `dβ = Σ dy` over rows.
//!
//! Other backends and element types get burn's own operation. On Flex, whose inference
//! norm is already one fused pass, forward-only calls take burn's too.

use crate::cpu::reshape::reshape;
use crate::cpu::route::{HostBackend, HostOp, record, route};
use crate::cpu::tensor::{from_host, host_values, primitive};
use burn::module::Param;
use burn::nn::LayerNorm;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use rayon::prelude::*;

/// Elements per parallel task (a smaller tensor is one task, on the calling thread).
const TASK_ELEMENTS: usize = 32 * 1024;

/// `layer.forward(x)` for burn's [`LayerNorm`], whose `ε` is private: pass the one it was
/// built with (`LayerNormConfig::epsilon`, 1e-5 unless set). Same values (to float rounding)
/// and gradients for `x`, `γ` and `β`; `x` is `[..., d_model]` of any rank.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::LayerNormConfig;
/// use burn::prelude::*;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let norm = LayerNormConfig::new(4).with_epsilon(1e-12).init::<B>(&device);
/// let x = Tensor::<B, 3>::from_floats([[[1.0, 2.0, 3.0, 5.0]]], &device);
/// let y = burn_cpu_kernels::norm::layer_norm(&norm, 1e-12, x.clone());
/// y.into_data()
///     .assert_approx_eq::<f32>(&norm.forward(x).into_data(), Default::default());
/// ```
pub fn layer_norm<B: Backend, const D: usize>(
    layer: &LayerNorm<B>,
    epsilon: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let width = layer.gamma.dims()[0];
    let fits = D > 0
        && dims[D - 1] == width
        && width > 0
        && x.dtype() == DType::F32
        && layer.gamma.dtype() == DType::F32
        && layer
            .beta
            .as_ref()
            .is_none_or(|b| b.dims() == [width] && b.dtype() == DType::F32);
    if !fits {
        return layer.forward(x);
    }
    let rows = dims[..D - 1].iter().product::<usize>();
    let operands = (
        reshape(x, [rows, width]),
        layer.gamma.val(),
        layer.beta.as_ref().map(Param::val),
    );
    let shape = NormShape {
        rows,
        width,
        epsilon,
    };
    match route(&shape, operands) {
        Ok(y) => reshape(y, dims),
        Err((x, ..)) => layer.forward(reshape(x, dims)),
    }
}

/// The sizes and `ε` of one call.
#[derive(Clone, Copy, Debug)]
struct NormShape {
    rows: usize,
    width: usize,
    epsilon: f64,
}

/// Input rows, `γ`, `β`.
type Operands<B> = (Tensor<B, 2>, Tensor<B, 1>, Option<Tensor<B, 1>>);

/// What the forward pass computes: the output, and for the backward pass the normalised
/// rows `x̂` and each row's `1/σ`.
struct Normalised {
    output: Vec<f32>,
    normalised: Vec<f32>,
    inverse_std: Vec<f32>,
}

impl NormShape {
    fn rows_per_task(&self) -> usize {
        (TASK_ELEMENTS / self.width).max(1)
    }

    /// The forward pass; `keep` says whether `x̂` is wanted (training).
    fn forward(&self, x: &[f32], gamma: &[f32], beta: Option<&[f32]>, keep: bool) -> Normalised {
        let (rows, width) = (self.rows, self.width);
        let mut output = vec![0.0f32; rows * width];
        let mut normalised = if keep {
            vec![0.0f32; rows * width]
        } else {
            Vec::new()
        };
        let mut inverse_std = vec![0.0f32; rows];
        let block = self.rows_per_task() * width;
        let rows_per_task = self.rows_per_task();
        let rows = output
            .par_chunks_mut(block)
            .zip(inverse_std.par_chunks_mut(rows_per_task))
            .zip(x.par_chunks(block));
        if keep {
            rows.zip(normalised.par_chunks_mut(block))
                .for_each(|(((y, r), x), hat)| self.rows(x, gamma, beta, y, Some(hat), r));
        } else {
            rows.for_each(|((y, r), x)| self.rows(x, gamma, beta, y, None, r));
        }
        Normalised {
            output,
            normalised,
            inverse_std,
        }
    }

    /// One block of rows: `y`, `x̂` when wanted, and each row's `1/σ` into `r`.
    fn rows(
        &self,
        x: &[f32],
        gamma: &[f32],
        beta: Option<&[f32]>,
        y: &mut [f32],
        mut hat: Option<&mut [f32]>,
        r: &mut [f32],
    ) {
        let width = self.width;
        for (row, ((y, r), x)) in y
            .chunks_mut(width)
            .zip(r.iter_mut())
            .zip(x.chunks(width))
            .enumerate()
        {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
            let var = x
                .iter()
                .map(|&v| {
                    let c = v as f64 - mean;
                    c * c
                })
                .sum::<f64>()
                / width as f64;
            let inv = 1.0 / (var + self.epsilon).sqrt();
            *r = inv as f32;
            let (mean, inv) = (mean as f32, inv as f32);
            match hat.as_deref_mut() {
                Some(hat) => {
                    let h = &mut hat[row * width..(row + 1) * width];
                    for (((y, h), &x), &g) in y.iter_mut().zip(h).zip(x).zip(gamma) {
                        *h = (x - mean) * inv;
                        *y = *h * g;
                    }
                }
                None => {
                    for ((y, &x), &g) in y.iter_mut().zip(x).zip(gamma) {
                        *y = (x - mean) * inv * g;
                    }
                }
            }
            if let Some(beta) = beta {
                y.iter_mut().zip(beta).for_each(|(y, b)| *y += b);
            }
        }
    }

    /// The gradients `(dx, dγ, dβ)` from `dy`; `dx` only when `want_input`.
    fn backward(
        &self,
        dy: &[f32],
        normalised: &[f32],
        inverse_std: &[f32],
        gamma: &[f32],
        want_input: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let (rows, width) = (self.rows, self.width);
        let rows_per_task = self.rows_per_task();
        let block = rows_per_task * width;
        let mut dx = if want_input {
            vec![0.0f32; rows * width]
        } else {
            Vec::new()
        };
        // Per task: the partial sums of dγ and dβ over its rows (in `f64`: a sum over
        // thousands of rows), added up after.
        let partial = |dx: &mut [f32], dy: &[f32], hat: &[f32], r: &[f32]| {
            let mut sums = vec![0.0f64; 2 * width];
            let (dgamma, dbeta) = sums.split_at_mut(width);
            for (row, (dy, hat)) in dy.chunks(width).zip(hat.chunks(width)).enumerate() {
                let mut mean_g = 0.0f64;
                let mut mean_gh = 0.0f64;
                for i in 0..width {
                    dgamma[i] += (dy[i] * hat[i]) as f64;
                    dbeta[i] += dy[i] as f64;
                    let g = (dy[i] * gamma[i]) as f64;
                    mean_g += g;
                    mean_gh += g * hat[i] as f64;
                }
                if !dx.is_empty() {
                    let (mean_g, mean_gh) = (
                        (mean_g / width as f64) as f32,
                        (mean_gh / width as f64) as f32,
                    );
                    let inv = r[row];
                    let out = &mut dx[row * width..(row + 1) * width];
                    for i in 0..width {
                        out[i] = inv * (dy[i] * gamma[i] - mean_g - hat[i] * mean_gh);
                    }
                }
            }
            sums
        };
        let sums: Vec<Vec<f64>> = if want_input {
            dx.par_chunks_mut(block)
                .zip(dy.par_chunks(block))
                .zip(normalised.par_chunks(block))
                .zip(inverse_std.par_chunks(rows_per_task))
                .map(|(((dx, dy), hat), r)| partial(dx, dy, hat, r))
                .collect()
        } else {
            dy.par_chunks(block)
                .zip(normalised.par_chunks(block))
                .zip(inverse_std.par_chunks(rows_per_task))
                .map(|((dy, hat), r)| partial(&mut [], dy, hat, r))
                .collect()
        };
        let mut total = vec![0.0f64; 2 * width];
        for part in sums {
            total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
        }
        let mut total: Vec<f32> = total.into_iter().map(|v| v as f32).collect();
        let dbeta = total.split_off(width);
        ((want_input).then_some(dx), total, dbeta)
    }
}

impl HostOp for NormShape {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = Tensor<B, 2>;

    fn infers_on(&self, backend: HostBackend) -> bool {
        backend == HostBackend::NdArray
    }

    fn inference<B: Backend>(&self, (x, gamma, beta): Operands<B>) -> Tensor<B, 2> {
        let device = x.device();
        let (x, gamma) = (primitive(x), primitive(gamma));
        let beta = beta.map(primitive);
        let out = self.forward(
            &host_values::<B, 2>(&x),
            &host_values::<B, 1>(&gamma),
            beta.as_ref().map(host_values::<B, 1>).as_deref(),
            false,
        );
        from_host(out.output, [self.rows, self.width], &device)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (x, gamma, beta): Operands<Autodiff<B, C>>,
    ) -> Tensor<Autodiff<B, C>, 2> {
        let device: B::Device = x.device();
        let (x, gamma) = (primitive(x), primitive(gamma));
        let beta = beta.map(primitive);
        let out = self.forward(
            &host_values::<B, 2>(&x.primitive),
            &host_values::<B, 1>(&gamma.primitive),
            beta.as_ref()
                .map(|b| host_values::<B, 1>(&b.primitive))
                .as_deref(),
            true,
        );
        let y = primitive(from_host::<B, 2>(
            out.output,
            [self.rows, self.width],
            &device,
        ));
        let saved = NormSaved::<B> {
            normalised: out.normalised,
            inverse_std: out.inverse_std,
            gamma: gamma.primitive.clone(),
            shape: *self,
            device,
        };
        let output = match beta {
            Some(beta) => record(
                NormBackward.prepare::<C>([x.node, gamma.node, beta.node]),
                saved,
                y,
            ),
            None => record(NormBackward.prepare::<C>([x.node, gamma.node]), saved, y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

/// What the backward pass needs.
#[derive(Clone)]
struct NormSaved<B: Backend> {
    normalised: Vec<f32>,
    inverse_std: Vec<f32>,
    gamma: B::FloatTensorPrimitive,
    shape: NormShape,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for NormSaved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormSaved")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// The norm's backward step (parents: input, γ, and β if any).
#[derive(Debug)]
struct NormBackward;

impl<B: Backend, const N: usize> Backward<B, N> for NormBackward {
    type State = NormSaved<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let NormSaved {
            normalised,
            inverse_std,
            gamma,
            shape,
            device,
        } = ops.state;
        let parent = |i: usize| ops.parents.get(i).and_then(|p| p.as_ref()).map(|p| p.id);
        let (input_node, gamma_node, beta_node) = (parent(0), parent(1), parent(2));
        let dy = grads.consume::<B>(&ops.node);
        let (dx, dgamma, dbeta) = shape.backward(
            &host_values::<B, 2>(&dy),
            &normalised,
            &inverse_std,
            &host_values::<B, 1>(&gamma),
            input_node.is_some(),
        );
        if let (Some(node), Some(dx)) = (input_node, dx) {
            let dx = from_host::<B, 2>(dx, [shape.rows, shape.width], &device);
            grads.register::<B>(node, primitive(dx));
        }
        let mut register = |node: Option<NodeId>, values: Vec<f32>| {
            if let Some(node) = node {
                let values = from_host::<B, 1>(values, [shape.width], &device);
                grads.register::<B>(node, primitive(values));
            }
        };
        register(gamma_node, dgamma);
        register(beta_node, dbeta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    fn close<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(2e-4));
    }

    fn random<B: Backend, const D: usize>(dims: [usize; D]) -> Tensor<B, D> {
        Tensor::random(dims, Distribution::Normal(0.5, 2.0), &Default::default())
    }

    type A64 = Autodiff<NdArray<f64>>;

    /// `t`'s values on the `f64` backend.
    fn in_f64<const D: usize>(t: Tensor<NdArray, D>) -> Tensor<A64, D> {
        Tensor::from_data(
            t.into_data().convert::<f64>(),
            (&Default::default(), burn::tensor::DType::F64),
        )
    }

    /// Ours (`f32`) against burn's `LayerNorm` computed in `f64`, to `f32` precision
    /// relative to the values' size.
    fn accurate<const D: usize>(ours: Tensor<NdArray, D>, reference: Tensor<NdArray<f64>, D>) {
        ours.into_data().assert_approx_eq::<f32>(
            &reference.into_data().convert::<f32>(),
            Tolerance::rel_abs(1e-5, 1e-5),
        );
    }

    /// Values and the gradients of input, γ and β against burn's `LayerNorm` (in `f64`, so
    /// that the comparison measures this kernel, not `f32` rounding of either), with a γ and
    /// β that are not ones and zeros, over more rows than one parallel task.
    #[test]
    fn training_matches_burns_layer_norm() {
        let device = Default::default();
        for bias in [true, false] {
            let config = LayerNormConfig::new(37).with_epsilon(1e-6).with_bias(bias);
            let mut norm = config.init::<A>(&device);
            let mut norm64 = config.init::<A64>(&device);
            let gamma = random::<NdArray, 1>([37]);
            let beta = random::<NdArray, 1>([37]);
            norm.gamma = Param::from_tensor(Tensor::from_inner(gamma.clone()));
            norm64.gamma = Param::from_tensor(in_f64(gamma));
            norm.beta = norm
                .beta
                .map(|_| Param::from_tensor(Tensor::from_inner(beta.clone())));
            norm64.beta = norm64.beta.map(|_| Param::from_tensor(in_f64(beta)));
            let x = random::<NdArray, 3>([40, 29, 37]);
            let dy = random::<NdArray, 3>([40, 29, 37]);
            let (x64, dy64) = (in_f64(x.clone()).require_grad(), in_f64(dy.clone()));
            let x = Tensor::<A, 3>::from_inner(x).require_grad();
            let ours = layer_norm(&norm, 1e-6, x.clone());
            let reference = norm64.forward(x64.clone());
            accurate(ours.clone().inner(), reference.clone().inner());
            let g = (ours * Tensor::from_inner(dy)).sum().backward();
            let r = (reference * dy64).sum().backward();
            accurate(x.grad(&g).unwrap(), x64.grad(&r).unwrap());
            accurate(norm.gamma.grad(&g).unwrap(), norm64.gamma.grad(&r).unwrap());
            if let (Some(beta), Some(beta64)) = (&norm.beta, &norm64.beta) {
                accurate(beta.grad(&g).unwrap(), beta64.grad(&r).unwrap());
            }
        }
    }

    /// A frozen norm gives its input a gradient and itself none; without autodiff the
    /// values match too.
    #[test]
    fn frozen_and_inference_paths() {
        let device = Default::default();
        let norm = LayerNormConfig::new(8).init::<A>(&device);
        let frozen = norm.clone().no_grad();
        let x = random::<A, 2>([5, 8]).require_grad();
        let grads = layer_norm(&frozen, 1e-5, x.clone()).sum().backward();
        assert!(frozen.gamma.grad(&grads).is_none());
        assert!(x.grad(&grads).is_some());
        let inner = LayerNormConfig::new(8).init::<NdArray>(&device);
        let x = random::<NdArray, 2>([5, 8]);
        close(layer_norm(&inner, 1e-5, x.clone()), inner.forward(x));
    }

    /// A width that does not fit takes burn's layer, which reports it.
    #[test]
    #[should_panic]
    fn a_width_that_does_not_fit_is_burns_to_report() {
        let norm = LayerNormConfig::new(8).init::<NdArray>(&Default::default());
        layer_norm(&norm, 1e-5, random::<NdArray, 2>([2, 6]));
    }
}
