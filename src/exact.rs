//! `log_softmax`, `logsumexp`, `log` and division whose gradients are exact and the same on
//! every run.
//!
//! burn-ndarray 0.21 computes `recip` with the processor's reciprocal *estimate* (AVX-512's
//! `rcp14`, 14 bits; `rcp` on AVX2/SSE, 12 bits) on the vectorised part of a tensor and
//! with an exact division on the rest. burn's autodiff takes the gradient of `log(x)` as
//! `g · recip(x)` and that of `a / b` with respect to `a` as `g · recip(b)`, so on ndarray
//! those gradients are off by up to 2⁻¹⁴ relative, and which elements are off depends on
//! whether the tensor was updated in place — which depends on what else holds it. The same
//! seed then trains to different weights from run to run (burn's fix, tracel-ai/burn#5553,
//! came after 0.21). `log_softmax` is built on `log`, so every cross-entropy and KL term is
//! affected.
//!
//! The functions here give burn's forward values bit for bit and carry the gradient through
//! a term whose value is exactly zero, `(x − x̄) · c`, with `x̄` the detached input and `c`
//! a constant computed by an exact division. On backends whose `recip` is exact (Flex,
//! wgpu) they cost a few element-wise operations on the reduced tensors.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::tensor::Tensor;
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let logits = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0], [0.5, 0.5, 4.0]], &device)
//!     .require_grad();
//! let log_p = burn_transfer::exact::log_softmax(logits.clone(), 1);
//! // The same values as burn's own `log_softmax`.
//! let reference = burn::tensor::activation::log_softmax(logits.clone(), 1);
//! assert_eq!(log_p.to_data(), reference.to_data());
//! let grads = log_p.slice([0..2, 0..1]).sum().backward();
//! assert!(logits.grad(&grads).is_some());
//! ```

use burn::prelude::*;

/// `log_softmax(x)` along `dim`, with the values of burn's
/// [`log_softmax`](burn::tensor::activation::log_softmax) and the exact gradient
/// `g − softmax(x) · Σ g` (see the [module docs](self) for why not burn's).
///
/// Entries of `−∞` are allowed (masked classes): their value is `−∞` and their gradient
/// that of a class with probability zero.
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    // burn's composition: (x − max) − log Σ exp(x − max), the max detached.
    let max = x.clone().detach().max_dim(dim);
    let shifted = x - max;
    let sums = shifted.clone().exp().sum_dim(dim);
    shifted - log(sums)
}

/// `log Σ exp(x)` along `dim` (kept as a dimension of size 1), shifted by the maximum for
/// stability, with the exact gradient `softmax(x) · g`.
pub fn logsumexp<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().detach().max_dim(dim);
    log((x - max.clone()).exp().sum_dim(dim)) + max
}

/// `log(x)` with the gradient `g / x` computed by division. For `x > 0` (the crate takes
/// logarithms of sums of exponentials and of values clamped away from zero): at `x = 0`
/// the zero-valued gradient term would be `0 · ∞`.
pub(crate) fn log<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let frozen = x.clone().detach();
    let inverse = frozen.clone().ones_like().div(frozen.clone());
    frozen.clone().log() + (x - frozen) * inverse
}

