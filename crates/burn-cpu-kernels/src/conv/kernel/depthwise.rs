//! Depthwise convolutions (one filter per channel, MobileNet's 3×3 layers) computed
//! directly, plane by plane: the output plane is a sum of `kh·kw` scaled input planes.
//!
//! Why not im2col: with one input channel per group, each group's GEMM is a single row of
//! `kh·kw` taps against the unfolded plane — all the unfolding's memory traffic for nine
//! multiply-adds per pixel, in GEMMs too thin to reach the vector units.
//!
//! Each plane is first copied, zero-padded, into per-thread scratch with its rows and its
//! columns split by phase modulo the stride (column phase `q` holds the padded columns
//! `q, q + s, q + 2s, …`, and likewise for rows), so that every tap reads a contiguous run
//! for any stride: output `(i, j)` under tap `(r, t)` reads row phase `r mod s_h`, row
//! `i + r / s_h`, column phase `t mod s_w`, column `j + t / s_w`. With the output laid out
//! at the phase rows' width, each tap is then one unit-stride multiply-add over the whole
//! plane, which vectorises, with no per-row overhead (the time on MobileNet's 4×4 to
//! 16×16 maps, where an output row is 2 to 8 values).

use super::{ConvShape, scratch};
use crate::cpu::vector_isa::widest;
use crate::cpu::window::gather;
use rayon::prelude::*;

/// Whether the convolution is one this module computes: one input and one output channel
/// per group, no dilation.
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.groups > 1
        && shape.groups == shape.channels
        && shape.groups == shape.out_channels
        && shape.dilation == [1, 1]
}

/// The padded plane's geometry: `row_phases × phases` blocks (the strides), each of
/// `rows` rows of `len` values.
#[derive(Clone, Copy)]
struct Padded {
    /// Padded rows the taps reach (`(h_out − 1)·s_h + kh`).
    extent: usize,
    row_phases: usize,
    rows: usize,
    phases: usize,
    len: usize,
}

impl Padded {
    fn of(shape: &ConvShape) -> Self {
        let [kh, kw] = shape.kernel;
        let [sh, sw] = shape.stride;
        Self {
            extent: shape.tap_extent()[0],
            row_phases: sh,
            rows: shape.output[0] + (kh - 1) / sh,
            phases: sw,
            len: shape.output[1] + (kw - 1) / sw,
        }
    }

    fn floats(&self) -> usize {
        self.row_phases * self.phases * self.rows * self.len
    }

    /// Padded row `row`, column phase `phase`. Row `row + k·s_h` is `k·len` further on,
    /// which is what lets a tap read every output row in one run.
    fn at(&self, row: usize, phase: usize) -> usize {
        let block = (row % self.row_phases) * self.phases + phase;
        (block * self.rows + row / self.row_phases) * self.len
    }

    /// The output laid out at the phase rows' width (`len`, the last `(kw − 1) / s_w`
    /// columns of each row unused) is one run of this many values, and tap `(r, t)` reads
    /// the padded plane from `at(r, t mod s_w) + t / s_w` on in the same layout.
    fn run(&self, shape: &ConvShape) -> usize {
        (shape.output[0] - 1) * self.len + shape.output[1]
    }

    /// Where tap `(r, t)`'s run starts.
    fn tap(&self, r: usize, t: usize) -> usize {
        self.at(r, t % self.phases) + t / self.phases
    }

    /// The input columns phase `phase` of a padded row holds: indices `lo..hi` of the
    /// phase's row, reading columns `first, first + phases, …` of the input row (`first`
    /// meaningful only when the range is not empty).
    fn phase_columns(&self, shape: &ConvShape, phase: usize) -> (usize, usize, usize) {
        let (left, w, s) = (shape.padding[1], shape.input[1], self.phases);
        // Padded column `i·s + phase` reads input column `i·s + phase − left`.
        let lo = left.saturating_sub(phase).div_ceil(s).min(self.len);
        let hi = (left + w)
            .saturating_sub(phase)
            .div_ceil(s)
            .clamp(lo, self.len);
        (lo, hi, (lo * s + phase).saturating_sub(left))
    }

