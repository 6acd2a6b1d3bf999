//! Max pooling on the CPU backends' memory: forward on the host, and in training one
//! autodiff operation whose backward adds each gradient at the recorded position (burn's
//! Flex backend does both in a general 3-D scalar loop). Other backends are handed back to
//! burn.

use super::kernel::{self, PoolShape};
use crate::cpu::route::{HostBackend, HostOp, route};
use crate::cpu::tensor::{from_host, host_values, primitive};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use std::sync::Arc;

/// Pools on the host when `B` is Flex or autodiff over ndarray or Flex and `x` is `f32`;
/// otherwise hands `x` back.
pub(super) fn run<B: Backend>(
    x: Tensor<B, 4>,
    shape: &PoolShape,
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    route(&HostPoolCall { shape }, x)
}

/// One pooling call, for [`route`].
struct HostPoolCall<'a> {
    shape: &'a PoolShape,
}

impl HostOp for HostPoolCall<'_> {
    type Operands<B: Backend> = Tensor<B, 4>;
    type Output<B: Backend> = Tensor<B, 4>;

    fn infers_on(&self, _: HostBackend) -> bool {
        // ndarray's own max-pool first copies the whole map into a padded one; the
        // separable pass here reads it once.
        true
    }

    fn inference<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        inference(x, self.shape)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        x: Tensor<Autodiff<B, C>, 4>,
    ) -> Tensor<Autodiff<B, C>, 4> {
        training(x, self.shape)
    }
}

fn output_dims(x: [usize; 4], shape: &PoolShape) -> [usize; 4] {
    [x[0], x[1], shape.output[0], shape.output[1]]
}

/// Forward only, on a backend without autodiff.
fn inference<B: Backend>(x: Tensor<B, 4>, shape: &PoolShape) -> Tensor<B, 4> {
    let (dims, device) = (x.dims(), x.device());
    let x = primitive(x);
    let y = kernel::forward(&host_values::<B, 4>(&x), shape);
    from_host(y, output_dims(dims, shape), &device)
}

/// The forward pass on the inner backend's data, recorded with the winning positions.
fn training<B: Backend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 4>,
    shape: &PoolShape,
) -> Tensor<Autodiff<B, C>, 4> {
    let dims = x.dims();
    // Autodiff's device is the inner backend's.
    let device: B::Device = x.device();
    let x = primitive(x);
    let prep = MaxPoolBackward
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful();
    let values = host_values::<B, 4>(&x.primitive);
    let to_primitive = |y| primitive(from_host::<B, 4>(y, output_dims(dims, shape), &device));
    let output = match prep {
        OpsKind::Tracked(prep) => {
            let (y, indices) = kernel::forward_with_indices(&values, shape);
            let saved = Saved {
                indices: Arc::new(indices),
                shape: *shape,
                input_dims: dims,
                device: device.clone(),
            };
            prep.finish(saved, to_primitive(y))
        }
        OpsKind::UnTracked(prep) => prep.finish(to_primitive(kernel::forward(&values, shape))),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

#[derive(Debug)]
struct MaxPoolBackward;

/// The winning positions and what is needed to shape the gradient.
#[derive(Clone)]
struct Saved<B: Backend> {
    indices: Arc<Vec<u32>>,
    shape: PoolShape,
    input_dims: [usize; 4],
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for Saved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Backward<B, 1> for MaxPoolBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [Some(parent)] = ops.parents else {
            return;
        };
        let Saved {
            indices,
            shape,
            input_dims,
            device,
        } = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let dx = kernel::backward(&host_values::<B, 4>(&dy), &indices, &shape);
        grads.register::<B>(
            parent.id,
            primitive(from_host::<B, 4>(dx, input_dims, &device)),
        );
    }
}
