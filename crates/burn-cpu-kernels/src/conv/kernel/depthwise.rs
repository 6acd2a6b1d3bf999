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
            scratch::with(padded.floats(), |buffer| {
                padded.fill(
                    shape,
                    &x[p * shape.input_plane()..][..shape.input_plane()],
                    buffer,
                );
                let bias = bias.map_or(0.0, |b| b[ch]);
                for (oy, row) in out.chunks_mut(wo).enumerate() {
                    row.fill(bias);
                    for r in 0..kh {
                        for t in 0..kw {
                            let w = filter[r * kw + t];
                            let src = &buffer[padded.at(oy * sh + r, t % sw) + t / sw..][..wo];
                            row.iter_mut().zip(src).for_each(|(o, &v)| *o += w * v);
                        }
                    }
                    if relu {
                        row.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
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
            scratch::with(padded.floats(), |buffer| {
                for sample in 0..shape.batch {
                    let p = sample * c + ch;
                    padded.fill(
                        shape,
                        &x[p * shape.input_plane()..][..shape.input_plane()],
                        buffer,
                    );
                    let dy = &dy[p * positions..][..positions];
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
