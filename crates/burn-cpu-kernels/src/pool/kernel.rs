//! Max pooling on host memory (`f32`, NCHW), one plane per task on rayon's threads: the
//! forward pass keeps, per output, the index of the input it took (the first maximum, as
//! PyTorch and burn take it), and the backward pass adds each output's gradient there.

use crate::cpu::window::inside;
use rayon::prelude::*;

/// Every size of one max pooling. Positions outside the input (the padding) never win.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolShape {
    /// Batch size × channels: the number of planes.
    pub planes: usize,
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// Output `[height, width]`.
    pub output: [usize; 2],
    /// Window `[height, width]`.
    pub kernel: [usize; 2],
    /// Stride `[y, x]`.
    pub stride: [usize; 2],
    /// Padding before the first row and column `[top, left]`.
    pub padding: [usize; 2],
    /// Dilation `[y, x]`.
    pub dilation: [usize; 2],
}

/// The index a window without any input position records: its gradient goes nowhere.
const NOWHERE: u32 = u32::MAX;

impl PoolShape {
    fn input_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    fn output_plane(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Elements of the input.
    pub fn input_len(&self) -> usize {
        self.planes * self.input_plane()
    }

    /// Elements of the output.
    pub fn output_len(&self) -> usize {
        self.planes * self.output_plane()
    }

    /// 2×2 windows with stride 2 that never reach the padding.
    fn is_two_by_two(&self) -> bool {
        self.kernel == [2, 2]
            && self.stride == [2, 2]
            && self.padding == [0, 0]
            && self.dilation == [1, 1]
    }

    /// The first maximum of window `(oy, ox)` of one plane and its position in the plane
    /// (`NOWHERE` for a window that reads no input position): the definition the passes
    /// are tested against.
    #[cfg(test)]
    fn window_max(&self, x: &[f32], oy: usize, ox: usize) -> (f32, u32) {
        let [h, w] = self.input;
        let y0 = (oy * self.stride[0]) as isize - self.padding[0] as isize;
        let x0 = (ox * self.stride[1]) as isize - self.padding[1] as isize;
        let (mut best, mut at) = (f32::NEG_INFINITY, NOWHERE);
        for ky in 0..self.kernel[0] {
            let iy = y0 + (ky * self.dilation[0]) as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let row = iy as usize * w;
            for kx in 0..self.kernel[1] {
                let ix = x0 + (kx * self.dilation[1]) as isize;
                if ix < 0 || ix >= w as isize {
                    continue;
                }
                let i = row + ix as usize;
                let v = x[i];
                if wins(v, best) || at == NOWHERE {
                    (best, at) = (v, i as u32);
                }
            }
        }
        (best, at)
    }
}

/// Whether `a` replaces `best` as the window's maximum: it is larger (so the first
/// maximum stays on ties), or a NaN where `best` is not (a NaN wins, as in PyTorch).
fn wins(a: f32, best: f32) -> bool {
    a > best || (a.is_nan() && !best.is_nan())
}

/// Output row `oy` of 2×2 windows with stride 2 and no padding: every window lies inside
/// the plane, so there is no bounds test per element, only selects.
fn pool_two_rows(x: &[f32], w: usize, oy: usize, y: &mut [f32], indices: Option<&mut [u32]>) {
    let top = 2 * oy * w;
    let (upper, lower) = (&x[top..][..w], &x[top + w..][..w]);
    let windows = upper.chunks_exact(2).zip(lower.chunks_exact(2));
    match indices {
        Some(indices) => {
            for (ox, ((out, at), (u, l))) in y.iter_mut().zip(indices).zip(windows).enumerate() {
                let (mut best, mut offset) = (u[0], top + 2 * ox);
                for (value, position) in [
                    (u[1], top + 2 * ox + 1),
                    (l[0], top + w + 2 * ox),
                    (l[1], top + w + 2 * ox + 1),
                ] {
                    if wins(value, best) {
                        (best, offset) = (value, position);
                    }
                }
                (*out, *at) = (best, offset as u32);
            }
        }
        None => {
            for (out, (u, l)) in y.iter_mut().zip(windows) {
                let mut best = u[0];
                for value in [u[1], l[0], l[1]] {
                    if wins(value, best) {
                        best = value;
                    }
                }
                *out = best;
            }
        }
    }
}

/// The pooled output.
pub(crate) fn forward(x: &[f32], shape: &PoolShape) -> Vec<f32> {
    let mut y = vec![0.0; shape.output_len()];
    if shape.is_two_by_two() {
        pool_two_by_two(x, shape, &mut y, None);
        return y;
    }
    y.par_chunks_mut(shape.output_plane())
        .zip(x.par_chunks(shape.input_plane()))
        .for_each_init(Vec::new, |across, (y, x)| {
            pool_separably(x, shape, y, across);
        });
    y
}

/// One plane's window maxima without their positions (inference), in two passes: the
/// maximum across each window's columns for every input row, then down each window's rows.
///
/// Why: window by window, each of the nine reads of a 3×3 window was bounds-tested (ResNet's
/// stem pool on a frozen body took longer than PyTorch's whole stem); as two passes each
/// step is a run of multiply-free selects over a row. The value is the same: the maximum
/// of a window does not depend on the order it is taken in (ties are equal values, and a
/// NaN anywhere in the window wins either way).
fn pool_separably(x: &[f32], shape: &PoolShape, y: &mut [f32], across: &mut Vec<f32>) {
    let [h, w] = shape.input;
    let [ho, wo] = shape.output;
    let pick = |best: f32, v: f32| if wins(v, best) { v } else { best };
    across.clear();
    across.resize(h * wo, f32::NEG_INFINITY);
    for (row, out) in x.chunks_exact(w).zip(across.chunks_exact_mut(wo)) {
        for kx in 0..shape.kernel[1] {
            let offset = (kx * shape.dilation[1]) as isize - shape.padding[1] as isize;
            let valid = inside(wo, shape.stride[1], offset, w);
            if valid.is_empty() {
                continue;
            }
            let first = (valid.start as isize * shape.stride[1] as isize + offset) as usize;
            let reads = row[first..].iter().step_by(shape.stride[1]);
            for (best, &v) in out[valid].iter_mut().zip(reads) {
                *best = pick(*best, v);
            }
        }
    }
    y.fill(f32::NEG_INFINITY);
    for ky in 0..shape.kernel[0] {
        let offset = (ky * shape.dilation[0]) as isize - shape.padding[0] as isize;
        for oy in inside(ho, shape.stride[0], offset, h) {
            let iy = (oy as isize * shape.stride[0] as isize + offset) as usize;
            let src = &across[iy * wo..][..wo];
            for (best, &v) in y[oy * wo..][..wo].iter_mut().zip(src) {
                *best = pick(*best, v);
            }
        }
    }
}

/// [`pool_separably`] keeping each maximum's position within the plane (training).
///
/// The position is the first maximum in reading order, as window by window: across, each
/// row's first maximum (a later column must be larger to replace it); down, the first row
/// holding the window's maximum (likewise), whose first maximum is then the window's first.
/// A window whose values are all −∞ takes its first position read, as window by window.
fn pool_separably_with_positions(
    x: &[f32],
    shape: &PoolShape,
    (y, at): (&mut [f32], &mut [u32]),
    (across, across_at): (&mut Vec<f32>, &mut Vec<u32>),
) {
    let [h, w] = shape.input;
    let [ho, wo] = shape.output;
    let take = |best: &mut f32, best_at: &mut u32, v: f32, v_at: u32| {
        if wins(v, *best) || (*best_at == NOWHERE && v_at != NOWHERE) {
            (*best, *best_at) = (v, v_at);
        }
    };
    across.clear();
    across.resize(h * wo, f32::NEG_INFINITY);
    across_at.clear();
    across_at.resize(h * wo, NOWHERE);
    for (iy, row) in x.chunks_exact(w).enumerate() {
        let (out, out_at) = (
            &mut across[iy * wo..][..wo],
            &mut across_at[iy * wo..][..wo],
        );
        for kx in 0..shape.kernel[1] {
            let offset = (kx * shape.dilation[1]) as isize - shape.padding[1] as isize;
            let valid = inside(wo, shape.stride[1], offset, w);
            for ox in valid {
                let ix = (ox as isize * shape.stride[1] as isize + offset) as usize;
                take(&mut out[ox], &mut out_at[ox], row[ix], (iy * w + ix) as u32);
            }
        }
    }
    y.fill(f32::NEG_INFINITY);
    at.fill(NOWHERE);
    for ky in 0..shape.kernel[0] {
        let offset = (ky * shape.dilation[0]) as isize - shape.padding[0] as isize;
        for oy in inside(ho, shape.stride[0], offset, h) {
            let iy = (oy as isize * shape.stride[0] as isize + offset) as usize;
            let (src, src_at) = (&across[iy * wo..][..wo], &across_at[iy * wo..][..wo]);
            let (dst, dst_at) = (&mut y[oy * wo..][..wo], &mut at[oy * wo..][..wo]);
            for (((best, best_at), &v), &v_at) in dst.iter_mut().zip(dst_at).zip(src).zip(src_at) {
                take(best, best_at, v, v_at);
            }
        }
    }
}

/// The pooled output and the position (within its plane) each output was taken from.
pub(crate) fn forward_with_indices(x: &[f32], shape: &PoolShape) -> (Vec<f32>, Vec<u32>) {
    let mut y = vec![0.0; shape.output_len()];
    let mut indices = vec![0u32; shape.output_len()];
    if shape.is_two_by_two() {
        pool_two_by_two(x, shape, &mut y, Some(&mut indices));
        return (y, indices);
    }
    let n = shape.output_plane();
    y.par_chunks_mut(n)
        .zip(indices.par_chunks_mut(n))
        .zip(x.par_chunks(shape.input_plane()))
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(across, across_at), ((y, at), x)| {
                pool_separably_with_positions(x, shape, (y, at), (across, across_at));
            },
        );
    (y, indices)
}

