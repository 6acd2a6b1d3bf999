//! AdamW as one pass over each parameter: the same update and the same saved state as
//! burn's `AdamW`, computed in a single loop per tensor on the CPU backends.
//!
//! Why: burn's `AdamW` is about fifteen tensor operations per parameter, each reading and
//! allocating a tensor the size of the parameter, which makes the optimizer a visible share
//! of a full fine-tuning step on the CPU. Here the moments and the weights are
//! updated in their own buffers (when no other tensor shares them), each element read
//! once, on rayon's threads. Other backends (wgpu) take burn's tensor operations.

use crate::cpu::buffer::HostBuffer;
use crate::cpu::tensor::{self as host_tensor, host_values, primitive};
use crate::cpu::vector_isa;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;

/// Elements per parallel task: small enough to share a 1M-element weight between threads,
/// large enough that a bias is one task.
const CHUNK: usize = 1 << 15;

/// AdamW (Loshchilov & Hutter; PyTorch's `torch.optim.AdamW` update) fused into one pass
/// per parameter on ndarray and Flex.
///
/// Its state is burn's [`AdamWState`], so checkpoints written with burn's `AdamW` load
/// here and the other way round, and every backend gives burn's `AdamW` results (tested to
/// float rounding). No AMSGrad.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::{GradientsParams, Optimizer};
/// use burn::prelude::*;
/// use burn_cpu_kernels::adamw::FusedAdamW;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer: Linear<B> = LinearConfig::new(4, 2).init(&device);
/// let mut optim = FusedAdamW::new(0.01, 0.9, 0.999, 1e-8).init::<B, Linear<B>>();
/// let x = Tensor::<B, 2>::ones([3, 4], &device);
/// let grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
/// let layer = optim.step(1e-3, layer, grads);
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusedAdamW {
    weight_decay: f32,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
}

impl FusedAdamW {
    /// AdamW with decoupled `weight_decay`, moment decays `beta_1`, `beta_2` and
    /// denominator term `epsilon` (PyTorch's defaults: 0.01, 0.9, 0.999, 1e-8).
    pub fn new(weight_decay: f32, beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        Self {
            weight_decay,
            beta_1,
            beta_2,
            epsilon,
        }
    }

    /// The optimizer for module `M` on autodiff backend `B`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        self,
    ) -> OptimizerAdaptor<FusedAdamW, M, B> {
        OptimizerAdaptor::from(self)
    }

    /// The constants of step number `time` (counting from 1) at rate `lr`.
    fn constants(&self, lr: LearningRate, time: usize) -> StepConstants {
        let t = time.min(i32::MAX as usize) as i32;
        StepConstants {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            correction_1: 1.0 - self.beta_1.powi(t),
            correction_2: 1.0 - self.beta_2.powi(t),
            keep: (1.0 - lr * self.weight_decay as f64) as f32,
            lr: lr as f32,
        }
    }
}

/// One step's numbers, rounded to `f32` the way burn's `AdamW` rounds them.
#[derive(Clone, Copy)]
struct StepConstants {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    correction_1: f32,
    correction_2: f32,
    /// `1 − lr·weight_decay`, the decoupled decay's factor.
    keep: f32,
    lr: f32,
}

impl StepConstants {
    /// Updates one stretch of weights and moments from its gradients, in place. The order of
    /// operations is burn's, so that the results round the same way.
    fn apply(&self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        // The division and square root per element bound this loop: 16 lanes instead of 4.
        vector_isa::widest(
            #[inline(always)]
            || self.apply_loop(w, m, v, g),
        )
    }

