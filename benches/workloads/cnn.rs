//! The reference CNN: conv 1→32 3×3, ReLU, conv 32→64 3×3, ReLU, max-pool 2, flatten (9216
//! features), head Linear 9216→10; input 1×28×28, batch 128.

use burn::module::Module;
use burn::nn::Relu;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::prelude::*;
use burn_transfer::backbone::Backbone;
use burn_transfer::kernels::cpu::{conv::conv2d_relu, pool::max_pool2d};

/// The reference CNN's body, through the CPU kernels (`conv2d_relu`, ReLU fused, and
/// `max_pool2d`), or (`burn_conv`) burn's own convolution, ReLU and max-pool, same layers.
#[derive(Module, Debug)]
pub struct CnnBody<B: Backend> {
    conv1: Conv2d<B>,
    conv2: Conv2d<B>,
    burn_conv: bool,
    pool: MaxPool2d,
    relu: Relu,
}

impl<B: Backend> CnnBody<B> {
    pub fn new(burn_conv: bool, device: &B::Device) -> Self {
        let conv = |c: [usize; 2]| Conv2dConfig::new(c, [3, 3]).init(device);
        Self {
            conv1: conv([1, 32]),
            conv2: conv([32, 64]),
            burn_conv,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            relu: Relu::new(),
        }
    }
}

impl<B: Backend> Backbone<B> for CnnBody<B> {
    type Input = Tensor<B, 4>;

    fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let (x, c1, c2) = (x, &self.conv1, &self.conv2);
        let x = if self.burn_conv {
            let x = self.relu.forward(c1.forward(x));
            let x = self.relu.forward(c2.forward(x));
            self.pool.forward(x)
        } else {
            let x = conv2d_relu(c2, conv2d_relu(c1, x));
            max_pool2d(&self.pool, x)
        };
        x.flatten(1, 3)
    }

    fn feature_dim(&self) -> usize {
        9216
    }
}
