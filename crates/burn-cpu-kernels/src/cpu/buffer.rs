//! A parameter's values to update in place: what the fused optimizers write into.

use super::tensor::{self as host_tensor, from_host, host_values, primitive};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;

/// A tensor's `f32` values to update: its own buffer when no other tensor shares it, a
/// row-major copy otherwise, zeros when there is no tensor yet (a first step's moments).
pub(crate) enum HostBuffer<B: Backend> {
    Own(B::FloatTensorPrimitive),
    Copy(Vec<f32>),
}

impl<B: Backend> HostBuffer<B> {
    pub(crate) fn new<const D: usize>(tensor: Option<Tensor<B, D>>, dims: [usize; D]) -> Self {
        let Some(mut p) = tensor.map(primitive) else {
            return HostBuffer::Copy(vec![0.0; dims.iter().product()]);
        };
        if host_tensor::values_mut::<B>(&mut p).is_some() {
            HostBuffer::Own(p)
        } else {
            HostBuffer::Copy(host_values::<B, D>(&p).into_owned())
        }
    }

    pub(crate) fn values(&mut self) -> &mut [f32] {
        match self {
            HostBuffer::Copy(copy) => copy,
            HostBuffer::Own(p) => host_tensor::values_mut::<B>(p)
                .expect("checked in `new`, and nothing has shared the buffer since"),
        }
    }

    pub(crate) fn into_tensor<const D: usize>(
        self,
        dims: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        match self {
            HostBuffer::Copy(copy) => from_host(copy, dims, device),
            HostBuffer::Own(p) => Tensor::from_primitive(TensorPrimitive::Float(p)),
        }
    }
}
