//! SGD with momentum, Nesterov and weight decay as one pass over each parameter: the same
//! update as burn's `Sgd`, and a saved state that burn's reads and writes.
//!
//! Why: burn's `Sgd` with momentum and weight decay is about six tensor operations per
//! parameter, each reading and allocating a tensor the size of the parameter; for a ResNet
//! trained in full that is tens of millions of elements written several times a step. Here
//! the velocity and the weights are updated in their own buffers (when no other tensor shares
//! them), each element read once, on rayon's threads. Other backends (wgpu) take burn's
//! tensor operations.

use crate::cpu::buffer::HostBuffer;
use crate::cpu::tensor::{self as host_tensor, host_values, primitive};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{LearningRate, SimpleOptimizer};
use burn::prelude::*;
use burn::record::Record;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;

/// Elements per parallel task (as AdamW's): a 2M-element convolution is split between
/// threads, a bias is one task.
const CHUNK: usize = 1 << 15;

/// Stochastic gradient descent (burn's `Sgd`, which is PyTorch's `torch.optim.SGD` update)
/// fused into one pass per parameter on ndarray and Flex.
///
/// Built from burn's own configurations: [`MomentumConfig`] (momentum, dampening, Nesterov)
/// and [`WeightDecayConfig`] (an L2 penalty added to the gradient). PyTorch's undampened
/// momentum is `MomentumConfig::new().with_dampening(0.0)`; burn's default dampening is 0.1.
/// The saved state has the field names of burn's `SgdState`, so checkpoints written with
/// burn's `Sgd` load here and the other way round.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::momentum::MomentumConfig;
/// use burn::optim::{GradientsParams, Optimizer};
/// use burn::prelude::*;
/// use burn_cpu_kernels::sgd::FusedSgd;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer: Linear<B> = LinearConfig::new(4, 2).init(&device);
/// let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0);
/// let mut optim = FusedSgd::new(Some(&momentum), None).init::<B, Linear<B>>();
/// let x = Tensor::<B, 2>::ones([3, 4], &device);
/// let grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
/// let layer = optim.step(0.1, layer, grads);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedSgd {
    momentum: Option<Momentum>,
    weight_decay: Option<f32>,
}

/// Momentum's three numbers, as burn's `Momentum` keeps them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Momentum {
    momentum: f32,
    /// `1 − dampening`, the share of the new gradient in the velocity.
    undamped: f32,
    nesterov: bool,
}

/// The state of one parameter: its velocity when the optimizer has momentum. The field
/// names are those of burn's `SgdState` and `MomentumState`, so the two records are the same
/// on disk.
#[derive(Record, Clone)]
pub struct FusedSgdState<B: Backend, const D: usize> {
    /// The momentum's state, `None` for plain SGD.
    pub momentum: Option<VelocityState<B, D>>,
}

/// The running velocity of momentum SGD.
#[derive(Record, Clone)]
pub struct VelocityState<B: Backend, const D: usize> {
    /// `v ← momentum·v + (1 − dampening)·g`, started at the first step's gradient.
    pub velocity: Tensor<B, D>,
}

impl FusedSgd {
    /// SGD with the given momentum and weight decay (`None` for neither: plain SGD).
    pub fn new(
        momentum: Option<&MomentumConfig>,
        weight_decay: Option<&WeightDecayConfig>,
    ) -> Self {
        Self {
            momentum: momentum.map(|c| Momentum {
                momentum: c.momentum as f32,
                undamped: (1.0 - c.dampening) as f32,
                nesterov: c.nesterov,
            }),
            weight_decay: weight_decay.map(|c| c.penalty),
        }
    }

