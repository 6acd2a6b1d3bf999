//! A layer computed on the host — `y = x ⊛ W (+ b)`, then ReLU when fused — as a burn
//! operation: forward only on the plain CPU backends, and one autodiff operation with its
//! own backward pass in training, so that burn's generic backward graph of the layer (and
//! of ReLU) is never built.
//!
//! The convolution and the linear layer are two [`LayerShape`]s of it: each brings its
//! arithmetic and its dimensions; recording the operation, keeping what backward needs,
//! the ReLU mask and handing the gradients back to autodiff are written once, here.

use super::relu::GradientBeforeRelu;
use super::route::{HostBackend, HostOp, record, route};
use super::tensor::{from_host, host_values, primitive};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use std::fmt::Debug;
use std::marker::PhantomData;

/// A layer's operands: input, weight, bias.
pub(crate) type Operands<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<Tensor<B, 1>>);

/// Which gradients the backward pass must produce.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wanted {
    /// The input's.
    pub input: bool,
    /// The weight's.
    pub weight: bool,
    /// The bias's.
    pub bias: bool,
}

/// The gradients that were wanted, row-major in the operands' own shapes.
#[derive(Debug, Default)]
pub(crate) struct LayerGradients {
    /// The input's.
    pub input: Option<Vec<f32>>,
    /// The weight's.
    pub weight: Option<Vec<f32>>,
    /// The bias's.
    pub bias: Option<Vec<f32>>,
}

/// The sizes of one call of a kernel layer whose tensors have rank `D`, and its arithmetic
/// on host memory.
pub(crate) trait LayerShape<const D: usize>: Copy + Debug + Send + Sync + 'static {
    /// The input's dimensions.
    fn input_dims(&self) -> [usize; D];
    /// The weight's dimensions.
    fn weight_dims(&self) -> [usize; D];
    /// The output's dimensions.
    fn output_dims(&self) -> [usize; D];
    /// The bias's length (output channels or features).
    fn bias_len(&self) -> usize;
    /// Whether forward-only calls on `backend` take this path (see [`HostOp::infers_on`]).
    fn infers_on(&self, backend: HostBackend) -> bool;
    /// `x ⊛ W + b`, then ReLU when `relu`, row-major in [`output_dims`](Self::output_dims).
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32>;
    /// The wanted gradients from the output gradient `dy` (already through ReLU's mask).
    fn backward(&self, x: &[f32], weight: &[f32], dy: &[f32], wanted: Wanted) -> LayerGradients;
}

/// Runs the layer (then ReLU when `relu`) on the host when `B` is a CPU backend (or
/// autodiff over one) and the tensors are `f32`; otherwise hands the operands back
/// untouched. The caller has checked that `shape` is the operands' own.
pub(crate) fn run<B: Backend, S: LayerShape<D>, const D: usize>(
    operands: Operands<B, D>,
    shape: S,
    relu: bool,
) -> Result<Tensor<B, D>, Operands<B, D>> {
    let (x, weight, bias) = &operands;
    let all_f32 = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !all_f32 {
        return Err(operands);
    }
    route(&LayerCall { shape, relu }, operands)
}

/// One call of the layer, for [`route`].
struct LayerCall<S, const D: usize> {
    shape: S,
    relu: bool,
}

impl<S: LayerShape<D>, const D: usize> LayerCall<S, D> {
    /// The forward pass on `B`'s primitives.
    fn forward<B: Backend>(
        &self,
        x: &B::FloatTensorPrimitive,
        weight: &B::FloatTensorPrimitive,
        bias: Option<&B::FloatTensorPrimitive>,
    ) -> Vec<f32> {
        self.shape.forward(
            &host_values::<B, D>(x),
            &host_values::<B, D>(weight),
            bias.map(host_values::<B, 1>).as_deref(),
            self.relu,
        )
    }
}