/// Pools `x` into `y` with 2×2 windows at stride 2, and the winning positions into
/// `indices` when given.
fn pool_two_by_two(x: &[f32], shape: &PoolShape, y: &mut [f32], indices: Option<&mut [u32]>) {
    debug_assert!(shape.is_two_by_two());
    debug_assert_eq!(x.len(), shape.input_len());
    let plane = |p: usize, y: &mut [f32], mut indices: Option<&mut [u32]>| {
        let x = &x[p * shape.input_plane()..][..shape.input_plane()];
        let wo = shape.output[1];
        for oy in 0..shape.output[0] {
            let indices = indices.as_deref_mut().map(|i| &mut i[oy * wo..][..wo]);
            pool_two_rows(x, shape.input[1], oy, &mut y[oy * wo..][..wo], indices);
        }
    };
    let n = shape.output_plane();
    match indices {
        Some(indices) => y
            .par_chunks_mut(n)
            .zip(indices.par_chunks_mut(n))
            .enumerate()
            .for_each(|(p, (y, i))| plane(p, y, Some(i))),
        None => y
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(p, y)| plane(p, y, None)),
    }
}

/// The input gradient: each output's gradient added at the position it was taken from.
pub(crate) fn backward(dy: &[f32], indices: &[u32], shape: &PoolShape) -> Vec<f32> {
    debug_assert_eq!(dy.len(), shape.output_len());
    debug_assert_eq!(indices.len(), shape.output_len());
    let mut dx = vec![0.0; shape.input_len()];
    let n = shape.output_plane();
    dx.par_chunks_mut(shape.input_plane())
        .zip(dy.par_chunks(n).zip(indices.par_chunks(n)))
        .for_each(|(dx, (dy, indices))| {
            // Written before it is read, so the fresh pages are mapped once (see the
            // convolution's backward).
            dx.fill(0.0);
            for (&g, &i) in dy.iter().zip(indices) {
                if i != NOWHERE {
                    dx[i as usize] += g;
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(
        input: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    ) -> PoolShape {
        let output = [0, 1].map(|a| (input[a] + 2 * padding[a] - kernel[a]) / stride[a] + 1);
        PoolShape {
            planes: 1,
            input,
            output,
            kernel,
            stride,
            padding,
            dilation: [1, 1],
        }
    }

    #[test]
    fn two_by_two_takes_each_windows_maximum_and_routes_the_gradient_there() {
        #[rustfmt::skip]
        let x = [
            1.0, 5.0, 2.0, 0.0,
            3.0, 4.0, 7.0, 7.0,
            -1.0, -2.0, 0.0, 0.0,
            -3.0, -4.0, 0.0, 0.0,
        ];
        let s = shape([4, 4], [2, 2], [2, 2], [0, 0]);
        let (y, indices) = forward_with_indices(&x, &s);
        assert_eq!(y, vec![5.0, 7.0, -1.0, 0.0]);
        // Ties go to the first maximum in reading order.
        assert_eq!(indices, vec![1, 6, 8, 10]);
        let dx = backward(&[1.0, 2.0, 3.0, 4.0], &indices, &s);
        let mut expected = vec![0.0; 16];
        (expected[1], expected[6], expected[8], expected[10]) = (1.0, 2.0, 3.0, 4.0);
        assert_eq!(dx, expected);
    }

    #[test]
    fn the_two_by_two_path_agrees_with_the_general_one_on_ties_nans_and_odd_sizes() {
        // 5×7 input: the last row and column belong to no window.
        let x: Vec<f32> = (0..35)
            .map(|i| match i % 7 {
                3 => f32::NAN,
                5 | 6 => 2.0,
                _ => (i % 4) as f32,
            })
            .collect();
        let s = shape([5, 7], [2, 2], [2, 2], [0, 0]);
        assert!(s.is_two_by_two());
        let (y, indices) = forward_with_indices(&x, &s);
        let [ho, wo] = s.output;
        for oy in 0..ho {
            for ox in 0..wo {
                let (best, at) = s.window_max(&x, oy, ox);
                let o = oy * wo + ox;
                assert_eq!(indices[o], at, "window ({oy}, {ox})");
                assert!(y[o] == best || (y[o].is_nan() && best.is_nan()));
            }
        }
        let plain = forward(&x, &s);
        assert!(
            plain
                .iter()
                .zip(&y)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()))
        );
    }

    /// The separable passes give every window's maximum and its first position, on NaNs,
    /// ties and −∞, for strides, paddings and dilations on both axes, over several planes.
    #[test]
    fn separable_passes_agree_with_the_windows() {
        let cases = [
            ([9, 10], [3, 3], [2, 2], [1, 1], [1, 1]),
            ([7, 8], [2, 3], [1, 2], [1, 1], [2, 1]),
            ([6, 5], [3, 2], [3, 1], [0, 1], [1, 2]),
            ([4, 4], [4, 4], [1, 1], [2, 2], [1, 1]),
        ];
        for (input, kernel, stride, padding, dilation) in cases {
            let output = [0, 1].map(|a| {
                let span = dilation[a] * (kernel[a] - 1) + 1;
                (input[a] + 2 * padding[a] - span) / stride[a] + 1
            });
            let s = PoolShape {
                planes: 3,
                input,
                output,
                kernel,
                stride,
                padding,
                dilation,
            };
            let x: Vec<f32> = (0..s.input_len())
                .map(|i| match i % 11 {
                    4 => f32::NAN,
                    7 => f32::NEG_INFINITY,
                    8 | 9 => 1.5,
                    _ => -((i * 7 % 13) as f32),
                })
                .collect();
            let y = forward(&x, &s);
            let (y_at, at) = forward_with_indices(&x, &s);
            let [ho, wo] = output;
            for p in 0..s.planes {
                let plane = &x[p * s.input_plane()..][..s.input_plane()];
                for o in 0..ho * wo {
                    let (best, best_at) = s.window_max(plane, o / wo, o % wo);
                    for got in [y[p * ho * wo + o], y_at[p * ho * wo + o]] {
                        assert!(
                            got == best || (got.is_nan() && best.is_nan()),
                            "{input:?} {kernel:?}: plane {p}, output {o}: {got} vs {best}"
                        );
                    }
                    assert_eq!(
                        at[p * ho * wo + o],
                        best_at,
                        "{input:?}: plane {p}, output {o}"
                    );
                }
            }
        }
    }

    #[test]
    fn padding_never_wins_and_overlapping_windows_add_up() {
        // 3×3 windows, stride 2, padding 1 (ResNet's stem) on all-negative values: the
        // padding must not produce zeros.
        let x: Vec<f32> = (0..25).map(|i| -1.0 - i as f32).collect();
        let s = shape([5, 5], [3, 3], [2, 2], [1, 1]);
        let (y, indices) = forward_with_indices(&x, &s);
        assert_eq!(
            y,
            vec![-1.0, -2.0, -4.0, -6.0, -7.0, -9.0, -16.0, -17.0, -19.0]
        );
        assert_eq!(indices, vec![0, 1, 3, 5, 6, 8, 15, 16, 18]);
        let dx = backward(&[1.0; 9], &indices, &s);
        assert_eq!(dx.iter().sum::<f32>(), 9.0);
        assert_eq!(dx[1], 1.0);
        assert_eq!(forward(&x, &s), y);
    }
}
