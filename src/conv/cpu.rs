//! The host convolution as a burn operation: on a CPU backend's tensors (inference), and as
//! an autodiff operation with its own backward pass (training), so that burn's generic
//! convolution backward (a transposed convolution and a whole-map convolution, slow on the
//! CPU backends) is never taken.
//!
//! Which backends: the ones whose tensors live in host memory, recognised by type ([`run`];
//! why by type and not by a trait bound: `crate::host::tensor`).

use super::host::{self, ConvShape, Wanted};
use crate::host::relu::GradientBeforeRelu;
use crate::host::route::{HostBackend, HostOp, LayerSaved, record, route};
use crate::host::tensor::{from_host, host_values, primitive};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};

/// A convolution's operands: input, weight, bias.
pub(super) type Operands<B> = (Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>);

/// Runs the convolution (followed by ReLU when `relu`) on the host when `B` is a CPU
/// backend (or autodiff over one) and the tensors are `f32`; otherwise hands the operands
/// back untouched.
pub(super) fn run<B: Backend>(
    operands: Operands<B>,
    shape: &ConvShape,
    relu: bool,
) -> Result<Tensor<B, 4>, Operands<B>> {
    let all_f32 = operands.0.dtype() == DType::F32
        && operands.1.dtype() == DType::F32
        && operands.2.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !all_f32 {
        return Err(operands);
    }
    route(&HostConvCall { shape, relu }, operands)
}

/// One convolution call, for [`route`].
struct HostConvCall<'a> {
    shape: &'a ConvShape,
    relu: bool,
}

impl HostOp for HostConvCall<'_> {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = Tensor<B, 4>;

    fn infers_on(&self, backend: HostBackend) -> bool {
        match backend {
            // ndarray's own convolution is a SIMD direct convolution, faster in the forward
            // direction than unfolding. (Not in training: its output is laid out
            // channels-last, which every later operation and this backward pass would have
            // to copy back element by element.)
            HostBackend::NdArray => false,
            // Flex's own forward convolution is slower than the host one for dense kernels;
            // grouped and depthwise ones (one small product per group here) stay with Flex.
            HostBackend::Flex => self.shape.groups == 1,
        }
    }

    fn inference<B: Backend>(&self, operands: Operands<B>) -> Tensor<B, 4> {
        inference(operands, self.shape, self.relu)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        operands: Operands<Autodiff<B, C>>,
    ) -> Tensor<Autodiff<B, C>, 4> {
        training(operands, self.shape, self.relu)
    }
}

fn output_dims(shape: &ConvShape) -> [usize; 4] {
    [
        shape.batch,
        shape.out_channels,
        shape.output[0],
        shape.output[1],
    ]
}

/// Forward only, on a backend without autodiff.
fn inference<B: Backend>(
    (x, weight, bias): Operands<B>,
    shape: &ConvShape,
    relu: bool,
) -> Tensor<B, 4> {
    let device = x.device();
    let (x, weight) = (primitive(x), primitive(weight));
    let bias = bias.map(primitive);
    let y = host::forward(
        &host_values::<B, 4>(&x),
        &host_values::<B, 4>(&weight),
        bias.as_ref().map(host_values::<B, 1>).as_deref(),
        shape,
        relu,
    );
    from_host(y, output_dims(shape), &device)
}

/// The forward pass on the inner backend's data, recorded as one autodiff operation whose
/// backward is [`host::backward`] (after ReLU's mask, when `relu`).
fn training<B: Backend, C: CheckpointStrategy>(
    (x, weight, bias): Operands<Autodiff<B, C>>,
    shape: &ConvShape,
    relu: bool,
) -> Tensor<Autodiff<B, C>, 4> {
    // Autodiff's device is the inner backend's.
    let device: B::Device = x.device();
    let (x, weight) = (primitive(x), primitive(weight));
    let bias = bias.map(primitive);
    let y = host::forward(
        &host_values::<B, 4>(&x.primitive),
        &host_values::<B, 4>(&weight.primitive),
        bias.as_ref()
            .map(|b| host_values::<B, 1>(&b.primitive))
            .as_deref(),
        shape,
        relu,
    );
    let y = primitive(from_host::<B, 4>(y, output_dims(shape), &device));
    let saved = Saved {
        input: x.primitive.clone(),
        weight: weight.primitive.clone(),
        relu_output: relu.then(|| y.clone()),
        shape: *shape,
        device,
    };
    let output = match bias {
        Some(bias) => record(
            HostConv.prepare::<C>([x.node, weight.node, bias.node]),
            saved,
            y,
        ),
        None => record(HostConv.prepare::<C>([x.node, weight.node]), saved, y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(output))
}

/// The host convolution's backward step (parents: input, weight, and bias if any).
#[derive(Debug)]
struct HostConv;

type Saved<B> = LayerSaved<B, ConvShape>;

impl<B: Backend, const N: usize> Backward<B, N> for HostConv {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved {
            input,
            weight,
            relu_output,
            shape,
            device,
        } = ops.state;
        let parent = |i: usize| ops.parents.get(i).and_then(|p| p.as_ref()).map(|p| p.id);
        let (input_node, weight_node, bias_node) = (parent(0), parent(1), parent(2));
        // Through the fused ReLU first, to the convolution's own output gradient.
        let dy =
            GradientBeforeRelu::<B>::new::<4>(grads.consume::<B>(&ops.node), relu_output.as_ref());
        let wanted = Wanted {
            input: input_node.is_some(),
            weight: weight_node.is_some(),
            bias: bias_node.is_some(),
        };
        let found = host::backward(
            &host_values::<B, 4>(&input),
            &host_values::<B, 4>(&weight),
            &dy.values::<4>(),
            &shape,
            wanted,
        );
        let weight_dims = [
            shape.out_channels,
            shape.channels / shape.groups,
            shape.kernel[0],
            shape.kernel[1],
        ];
        let input_dims = [shape.batch, shape.channels, shape.input[0], shape.input[1]];
        if let (Some(node), Some(g)) = (input_node, found.input) {
            grads.register::<B>(node, primitive(from_host::<B, 4>(g, input_dims, &device)));
        }
        if let (Some(node), Some(g)) = (weight_node, found.weight) {
            grads.register::<B>(node, primitive(from_host::<B, 4>(g, weight_dims, &device)));
        }
        if let (Some(node), Some(g)) = (bias_node, found.bias) {
            grads.register::<B>(
                node,
                primitive(from_host::<B, 1>(g, [shape.out_channels], &device)),
            );
        }
    }
}
