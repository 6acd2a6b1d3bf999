//! Position embeddings for another patch grid: PyTorch's bicubic resampling
//! (`interpolate(mode="bicubic", align_corners=False)`, what transformers'
//! `interpolate_pos_encoding` calls), written as one matrix product.
//!
//! Why a matrix: bicubic resampling is linear in the embeddings, so the whole resize is
//! `kron(rows, cols) · grid`; a matrix product has a gradient on every backend, where
//! burn's `interpolate` has no bicubic backward on ndarray. The matrix is small (new patches
//! × trained patches) and built on the host from the sizes alone.

use burn::prelude::*;

/// PyTorch's cubic convolution constant (`A = -0.75`).
const A: f64 = -0.75;

/// The kernel for `|x| ≤ 1`.
fn near(x: f64) -> f64 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

/// The kernel for `1 < |x| < 2`.
fn far(x: f64) -> f64 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// `[to, from]` weights resampling a line of `from` values to `to`, as PyTorch's bicubic
/// upsampling without aligned corners: the source of output `i` is
/// `(i + 0.5)·from/to − 0.5`, its four neighbours are clamped to the line's ends.
pub(crate) fn bicubic_weights(from: usize, to: usize) -> Vec<f64> {
    let scale = from as f64 / to as f64;
    let mut weights = vec![0.0; to * from];
    for i in 0..to {
        let source = scale * (i as f64 + 0.5) - 0.5;
        let floor = source.floor();
        let t = source - floor;
        let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (j, w) in taps.into_iter().enumerate() {
            let k = (floor as i64 - 1 + j as i64).clamp(0, from as i64 - 1) as usize;
            weights[i * from + k] += w;
        }
    }
    weights
}

/// Resamples the patch position embeddings `[1, 1 + from_h·from_w, dim]` (class token
/// first, patches row by row) to a `to` grid; the class token's embedding is kept. The same
/// grid returns the embeddings unchanged.
pub(crate) fn resize<B: Backend>(
    embeddings: Tensor<B, 3>,
    from: [usize; 2],
    to: [usize; 2],
) -> Tensor<B, 3> {
    if from == to {
        return embeddings;
    }
    let [_, n, dim] = embeddings.dims();
    let class = embeddings.clone().slice([0..1, 0..1, 0..dim]);
    let patches = embeddings.slice([0..1, 1..n, 0..dim]).reshape([n - 1, dim]);
    let rows = bicubic_weights(from[0], to[0]);
    let cols = bicubic_weights(from[1], to[1]);
    // kron(rows, cols): output patch (i, j) mixes input patch (a, b) by rows[i,a]·cols[j,b].
    let (old, new) = (from[0] * from[1], to[0] * to[1]);
    let mut kron = vec![0.0f32; new * old];
    for i in 0..to[0] {
        for j in 0..to[1] {
            let row = &mut kron[(i * to[1] + j) * old..][..old];
            for a in 0..from[0] {
                for b in 0..from[1] {
                    row[a * from[1] + b] = (rows[i * from[0] + a] * cols[j * from[1] + b]) as f32;
                }
            }
        }
    }
    let kron = Tensor::<B, 2>::from_data(TensorData::new(kron, [new, old]), &patches.device());
    let resized = kron.matmul(patches).reshape([1, new, dim]);
    Tensor::cat(vec![class, resized], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// Each output is a weighted mean: the weights of a row sum to 1 (so constants stay
    /// constant), and resampling to the same length is the identity.
    #[test]
    fn weights_are_a_partition_of_unity_and_same_size_is_identity() {
        for (from, to) in [(14, 24), (4, 6), (7, 3), (1, 5)] {
            let w = bicubic_weights(from, to);
            for row in w.chunks(from) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{from}→{to}");
            }
        }
        let same = bicubic_weights(5, 5);
        for i in 0..5 {
            for k in 0..5 {
                assert_eq!(same[i * 5 + k], if i == k { 1.0 } else { 0.0 });
            }
        }
    }

    /// Values PyTorch 2.15 gives for `interpolate([0, 1, 4, 9], size=6, mode="bicubic",
    /// align_corners=False)` on one line (the ends exercise the clamped taps).
    #[test]
    fn a_line_resamples_as_pytorch() {
        let w = bicubic_weights(4, 6);
        let line = [0.0, 1.0, 4.0, 9.0];
        let got: Vec<f64> = w
            .chunks(4)
            .map(|row| row.iter().zip(line).map(|(w, x)| w * x).sum())
            .collect();
        let expected = [
            -0.086_805_555_555_555_36,
            0.218_75,
            1.430_555_555_555_559,
            3.152_777_777_777_779_5,
            6.781_25,
            9.434_027_777_777_78,
        ];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn the_class_token_is_kept_and_the_grid_resized() {
        let device = Default::default();
        let values: Vec<f32> = (0..(1 + 4) * 2).map(|v| v as f32).collect();
        let pos = Tensor::<NdArray, 3>::from_data(TensorData::new(values, [1, 5, 2]), &device);
        let out = resize(pos.clone(), [2, 2], [3, 4]);
        assert_eq!(out.dims(), [1, 13, 2]);
        let out = out.into_data().to_vec::<f32>().unwrap();
        assert_eq!(&out[..2], &[0.0, 1.0]);
        let same = resize(pos.clone(), [2, 2], [2, 2]);
        same.into_data().assert_eq(&pos.into_data(), true);
    }
}
