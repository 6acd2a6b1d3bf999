//! Tensors of the CPU backends as host memory: recognising those backends by type, reading
//! their `f32` values in place, and making tensors from host vectors.
//!
//! Why by type: a bound such as `B: HostBackend` would spread to every model generic over
//! `B: Backend` that holds one of this crate's layers, and a backend without it could not
//! use those models at all. The check by type keeps the layers usable on every backend,
//! with the fast path where one exists.

use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use std::any::Any;
use std::borrow::Cow;

/// When `I` and `J` are one type (a backend's operands and the operands of a backend
/// tried): `Err(f(input))` with the result as `O`; otherwise `Ok(input)` back, to try the
/// next type. (`Err` carries the result so that `?` stops at the first match.)
pub(crate) fn when_same<I: 'static, J: 'static, P: 'static, O: 'static>(
    input: I,
    f: impl FnOnce(J) -> P,
) -> Result<I, O> {
    match cast::<I, J>(input) {
        Ok(input) => match cast::<P, O>(f(input)) {
            Ok(output) => Err(output),
            Err(_) => unreachable!("the result is built on the backend the input came from"),
        },
        Err(input) => Ok(input),
    }
}

/// `value` as a `U` when `T` and `U` are the same type.
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(same) => Ok(same.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// A float tensor's primitive.
pub(crate) fn primitive<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
) -> B::FloatTensorPrimitive {
    tensor.into_primitive().tensor()
}

fn to_host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .into_vec::<f32>()
        .expect("checked to be f32 before the kernel path was taken")
}

/// The values of an `f32` primitive in row-major order: borrowed where the backend's memory
/// already is a contiguous `f32` slice (ndarray, Flex), copied otherwise.
pub(crate) fn host_values<B: Backend, const D: usize>(
    primitive: &B::FloatTensorPrimitive,
) -> Cow<'_, [f32]> {
    let any: &dyn Any = primitive;
    if let Some(burn_ndarray::NdArrayTensor::F32(storage)) = any.downcast_ref()
        && let Some(slice) = storage.view().to_slice()
    {
        return Cow::Borrowed(slice);
    }
    #[cfg(feature = "flex")]
    if let Some(tensor) = any.downcast_ref::<burn::backend::flex::FlexTensor>()
        && let Some(slice) = tensor.as_slice::<f32>()
    {
        return Cow::Borrowed(slice);
    }
    Cow::Owned(to_host(Tensor::<B, D>::from_primitive(
        TensorPrimitive::Float(primitive.clone()),
    )))
}

/// Runs `f` on the values of an `f32` primitive in place, when they are a contiguous
/// row-major buffer that no other tensor shares (ndarray, Flex); returns whether it did.
/// Changing a shared buffer would change the other tensors too, so those are left alone
/// and the caller computes a new tensor instead.
pub(crate) fn update_in_place<B: Backend>(
    primitive: &mut B::FloatTensorPrimitive,
    f: impl FnOnce(&mut [f32]),
) -> bool {
    match values_mut::<B>(primitive) {
        Some(values) => {
            f(values);
            true
        }
        None => false,
    }
}

/// The values of an `f32` primitive as its own mutable buffer, in row-major order, when
/// they are contiguous and no other tensor shares them (ndarray, Flex); `None` otherwise
/// (and for other element types), so that the caller makes a new tensor instead.
pub(crate) fn values_mut<B: Backend>(
    primitive: &mut B::FloatTensorPrimitive,
) -> Option<&mut [f32]> {
    let any: &mut dyn Any = primitive;
    // The type is asked first: a borrow returned from one `downcast_mut` arm would keep
    // `any` borrowed in the next.
    if any.is::<burn_ndarray::NdArrayTensor>() {
        return match any.downcast_mut() {
            // `is_unique` first: `as_slice_mut` on a shared array would copy it.
            Some(burn_ndarray::NdArrayTensor::F32(storage)) if storage.is_unique() => {
                storage.ensure_owned().as_slice_mut()
            }
            _ => None,
        };
    }
    #[cfg(feature = "flex")]
    if let Some(tensor) = any.downcast_mut::<burn::backend::flex::FlexTensor>() {
        // `try_storage_mut` asserts on the element type: ask first.
        if tensor.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let (start, end) = tensor.layout().contiguous_offsets()?;
        return tensor
            .try_storage_mut::<f32>()
            .map(|storage| &mut storage[start..end]);
    }
    None
}

/// Whether `B`'s float tensors live in host memory as one of the CPU backends' own types
/// (ndarray, Flex), where reading and changing their values in place costs nothing.
pub(crate) fn is_host_backend<B: Backend>() -> bool {
    use std::any::TypeId;
    let primitive = TypeId::of::<B::FloatTensorPrimitive>();
    #[cfg(feature = "flex")]
    if primitive == TypeId::of::<burn::backend::flex::FlexTensor>() {
        return true;
    }
    primitive == TypeId::of::<burn_ndarray::NdArrayTensor>()
}

/// A tensor holding `values` (row-major `dims`); the CPU backends take the vector over
/// without copying it.
pub(crate) fn from_host<B: Backend, const D: usize>(
    values: Vec<f32>,
    dims: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, dims), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn same_types_run_and_others_pass_through() {
        let run = |x: u32| -> Result<u32, String> {
            when_same::<u32, u32, String, String>(x, |v| format!("{v}"))
        };
        assert_eq!(run(7), Err("7".to_string()));
        let skipped: Result<u32, String> =
            when_same::<u32, i64, String, String>(7, |v| format!("{v}"));
        assert_eq!(skipped, Ok(7));
    }

    #[test]
    fn unshared_buffers_change_in_place_and_shared_ones_do_not() {
        let device = Default::default();
        let t = Tensor::<NdArray, 1>::from_floats([1.0, -2.0, 3.0], &device);
        let mut alone = primitive(t.clone() * 1.0);
        assert!(update_in_place::<NdArray>(&mut alone, |v| v[1] = 0.0));
        assert_eq!(&*host_values::<NdArray, 1>(&alone), &[1.0, 0.0, 3.0]);
        // `t` still holds this buffer: it must not see the change.
        let mut shared = primitive(t.clone());
        assert!(!update_in_place::<NdArray>(&mut shared, |v| v[0] = 9.0));
        assert_eq!(t.into_data().to_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.0]);
    }

    #[test]
    fn strided_tensors_are_read_in_row_major_order() {
        let device = Default::default();
        let t = Tensor::<NdArray, 2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
        let p = primitive(t.clone());
        assert!(matches!(host_values::<NdArray, 2>(&p), Cow::Borrowed(_)));
        let transposed = primitive(t.transpose());
        let values = host_values::<NdArray, 2>(&transposed);
        assert_eq!(&*values, &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
