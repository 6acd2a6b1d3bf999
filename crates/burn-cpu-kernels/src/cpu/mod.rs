//! What the kernels share: the CPU backends' tensors as plain memory, a safe strided GEMM,
//! ReLU passes, parallel sums in a fixed order, one autodiff operation for a layer with a weight (convolution, linear), and
//! compiling hot loops for the processor's vector instructions.
//!
//! The layers ([`crate::conv`], [`crate::linear`], [`crate::pool`]), the fused loss, the
//! fused optimizers ([`crate::adamw`], [`crate::sgd`]) and the LoRA weight are built from
//! these pieces.

pub(crate) mod buffer;
pub(crate) mod gemm;
pub(crate) mod layer;
pub(crate) mod math;
pub(crate) mod ordered;
pub(crate) mod random;
pub(crate) mod relu;
pub(crate) mod reshape;
pub(crate) mod route;
pub(crate) mod tensor;
pub(crate) mod vector_isa;
pub(crate) mod window;