    /// The padded rows that hold input rows: `first..end`.
    fn image_rows(&self, shape: &ConvShape) -> std::ops::Range<usize> {
        let top = shape.padding[0];
        top.min(self.extent)..(top + shape.input[0]).min(self.extent)
    }

    /// Copies `plane` `[h, w]` into `out`: every padded row the taps reach, zeros around
    /// the image (the runs of the taps read nothing else). Phase by phase, so that each
    /// phase's column range is worked out once per plane, not once per row (on 8×8 maps
    /// that arithmetic cost as much as the copy).
    #[inline(always)]
    fn fill(&self, shape: &ConvShape, plane: &[f32], out: &mut [f32]) {
        let image = self.image_rows(shape);
        let (w, top) = (shape.input[1], shape.padding[0]);
        for phase in 0..self.phases {
            let (lo, hi, first) = self.phase_columns(shape, phase);
            for row in 0..self.extent {
                let dst = &mut out[self.at(row, phase)..][..self.len];
                if lo == hi || !image.contains(&row) {
                    dst.fill(0.0);
                    continue;
                }
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                gather(
                    &mut dst[lo..hi],
                    &plane[(row - top) * w + first..],
                    self.phases,
                );
            }
        }
    }

    /// The adjoint of [`fill`](Self::fill): the gradient of `plane` from the padded one's.
    #[inline(always)]
    fn crop(&self, shape: &ConvShape, padded: &[f32], plane: &mut [f32]) {
        plane.fill(0.0);
        let (w, top) = (shape.input[1], shape.padding[0]);
        for phase in 0..self.phases {
            let (lo, hi, first) = self.phase_columns(shape, phase);
            if lo == hi {
                continue;
            }
            for row in self.image_rows(shape) {
                let src = &padded[self.at(row, phase) + lo..][..hi - lo];
                let dst = plane[(row - top) * w + first..].iter_mut();
                dst.step_by(self.phases).zip(src).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// `[batch, c, h_out, w_out]` from `x` `[batch, c, h, w]` and `weight` `[c, 1, kh, kw]`,
/// bias added and ReLU applied when asked.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    let padded = Padded::of(shape);
    let (c, taps, positions) = (shape.channels, shape.taps(), shape.positions());
    let [kh, kw] = shape.kernel;
    let (wo, n) = (shape.output[1], padded.run(shape));
    let mut y = vec![0.0f32; shape.output_len()];
    y.par_chunks_mut(positions)
        .enumerate()
        .for_each(|(p, out)| {
            let ch = p % c;
            let filter = &weight[ch * taps..][..taps];
            let plane = &x[p * shape.input_plane()..][..shape.input_plane()];
            let bias = bias.map_or(0.0, |b| b[ch]);
            scratch::with(padded.floats() + n, |buffer| {
                let (input, wide) = buffer.split_at_mut(padded.floats());
                widest(
                    #[inline(always)]
                    || {
                        padded.fill(shape, plane, input);
                        wide.fill(bias);
                        for r in 0..kh {
                            for t in 0..kw {
                                let w = filter[r * kw + t];
                                let src = &input[padded.tap(r, t)..][..n];
                                wide.iter_mut().zip(src).for_each(|(o, &v)| *o += w * v);
                            }
                        }
                        for (oy, row) in out.chunks_mut(wo).enumerate() {
                            row.copy_from_slice(&wide[oy * padded.len..][..wo]);
                            if relu {
                                row.iter_mut().for_each(|v| *v = v.max(0.0));
                            }
                        }
                    },
                );
            });
        });
    y
}

/// The input and weight gradients (each when asked) from the output gradient `dy`.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    want_input: bool,
    want_weight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let input = want_input.then(|| input_gradient(weight, dy, shape));
    let weight = want_weight.then(|| weight_gradient(x, dy, shape));
    (input, weight)
}

/// `dy` `[h_out, w_out]` laid out at the phase rows' width (see [`Padded::run`]), zeros in
/// the unused columns (they are added into the padded plane's gradient too).
#[inline(always)]
fn widen(padded: &Padded, dy: &[f32], wo: usize, wide: &mut [f32]) {
    wide.fill(0.0);
    for (oy, row) in dy.chunks(wo).enumerate() {
        wide[oy * padded.len..][..wo].copy_from_slice(row);
    }
}

/// `dx`: the output gradient, scaled by each tap, added into the padded plane's gradient
/// (the forward's reads, reversed), then the padding cut off.
fn input_gradient(weight: &[f32], dy: &[f32], shape: &ConvShape) -> Vec<f32> {
    let padded = Padded::of(shape);
    let (c, taps, positions) = (shape.channels, shape.taps(), shape.positions());
    let [kh, kw] = shape.kernel;
    let (wo, n) = (shape.output[1], padded.run(shape));
    let mut dx = vec![0.0f32; shape.input_len()];
    dx.par_chunks_mut(shape.input_plane())
        .enumerate()
        .for_each(|(p, dx)| {
            let ch = p % c;
            let filter = &weight[ch * taps..][..taps];
            let dy = &dy[p * positions..][..positions];
            scratch::with(padded.floats() + n, |buffer| {
                let (dp, wide) = buffer.split_at_mut(padded.floats());
                widest(
                    #[inline(always)]
                    || {
                        dp.fill(0.0);
                        widen(&padded, dy, wo, wide);
                        for r in 0..kh {
                            for t in 0..kw {
                                let w = filter[r * kw + t];
                                let dst = &mut dp[padded.tap(r, t)..][..n];
                                dst.iter_mut().zip(&*wide).for_each(|(d, &g)| *d += w * g);
                            }
                        }
                        padded.crop(shape, dp, dx);
                    },
                );
            });
        });
    dx
}

/// `dW[c, r, t] = Σ_{samples} dy · (padded input under tap (r, t))`, one task per channel
/// (so no partial sums to add), each plane's dot products summed in `f64`.
fn weight_gradient(x: &[f32], dy: &[f32], shape: &ConvShape) -> Vec<f32> {
    let padded = Padded::of(shape);
    let (c, taps, positions) = (shape.channels, shape.taps(), shape.positions());
    let [kh, kw] = shape.kernel;
    let (wo, n) = (shape.output[1], padded.run(shape));
    let per_channel: Vec<Vec<f32>> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut sums = vec![0.0f64; taps];
            scratch::with(padded.floats() + n, |buffer| {
                let (input, wide) = buffer.split_at_mut(padded.floats());
                widest(
                    #[inline(always)]
                    || {
                        for sample in 0..shape.batch {
                            let p = sample * c + ch;
                            let plane = &x[p * shape.input_plane()..][..shape.input_plane()];
                            padded.fill(shape, plane, input);
                            widen(&padded, &dy[p * positions..][..positions], wo, wide);
                            for r in 0..kh {
                                for t in 0..kw {
                                    let mut lanes = [0.0f32; 16];
                                    dot_into(&mut lanes, wide, &input[padded.tap(r, t)..][..n]);
                                    sums[r * kw + t] +=
                                        lanes.iter().map(|&v| v as f64).sum::<f64>();
                                }
                            }
                        }
                    },
                );
            });
            sums.into_iter().map(|v| v as f32).collect()
        })
        .collect();
    per_channel.concat()
}

/// `lanes[i mod 16] += a[i]·b[i]`: sixteen independent sums, which vectorise.
#[inline(always)]
fn dot_into(lanes: &mut [f32; 16], a: &[f32], b: &[f32]) {
    let mut a_chunks = a.chunks_exact(16);
    let mut b_chunks = b.chunks_exact(16);
    for (a, b) in a_chunks.by_ref().zip(b_chunks.by_ref()) {
        for i in 0..16 {
            lanes[i] += a[i] * b[i];
        }
    }
    for (i, (&a, &b)) in a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .enumerate()
    {
        lanes[i] += a * b;
    }
}
