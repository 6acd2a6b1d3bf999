//! Depthwise convolutions (one filter per channel, MobileNet's 3×3 layers) computed
//! directly, plane by plane: each output row is a sum of `kh·kw` scaled input rows.
//!
//! Why not im2col: with one input channel per group, each group's GEMM is a single row of
//! `kh·kw` taps against the unfolded plane — all the unfolding's memory traffic for nine
//! multiply-adds per pixel, in GEMMs too thin to reach the vector units.
//!
//! Each plane is first copied, zero-padded, into per-thread scratch with its columns split
//! by phase modulo the stride (`phase q` holds the padded columns `q, q + s, q + 2s, …`),
//! so that every tap reads a contiguous run for any stride: output column `j` under tap
//! column `t` reads phase `t mod s` at index `j + t / s`. The inner loops are then
//! unit-stride multiply-adds that vectorise.

use super::{ConvShape, scratch};
use crate::cpu::vector_isa::widest;
use rayon::prelude::*;

/// Whether the convolution is one this module computes: one input and one output channel
/// per group, no dilation.
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.groups > 1
        && shape.groups == shape.channels
        && shape.groups == shape.out_channels
        && shape.dilation == [1, 1]
}

/// The padded plane's geometry: rows, phases (the column stride) and the length of each
/// phase's row.
#[derive(Clone, Copy)]
struct Padded {
    rows: usize,
    phases: usize,
    len: usize,
}

impl Padded {
    fn of(shape: &ConvShape) -> Self {
        let [kw, sw] = [shape.kernel[1], shape.stride[1]];
        Self {
            rows: shape.tap_extent()[0],
            phases: sw,
            len: shape.output[1] + (kw - 1) / sw,
        }
    }

    fn floats(&self) -> usize {
        self.rows * self.phases * self.len
    }

    /// Row `row` of phase `phase`.
    fn at(&self, row: usize, phase: usize) -> usize {
        (row * self.phases + phase) * self.len
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
        top.min(self.rows)..(top + shape.input[0]).min(self.rows)
    }

    /// With unit strides, the output laid out at the padded rows' width (`len`, the last
    /// `kw − 1` columns of each row unused) is one run of this many values, and tap `(r, t)`
    /// reads the padded plane from [`Self::at`]`(r, 0) + t` on in the same layout: each tap
    /// is then one unit-stride pass over the whole plane, with no per-row overhead (most of
    /// the time on the 4×4 to 16×16 maps of MobileNet's last blocks).
    fn wide(&self, shape: &ConvShape) -> Option<usize> {
        (shape.stride == [1, 1]).then(|| (shape.output[0] - 1) * self.len + shape.output[1])
    }

    /// Copies `plane` `[h, w]` into `out` (zeros around it; each phase's columns a
    /// strided run, so a stride-2 layer's 64×64 maps cost a pass, not a call per pixel).
    /// Phase by phase, so that each phase's column range is worked out once per plane, not
    /// once per row (on 8×8 maps that arithmetic cost as much as the copy).
    #[inline(always)]
    fn fill(&self, shape: &ConvShape, plane: &[f32], out: &mut [f32]) {
        let rows = self.image_rows(shape);
        let w = shape.input[1];
        out[..self.at(rows.start, 0)].fill(0.0);
        out[self.at(rows.end, 0)..self.floats()].fill(0.0);
        for phase in 0..self.phases {
            let (lo, hi, first) = self.phase_columns(shape, phase);
            for row in rows.clone() {
                let dst = &mut out[self.at(row, phase)..][..self.len];
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo < hi {
                    let src = &plane[(row - shape.padding[0]) * w + first..];
                    gather(&mut dst[lo..hi], src, self.phases);
                }
            }
        }
    }

