//! GELU as one operation on the CPU backends: the exact one (`x · Φ(x)`, burn's `gelu` and
//! PyTorch's default) and the tanh approximation (burn's `gelu_approximate`, PyTorch's
//! `approximate="tanh"`, GPT-2's `gelu_new`).
//!
//! Why: on ndarray, burn's `gelu` is five passes with the error function computed one
//! element at a time in `f64` on one thread (on Flex, one pass calling the library's scalar
//! `erff` per element), and its backward pass fifteen more (for the derivative of the tanh
//! approximation); a transformer's feed-forward block runs it on its widest tensor. Here the forward pass is one parallel pass, and the backward pass one more
//! with the exact derivative `Φ(x) + x·φ(x)` (what PyTorch computes; burn's approximation
//! differs from it by up to about 1e-3 of the gradient). burn's `gelu_approximate` is eight
//! passes forward (`powf` and `tanh` library calls element by element: two fifths of a
//! small GPT-2's training step) and more backward; here it is one pass each way too. The
//! error function and the exponential (tanh is written with it) are `cpu::math`'s, without
//! library calls, so each pass is vectorised.

use crate::cpu::route::{HostBackend, HostOp, record, route};
use crate::cpu::tensor::{from_host, host_values, primitive};
use crate::cpu::{math, vector_isa};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use rayon::prelude::*;
use std::f32::consts::FRAC_1_SQRT_2;

/// Elements per parallel task.
const TASK_ELEMENTS: usize = 16 * 1024;

/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
/// `√(2/π)`, the tanh approximation's scale.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The tanh approximation's cubic coefficient.
const CUBIC: f32 = 0.044_715;

/// burn's `gelu(x)`: the same values (to float rounding), and the exact gradient.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
///
/// let x = Tensor::<NdArray, 2>::from_floats([[-1.0, 0.0, 2.0]], &Default::default());
/// let y = burn_cpu_kernels::activation::gelu(x.clone());
/// y.into_data().assert_approx_eq::<f32>(
///     &burn::tensor::activation::gelu(x).into_data(),
///     Default::default(),
/// );
/// ```
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    routed(Kind::Exact, x)
}

/// burn's `gelu_approximate(x)`, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: the same
/// values (to float rounding) and gradient.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::prelude::*;
///
/// let x = Tensor::<NdArray, 2>::from_floats([[-1.0, 0.0, 2.0]], &Default::default());
/// let y = burn_cpu_kernels::activation::gelu_tanh(x.clone());
/// y.into_data().assert_approx_eq::<f32>(
///     &burn::tensor::activation::gelu_approximate(x).into_data(),
///     Default::default(),
/// );
/// ```
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    routed(Kind::Tanh, x)
}

/// The fused operation where it applies, burn's own otherwise (other float types, empty
/// tensors, backends that take their own).
fn routed<B: Backend, const D: usize>(kind: Kind, x: Tensor<B, D>) -> Tensor<B, D> {
    let burns = match kind {
        Kind::Exact => burn::tensor::activation::gelu::<D, B>,
        Kind::Tanh => burn::tensor::activation::gelu_approximate::<D, B>,
    };
    if x.dtype() != DType::F32 || x.dims().iter().product::<usize>() == 0 {
        return burns(x);
    }
    let dims = x.dims();
    match route(&Gelu { dims, kind }, x) {
        Ok(y) => y,
        Err(x) => burns(x),
    }
}

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `x · Φ(x)`.
    Exact,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Tanh,
}

/// `x · Φ(x)` (`erf` and `exp` without calls, so that the loops vectorise: [`math`]).
#[inline(always)]
fn gelu_value(x: f32) -> f32 {
    0.5 * x * (1.0 + math::erf(x * FRAC_1_SQRT_2))
}

/// `d/dx (x · Φ(x)) = Φ(x) + x · φ(x)`.
#[inline(always)]
fn gelu_slope(x: f32) -> f32 {
    0.5 * (1.0 + math::erf(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * math::exp(-0.5 * x * x)
}

/// `tanh(u)` as `1 − 2/(e^{2u} + 1)` with [`math::exp`] (no call); |u| is capped at 9,
/// where tanh is ±1 in `f32`, to stay inside `exp`'s domain.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let u = u.clamp(-9.0, 9.0);
    1.0 - 2.0 / (math::exp(2.0 * u) + 1.0)
}

/// `0.5·x·(1 + tanh(u))`, `u = √(2/π)·(x + 0.044715·x³)`.
#[inline(always)]
fn gelu_tanh_value(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x);
    0.5 * x * (1.0 + tanh(u))
}

