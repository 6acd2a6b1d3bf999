//! ReLU on host memory, forward and backward, for the kernel layers that fuse it (the
//! convolution and the linear layer): burn's ReLU is a separate operation with its own
//! output tensor and, in training, a mask tensor; fused, it is one pass over a buffer the
//! layer owns anyway.

use super::tensor::{host_values, update_in_place};
use burn::prelude::*;
use rayon::prelude::*;
use std::borrow::Cow;

/// Elements per parallel task of the backward pass.
const CHUNK: usize = 64 * 1024;

/// `max(v, 0)` as burn's ReLU computes it: values `≤ 0` become 0, NaN stays NaN.
pub(crate) fn relu_in_place(values: &mut [f32]) {
    // A select and an unconditional store, which vectorise; a conditional store does not,
    // and mispredicts on every other value (it made this pass 10% of a CNN's step).
    values
        .iter_mut()
        .for_each(|v| *v = if *v <= 0.0 { 0.0 } else { *v });
}

/// Through ReLU backwards, in place: the output gradient `dy` becomes the input's, `dy`
/// where ReLU's output `y > 0` (or NaN, as burn masks only `y ≤ 0`), else 0. One parallel
/// pass.
pub(crate) fn relu_gradient_in_place(dy: &mut [f32], y: &[f32]) {
    debug_assert_eq!(dy.len(), y.len());
    dy.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(dy, y)| {
            for (dy, &y) in dy.iter_mut().zip(y) {
                *dy = if y <= 0.0 { 0.0 } else { *dy };
            }
        });
}

/// The gradient before a fused ReLU, on the host.
pub(crate) enum GradientBeforeRelu<B: Backend> {
    /// The incoming gradient's own tensor (masked in place, or without ReLU as it came).
    Tensor(B::FloatTensorPrimitive),
    /// A masked copy, when the incoming gradient's buffer was shared.
    Copied(Vec<f32>),
}

impl<B: Backend> GradientBeforeRelu<B> {
    /// From `dy`, the gradient after ReLU, and `relu_output`, ReLU's forward values (`None`:
    /// the layer had no ReLU). Masked in `dy`'s own buffer when no other tensor holds it
    /// (the usual case; a fresh buffer would cost its page faults), else in a copy.
    pub(crate) fn new<const D: usize>(
        mut dy: B::FloatTensorPrimitive,
        relu_output: Option<&B::FloatTensorPrimitive>,
    ) -> Self {
        let Some(y) = relu_output else {
            return Self::Tensor(dy);
        };
        let y = host_values::<B, D>(y);
        let mask = |dy: &mut [f32]| relu_gradient_in_place(dy, &y);
        if update_in_place::<B>(&mut dy, mask) {
            return Self::Tensor(dy);
        }
        let mut copy = host_values::<B, D>(&dy).into_owned();
        mask(&mut copy);
        Self::Copied(copy)
    }

    /// The values, row-major.
    pub(crate) fn values<const D: usize>(&self) -> Cow<'_, [f32]> {
        match self {
            Self::Tensor(dy) => host_values::<B, D>(dy),
            Self::Copied(values) => Cow::Borrowed(values),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_backward_follow_burns_relu() {
        let y_in = [-1.0, 0.0, 2.0, f32::NAN, -0.0, 3.5];
        let mut y = y_in;
        relu_in_place(&mut y);
        assert_eq!(&y[..3], &[0.0, 0.0, 2.0]);
        assert!(y[3].is_nan());
        assert_eq!(&y[4..], &[0.0, 3.5]);
        // Past one task's stretch, so that the parallel split is exercised.
        let mut y: Vec<f32> = (0..CHUNK + 77).map(|i| (i as f32 * 0.3).sin()).collect();
        relu_in_place(&mut y);
        let mut dy = vec![1.5; y.len()];
        relu_gradient_in_place(&mut dy, &y);
        for (g, &v) in dy.iter().zip(&y) {
            assert_eq!(*g, if v > 0.0 { 1.5 } else { 0.0 });
        }
    }
}
