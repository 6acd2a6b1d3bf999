//! The kernel convolution as a [`LayerShape`] of [`crate::cpu::layer`]: on a CPU backend's
//! tensors (inference), and as an autodiff operation with its own backward pass (training),
//! so that burn's generic convolution backward (a transposed convolution and a whole-map
//! convolution, slow on the CPU backends) is never taken.

use super::kernel::{self, ConvShape};
use crate::cpu::layer::{LayerGradients, LayerShape, Wanted};
use crate::cpu::route::HostBackend;

impl LayerShape<4> for ConvShape {
    fn input_dims(&self) -> [usize; 4] {
        [self.batch, self.channels, self.input[0], self.input[1]]
    }

    fn weight_dims(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.channels / self.groups,
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn output_dims(&self) -> [usize; 4] {
        [
            self.batch,
            self.out_channels,
            self.output[0],
            self.output[1],
        ]
    }

    fn bias_len(&self) -> usize {
        self.out_channels
    }

    fn infers_on(&self, backend: HostBackend) -> bool {
        match backend {
            // ndarray's own convolution (a SIMD direct convolution whose output is laid
            // out channels-last) ran a frozen ResNet-18 at a fifth of this one's speed.
            HostBackend::NdArray => true,
            // Flex's own forward convolution is slower than the host one for dense and
            // depthwise kernels; other grouped ones (one small product per group here) stay
            // with Flex.
            HostBackend::Flex => self.groups == 1 || kernel::is_depthwise(self),
        }
    }

    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>, relu: bool) -> Vec<f32> {
        kernel::forward(x, weight, bias, self, relu)
    }

    fn backward(&self, x: &[f32], weight: &[f32], dy: &[f32], wanted: Wanted) -> LayerGradients {
        kernel::backward(x, weight, dy, self, wanted)
    }
}
