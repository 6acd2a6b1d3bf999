//! burn's `BatchNorm` over NCHW maps, followed by an optional residual sum and an
//! activation, as one operation on the CPU backends: `act(bn(x) + residual)`.
//!
//! Why: in training burn's `BatchNorm` is about fifteen tensor operations (the statistics
//! through a transposed copy of the map, then subtract, divide, scale, shift, each recorded
//! by autodiff), and the ReLU or ReLU6 and the residual sum after it two more; a CNN runs
//! one after every convolution, on its largest tensors. They were half of MobileNetV2's
//! training step. Here the statistics are one read of the map (sums in `f64`), the output
//! one write, and the backward pass two reads (the per-channel sums, then the input
//! gradient) from the saved input and output (shared with their tensors, not copied).
//!
//! Semantics are burn's: in training (autodiff) the batch's mean and biased variance
//! normalise the map and move the running statistics by `momentum`; without autodiff the
//! running statistics normalise it. Other backends, element types and ranks get burn's
//! operations.

use crate::cpu::route::{HostBackend, HostOp, record, route};
use crate::cpu::tensor::{from_host, host_values, primitive, values_mut};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};

mod planes;

/// What follows the norm (and the residual sum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormActivation {
    /// Nothing.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet).
    Relu6,
}

impl NormActivation {
    /// `G(x·scale + shift + residual)` into `out` with the activation as a type (`x` is
    /// `out` itself when `None`).
    fn normalise(
        self,
        out: &mut [f32],
        x: Option<&[f32]>,
        residual: Option<&[f32]>,
        scale: &[f32],
        shift: &[f32],
        shape: [usize; 3],
    ) {
        use planes::{Identity, Relu, Relu6, normalise};
        match self {
            Self::Identity => normalise::<Identity>(out, x, residual, scale, shift, shape),
            Self::Relu => normalise::<Relu>(out, x, residual, scale, shift, shape),
            Self::Relu6 => normalise::<Relu6>(out, x, residual, scale, shift, shape),
        }
    }

    /// The backward pass with the activation as a type.
    fn backward(self, pass: &planes::Backward, input: bool, residual: bool) -> planes::Gradients {
        use planes::{Identity, Relu, Relu6};
        match self {
            Self::Identity => pass.run::<Identity>(input, residual),
            Self::Relu => pass.run::<Relu>(input, residual),
            Self::Relu6 => pass.run::<Relu6>(input, residual),
        }
    }

    /// burn's operation.
    fn tensor<B: Backend>(self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Identity => x,
            Self::Relu => burn::tensor::activation::relu(x),
            Self::Relu6 => x.clamp(0.0, 6.0),
        }
    }
}

/// `activation(layer.forward(x) + residual)` for a map `[batch, channels, h, w]`, with the
/// running statistics moved in training as burn's layer moves them. Same values (to float
/// rounding) and gradients (input, γ, β, residual) as burn's operations.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::BatchNormConfig;
/// use burn::prelude::*;
/// use burn::tensor::Distribution;
/// use burn_cpu_kernels::batch_norm::{NormActivation, batch_norm};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let bn = BatchNormConfig::new(3).init::<B>(&device);
/// let x = Tensor::<B, 4>::random([2, 3, 4, 4], Distribution::Default, &device);
/// let y = batch_norm(&bn, x.clone(), None, NormActivation::Relu);
/// let expected = burn::tensor::activation::relu(bn.clone().forward(x));
/// y.into_data().assert_approx_eq::<f32>(&expected.into_data(), Default::default());
/// ```
pub fn batch_norm<B: Backend>(
    layer: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Option<Tensor<B, 4>>,
    activation: NormActivation,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let training = B::ad_enabled(&x.device());
    let fits = n * c * h * w > 0
        && layer.gamma.dims() == [c]
        && x.dtype() == DType::F32
        && layer.gamma.dtype() == DType::F32
        && layer.beta.dtype() == DType::F32
        && residual
            .as_ref()
            .is_none_or(|r| r.dims() == [n, c, h, w] && r.dtype() == DType::F32);
    if !fits {
        return reference(layer, x, residual, activation);
    }
    // Without autodiff the running statistics normalise the map: read them once here.
    let running = (!training).then(|| {
        let read = |t: Tensor<B, 1>| t.into_data().convert::<f32>().into_vec::<f32>();
        (
            read(layer.running_mean.value()),
            read(layer.running_var.value()),
        )
    });
    let running = match running {
        Some((Ok(mean), Ok(var))) => Some((mean, var)),
        Some(_) => return reference(layer, x, residual, activation),
        None => None,
    };
    let call = NormCall {
        dims: [n, c, h, w],
        shape: [n, c, h * w],
        epsilon: layer.epsilon,
        activation,
        running,
    };
    let operands = (x, layer.gamma.val(), layer.beta.val(), residual);
    match route(&call, operands) {
        Ok((y, stats)) => {
            if let Some((mean, var)) = stats {
                update_running(layer, &mean, &var, &y.device());
            }
            y
        }
        Err((x, _, _, residual)) => reference(layer, x, residual, activation),
    }
}