/// `d/dx = 0.5·(1 + t) + 0.5·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)`, `t = tanh(u)`.
#[inline(always)]
fn gelu_tanh_slope(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x);
    let t = tanh(u);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x)
}

/// One call: the tensor's dimensions and which GELU.
#[derive(Clone, Copy, Debug)]
struct Gelu<const D: usize> {
    dims: [usize; D],
    kind: Kind,
}

fn forward(kind: Kind, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(TASK_ELEMENTS)
        .zip(x.par_chunks(TASK_ELEMENTS))
        .for_each(|(y, x)| match kind {
            Kind::Exact => vector_isa::widest(
                #[inline(always)]
                || y.iter_mut().zip(x).for_each(|(y, &x)| *y = gelu_value(x)),
            ),
            Kind::Tanh => vector_isa::widest(
                #[inline(always)]
                || {
                    y.iter_mut()
                        .zip(x)
                        .for_each(|(y, &x)| *y = gelu_tanh_value(x))
                },
            ),
        });
    y
}

fn backward(kind: Kind, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(TASK_ELEMENTS)
        .zip(
            x.par_chunks(TASK_ELEMENTS)
                .zip(dy.par_chunks(TASK_ELEMENTS)),
        )
        .for_each(|(dx, (x, dy))| match kind {
            Kind::Exact => vector_isa::widest(
                #[inline(always)]
                || {
                    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                        *dx = dy * gelu_slope(x);
                    }
                },
            ),
            Kind::Tanh => vector_isa::widest(
                #[inline(always)]
                || {
                    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                        *dx = dy * gelu_tanh_slope(x);
                    }
                },
            ),
        });
    dx
}

impl<const D: usize> HostOp for Gelu<D> {
    type Operands<B: Backend> = Tensor<B, D>;
    type Output<B: Backend> = Tensor<B, D>;

    fn infers_on(&self, _: HostBackend) -> bool {
        // Both kinds on both backends: Flex's own exact gelu calls the library's scalar
        // `erff` element by element (a ViT's frozen forward spent a ninth of its time
        // there), its tanh approximation is burn's eight operations, as on ndarray.
        true
    }

