//! Sends an operation to its kernel when the backend is one of the CPU
//! backends (by type: see [`super::tensor`] for why), and hands its operands back otherwise,
//! for the caller to run burn's generic version.
//!
//! One list of backends for every kernel, so that a backend added here (or a
//! checkpointing strategy) reaches the convolution, the pooling and the linear layer alike.

use super::tensor::when_same;
use burn::backend::NdArray;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::strategy::{BalancedCheckpointing, CheckpointStrategy};
use burn_autodiff::ops::{Backward, OpsKind, OpsPrep};

/// The CPU backends with kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostBackend {
    /// `burn-ndarray`.
    NdArray,
    /// burn's Flex backend (feature `flex`).
    #[cfg_attr(not(feature = "flex"), allow(dead_code))]
    Flex,
}

/// An operation with a kernel for the CPU backends: forward only on the plain
/// backends, and as an autodiff operation with its own backward pass on `Autodiff` over them.
pub(crate) trait HostOp {
    /// What the operation reads, on backend `B`.
    type Operands<B: Backend>: 'static;
    /// What it returns, on backend `B`.
    type Output<B: Backend>: 'static;

    /// Whether forward-only calls on `backend` take [`inference`](Self::inference); when
    /// not, they are handed back (the backend's own operation is faster there).
    fn infers_on(&self, backend: HostBackend) -> bool;

    /// The forward pass on a CPU backend without autodiff.
    fn inference<B: Backend>(&self, operands: Self::Operands<B>) -> Self::Output<B>;

    /// The forward pass on the inner backend, recorded as one autodiff operation.
    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        operands: Self::Operands<Autodiff<B, C>>,
    ) -> Self::Output<Autodiff<B, C>>;
}

/// `Ok(output)` when `B` is a CPU backend (or autodiff over one) that `op` runs on;
/// `Err(operands)`, untouched, otherwise.
pub(crate) fn route<B: Backend, Op: HostOp>(
    op: &Op,
    operands: Op::Operands<B>,
) -> Result<Op::Output<B>, Op::Operands<B>> {
    match try_each::<B, Op>(op, operands) {
        Ok(operands) => Err(operands),
        Err(output) => Ok(output),
    }
}

/// Tries each backend in turn; `Err` carries the result (so that `?` stops at the backend
/// that matched), `Ok` the operands when none did.
fn try_each<B: Backend, Op: HostOp>(
    op: &Op,
    operands: Op::Operands<B>,
) -> Result<Op::Operands<B>, Op::Output<B>> {
    let mut operands = operands;
    if op.infers_on(HostBackend::NdArray) {
        operands = via::<B, NdArray, Op>(operands, |o| op.inference(o))?;
    }
    let operands = via::<B, Autodiff<NdArray>, Op>(operands, |o| op.training(o))?;
    let operands =
        via::<B, Autodiff<NdArray, BalancedCheckpointing>, Op>(operands, |o| op.training(o))?;
    #[cfg(feature = "flex")]
    let operands = {
        use burn::backend::Flex;
        let mut operands = operands;
        if op.infers_on(HostBackend::Flex) {
            operands = via::<B, Flex, Op>(operands, |o| op.inference(o))?;
        }
        let operands = via::<B, Autodiff<Flex>, Op>(operands, |o| op.training(o))?;
        via::<B, Autodiff<Flex, BalancedCheckpointing>, Op>(operands, |o| op.training(o))?
    };
    Ok(operands)
}

/// When `B` is `T`: `Err(f(operands))`; otherwise `Ok(operands)`, to try the next type.
/// A kernel about to run keeps rayon's threads ready for its parallel parts and
/// the next operation's ([`crate::threads::keep_pool_awake`]).
fn via<B: Backend, T: Backend, Op: HostOp>(
    operands: Op::Operands<B>,
    f: impl FnOnce(Op::Operands<T>) -> Op::Output<T>,
) -> Result<Op::Operands<B>, Op::Output<B>> {
    when_same(operands, |operands| {
        crate::threads::keep_pool_awake();
        f(operands)
    })
}

/// Registers a kernel's `output` in autodiff's graph, keeping `saved` for its
/// backward pass only when a gradient will flow through it. Compute-bound: checkpointing
/// keeps the output rather than running the operation again.
pub(crate) fn record<BO, B, S, C, const N: usize>(
    prep: OpsPrep<BO, B, S, C, N>,
    saved: S,
    output: B::FloatTensorPrimitive,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    S: Clone + Send + std::fmt::Debug + 'static,
    BO: Backward<B, N, State = S>,
{
    match prep.compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says which path it took instead of computing anything.
    struct Probe {
        infers_on_ndarray: bool,
    }

    impl HostOp for Probe {
        type Operands<B: Backend> = Tensor<B, 1>;
        type Output<B: Backend> = &'static str;

        fn infers_on(&self, backend: HostBackend) -> bool {
            backend != HostBackend::NdArray || self.infers_on_ndarray
        }

        fn inference<B: Backend>(&self, _: Tensor<B, 1>) -> &'static str {
            "inference"
        }

        fn training<B: Backend, C: CheckpointStrategy>(
            &self,
            _: Tensor<Autodiff<B, C>, 1>,
        ) -> &'static str {
            "training"
        }
    }

    fn probe<B: Backend>(infers_on_ndarray: bool) -> Result<&'static str, ()> {
        let x = Tensor::<B, 1>::zeros([2], &Default::default());
        route(&Probe { infers_on_ndarray }, x).map_err(|_| ())
    }

    #[test]
    fn cpu_backends_take_their_path_and_others_are_handed_back() {
        type Balanced = Autodiff<NdArray, BalancedCheckpointing>;
        assert_eq!(probe::<NdArray>(true), Ok("inference"));
        assert_eq!(probe::<NdArray>(false), Err(()));
        assert_eq!(probe::<Autodiff<NdArray>>(false), Ok("training"));
        assert_eq!(probe::<Balanced>(false), Ok("training"));
        // ndarray over `f64` is another type: handed back, not misrouted.
        assert_eq!(probe::<NdArray<f64>>(true), Err(()));
        assert_eq!(probe::<Autodiff<NdArray<f64>>>(true), Err(()));
    }
}