impl<S: LayerShape<D>, const D: usize> HostOp for LayerCall<S, D> {
    type Operands<B: Backend> = Operands<B, D>;
    type Output<B: Backend> = Tensor<B, D>;

    fn infers_on(&self, backend: HostBackend) -> bool {
        self.shape.infers_on(backend)
    }

    fn inference<B: Backend>(&self, (x, weight, bias): Operands<B, D>) -> Tensor<B, D> {
        let device = x.device();
        let bias = bias.map(primitive);
        let y = self.forward::<B>(&primitive(x), &primitive(weight), bias.as_ref());
        from_host(y, self.shape.output_dims(), &device)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (x, weight, bias): Operands<Autodiff<B, C>, D>,
    ) -> Tensor<Autodiff<B, C>, D> {
        // Autodiff's device is the inner backend's.
        let device: B::Device = x.device();
        let (x, weight) = (primitive(x), primitive(weight));
        let bias = bias.map(primitive);
        let y = self.forward::<B>(
            &x.primitive,
            &weight.primitive,
            bias.as_ref().map(|b| &b.primitive),
        );
        let y = primitive(from_host::<B, D>(y, self.shape.output_dims(), &device));
        let saved = LayerSaved {
            input: x.primitive.clone(),
            weight: weight.primitive.clone(),
            relu_output: self.relu.then(|| y.clone()),
            shape: self.shape,
            device,
        };
        let op = HostLayer::<S, D>(PhantomData);
        let output = match bias {
            Some(bias) => record(op.prepare::<C>([x.node, weight.node, bias.node]), saved, y),
            None => record(op.prepare::<C>([x.node, weight.node]), saved, y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

/// What the backward pass needs: the input and weight as the forward pass read them (the
/// inner tensors themselves, shared, not copied: burn's ops never write into a buffer that
/// another tensor still holds), the output when ReLU was fused (its mask), and the call's
/// shape.
#[derive(Clone)]
struct LayerSaved<B: Backend, S> {
    input: B::FloatTensorPrimitive,
    weight: B::FloatTensorPrimitive,
    relu_output: Option<B::FloatTensorPrimitive>,
    shape: S,
    device: B::Device,
}

impl<B: Backend, S: Debug> Debug for LayerSaved<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerSaved")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// The layer's backward step (parents: input, weight, and bias if any).
#[derive(Debug)]
struct HostLayer<S, const D: usize>(PhantomData<S>);

impl<B: Backend, S: LayerShape<D>, const D: usize, const N: usize> Backward<B, N>
    for HostLayer<S, D>
{
    type State = LayerSaved<B, S>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let LayerSaved {
            input,
            weight,
            relu_output,
            shape,
            device,
        } = ops.state;
        let parent = |i: usize| ops.parents.get(i).and_then(|p| p.as_ref()).map(|p| p.id);
        let (input_node, weight_node, bias_node) = (parent(0), parent(1), parent(2));
        // Through the fused ReLU first, to the layer's own output gradient.
        let dy =
            GradientBeforeRelu::<B>::new::<D>(grads.consume::<B>(&ops.node), relu_output.as_ref());
        let found = shape.backward(
            &host_values::<B, D>(&input),
            &host_values::<B, D>(&weight),
            &dy.values::<D>(),
            Wanted {
                input: input_node.is_some(),
                weight: weight_node.is_some(),
                bias: bias_node.is_some(),
            },
        );
        let mut register = |node: Option<NodeId>, values: Option<Vec<f32>>, dims: [usize; D]| {
            if let (Some(node), Some(values)) = (node, values) {
                grads.register::<B>(node, primitive(from_host::<B, D>(values, dims, &device)));
            }
        };
        register(input_node, found.input, shape.input_dims());
        register(weight_node, found.weight, shape.weight_dims());
        if let (Some(node), Some(values)) = (bias_node, found.bias) {
            let dims = [shape.bias_len()];
            grads.register::<B>(node, primitive(from_host::<B, 1>(values, dims, &device)));
        }
    }
}