    #[inline(always)]
    fn apply_loop(&self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        let (b1, b2) = (self.beta_1, self.beta_2);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
            *m = *m * b1 + g * f1;
            *v = *v * b2 + g * g * f2;
            let delta = (*m / self.correction_1) / ((*v / self.correction_2).sqrt() + self.epsilon);
            *w = *w * self.keep - delta * self.lr;
        }
    }

    /// [`apply`](Self::apply) over whole tensors, in parallel by stretches.
    fn apply_parallel(&self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        if w.len() <= CHUNK {
            return self.apply(w, m, v, g);
        }
        w.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((w, m), v), g)| self.apply(w, m, v, g));
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let moments = state.map(|s| s.momentum);
        let on_host = host_tensor::is_host_backend::<B>()
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && moments.as_ref().is_none_or(|s| {
                s.max_moment_2.is_none()
                    && s.moment_1.dtype() == DType::F32
                    && s.moment_2.dtype() == DType::F32
            });
        let (tensor, momentum) = if on_host {
            crate::threads::keep_pool_awake();
            self.step_on_host(lr, tensor, grad, moments)
        } else {
            self.step_with_tensor_ops(lr, tensor, grad, moments)
        };
        (tensor, Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

impl FusedAdamW {
    /// One pass over host buffers: the weight and moments in place when nothing else holds
    /// them, in copies otherwise (a weight the caller still holds elsewhere, say).
    fn step_on_host<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        moments: Option<AdaptiveMomentumState<B, D>>,
    ) -> (Tensor<B, D>, AdaptiveMomentumState<B, D>) {
        let device = tensor.device();
        let dims = tensor.dims();
        let (time, m, v) = match moments {
            Some(s) => (s.time + 1, Some(s.moment_1), Some(s.moment_2)),
            None => (1, None, None),
        };
        let constants = self.constants(lr, time);
        let mut w = HostBuffer::new(Some(tensor), dims);
        let mut m = HostBuffer::new(m, dims);
        let mut v = HostBuffer::new(v, dims);
        let g = primitive(grad);
        constants.apply_parallel(w.values(), m.values(), v.values(), &host_values::<B, D>(&g));
        let state = AdaptiveMomentumState {
            time,
            moment_1: m.into_tensor(dims, &device),
            moment_2: v.into_tensor(dims, &device),
            max_moment_2: None,
        };
        (w.into_tensor(dims, &device), state)
    }

    /// burn's `AdamW` update in tensor operations, for backends without host buffers.
    fn step_with_tensor_ops<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        moments: Option<AdaptiveMomentumState<B, D>>,
    ) -> (Tensor<B, D>, AdaptiveMomentumState<B, D>) {
        let (b1, b2) = (self.beta_1, self.beta_2);
        let (time, m, v) = match moments {
            Some(s) => (
                s.time + 1,
                s.moment_1.mul_scalar(b1) + grad.clone().mul_scalar(1.0 - b1),
                s.moment_2.mul_scalar(b2) + grad.square().mul_scalar(1.0 - b2),
            ),
            None => (
                1,
                grad.clone().mul_scalar(1.0 - b1),
                grad.square().mul_scalar(1.0 - b2),
            ),
        };
        let c = self.constants(lr, time);
        let delta = m.clone().div_scalar(c.correction_1).div(
            v.clone()
                .div_scalar(c.correction_2)
                .sqrt()
                .add_scalar(c.epsilon),
        );
        let tensor = tensor.mul_scalar(c.keep) - delta.mul_scalar(c.lr);
        let state = AdaptiveMomentumState {
            time,
            moment_1: m,
            moment_2: v,
            max_moment_2: None,
        };
        (tensor, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Param;
    use burn::nn::Linear;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};

    type B = Autodiff<NdArray>;

    const SETTINGS: (f32, f32, f32, f32) = (0.1, 0.8, 0.95, 1e-6);

    fn fused() -> FusedAdamW {
        let (wd, b1, b2, eps) = SETTINGS;
        FusedAdamW::new(wd, b1, b2, eps)
    }

    fn burns() -> AdamWConfig {
        let (wd, b1, b2, eps) = SETTINGS;
        AdamWConfig::new()
            .with_weight_decay(wd)
            .with_beta_1(b1)
            .with_beta_2(b2)
            .with_epsilon(eps)
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
        let mut v = model.weight.val().into_data().to_vec::<f32>().unwrap();
        v.extend(
            model
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
        );
        v
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn steps_as_burns_adamw_does() {
        let mut ours = fused().init::<B, Linear<B>>();
        let mut theirs = burns().init::<B, Linear<B>>();
        let (mut a, mut b) = (layer(), layer());
        for step in 0..6 {
            let lr = 0.05 / (step + 1) as f64;
            let ga = grads(&a, step);
            let gb = grads(&b, step);
            a = ours.step(lr, a, ga);
            b = theirs.step(lr, b, gb);
            assert_close(&values(&a), &values(&b));
        }
        assert_ne!(values(&a), values(&layer()), "the weights moved");
    }

    #[test]
    fn host_pass_and_tensor_ops_agree() {
        type I = NdArray;
        let device = Default::default();
        let w = Tensor::<I, 1>::from_floats([0.5, -1.0, 2.0, 0.0, -0.25], &device);
        let g = Tensor::<I, 1>::from_floats([0.1, 0.0, -3.0, 1e-4, 2.0], &device);
        let opt = fused();
        let (mut host, mut ops) = ((w.clone() * 1.0, None), (w.clone() * 1.0, None));
        for step in 0..4 {
            let g = g.clone().mul_scalar(1.0 - 0.3 * step as f32);
            let (t, s) = opt.step_on_host(0.1, host.0, g.clone(), host.1);
            host = (t, Some(s));
            let (t, s) = opt.step_with_tensor_ops(0.1, ops.0, g, ops.1);
            ops = (t, Some(s));
        }
        let read = |t: &Tensor<I, 1>| t.clone().into_data().to_vec::<f32>().unwrap();
        assert_close(&read(&host.0), &read(&ops.0));
        let (hs, os) = (host.1.unwrap(), ops.1.unwrap());
        assert_eq!(hs.time, 4);
        assert_eq!(os.time, 4);
        assert_close(&read(&hs.moment_1), &read(&os.moment_1));
        assert_close(&read(&hs.moment_2), &read(&os.moment_2));
    }

    #[test]
    fn a_weight_held_elsewhere_is_left_as_it_was() {
        type I = NdArray;
        let device = Default::default();
        let w = Tensor::<I, 1>::from_floats([1.0, -2.0, 3.0], &device);
        let g = Tensor::<I, 1>::from_floats([0.5, 0.5, -0.5], &device);
        let (updated, _) = fused().step_on_host(0.1, w.clone(), g, None);
        assert_eq!(w.into_data().to_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.0]);
        let updated = updated.into_data().to_vec::<f32>().unwrap();
        // First step: m̂ = g, v̂ = g², so each weight moves by lr·sign(g) after decay.
        let keep = 1.0 - 0.1 * SETTINGS.0;
        let expected = [1.0 * keep - 0.1, -2.0 * keep - 0.1, 3.0 * keep + 0.1];
        assert_close(&updated, &expected);
    }

    #[test]
    fn large_tensors_are_split_between_threads_with_the_same_result() {
        let n = 3 * CHUNK + 17;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.01)
            .collect();
        let c = fused().constants(0.01, 3);
        // Moments of the second order are never negative.
        let start = |i: usize| (i % 13) as f32 * 0.1;
        let mut serial: [Vec<f32>; 3] = [0, 1, 2].map(|k| (0..n).map(|i| start(i + k)).collect());
        let mut parallel = serial.clone();
        let [w, m, v] = &mut serial;
        c.apply(w, m, v, &g);
        let [w, m, v] = &mut parallel;
        c.apply_parallel(w, m, v, &g);
        assert!(serial == parallel, "the parallel pass differs");
    }

    #[test]
    fn burns_adamw_state_carries_over() {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let mut theirs = burns().init::<B, Linear<B>>();
        let mut model = layer();
        for step in 0..3 {
            let g = grads(&model, step);
            model = theirs.step(0.02, model, g);
        }
        let bytes = Recorder::<B>::record(&recorder, theirs.to_record(), ()).unwrap();
        let record = Recorder::<B>::load(&recorder, bytes, &Default::default()).unwrap();
        let mut ours = fused().init::<B, Linear<B>>().load_record(record);
        let (mut a, mut b) = (model.clone(), model);
        for step in 3..6 {
            let ga = grads(&a, step);
            let gb = grads(&b, step);
            a = ours.step(0.02, a, ga);
            b = theirs.step(0.02, b, gb);
        }
        assert_close(&values(&a), &values(&b));
    }
}
