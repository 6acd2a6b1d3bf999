//! What the CPU fast paths share: the CPU backends' tensors as host memory, a safe strided
//! GEMM, ReLU passes, one autodiff operation for a host layer (convolution, linear), and
//! compiling hot loops for the processor's vector instructions.
//!
//! The host layers ([`crate::conv::GemmConv2d`], [`crate::linear`], [`crate::pool`]) and
//! the fused optimizer ([`crate::finetune::FusedAdamW`]) are built from these pieces.

pub(crate) mod gemm;
pub(crate) mod layer;
pub(crate) mod relu;
pub(crate) mod route;
pub(crate) mod tensor;
pub(crate) mod vector_isa;