    /// The adjoint of [`fill`](Self::fill): the gradient of `plane` from the padded one's.
    fn crop(&self, shape: &ConvShape, padded: &[f32], plane: &mut [f32]) {
        plane.fill(0.0);
        let rows = self.image_rows(shape);
        let w = shape.input[1];
        for row in rows {
            let dst = &mut plane[(row - shape.padding[0]) * w..][..w];
            for phase in 0..self.phases {
                let (lo, hi, first) = self.phase_columns(shape, phase);
                if lo == hi {
                    continue;
                }
                let src = &padded[self.at(row, phase) + lo..][..hi - lo];
                let dst = dst[first..].iter_mut().step_by(self.phases);
                dst.zip(src).for_each(|(d, &v)| *d = v);
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
    let [sh, sw] = shape.stride;
    let wo = shape.output[1];
    let mut y = vec![0.0f32; shape.output_len()];
    y.par_chunks_mut(positions)
        .enumerate()
        .for_each(|(p, out)| {
            let ch = p % c;
            let filter = &weight[ch * taps..][..taps];
            let plane = &x[p * shape.input_plane()..][..shape.input_plane()];
            let bias = bias.map_or(0.0, |b| b[ch]);
            let finish = |row: &mut [f32]| {
                if relu {
                    row.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            };
            if let Some(n) = padded.wide(shape) {
                scratch::with(padded.floats() + n, |buffer| {
                    let (input, wide) = buffer.split_at_mut(padded.floats());
                    wide.fill(bias);
                    widest(
                        #[inline(always)]
                        || {
                            padded.fill(shape, plane, input);
                            for r in 0..kh {
                                for t in 0..kw {
                                    let w = filter[r * kw + t];
                                    let src = &input[padded.at(r, 0) + t..][..n];
                                    wide.iter_mut().zip(src).for_each(|(o, &v)| *o += w * v);
                                }
                            }
                        },
                    );
                    for (oy, row) in out.chunks_mut(wo).enumerate() {
                        row.copy_from_slice(&wide[oy * padded.len..][..wo]);
                        finish(row);
                    }
                });
                return;
            }
            scratch::with(padded.floats(), |buffer| {
                widest(
                    #[inline(always)]
                    || {
                        padded.fill(shape, plane, buffer);
                        for (oy, row) in out.chunks_mut(wo).enumerate() {
                            row.fill(bias);
                            for r in 0..kh {
                                for t in 0..kw {
                                    let w = filter[r * kw + t];
                                    let at = padded.at(oy * sh + r, t % sw) + t / sw;
                                    let src = &buffer[at..][..wo];
                                    row.iter_mut().zip(src).for_each(|(o, &v)| *o += w * v);
                                }
                            }
                            finish(row);
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

/// `dy` `[h_out, w_out]` laid out at the padded rows' width (see [`Padded::wide`]), zeros in
/// the unused columns (they are added into the padded plane's gradient too).
fn widen(padded: &Padded, dy: &[f32], wo: usize, wide: &mut [f32]) {
    wide.fill(0.0);
    for (oy, row) in dy.chunks(wo).enumerate() {
        wide[oy * padded.len..][..wo].copy_from_slice(row);
    }
}

/// `dx`: each output gradient row, scaled by each tap, added into the padded plane's
/// gradient (the forward's reads, reversed), then the padding cut off.
fn input_gradient(weight: &[f32], dy: &[f32], shape: &ConvShape) -> Vec<f32> {
    let padded = Padded::of(shape);
    let (c, taps, positions) = (shape.channels, shape.taps(), shape.positions());
    let [kh, kw] = shape.kernel;
    let [sh, sw] = shape.stride;
    let wo = shape.output[1];
    let mut dx = vec![0.0f32; shape.input_len()];
    dx.par_chunks_mut(shape.input_plane())
        .enumerate()
        .for_each(|(p, dx)| {
            let ch = p % c;
            let filter = &weight[ch * taps..][..taps];
            let dy = &dy[p * positions..][..positions];
            if let Some(n) = padded.wide(shape) {
                scratch::with(padded.floats() + n, |buffer| {
                    let (dp, wide) = buffer.split_at_mut(padded.floats());
                    dp.fill(0.0);
                    widen(&padded, dy, wo, wide);
                    widest(
                        #[inline(always)]
                        || {
                            for r in 0..kh {
                                for t in 0..kw {
                                    let w = filter[r * kw + t];
                                    let dst = &mut dp[padded.at(r, 0) + t..][..n];
                                    dst.iter_mut().zip(&*wide).for_each(|(d, &g)| *d += w * g);
                                }
                            }
                        },
                    );
                    padded.crop(shape, dp, dx);
                });
                return;
            }
            scratch::with(padded.floats(), |buffer| {
                buffer.fill(0.0);
                widest(
                    #[inline(always)]
                    || {
                        for (oy, row) in dy.chunks(wo).enumerate() {
                            for r in 0..kh {
                                for t in 0..kw {
                                    let w = filter[r * kw + t];
                                    let at = padded.at(oy * sh + r, t % sw) + t / sw;
                                    let dst = &mut buffer[at..][..wo];
                                    dst.iter_mut().zip(row).for_each(|(d, &g)| *d += w * g);
                                }
                            }
                        }
                    },
                );
                padded.crop(shape, buffer, dx);
            });
        });
    dx
}

/// `dW[c, r, t] = Σ_{samples, oy} dy_row · (padded input row under tap (r, t))`, one task
/// per channel (so no partial sums to add), each plane's dot products summed in `f64`.
fn weight_gradient(x: &[f32], dy: &[f32], shape: &ConvShape) -> Vec<f32> {
    let padded = Padded::of(shape);
    let (c, taps, positions) = (shape.channels, shape.taps(), shape.positions());
    let [kh, kw] = shape.kernel;
    let [sh, sw] = shape.stride;
    let wo = shape.output[1];
    let per_channel: Vec<Vec<f32>> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut sums = vec![0.0f64; taps];
            let wide_len = padded.wide(shape).unwrap_or(0);
            scratch::with(padded.floats() + wide_len, |buffer| {
                let (buffer, wide) = buffer.split_at_mut(padded.floats());
                widest(
                    #[inline(always)]
                    || {
                        for sample in 0..shape.batch {
                            let p = sample * c + ch;
                            padded.fill(
                                shape,
                                &x[p * shape.input_plane()..][..shape.input_plane()],
                                buffer,
                            );
                            let dy = &dy[p * positions..][..positions];
                            if wide_len > 0 {
                                widen(&padded, dy, wo, wide);
                                for r in 0..kh {
                                    for t in 0..kw {
                                        let mut lanes = [0.0f32; 16];
                                        let src = &buffer[padded.at(r, 0) + t..][..wide_len];
                                        dot_into(&mut lanes, wide, src);
                                        sums[r * kw + t] +=
                                            lanes.iter().map(|&v| v as f64).sum::<f64>();
                                    }
                                }
                                continue;
                            }
                            for r in 0..kh {
                                for t in 0..kw {
                                    let mut lanes = [0.0f32; 16];
                                    for (oy, row) in dy.chunks(wo).enumerate() {
                                        let src = &buffer
                                            [padded.at(oy * sh + r, t % sw) + t / sw..][..wo];
                                        dot_into(&mut lanes, row, src);
                                    }
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

/// `dst[k] = src[k·step]` for every `k` of a non-empty `dst`. Stride 2, MobileNet's, is
/// written as a pairwise walk, which compiles to vector shuffles (the general strided
/// iterator reads one element at a time).
#[inline(always)]
fn gather(dst: &mut [f32], src: &[f32], step: usize) {
    let n = dst.len();
    match step {
        1 => dst.copy_from_slice(&src[..n]),
        2 => {
            // The last value's partner may lie past the end of the row.
            let (body, last) = dst.split_at_mut(n - 1);
            for (d, pair) in body.iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            last[0] = src[2 * (n - 1)];
        }
        _ => dst
            .iter_mut()
            .zip(src.iter().step_by(step))
            .for_each(|(d, &v)| *d = v),
    }
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
