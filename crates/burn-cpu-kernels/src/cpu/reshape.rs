//! Reshaping a contiguous tensor without copying it, on ndarray and in autodiff over it.
//!
//! Why: burn-ndarray 0.21's `reshape` goes through `to_shape(..).into_shared()`, which
//! copies the whole buffer even when it is already contiguous in row-major order; the
//! kernels read a transformer's `[batch, seq, width]` activations as `[batch·seq, width]`
//! rows and give their results back in the caller's rank, two copies per layer per pass.
//! Here a row-major ndarray buffer changes its shape in place (the same `Arc`), and the
//! backward pass of the autodiff version does the same to the gradient. Anything else
//! (another backend, a strided view, Flex, whose reshape is already free) takes burn's
//! `reshape`.

use super::route::{HostBackend, HostOp, record, route};
use super::tensor::primitive;
use burn::backend::NdArray;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::ops::FloatTensorOps;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_ndarray::NdArrayTensor;
use std::any::Any;

/// `x.reshape(dims)` (the same number of elements), free of copies where the buffer allows.
pub(crate) fn reshape<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    dims: [usize; E],
) -> Tensor<B, E> {
    if D == E && x.dims()[..] == dims[..] {
        // The same shape: only the type's rank parameter changes.
        return Tensor::from_primitive(x.into_primitive());
    }
    let from = x.dims();
    match route(&Reshape { from, to: dims }, x) {
        Ok(y) => y,
        Err(x) => x.reshape(dims),
    }
}

/// An ndarray `f32` primitive with the shape `dims`, when its buffer is row-major
/// contiguous; the primitive back otherwise.
fn ndarray_in_place(
    primitive: NdArrayTensor,
    dims: &[usize],
) -> Result<NdArrayTensor, NdArrayTensor> {
    match primitive {
        NdArrayTensor::F32(storage)
            if storage.view().is_standard_layout()
                && storage.view().len() == dims.iter().product::<usize>() =>
        {
            // The array itself (its `Arc`), not a copy.
            let array = storage
                .into_shared()
                .into_shape_with_order(ndarray::IxDyn(dims))
                .expect("checked: a row-major buffer of the same length takes any shape");
            Ok(NdArrayTensor::from(array))
        }
        other => Err(other),
    }
}

/// `primitive` (of backend `B`) with the shape `dims`: in place on ndarray when it can be,
/// burn's reshape otherwise.
fn reshape_primitive<B: Backend>(
    primitive: B::FloatTensorPrimitive,
    dims: &[usize],
) -> B::FloatTensorPrimitive {
    let mut slot = Some(primitive);
    if let Some(ndarray) = (&mut slot as &mut dyn Any).downcast_mut::<Option<NdArrayTensor>>() {
        let taken = ndarray.take().expect("just filled");
        let reshaped = ndarray_in_place(taken, dims).unwrap_or_else(|other| {
            <NdArray as FloatTensorOps<NdArray>>::float_reshape(
                other,
                burn::tensor::Shape::from(dims.to_vec()),
            )
        });
        *ndarray = Some(reshaped);
    } else {
        let taken = slot.take().expect("just filled");
        slot = Some(B::float_reshape(
            taken,
            burn::tensor::Shape::from(dims.to_vec()),
        ));
    }
    slot.expect("filled on both branches")
}

/// One reshape, for [`route`].
struct Reshape<const D: usize, const E: usize> {
    from: [usize; D],
    to: [usize; E],
}

impl<const D: usize, const E: usize> HostOp for Reshape<D, E> {
    type Operands<B: Backend> = Tensor<B, D>;
    type Output<B: Backend> = Tensor<B, E>;

    fn infers_on(&self, backend: HostBackend) -> bool {
        backend == HostBackend::NdArray
    }

    fn inference<B: Backend>(&self, x: Tensor<B, D>) -> Tensor<B, E> {
        Tensor::from_primitive(TensorPrimitive::Float(reshape_primitive::<B>(
            primitive(x),
            &self.to,
        )))
    }

    fn training<B: Backend, C: CheckpointStrategy>(
        &self,
        x: Tensor<Autodiff<B, C>, D>,
    ) -> Tensor<Autodiff<B, C>, E> {
        let x = primitive(x);
        let y = reshape_primitive::<B>(x.primitive.clone(), &self.to);
        let output = record(
            ReshapeBackward.prepare::<C>([x.node]),
            self.from.to_vec(),
            y,
        );
        Tensor::from_primitive(TensorPrimitive::Float(output))
    }
}

/// The reshape's backward step: the gradient takes the input's shape back.
#[derive(Debug)]
struct ReshapeBackward;

impl<B: Backend> Backward<B, 1> for ReshapeBackward {
    type State = Vec<usize>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            grads.register::<B>(parent.id, reshape_primitive::<B>(dy, &ops.state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::tensor::host_values;
    use burn::tensor::Distribution;

    type A = Autodiff<NdArray>;

    /// The values and the gradient of burn's reshape; a contiguous buffer keeps its memory.
    #[test]
    fn same_as_burns_reshape_without_copying() {
        let device = Default::default();
        let x = Tensor::<NdArray, 3>::random([2, 3, 4], Distribution::Default, &device);
        let before = host_values::<NdArray, 3>(&primitive(x.clone())).as_ptr();
        let y = reshape(x.clone(), [6, 4]);
        assert_eq!(y.to_data(), x.clone().reshape([6, 4]).to_data());
        assert_eq!(host_values::<NdArray, 2>(&primitive(y)).as_ptr(), before);

        let x = Tensor::<A, 3>::random([2, 3, 4], Distribution::Default, &device).require_grad();
        let dy = Tensor::<A, 2>::random([6, 4], Distribution::Default, &device);
        let ours = reshape(x.clone(), [6, 4]);
        assert_eq!(ours.to_data(), x.clone().reshape([6, 4]).to_data());
        let g = (ours * dy.clone()).sum().backward();
        let r = (x.clone().reshape([6, 4]) * dy).sum().backward();
        assert_eq!(x.grad(&g).unwrap().to_data(), x.grad(&r).unwrap().to_data());
    }

    /// A transposed (strided) tensor is read in row-major order, as burn's reshape reads it.
    #[test]
    fn strided_tensors_are_copied_in_order() {
        let x = Tensor::<NdArray, 2>::from_floats(
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            &Default::default(),
        );
        let t = x.transpose();
        assert_eq!(reshape(t.clone(), [6]).to_data(), t.reshape([6]).to_data());
    }
}