/// burn's operations for the same thing.
fn reference<B: Backend>(
    layer: &BatchNorm<B>,
    x: Tensor<B, 4>,
    residual: Option<Tensor<B, 4>>,
    activation: NormActivation,
) -> Tensor<B, 4> {
    let y = layer.forward(x);
    let y = match residual {
        Some(r) => y + r,
        None => y,
    };
    activation.tensor(y)
}

/// `running ← (1 − momentum)·running + momentum·batch`, as burn's layer does (the batch's
/// biased variance).
fn update_running<B: Backend>(layer: &BatchNorm<B>, mean: &[f32], var: &[f32], device: &B::Device) {
    let m = layer.momentum;
    let moved = |state: &burn::module::RunningState<Tensor<B, 1>>, batch: &[f32]| {
        let old = state
            .value_sync()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>();
        if let Ok(old) = old {
            let new: Vec<f32> = old
                .iter()
                .zip(batch)
                .map(|(&o, &b)| ((1.0 - m) * o as f64 + m * b as f64) as f32)
                .collect();
            let len = new.len();
            state.update(Tensor::from_data(TensorData::new(new, [len]), device));
        }
    };
    moved(&layer.running_mean, mean);
    moved(&layer.running_var, var);
}

/// One call: `[batch, channels, pixels]` (the map's `dims`), and the running statistics
/// when not training.
struct NormCall {
    dims: [usize; 4],
    shape: [usize; 3],
    epsilon: f64,
    activation: NormActivation,
    running: Option<(Vec<f32>, Vec<f32>)>,
}

type Operands<B> = (
    Tensor<B, 4>,
    Tensor<B, 1>,
    Tensor<B, 1>,
    Option<Tensor<B, 4>>,
);

/// Per channel `(scale, shift)` with `y = x·scale + shift`: `γ·inv` and `β − mean·γ·inv`.
fn affine(mean: &[f32], inv: &[f32], gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
    mean.iter()
        .zip(inv)
        .zip(gamma.iter().zip(beta))
        .map(|((&m, &i), (&g, &b))| (g * i, b - m * g * i))
        .unzip()
}

fn inverse_std(var: &[f32], epsilon: f64) -> Vec<f32> {
    var.iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect()
}

impl HostOp for NormCall {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = (Tensor<B, 4>, Option<(Vec<f32>, Vec<f32>)>);

    fn infers_on(&self, _: HostBackend) -> bool {
        true
    }

