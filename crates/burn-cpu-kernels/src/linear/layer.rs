//! The host linear layer as a [`LayerShape`] of [`crate::cpu::layer`]: forward only on the
//! CPU backends, and one autodiff operation with its own backward pass in training.

use super::kernel::{self, LinearShape};
use crate::cpu::layer::{self, LayerGradients, LayerShape, Operands, Wanted};
use crate::cpu::route::HostBackend;
use burn::prelude::*;

/// Runs the layer (then ReLU when `relu`) on the host when `B` is a CPU backend (or
/// autodiff over one), the tensors are `f32` and their shapes chain; otherwise hands the
/// operands back untouched.
pub(super) fn run<B: Backend>(
    operands: Operands<B, 2>,
    relu: bool,
) -> Result<Tensor<B, 2>, Operands<B, 2>> {
    let (x, weight, bias) = &operands;
    let ([rows, inputs], [weight_rows, outputs]) = (x.dims(), weight.dims());
    let fits = inputs == weight_rows && bias.as_ref().is_none_or(|b| b.dims() == [outputs]);
    if !fits {
        return Err(operands);
    }
    let shape = LinearShape {
        rows,
        inputs,
        outputs,
    };
    layer::run(operands, shape, relu)
}

impl LayerShape<2> for LinearShape {
    fn input_dims(&self) -> [usize; 2] {
        [self.rows, self.inputs]
    }

    fn weight_dims(&self) -> [usize; 2] {
        [self.inputs, self.outputs]
    }

    fn output_dims(&self) -> [usize; 2] {
        [self.rows, self.outputs]
    }

    fn bias_len(&self) -> usize {
        self.outputs
    }

    fn infers_on(&self, _: HostBackend) -> bool {
        // Both: ndarray's product (`matrixmultiply`) reaches about half the `gemm` crate's
        // rate, and on Flex the bias and ReLU join the product's pass here.
        true
    }

    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
        kernel::forward(x, weight, bias, self, relu)
    }

    fn backward(&self, x: &[f32], weight: &[f32], dy: &[f32], wanted: Wanted) -> LayerGradients {
        kernel::backward(x, weight, dy, self, wanted)
    }
}