    fn inference<B: Backend>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let device = x.device();
        let x = primitive(x);
        from_host(
            forward(self.kind, &host_values::<B, D>(&x)),
            self.dims,
            &device,
        )
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        x: Tensor<Autodiff<B, C>, D>,
    ) -> Tensor<Autodiff<B, C>, D> {
        let device: B::Device = x.device();
        let x = primitive(x);
        let y = forward(self.kind, &host_values::<B, D>(&x.primitive));
        let y = primitive(from_host::<B, D>(y, self.dims, &device));
        let saved = GeluSaved::<B, D> {
            input: x.primitive.clone(),
            dims: self.dims,
            kind: self.kind,
            device,
        };
        let output = record(GeluBackward::<D>.prepare::<C>([x.node]), saved, y);
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

/// The input (shared with its tensor, not copied) and its dimensions.
#[derive(Clone)]
struct GeluSaved<B: Backend, const D: usize> {
    input: B::FloatTensorPrimitive,
    dims: [usize; D],
    kind: Kind,
    device: B::Device,
}

impl<B: Backend, const D: usize> std::fmt::Debug for GeluSaved<B, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeluSaved")
            .field("dims", &self.dims)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct GeluBackward<const D: usize>;

impl<B: Backend, const D: usize> Backward<B, 1> for GeluBackward<D> {
    type State = GeluSaved<B, D>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let [Some(parent)] = ops.parents else {
            return;
        };
        let GeluSaved {
            input,
            dims,
            kind,
            device,
        } = ops.state;
        let dx = backward(
            kind,
            &host_values::<B, D>(&input),
            &host_values::<B, D>(&dy),
        );
        grads.register::<B>(parent.id, primitive(from_host::<B, D>(dx, dims, &device)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    /// Values as burn's `gelu`, over more elements than one task.
    #[test]
    fn values_match_burns_gelu() {
        let x = Tensor::<A, 3>::random(
            [7, 33, 150],
            Distribution::Normal(0.0, 3.0),
            &Default::default(),
        );
        let reference = burn::tensor::activation::gelu(x.clone());
        gelu(x.clone())
            .inner()
            .into_data()
            .assert_approx_eq::<f32>(&reference.inner().into_data(), Tolerance::absolute(1e-5));
        let inner = x.inner();
        gelu(inner.clone()).into_data().assert_approx_eq::<f32>(
            &burn::tensor::activation::gelu(inner).into_data(),
            Tolerance::absolute(1e-5),
        );
    }

    /// The gradient is the exact derivative: against central differences of the forward
    /// pass in `f64`, and within burn's tanh approximation of it.
    #[test]
    fn gradient_is_the_exact_derivative() {
        let device = Default::default();
        let points: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
        let x = Tensor::<A, 1>::from_floats(points.as_slice(), &device).require_grad();
        let ours = gelu(x.clone()).sum().backward();
        let ours = x.grad(&ours).unwrap().into_data().to_vec::<f32>().unwrap();
        let exact = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        for (&p, &g) in points.iter().zip(&ours) {
            let h = 1e-4;
            let numeric = (exact(p as f64 + h) - exact(p as f64 - h)) / (2.0 * h);
            assert!(
                (g as f64 - numeric).abs() < 1e-5,
                "at {p}: {g} vs {numeric}"
            );
        }
        let burns = burn::tensor::activation::gelu(x.clone()).sum().backward();
        x.grad(&burns).unwrap().into_data().assert_approx_eq::<f32>(
            &Tensor::<NdArray, 1>::from_floats(ours.as_slice(), &device).into_data(),
            Tolerance::absolute(2e-3),
        );
    }

    /// The tanh approximation: values as burn's `gelu_approximate` (autodiff and inner
    /// tensors, far tails included, where tanh saturates), and the gradient against central
    /// differences of the formula in `f64` and against burn's own backward pass.
    #[test]
    fn tanh_approximation_matches_burn_values_and_gradient() {
        let device = Default::default();
        let x = Tensor::<A, 3>::random([5, 21, 170], Distribution::Normal(0.0, 3.0), &device);
        let x = Tensor::cat(
            vec![
                x,
                Tensor::from_floats([[[-40.0, -9.5, 9.5, 40.0]]], &device)
                    .repeat_dim(0, 5)
                    .repeat_dim(1, 21),
            ],
            2,
        );
        gelu_tanh(x.clone())
            .inner()
            .into_data()
            .assert_approx_eq::<f32>(
                &burn::tensor::activation::gelu_approximate(x.clone())
                    .inner()
                    .into_data(),
                Tolerance::absolute(1e-5),
            );
        gelu_tanh(x.clone().inner())
            .into_data()
            .assert_approx_eq::<f32>(
                &burn::tensor::activation::gelu_approximate(x.inner()).into_data(),
                Tolerance::absolute(1e-5),
            );
        let points: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
        let x = Tensor::<A, 1>::from_floats(points.as_slice(), &device).require_grad();
        let ours = gelu_tanh(x.clone()).sum().backward();
        let ours = x.grad(&ours).unwrap().into_data().to_vec::<f32>().unwrap();
        let formula = |x: f64| {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        };
        for (&p, &g) in points.iter().zip(&ours) {
            let h = 1e-4;
            let numeric = (formula(p as f64 + h) - formula(p as f64 - h)) / (2.0 * h);
            assert!(
                (g as f64 - numeric).abs() < 1e-5,
                "at {p}: {g} vs {numeric}"
            );
        }
        let burns = burn::tensor::activation::gelu_approximate(x.clone())
            .sum()
            .backward();
        x.grad(&burns).unwrap().into_data().assert_approx_eq::<f32>(
            &Tensor::<NdArray, 1>::from_floats(ours.as_slice(), &device).into_data(),
            Tolerance::absolute(1e-5),
        );
    }
}
