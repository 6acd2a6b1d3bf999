//! # burn-cpu-kernels
//!
//! Training on burn 0.21's CPU backends (ndarray, and Flex with feature `flex`) at the speed
//! of the processor: the operations a training step spends its time in, each computing what
//! burn's own operation computes (tested against it, values and gradients), with a backward
//! pass of its own where burn's generic one is slow on the CPU.
//!
//! - [`conv`]: burn's `Conv2d` forward and backward as Winograd (3×3) or im2col + GEMM;
//! - [`linear`]: burn's `Linear` (inputs of any rank) as one GEMM per pass, bias and ReLU fused;
//! - [`pool`]: burn's `MaxPool2d` with a backward pass that adds at the recorded maxima;
//! - [`activation`]: GELU as one pass forward and one backward (the exact derivative);
//! - [`attention`]: multi-head attention (mask, causal, dropout) fused per head on strided
//!   GEMMs, with its own backward pass;
//! - [`batch_norm`]: burn's `BatchNorm`, a residual sum and ReLU/ReLU6 as one pass forward
//!   and two backward;
//! - [`dropout`]: burn's `Dropout` with masks hashed from a seed, regenerated backwards;
//! - [`norm`]: burn's `LayerNorm` as one pass forward and one backward;
//! - [`softmax`]: attention's masked softmax as one pass forward and one backward;
//! - [`kd_ce`]: Hinton's distillation term and cross-entropy in one pass over the logits;
//! - [`adamw`]: AdamW as one in-place pass per parameter, burn's state and results;
//! - [`sgd`]: SGD with momentum, Nesterov and weight decay likewise, burn's state and results;
//! - [`lora_weight`]: a LoRA target's weight `W0 + s·ΔW` as one GEMM, two thin GEMMs back;
//! - [`threads`] and [`allocator`]: process settings that a training program makes once.
//!
//! Every function takes any `B: Backend`: the CPU backends are recognised by type at run
//! time, and every other backend (wgpu, other element types) gets burn's own operation, so
//! a model written with these functions runs everywhere. Nothing here knows about
//! fine-tuning or distillation; `burn-transfer` builds on it.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::nn::LinearConfig;
//! use burn::prelude::*;
//! use burn_cpu_kernels::linear::linear_relu;
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let layer = LinearConfig::new(8, 4).init::<B>(&device);
//! let x = Tensor::<B, 2>::ones([2, 8], &device);
//! let y = linear_relu(&layer, x.clone());
//! let expected = burn::tensor::activation::relu(layer.forward(x));
//! y.into_data().assert_approx_eq::<f32>(&expected.into_data(), Default::default());
//! ```
#![deny(missing_docs)]

pub mod activation;
pub mod adamw;
pub mod allocator;
pub mod attention;
pub mod batch_norm;
pub mod conv;
mod cpu;
pub mod dropout;
pub mod error;
pub mod kd_ce;
pub mod linear;
pub mod lora_weight;
pub mod norm;
pub mod pool;
pub mod sgd;
pub mod softmax;
pub mod threads;

pub use error::{KernelError, Result};

/// Draws the values of every lazily initialised parameter of `module` now (for the tests).
///
/// burn creates parameters lazily, and clones of a module whose parameters are not yet
/// drawn each draw values of their own on first use; a layer shared between a reference
/// and the operation under test must be materialised first.
#[cfg(test)]
pub(crate) fn materialize<B: burn::prelude::Backend, M: burn::module::Module<B>>(module: &M) {
    use burn::module::{ModuleVisitor, Param};
    use burn::prelude::*;
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}