    fn inference<B: Backend>(&self, (x, gamma, beta, residual): Operands<B>) -> Self::Output<B> {
        let device = x.device();
        let (x, gamma, beta) = (primitive(x), primitive(gamma), primitive(beta));
        let residual = residual.map(primitive);
        let (mean, var) = match &self.running {
            Some(stats) => (stats.0.clone(), stats.1.clone()),
            // Inference with batch statistics (an autodiff backend's inner calls do not
            // come here; kept total for safety).
            None => planes::statistics(&host_values::<B, 4>(&x), self.shape),
        };
        let inv = inverse_std(&var, self.epsilon);
        let (scale, shift) = affine(
            &mean,
            &inv,
            &host_values::<B, 1>(&gamma),
            &host_values::<B, 1>(&beta),
        );
        let residual = residual.as_ref().map(host_values::<B, 4>);
        let mut x = x;
        // A frozen body's maps are held by nothing else: normalised where they are, which
        // saves an allocation, zeroing it and a pass over memory per norm.
        if let Some(values) = values_mut::<B>(&mut x) {
            let residual = residual.as_deref();
            let shape = self.shape;
            self.activation
                .normalise(values, None, residual, &scale, &shift, shape);
            return (Tensor::from_primitive(TensorPrimitive::Float(x)), None);
        }
        let mut y = vec![0.0f32; self.dims.iter().product()];
        let xs = host_values::<B, 4>(&x);
        let (residual, shape) = (residual.as_deref(), self.shape);
        self.activation
            .normalise(&mut y, Some(&xs), residual, &scale, &shift, shape);
        (from_host(y, self.dims, &device), None)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (x, gamma, beta, residual): Operands<Autodiff<B, C>>,
    ) -> Self::Output<Autodiff<B, C>> {
        let device: B::Device = x.device();
        let dims = x.dims();
        let (x, gamma, beta) = (primitive(x), primitive(gamma), primitive(beta));
        let residual = residual.map(primitive);
        let xs = host_values::<B, 4>(&x.primitive);
        let (mean, var) = planes::statistics(&xs, self.shape);
        let inv = inverse_std(&var, self.epsilon);
        let gamma_values = host_values::<B, 1>(&gamma.primitive).to_vec();
        let (scale, shift) = affine(
            &mean,
            &inv,
            &gamma_values,
            &host_values::<B, 1>(&beta.primitive),
        );
        let mut y = vec![0.0f32; xs.len()];
        self.activation.normalise(
            &mut y,
            Some(&xs),
            residual
                .as_ref()
                .map(|r| host_values::<B, 4>(&r.primitive))
                .as_deref(),
            &scale,
            &shift,
            self.shape,
        );
        drop(xs);
        let y = primitive(from_host::<B, 4>(y, dims, &device));
        let saved = NormSaved::<B> {
            input: x.primitive.clone(),
            output: (self.activation != NormActivation::Identity).then(|| y.clone()),
            mean: mean.clone(),
            inv,
            gamma: gamma_values,
            shape: self.shape,
            dims,
            activation: self.activation,
            device,
        };
        let output = match residual {
            Some(r) => record(
                NormBackward.prepare::<C>([x.node, gamma.node, beta.node, r.node]),
                saved,
                y,
            ),
            None => record(
                NormBackward.prepare::<C>([x.node, gamma.node, beta.node]),
                saved,
                y,
            ),
        };
        (
            Tensor::from_primitive(TensorPrimitive::Float(output)),
            Some((mean, var)),
        )
    }
}

