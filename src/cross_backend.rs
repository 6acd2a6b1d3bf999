//! Values copied from one backend (or device) to another through their data: what a model
//! on another backend reads, and what it gives back. A copy, never a view: nothing computed
//! on the far side keeps a link (or a gradient path) to the near side.

use burn::prelude::*;

/// A value that can be copied to another backend: a tensor, or a model input made of
/// tensors (`BertInput`). Implement it for your own input type to run a
/// [`TeacherOn`](crate::distill::TeacherOn) that reads it.
pub trait CrossBackend<B: Backend>: Sized {
    /// The same value on backend `B2`.
    type On<B2: Backend>: CrossBackend<B2>;

    /// The device the value lives on (where results computed elsewhere come back to).
    fn device(&self) -> B::Device;

    /// A copy on `device` of backend `B2` (the data goes through the host).
    fn to_backend<B2: Backend>(self, device: &B2::Device) -> Self::On<B2>;
}

/// One implementation per tensor kind: a kind's `BasicOps` on the target backend cannot be
/// named generically.
macro_rules! tensor_cross_backend {
    ($kind:ty) => {
        impl<B: Backend, const D: usize> CrossBackend<B> for Tensor<B, D, $kind> {
            type On<B2: Backend> = Tensor<B2, D, $kind>;

            fn device(&self) -> B::Device {
                Tensor::device(self)
            }

            fn to_backend<B2: Backend>(self, device: &B2::Device) -> Self::On<B2> {
                Tensor::from_data(self.into_data(), device)
            }
        }
    };
}

tensor_cross_backend!(Float);
tensor_cross_backend!(Int);
tensor_cross_backend!(Bool);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn a_copy_keeps_values_and_leaves_the_graph() {
        type A = Autodiff<NdArray>;
        let device = Default::default();
        let x = Tensor::<A, 2>::from_floats([[1.0, -2.5], [3.0, 0.25]], &device).require_grad();
        let copied: Tensor<NdArray, 2> = x.clone().to_backend::<NdArray>(&device);
        copied.into_data().assert_eq(&x.clone().into_data(), true);
        // Back on the autodiff backend the copy is a constant: no gradient reaches `x`
        // through it.
        let back: Tensor<A, 2> = x.clone().to_backend::<A>(&device);
        assert!(!back.is_require_grad());
        let ids = Tensor::<NdArray, 1, Int>::from_ints([3, 1, 4], &device);
        ids.clone()
            .to_backend::<NdArray>(&device)
            .into_data()
            .assert_eq(&ids.into_data(), true);
        let mask = Tensor::<NdArray, 1, Bool>::from_bool(TensorData::from([true, false]), &device);
        mask.clone()
            .to_backend::<NdArray>(&device)
            .into_data()
            .assert_eq(&mask.into_data(), true);
    }
}
