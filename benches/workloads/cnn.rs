//! The reference CNN: conv 1→32 3×3, ReLU, conv 32→64 3×3, ReLU, max-pool 2, flatten (9216
//! features), head Linear 9216→10; input 1×28×28, batch 128.

use burn::module::Module;
use burn::nn::Relu;
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::prelude::*;
use burn_transfer::backbone::Backbone;
use burn_transfer::conv::GemmConv2d;
use burn_transfer::pool::MaxPool2d;

/// The reference CNN's body, with this crate's `GemmConv2d` (ReLU fused:
/// `GemmConv2d::forward_relu`) and `MaxPool2d`, or (`burn_conv`) burn's own convolution,
/// ReLU and max-pool, same weights.
#[derive(Module, Debug)]
pub struct CnnBody<B: Backend> {
    conv1: GemmConv2d<B>,
    conv2: GemmConv2d<B>,
    burn_conv: bool,
    pool: MaxPool2d,
    relu: Relu,
}

impl<B: Backend> CnnBody<B> {
    pub fn new(burn_conv: bool, device: &B::Device) -> Self {
        let conv = |c: [usize; 2]| GemmConv2d::new(&Conv2dConfig::new(c, [3, 3]), device);
        Self {
            conv1: conv([1, 32]).expect("valid config"),
            conv2: conv([32, 64]).expect("valid config"),
            burn_conv,
            pool: MaxPool2d::new(&MaxPool2dConfig::new([2, 2])),
            relu: Relu::new(),
        }
    }
}

impl<B: Backend> Backbone<B> for CnnBody<B> {
    type Input = Tensor<B, 4>;

    fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let (x, c1, c2) = (x, &self.conv1, &self.conv2);
        let x = if self.burn_conv {
            let x = self.relu.forward(c1.to_conv2d().forward(x));
            let x = self.relu.forward(c2.to_conv2d().forward(x));
            self.pool.to_burn().forward(x)
        } else {
            let x = c2.forward_relu(c1.forward_relu(x));
            self.pool.forward(x)
        };
        x.flatten(1, 3)
    }

    fn feature_dim(&self) -> usize {
        9216
    }
}