/// What the backward pass needs.
#[derive(Clone)]
struct NormSaved<B: Backend> {
    input: B::FloatTensorPrimitive,
    /// The output, when an activation's slope depends on it.
    output: Option<B::FloatTensorPrimitive>,
    mean: Vec<f32>,
    inv: Vec<f32>,
    gamma: Vec<f32>,
    shape: [usize; 3],
    dims: [usize; 4],
    activation: NormActivation,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for NormSaved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormSaved")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Parents: input, γ, β, and the residual if any.
#[derive(Debug)]
struct NormBackward;

impl<B: Backend, const N: usize> Backward<B, N> for NormBackward {
    type State = NormSaved<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let parent = |i: usize| ops.parents.get(i).and_then(|p| p.as_ref()).map(|p| p.id);
        let nodes: [Option<NodeId>; 4] = std::array::from_fn(parent);
        let dy = grads.consume::<B>(&ops.node);
        let dy = host_values::<B, 4>(&dy);
        let x = host_values::<B, 4>(&s.input);
        let y = s.output.as_ref().map(host_values::<B, 4>);
        let pass = planes::Backward {
            x: &x,
            y: y.as_deref(),
            dy: &dy,
            mean: &s.mean,
            inv: &s.inv,
            gamma: &s.gamma,
            shape: s.shape,
        };
        let g = s
            .activation
            .backward(&pass, nodes[0].is_some(), nodes[3].is_some());
        let c = s.shape[1];
        let device = &s.device;
        if let Some(node) = nodes[0] {
            grads.register::<B>(node, primitive(from_host::<B, 4>(g.input, s.dims, device)));
        }
        if let Some(node) = nodes[3] {
            grads.register::<B>(
                node,
                primitive(from_host::<B, 4>(g.residual, s.dims, device)),
            );
        }
        if let Some(node) = nodes[1] {
            grads.register::<B>(node, primitive(from_host::<B, 1>(g.gamma, [c], device)));
        }
        if let Some(node) = nodes[2] {
            grads.register::<B>(node, primitive(from_host::<B, 1>(g.beta, [c], device)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{AutodiffModule, Param};
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Distribution, Tolerance};

    type A = Autodiff<NdArray>;

    fn random<B: Backend, const D: usize>(dims: [usize; D]) -> Tensor<B, D> {
        Tensor::random(dims, Distribution::Normal(0.3, 1.5), &Default::default())
    }

    #[track_caller]
    fn close<const D: usize>(a: Tensor<NdArray, D>, b: Tensor<NdArray, D>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(2e-4, 2e-5));
    }

    /// For γ's and β's gradients: sums over every pixel of a channel (thousands of terms of
    /// size about 1), which burn adds in `f32` and this kernel in `f64`; a wrong term would
    /// be off by about 1.
    #[track_caller]
    fn close_sums(a: Tensor<NdArray, 1>, b: Tensor<NdArray, 1>) {
        a.into_data()
            .assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(2e-4, 1e-3));
    }

    fn layer() -> BatchNorm<A> {
        let mut bn = BatchNormConfig::new(5)
            .with_momentum(0.2)
            .init::<A>(&Default::default());
        bn.gamma = Param::from_tensor(random::<A, 1>([5]));
        bn.beta = Param::from_tensor(random::<A, 1>([5]));
        bn
    }

    /// Two layers with the same parameters and separate gradients and running statistics.
    fn twins() -> (BatchNorm<A>, BatchNorm<A>) {
        let ours = layer();
        let burns = BatchNorm {
            gamma: Param::from_tensor(ours.gamma.val().detach().require_grad()),
            beta: Param::from_tensor(ours.beta.val().detach().require_grad()),
            ..layer()
        };
        (ours, burns)
    }

    /// `dy`, zero where the pre-activation `bn(x) + r` lies within rounding of a kink of
    /// ReLU or ReLU6 (0, 6): two correct computations may gate such a pixel differently,
    /// and one pixel gated differently moves its channel's sums (hence every input
    /// gradient of the channel) by more than the tolerance.
    fn without_kinks(
        bn: &BatchNorm<A>,
        x: &Tensor<A, 4>,
        r: Option<&Tensor<A, 4>>,
        dy: Tensor<A, 4>,
    ) -> Tensor<A, 4> {
        let probe = BatchNorm {
            gamma: Param::from_tensor(bn.gamma.val().detach()),
            beta: Param::from_tensor(bn.beta.val().detach()),
            ..layer()
        };
        let pre = probe.forward(x.clone().detach());
        let pre = match r {
            Some(r) => pre + r.clone().detach(),
            None => pre,
        };
        let near = |t: Tensor<A, 4>| t.abs().lower_elem(1e-3);
        let kink = near(pre.clone()).bool_or(near(pre - 6.0));
        dy.mask_fill(kink, 0.0)
    }

