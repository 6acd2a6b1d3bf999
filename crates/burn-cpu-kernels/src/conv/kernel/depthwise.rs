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
        let [kh, kw] = shape.kernel;
        let [sh, sw] = shape.stride;
        Self {
            rows: (shape.output[0] - 1) * sh + kh,
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

    /// The padded row input row `y` lands in, when the output reads it.
    fn row(&self, shape: &ConvShape, y: usize) -> Option<usize> {
        let row = y + shape.padding[0];
        (row < self.rows).then_some(row)
    }

    /// Calls `f(x, offset)` for each column `x` of an input row whose pixel the output
    /// reads, `offset` its place within the padded `row`'s phases.
    fn columns(&self, shape: &ConvShape, row: usize, mut f: impl FnMut(usize, usize)) {
        let col = shape.padding[1];
        let (mut phase, mut index) = (col % self.phases, col / self.phases);
        for x in 0..shape.input[1] {
            if index >= self.len {
                // Past the last window, as every column after it.
                break;
            }
            f(x, self.at(row, phase) + index);
            phase += 1;
            if phase == self.phases {
                phase = 0;
                index += 1;
            }
        }
    }

    /// With unit strides, the output laid out at the padded rows' width (`len`, the last
    /// `kw − 1` columns of each row unused) is one run of this many values, and tap `(r, t)`
    /// reads the padded plane from [`Self::at`]`(r, 0) + t` on in the same layout: each tap
    /// is then one unit-stride pass over the whole plane, with no per-row overhead (most of
    /// the time on the 4×4 to 16×16 maps of MobileNet's last blocks).
    fn wide(&self, shape: &ConvShape) -> Option<usize> {
        (shape.stride == [1, 1]).then(|| (shape.output[0] - 1) * self.len + shape.output[1])
    }

    /// Copies `plane` `[h, w]` into `out` (zeros around it).
    fn fill(&self, shape: &ConvShape, plane: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        let [h, w] = shape.input;
        for y in 0..h {
            let Some(row) = self.row(shape, y) else { break };
            let src = &plane[y * w..][..w];
            if self.phases == 1 {
                // One phase: the row is one run.
                let start = self.at(row, 0) + shape.padding[1];
                let n = w.min(self.len.saturating_sub(shape.padding[1]));
                out[start..][..n].copy_from_slice(&src[..n]);
            } else {
                self.columns(shape, row, |x, at| out[at] = src[x]);
            }
        }
    }

    /// The adjoint of [`fill`](Self::fill): the gradient of `plane` from the padded one's.
    fn crop(&self, shape: &ConvShape, padded: &[f32], plane: &mut [f32]) {
        plane.fill(0.0);
        let [h, w] = shape.input;
        for y in 0..h {
            let Some(row) = self.row(shape, y) else { break };
            let dst = &mut plane[y * w..][..w];
            if self.phases == 1 {
                let start = self.at(row, 0) + shape.padding[1];
                let n = w.min(self.len.saturating_sub(shape.padding[1]));
                dst[..n].copy_from_slice(&padded[start..][..n]);
            } else {
                self.columns(shape, row, |x, at| dst[x] = padded[at]);
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
                    padded.fill(shape, plane, input);
                    wide.fill(bias);
                    for r in 0..kh {
                        for t in 0..kw {
                            let w = filter[r * kw + t];
                            let src = &input[padded.at(r, 0) + t..][..n];
                            wide.iter_mut().zip(src).for_each(|(o, &v)| *o += w * v);
                        }
                    }
                    for (oy, row) in out.chunks_mut(wo).enumerate() {
                        row.copy_from_slice(&wide[oy * padded.len..][..wo]);
                        finish(row);
                    }
                });
                return;
            }
            scratch::with(padded.floats(), |buffer| {
                padded.fill(shape, plane, buffer);
                for (oy, row) in out.chunks_mut(wo).enumerate() {
                    row.fill(bias);
                    for r in 0..kh {
                        for t in 0..kw {
                            let w = filter[r * kw + t];
                            let src = &buffer[padded.at(oy * sh + r, t % sw) + t / sw..][..wo];
                            row.iter_mut().zip(src).for_each(|(o, &v)| *o += w * v);
                        }
                    }
                    finish(row);
                }
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
                    for r in 0..kh {
                        for t in 0..kw {
                            let w = filter[r * kw + t];
                            let dst = &mut dp[padded.at(r, 0) + t..][..n];
                            dst.iter_mut().zip(&*wide).for_each(|(d, &g)| *d += w * g);
                        }
                    }
                    padded.crop(shape, dp, dx);
                });
                return;
            }
            scratch::with(padded.floats(), |buffer| {
                buffer.fill(0.0);
                for (oy, row) in dy.chunks(wo).enumerate() {
                    for r in 0..kh {
                        for t in 0..kw {
                            let w = filter[r * kw + t];
                            let dst = &mut buffer[padded.at(oy * sh + r, t % sw) + t / sw..][..wo];
                            dst.iter_mut().zip(row).for_each(|(d, &g)| *d += w * g);
                        }
                    }
                }
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
                                sums[r * kw + t] += lanes.iter().map(|&v| v as f64).sum::<f64>();
                            }
                        }
                        continue;
                    }
                    for r in 0..kh {
                        for t in 0..kw {
                            let mut lanes = [0.0f32; 16];
                            for (oy, row) in dy.chunks(wo).enumerate() {
                                let src = &buffer[padded.at(oy * sh + r, t % sw) + t / sw..][..wo];
                                dot_into(&mut lanes, row, src);
                            }
                            sums[r * kw + t] += lanes.iter().map(|&v| v as f64).sum::<f64>();
                        }
                    }
                }
            });
            sums.into_iter().map(|v| v as f32).collect()
        })
        .collect();
    per_channel.concat()
}

/// `lanes[i mod 16] += a[i]·b[i]`: sixteen independent sums, which vectorise.
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