/// `a / b` (broadcasting as `/` does) with the gradient with respect to `a` computed as
/// `g · (1 / b)` by division; the gradient with respect to `b` is burn's (`−g · a / b²`,
/// no reciprocal). For finite `a` and non-zero `b`, as in the crate's normalisations.
pub(crate) fn div<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let constant = b.clone().detach();
    let inverse = constant.clone().ones_like().div(constant);
    let frozen = a.clone().detach();
    // With `a` detached, burn's division computes only `b`'s gradient.
    frozen.clone().div(b) + (a - frozen) * inverse
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Distribution;

    type B = Autodiff<NdArray>;

    fn bits<const D: usize>(t: Tensor<NdArray, D>) -> Vec<u32> {
        t.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    fn gradient<const D: usize>(
        t: &Tensor<B, D>,
        grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
    ) -> Vec<f32> {
        t.grad(grads).unwrap().into_data().to_vec::<f32>().unwrap()
    }

    fn sample(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let device = Default::default();
        <NdArray as Backend>::seed(&device, seed);
        Tensor::<NdArray, 2>::random([rows, cols], Distribution::Normal(0.0, 2.0), &device)
            .into_data()
            .to_vec()
            .unwrap()
    }

    fn input(values: &[f32], rows: usize, cols: usize) -> Tensor<B, 2> {
        Tensor::<B, 2>::from_data(
            TensorData::new(values.to_vec(), [rows, cols]),
            &Default::default(),
        )
        .require_grad()
    }

    /// The gradient of `Σ w ⊙ log_softmax(x)` in f64: `w − p · Σ_row w`.
    fn reference_gradient(x: &[f32], w: &[f32], cols: usize) -> Vec<f64> {
        x.chunks(cols)
            .zip(w.chunks(cols))
            .flat_map(|(row, weights)| {
                let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64));
                let exps: Vec<f64> = row.iter().map(|v| (*v as f64 - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                let weight_sum: f64 = weights.iter().map(|v| *v as f64).sum();
                exps.into_iter()
                    .zip(weights)
                    .map(move |(e, w)| *w as f64 - e / total * weight_sum)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn log_softmax_values_are_burns_and_its_gradient_is_exact_on_every_call() {
        // 48 rows: the reduced sums are long enough for burn-ndarray's vectorised recip.
        let (rows, cols) = (48, 7);
        let x = sample(rows, cols, 3);
        let w = sample(rows, cols, 4);
        let weights = Tensor::<B, 2>::from_data(
            TensorData::new(w.clone(), [rows, cols]),
            &Default::default(),
        );
        let expected = reference_gradient(&x, &w, cols);
        let mut first = None;
        // burn-ndarray's recip takes its approximate path on some calls and not on others
        // (in place or not): every call must give the same bits.
        for _ in 0..8 {
            let logits = input(&x, rows, cols);
            let ours = log_softmax(logits.clone(), 1);
            let burns = burn::tensor::activation::log_softmax(logits.clone().detach(), 1);
            assert_eq!(bits(ours.clone().inner()), bits(burns.inner()));
            let grads = (ours * weights.clone()).sum().backward();
            let gradient = bits(logits.grad(&grads).unwrap());
            for (got, want) in gradient.iter().zip(&expected) {
                let got = f32::from_bits(*got) as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "gradient {got} against {want}"
                );
            }
            assert_eq!(first.get_or_insert_with(|| gradient.clone()), &gradient);
        }
    }

    #[test]
    fn log_softmax_keeps_masked_classes_at_minus_infinity() {
        let logits = input(
            &[0.0, f32::NEG_INFINITY, 1.0, 2.0, 0.5, f32::NEG_INFINITY],
            2,
            3,
        );
        let out = log_softmax(logits.clone(), 1);
        let values = out.clone().into_data().to_vec::<f32>().unwrap();
        assert_eq!(values[1], f32::NEG_INFINITY);
        assert_eq!(values[5], f32::NEG_INFINITY);
        let grads = out.slice([0..2, 0..1]).sum().backward();
        let gradient = gradient(&logits, &grads);
        assert!(gradient.iter().all(|g| g.is_finite()), "{gradient:?}");
        assert_eq!(gradient[1], 0.0);
    }

    #[test]
    fn logsumexp_matches_f64_and_its_gradient_is_the_softmax() {
        let (rows, cols) = (40, 5);
        let x = sample(rows, cols, 5);
        let logits = input(&x, rows, cols);
        let lse = logsumexp(logits.clone(), 1);
        let values = lse.clone().into_data().to_vec::<f32>().unwrap();
        let grads = lse.sum().backward();
        let gradient = gradient(&logits, &grads);
        for (r, row) in x.chunks(cols).enumerate() {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64));
            let total: f64 = row.iter().map(|v| (*v as f64 - max).exp()).sum();
            assert!((values[r] as f64 - (total.ln() + max)).abs() < 1e-5);
            for (c, v) in row.iter().enumerate() {
                let p = (*v as f64 - max).exp() / total;
                assert!((gradient[r * cols + c] as f64 - p).abs() < 1e-7);
            }
        }
    }

    #[test]
    fn division_gives_burns_values_and_exact_gradients_for_both_sides() {
        let (rows, cols) = (64, 3);
        let a = sample(rows, cols, 6);
        let b: Vec<f32> = sample(rows, 1, 7).iter().map(|v| v.abs() + 0.5).collect();
        let numerator = input(&a, rows, cols);
        let denominator = input(&b, rows, 1);
        let ours = div(numerator.clone(), denominator.clone());
        let burns = numerator.clone().detach() / denominator.clone().detach();
        assert_eq!(bits(ours.clone().inner()), bits(burns.inner()));
        let grads = ours.sum().backward();
        let da = gradient(&numerator, &grads);
        let db = gradient(&denominator, &grads);
        for r in 0..rows {
            let inv = 1.0 / b[r] as f64;
            let row_sum: f64 = a[r * cols..(r + 1) * cols].iter().map(|v| *v as f64).sum();
            for c in 0..cols {
                assert!((da[r * cols + c] as f64 - inv).abs() <= 1e-7 * inv);
            }
            let want = -row_sum * inv * inv;
            assert!((db[r] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn log_gives_burns_values_and_the_exact_gradient() {
        let x: Vec<f32> = sample(50, 1, 8).iter().map(|v| v.abs() + 1e-3).collect();
        let t = input(&x, 50, 1);
        let out = log(t.clone());
        assert_eq!(
            bits(out.clone().inner()),
            bits(t.clone().detach().inner().log())
        );
        let grads = out.sum().backward();
        let gradient = gradient(&t, &grads);
        for (g, v) in gradient.iter().zip(&x) {
            assert_eq!(*g, 1.0 / *v, "the gradient of log at {v}");
        }
    }
}