    /// Training: values, every gradient (input, γ, β, residual) and the running statistics
    /// after the step, against burn's layer, for each activation, with and without a
    /// residual, over more planes than one task.
    #[test]
    fn training_matches_burns_layer() {
        for activation in [
            NormActivation::Identity,
            NormActivation::Relu,
            NormActivation::Relu6,
        ] {
            for with_residual in [false, true] {
                let (ours_bn, burns_bn) = twins();
                let x = random::<A, 4>([6, 5, 33, 35]).require_grad();
                let r = with_residual.then(|| random::<A, 4>([6, 5, 33, 35]).require_grad());
                let dy = without_kinks(&ours_bn, &x, r.as_ref(), random::<A, 4>([6, 5, 33, 35]));
                let ours = batch_norm(&ours_bn, x.clone(), r.clone(), activation);
                let expected = reference(&burns_bn, x.clone(), r.clone(), activation);
                close(ours.clone().inner(), expected.clone().inner());
                let g = (ours * dy.clone()).sum().backward();
                let e = (expected * dy).sum().backward();
                close(x.grad(&g).unwrap(), x.grad(&e).unwrap());
                close_sums(
                    ours_bn.gamma.grad(&g).unwrap(),
                    burns_bn.gamma.grad(&e).unwrap(),
                );
                close_sums(
                    ours_bn.beta.grad(&g).unwrap(),
                    burns_bn.beta.grad(&e).unwrap(),
                );
                if let Some(r) = &r {
                    close(r.grad(&g).unwrap(), r.grad(&e).unwrap());
                }
                close(
                    ours_bn.running_mean.value().inner(),
                    burns_bn.running_mean.value().inner(),
                );
                close(
                    ours_bn.running_var.value().inner(),
                    burns_bn.running_var.value().inner(),
                );
            }
        }
    }

    /// A map far from zero (a convolution's output before its first norm can be): the
    /// statistics and the gradients keep their digits, against burn's layer computed in
    /// `f64` (its `f32` result loses about three digits here).
    #[test]
    fn maps_far_from_zero_keep_their_precision() {
        type A64 = Autodiff<NdArray<f64>>;
        fn wide<const D: usize>(t: Tensor<NdArray, D>) -> Tensor<A64, D> {
            Tensor::from_data(t.into_data().convert::<f64>(), &Default::default())
        }
        let bn = layer();
        let x = (random::<A, 4>([4, 5, 17, 19]) + 100.0).require_grad();
        let dy = random::<A, 4>([4, 5, 17, 19]);
        let ours = batch_norm(&bn, x.clone(), None, NormActivation::Identity);
        let g = (ours.clone() * dy.clone()).sum().backward();

        let mut exact = BatchNormConfig::new(5).init::<A64>(&Default::default());
        exact.gamma = Param::from_tensor(wide(bn.gamma.val().inner()).require_grad());
        exact.beta = Param::from_tensor(wide(bn.beta.val().inner()).require_grad());
        let x64 = wide(x.clone().inner()).require_grad();
        let y64 = exact.forward(x64.clone());
        let e = (y64.clone() * wide(dy.inner())).sum().backward();
        let tolerance = Tolerance::rel_abs(1e-3, 1e-4);
        let narrow = |t: Tensor<NdArray<f64>, 4>| t.into_data().convert::<f32>();
        ours.inner()
            .into_data()
            .assert_approx_eq::<f32>(&narrow(y64.inner()), tolerance);
        x.grad(&g)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&narrow(x64.grad(&e).unwrap()), tolerance);
    }

    /// Without autodiff the running statistics normalise the map, as burn's layer.
    #[test]
    fn inference_uses_the_running_statistics() {
        let bn = layer();
        // Move the running statistics away from 0 and 1 first.
        let _ = batch_norm(
            &bn,
            random::<A, 4>([4, 5, 6, 6]),
            None,
            NormActivation::Relu,
        );
        let inner = bn.valid();
        let x = random::<NdArray, 4>([3, 5, 7, 6]);
        let r = random::<NdArray, 4>([3, 5, 7, 6]);
        let before = x.to_data();
        for residual in [Some(r), None] {
            let expected = reference(&inner, x.clone(), residual.clone(), NormActivation::Relu6);
            // A map another tensor holds is left as it was; one nothing else holds is
            // normalised in place.
            let shared = batch_norm(&inner, x.clone(), residual.clone(), NormActivation::Relu6);
            x.to_data().assert_eq(&before, true);
            close(shared, expected.clone());
            let owned = x.clone().mul_scalar(1.0);
            close(
                batch_norm(&inner, owned, residual, NormActivation::Relu6),
                expected,
            );
        }
    }
}