    /// The optimizer for module `M` on autodiff backend `B`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        self,
    ) -> OptimizerAdaptor<FusedSgd, M, B> {
        OptimizerAdaptor::from(self)
    }

    /// Updates one stretch of weights (and velocity, when there is momentum) from its
    /// gradients, in place. `first` starts the velocity at the gradient, as burn does. The
    /// order of operations is burn's, so that the results round the same way.
    fn apply(&self, lr: f32, first: bool, w: &mut [f32], v: &mut [f32], g: &[f32]) {
        let decayed = |w: f32, g: f32| match self.weight_decay {
            Some(penalty) => w * penalty + g,
            None => g,
        };
        let Some(m) = self.momentum else {
            for (w, &g) in w.iter_mut().zip(g) {
                *w -= decayed(*w, g) * lr;
            }
            return;
        };
        for ((w, v), &g) in w.iter_mut().zip(v).zip(g) {
            let g = decayed(*w, g);
            *v = if first {
                g
            } else {
                g * m.undamped + *v * m.momentum
            };
            let step = if m.nesterov { *v * m.momentum + g } else { *v };
            *w -= step * lr;
        }
    }

    /// [`apply`](Self::apply) over whole tensors, in parallel by stretches. Without momentum
    /// `v` is empty.
    fn apply_parallel(&self, lr: f32, first: bool, w: &mut [f32], v: &mut [f32], g: &[f32]) {
        if w.len() <= CHUNK {
            return self.apply(lr, first, w, v, g);
        }
        if v.is_empty() {
            return w
                .par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(|(w, g)| self.apply(lr, first, w, &mut [], g));
        }
        w.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((w, v), g)| self.apply(lr, first, w, v, g));
    }

    /// One pass over host buffers: the weight and velocity in place when nothing else holds
    /// them, in copies otherwise (a weight the caller still holds elsewhere, say).
    fn step_on_host<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        velocity: Option<Tensor<B, D>>,
    ) -> (Tensor<B, D>, Option<Tensor<B, D>>) {
        let device = tensor.device();
        let dims = tensor.dims();
        let first = velocity.is_none();
        let mut w = HostBuffer::new(Some(tensor), dims);
        let mut v = self.momentum.map(|_| HostBuffer::new(velocity, dims));
        let g = primitive(grad);
        let g = host_values::<B, D>(&g);
        let v_values: &mut [f32] = match v.as_mut() {
            Some(v) => v.values(),
            None => &mut [],
        };
        // burn multiplies by the rate as an `f32` scalar.
        self.apply_parallel(lr as f32, first, w.values(), v_values, &g);
        (
            w.into_tensor(dims, &device),
            v.map(|v| v.into_tensor(dims, &device)),
        )
    }

    /// burn's `Sgd` update in tensor operations, for backends without host buffers.
    fn step_with_tensor_ops<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        velocity: Option<Tensor<B, D>>,
    ) -> (Tensor<B, D>, Option<Tensor<B, D>>) {
        let grad = match self.weight_decay {
            Some(penalty) => tensor.clone().mul_scalar(penalty).add(grad),
            None => grad,
        };
        let (step, velocity) = match self.momentum {
            None => (grad, None),
            Some(m) => {
                let v = match velocity {
                    Some(v) => grad
                        .clone()
                        .mul_scalar(m.undamped)
                        .add(v.mul_scalar(m.momentum)),
                    None => grad.clone(),
                };
                let step = if m.nesterov {
                    v.clone().mul_scalar(m.momentum).add(grad)
                } else {
                    v.clone()
                };
                (step, Some(v))
            }
        };
        (tensor - step.mul_scalar(lr), velocity)
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedSgd {
    type State<const D: usize> = FusedSgdState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let velocity = state.and_then(|s| s.momentum).map(|m| m.velocity);
        let on_host = host_tensor::is_host_backend::<B>()
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && velocity.as_ref().is_none_or(|v| v.dtype() == DType::F32);
        let (tensor, velocity) = if on_host {
            crate::threads::keep_pool_awake();
            self.step_on_host(lr, tensor, grad, velocity)
        } else {
            self.step_with_tensor_ops(lr, tensor, grad, velocity)
        };
        let state = FusedSgdState {
            momentum: velocity.map(|velocity| VelocityState { velocity }),
        };
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        FusedSgdState {
            momentum: state.momentum.map(|m| VelocityState {
                velocity: m.velocity.to_device(device),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Param;
    use burn::nn::Linear;
    use burn::optim::{GradientsParams, Optimizer, SgdConfig};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};

    type B = Autodiff<NdArray>;

    /// Every combination the configurations allow: plain, PyTorch's undampened momentum,
    /// burn's default dampening, Nesterov, each with and without weight decay.
    fn settings() -> Vec<(Option<MomentumConfig>, Option<WeightDecayConfig>)> {
        let momenta = [
            None,
            Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0)),
            Some(MomentumConfig::new()),
            Some(
                MomentumConfig::new()
                    .with_momentum(0.8)
                    .with_dampening(0.0)
                    .with_nesterov(true),
            ),
        ];
        momenta
            .into_iter()
            .flat_map(|m| [None, Some(WeightDecayConfig::new(0.05))].map(|d| (m.clone(), d)))
            .collect()
    }

    fn fused(m: &Option<MomentumConfig>, d: &Option<WeightDecayConfig>) -> FusedSgd {
        FusedSgd::new(m.as_ref(), d.as_ref())
    }

    fn burns(m: &Option<MomentumConfig>, d: &Option<WeightDecayConfig>) -> SgdConfig {
        SgdConfig::new()
            .with_momentum(m.clone())
            .with_weight_decay(d.clone())
    }

    fn layer() -> Linear<B> {
        let device = Default::default();
        // Values of both signs and a spread of sizes, the same on every call.
        let ramp =
            |n: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.13).collect() };
        let w = Tensor::<B, 1>::from_floats(ramp(15).as_slice(), &device).reshape([5, 3]);
        let b = Tensor::<B, 1>::from_floats(ramp(3).as_slice(), &device);
        Linear {
            weight: Param::from_tensor(w),
            bias: Some(Param::from_tensor(b)),
        }
    }

    /// Gradients of a loss that changes from step to step.
    fn grads(model: &Linear<B>, step: usize) -> GradientsParams {
        let device = Default::default();
        let x: Vec<f32> = (0..20)
            .map(|i| (((i + 3 * step) * 5 % 13) as f32 - 6.0) * 0.2)
            .collect();
        let x = Tensor::<B, 1>::from_floats(x.as_slice(), &device).reshape([4, 5]);
        let loss = model.forward(x).powi_scalar(2).mean();
        GradientsParams::from_grads(loss.backward(), model)
    }

    fn values(model: &Linear<B>) -> Vec<f32> {
        let bias = model.bias.as_ref().unwrap().val();
        let mut v = model.weight.val().into_data().to_vec::<f32>().unwrap();
        v.extend(bias.into_data().to_vec::<f32>().unwrap());
        v
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn steps_as_burns_sgd_does() {
        for (m, d) in settings() {
            let mut ours = fused(&m, &d).init::<B, Linear<B>>();
            let mut theirs = burns(&m, &d).init::<B, Linear<B>>();
            let (mut a, mut b) = (layer(), layer());
            for step in 0..6 {
                let lr = 0.05 / (step + 1) as f64;
                let ga = grads(&a, step);
                let gb = grads(&b, step);
                a = ours.step(lr, a, ga);
                b = theirs.step(lr, b, gb);
                assert_close(&values(&a), &values(&b));
            }
            assert_ne!(
                values(&a),
                values(&layer()),
                "the weights moved ({m:?}, {d:?})"
            );
        }
    }

    #[test]
    fn host_pass_and_tensor_ops_agree() {
        type I = NdArray;
        let device = Default::default();
        let w = Tensor::<I, 1>::from_floats([0.5, -1.0, 2.0, 0.0, -0.25], &device);
        let g = Tensor::<I, 1>::from_floats([0.1, 0.0, -3.0, 1e-4, 2.0], &device);
        let read = |t: &Tensor<I, 1>| t.clone().into_data().to_vec::<f32>().unwrap();
        for (m, d) in settings() {
            let opt = fused(&m, &d);
            let (mut host, mut ops) = ((w.clone() * 1.0, None), (w.clone() * 1.0, None));
            for step in 0..4 {
                let g = g.clone().mul_scalar(1.0 - 0.3 * step as f32);
                host = opt.step_on_host(0.1, host.0, g.clone(), host.1);
                ops = opt.step_with_tensor_ops(0.1, ops.0, g, ops.1);
            }
            assert_close(&read(&host.0), &read(&ops.0));
            assert_eq!(host.1.is_some(), m.is_some());
            if let (Some(h), Some(o)) = (host.1, ops.1) {
                assert_close(&read(&h), &read(&o));
            }
        }
    }

    #[test]
    fn a_weight_held_elsewhere_is_left_as_it_was() {
        type I = NdArray;
        let device = Default::default();
        let w = Tensor::<I, 1>::from_floats([1.0, -2.0, 3.0], &device);
        let g = Tensor::<I, 1>::from_floats([0.5, 0.5, -0.5], &device);
        let momentum = MomentumConfig::new().with_dampening(0.0);
        let opt = FusedSgd::new(Some(&momentum), None);
        let (updated, velocity) = opt.step_on_host(0.1, w.clone(), g.clone(), None);
        assert_eq!(w.into_data().to_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.0]);
        // First step: the velocity is the gradient.
        let velocity = velocity.unwrap().into_data().to_vec::<f32>().unwrap();
        assert_eq!(velocity, vec![0.5, 0.5, -0.5]);
        let updated = updated.into_data().to_vec::<f32>().unwrap();
        assert_close(&updated, &[0.95, -2.05, 3.05]);
    }

    #[test]
    fn large_tensors_are_split_between_threads_with_the_same_result() {
        let n = 3 * CHUNK + 17;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.01)
            .collect();
        let start = |i: usize| (i % 13) as f32 * 0.1 - 0.6;
        for (m, d) in settings() {
            let opt = fused(&m, &d);
            let len = if m.is_some() { n } else { 0 };
            let mut serial: [Vec<f32>; 2] =
                [(0..n).map(start).collect(), (0..len).map(start).collect()];
            let mut parallel = serial.clone();
            for first in [true, false] {
                let [w, v] = &mut serial;
                opt.apply(0.01, first, w, v, &g);
                let [w, v] = &mut parallel;
                opt.apply_parallel(0.01, first, w, v, &g);
                assert!(serial == parallel, "the parallel pass differs");
            }
        }
    }

    /// Momentum's state written by burn's `Sgd` continues here, and ours continues in burn's.
    #[test]
    fn burns_sgd_state_carries_over_both_ways() {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let momentum = Some(MomentumConfig::new().with_momentum(0.9).with_dampening(0.0));
        let decay = Some(WeightDecayConfig::new(0.01));
        let mut theirs = burns(&momentum, &decay).init::<B, Linear<B>>();
        let mut ours = fused(&momentum, &decay).init::<B, Linear<B>>();
        let (mut a, mut b) = (layer(), layer());
        for step in 0..3 {
            let ga = grads(&a, step);
            let gb = grads(&b, step);
            a = ours.step(0.02, a, ga);
            b = theirs.step(0.02, b, gb);
        }
        let device = Default::default();
        let bytes = Recorder::<B>::record(&recorder, theirs.to_record(), ()).unwrap();
        let record = Recorder::<B>::load(&recorder, bytes, &device).unwrap();
        let mut ours_from_burn = fused(&momentum, &decay)
            .init::<B, Linear<B>>()
            .load_record(record);
        let bytes = Recorder::<B>::record(&recorder, ours.to_record(), ()).unwrap();
        let record = Recorder::<B>::load(&recorder, bytes, &device).unwrap();
        let mut burn_from_ours = burns(&momentum, &decay)
            .init::<B, Linear<B>>()
            .load_record(record);
        let (mut c, mut e) = (b.clone(), a.clone());
        for step in 3..6 {
            let (ga, gb) = (grads(&a, step), grads(&b, step));
            let (gc, ge) = (grads(&c, step), grads(&e, step));
            a = ours.step(0.02, a, ga);
            b = theirs.step(0.02, b, gb);
            c = ours_from_burn.step(0.02, c, gc);
            e = burn_from_ours.step(0.02, e, ge);
        }
        assert_close(&values(&c), &values(&b));
        assert_close(&values(&e), &values(&a));
        assert_close(&values(&a), &values(&b));
    }
}
