//! The host linear layer as a burn operation: forward only on the CPU backends, and one
//! autodiff operation with its own backward pass in training (see [`crate::host::route`]).

use super::host::{self, LinearShape, Wanted};
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

/// A linear layer's operands: input `[rows, inputs]`, weight `[inputs, outputs]`, bias.
pub(super) type Operands<B> = (Tensor<B, 2>, Tensor<B, 2>, Option<Tensor<B, 1>>);

/// Runs the layer (then ReLU when `relu`) on the host when `B` is a CPU backend (or
/// autodiff over one), the tensors are `f32` and their shapes chain; otherwise hands the
/// operands back untouched.
pub(super) fn run<B: Backend>(
    operands: Operands<B>,
    relu: bool,
) -> Result<Tensor<B, 2>, Operands<B>> {
    let (x, weight, bias) = &operands;
    let ([rows, inputs], [weight_rows, outputs]) = (x.dims(), weight.dims());
    let fits = inputs == weight_rows && bias.as_ref().is_none_or(|b| b.dims() == [outputs]);
    let all_f32 = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    if !fits || !all_f32 {
        return Err(operands);
    }
    let shape = LinearShape {
        rows,
        inputs,
        outputs,
    };
    route(&HostLinearCall { shape, relu }, operands)
}

/// One call of the layer, for [`route`].
struct HostLinearCall {
    shape: LinearShape,
    relu: bool,
}

impl HostOp for HostLinearCall {
    type Operands<B: Backend> = Operands<B>;
    type Output<B: Backend> = Tensor<B, 2>;

    fn infers_on(&self, _: HostBackend) -> bool {
        // Both: ndarray's product (`matrixmultiply`) reaches about half the `gemm` crate's
        // rate, and on Flex the bias and ReLU join the product's pass here.
        true
    }

    fn inference<B: Backend>(&self, (x, weight, bias): Operands<B>) -> Tensor<B, 2> {
        let device = x.device();
        let (x, weight) = (primitive(x), primitive(weight));
        let bias = bias.map(primitive);
        let y = host::forward(
            &host_values::<B, 2>(&x),
            &host_values::<B, 2>(&weight),
            bias.as_ref().map(host_values::<B, 1>).as_deref(),
            &self.shape,
            self.relu,
        );
        from_host(y, [self.shape.rows, self.shape.outputs], &device)
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        (x, weight, bias): Operands<Autodiff<B, C>>,
    ) -> Tensor<Autodiff<B, C>, 2> {
        // Autodiff's device is the inner backend's.
        let device: B::Device = x.device();
        let (x, weight) = (primitive(x), primitive(weight));
        let bias = bias.map(primitive);
        let y = host::forward(
            &host_values::<B, 2>(&x.primitive),
            &host_values::<B, 2>(&weight.primitive),
            bias.as_ref()
                .map(|b| host_values::<B, 1>(&b.primitive))
                .as_deref(),
            &self.shape,
            self.relu,
        );
        let y = primitive(from_host::<B, 2>(
            y,
            [self.shape.rows, self.shape.outputs],
            &device,
        ));
        let saved = Saved {
            input: x.primitive.clone(),
            weight: weight.primitive.clone(),
            relu_output: self.relu.then(|| y.clone()),
            shape: self.shape,
            device,
        };
        let output = match bias {
            Some(bias) => record(
                HostLinear.prepare::<C>([x.node, weight.node, bias.node]),
                saved,
                y,
            ),
            None => record(HostLinear.prepare::<C>([x.node, weight.node]), saved, y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

/// The host linear layer's backward step (parents: input, weight, and bias if any).
#[derive(Debug)]
struct HostLinear;

type Saved<B> = LayerSaved<B, LinearShape>;

impl<B: Backend, const N: usize> Backward<B, N> for HostLinear {
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
        // Through the fused ReLU first, to the product's own output gradient.
        let dy =
            GradientBeforeRelu::<B>::new::<2>(grads.consume::<B>(&ops.node), relu_output.as_ref());
        let wanted = Wanted {
            input: input_node.is_some(),
            weight: weight_node.is_some(),
            bias: bias_node.is_some(),
        };
        let found = host::backward(
            &host_values::<B, 2>(&input),
            &host_values::<B, 2>(&weight),
            &dy.values::<2>(),
            &shape,
            wanted,
        );
        let tensor = |values, dims| primitive(from_host::<B, 2>(values, dims, &device));
        if let (Some(node), Some(g)) = (input_node, found.input) {
            grads.register::<B>(node, tensor(g, [shape.rows, shape.inputs]));
        }
        if let (Some(node), Some(g)) = (weight_node, found.weight) {
            grads.register::<B>(node, tensor(g, [shape.inputs, shape.outputs]));
        }
        if let (Some(node), Some(g)) = (bias_node, found.bias) {
            grads.register::<B>(
                node,
                primitive(from_host::<B, 1>(g, [shape.outputs], &device)),
            );
        }
    }
}
