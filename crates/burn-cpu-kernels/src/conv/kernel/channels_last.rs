//! Depthwise convolutions on small maps, computed with the channels last.
//!
//! Why: [`depthwise`] works plane by plane, and at the 4×4 to 16×16 maps of MobileNet's last
//! blocks a plane is a few dozen values: per plane, the padded copy, nine passes of a few
//! vectors each and the copy back cost more than the multiply-adds (a 960-channel layer at
//! 4×4 and batch 16 ran at five times PyTorch's time). Here each sample is first laid out
//! channels last and zero-padded (`[rows, cols, channels]`), so that every output position
//! is nine unit-stride multiply-adds over all the channels at once, the filters' taps laid
//! out the same way (`[taps, channels]`). The backward pass works in the same layout: the
//! output gradient is transposed once per sample, each tap adds `w · dy` into the padded
//! input gradient, and the weight gradient sums `dy · x` per tap over positions (in `f32`
//! within a sample, then in `f64` over the samples).

use super::{ConvShape, depthwise};
use crate::cpu::ordered::fold_in_runs;
use crate::cpu::vector_isa::widest;
use rayon::prelude::*;

/// Output positions per plane up to which the forward pass puts the channels last (4×4
/// maps): from 8×8 on, a plane's runs are long enough for [`depthwise`]'s passes, which
/// need no change of layout (a 384-channel layer at 8×8 and batch 16: 0.66 ms there, 0.75
/// ms here; a 960-channel one at 4×4: 0.91 ms there, 0.40 ms here).
const MAX_POSITIONS: usize = 16;

/// Output positions per plane up to which the backward pass puts the channels last (8×8
/// maps): its two gradients share the change of layout (the 384-channel 8×8 layer's
/// forward and backward: 3.5 ms plane by plane, 2.9 ms here; at 16×16 the other way round,
/// 5.2 ms plane by plane and 6.0 ms here for 192 channels).
const MAX_BACKWARD_POSITIONS: usize = 64;

/// Whether the forward pass runs here: a depthwise convolution on maps of at most
/// [`MAX_POSITIONS`] output positions.
pub(super) fn applies(shape: &ConvShape) -> bool {
    depthwise::applies(shape) && shape.positions() <= MAX_POSITIONS
}

/// Whether the backward pass runs here (maps of at most [`MAX_BACKWARD_POSITIONS`]).
pub(super) fn applies_backward(shape: &ConvShape) -> bool {
    depthwise::applies(shape) && shape.positions() <= MAX_BACKWARD_POSITIONS
}

/// The padded, channels-last sample: `rows × cols` positions of `channels` values, the
/// image at `(top, left)`.
#[derive(Clone, Copy)]
struct Layout {
    rows: usize,
    cols: usize,
    channels: usize,
}

impl Layout {
    fn of(shape: &ConvShape) -> Self {
        let [rows, cols] = shape.tap_extent();
        Self {
            rows,
            cols,
            channels: shape.channels,
        }
    }

    fn len(&self) -> usize {
        self.rows * self.cols * self.channels
    }

    /// Where tap `(r, t)` of output `(oy, ox)` reads its channels.
    #[inline(always)]
    fn at(&self, shape: &ConvShape, (oy, ox): (usize, usize), (r, t): (usize, usize)) -> usize {
        ((oy * shape.stride[0] + r) * self.cols + ox * shape.stride[1] + t) * self.channels
    }

    /// The image pixel at frame position `at`, if it is not padding.
    #[inline(always)]
    fn pixel(&self, shape: &ConvShape, at: usize) -> Option<usize> {
        let [h, w] = shape.input;
        let (y, x) = (at / self.cols, at % self.cols);
        let y = y.checked_sub(shape.padding[0]).filter(|&y| y < h)?;
        let x = x.checked_sub(shape.padding[1]).filter(|&x| x < w)?;
        Some(y * w + x)
    }

    /// One sample `[channels, h, w]` into `out`, padded and channels last. Sixteen channels
    /// at a time, so that the planes read stay in the L1 cache.
    fn gather(&self, shape: &ConvShape, sample: &[f32], out: &mut [f32]) {
        let plane = shape.input_plane();
        for first in (0..self.channels).step_by(BLOCK) {
            let n = BLOCK.min(self.channels - first);
            for at in 0..self.rows * self.cols {
                let dst = &mut out[at * self.channels + first..][..n];
                match self.pixel(shape, at) {
                    Some(pixel) => {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = sample[(first + i) * plane + pixel];
                        }
                    }
                    None => dst.fill(0.0),
                }
            }
        }
    }

    /// The adjoint of [`gather`](Self::gather): one sample's gradient `[channels, h, w]`
    /// from the padded channels-last one (the padding's dropped), into `sample` zeroed (the
    /// pixels under no tap, past the frame, keep their zero).
    fn scatter(&self, shape: &ConvShape, padded: &[f32], sample: &mut [f32]) {
        let plane = shape.input_plane();
        for first in (0..self.channels).step_by(BLOCK) {
            let n = BLOCK.min(self.channels - first);
            for at in 0..self.rows * self.cols {
                if let Some(pixel) = self.pixel(shape, at) {
                    let src = &padded[at * self.channels + first..][..n];
                    for (i, &v) in src.iter().enumerate() {
                        sample[(first + i) * plane + pixel] = v;
                    }
                }
            }
        }
    }
}

/// Channels per block of the layout changes: sixteen planes' cache lines in use at once.
const BLOCK: usize = 16;

/// The filters `[channels, 1, kh, kw]` as `[taps, channels]`.
fn taps_last(weight: &[f32], shape: &ConvShape) -> Vec<f32> {
    let (c, taps) = (shape.channels, shape.taps());
    let mut out = vec![0.0; taps * c];
    for (ch, filter) in weight.chunks_exact(taps).enumerate() {
        for (tap, &w) in filter.iter().enumerate() {
            out[tap * c + ch] = w;
        }
    }
    out
}

/// One sample's output gradient `[channels, positions]` as `[positions, channels]`, by
/// blocks of channels (see [`Layout::gather`]).
fn transpose(dy: &[f32], channels: usize, positions: usize, out: &mut [f32]) {
    for first in (0..channels).step_by(BLOCK) {
        let n = BLOCK.min(channels - first);
        for p in 0..positions {
            let dst = &mut out[p * channels + first..][..n];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = dy[(first + i) * positions + p];
            }
        }
    }
}

/// `out[i] += a[i] · b[i]`.
#[inline(always)]
fn multiply_add(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o += a * b;
    }
}

/// Every output position of the taps `(r, t)`, with `f(position, (oy, ox), tap, (r, t))`.
#[inline(always)]
fn each_tap(shape: &ConvShape, mut f: impl FnMut(usize, (usize, usize), usize, (usize, usize))) {
    let [ho, wo] = shape.output;
    let [kh, kw] = shape.kernel;
    for oy in 0..ho {
        for ox in 0..wo {
            for r in 0..kh {
                for t in 0..kw {
                    f(oy * wo + ox, (oy, ox), r * kw + t, (r, t));
                }
            }
        }
    }
}

/// `[batch, c, h_out, w_out]`, bias added and ReLU applied when asked.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    let layout = Layout::of(shape);
    let (c, positions) = (shape.channels, shape.positions());
    let taps = taps_last(weight, shape);
    let mut y = vec![0.0f32; shape.output_len()];
    y.par_chunks_mut(shape.sample_output())
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; layout.len()], vec![0.0f32; positions * c]),
            |(padded, out), (b, y)| {
                layout.gather(shape, &x[b * shape.sample_input()..], padded);
                for p in 0..positions {
                    let acc = &mut out[p * c..][..c];
                    match bias {
                        Some(bias) => acc.copy_from_slice(&bias[..c]),
                        None => acc.fill(0.0),
                    }
                }
                widest(
                    #[inline(always)]
                    || {
                        each_tap(shape, |p, o, tap, rt| {
                            let src = &padded[layout.at(shape, o, rt)..][..c];
                            multiply_add(&mut out[p * c..][..c], &taps[tap * c..][..c], src);
                        })
                    },
                );
                // Back to `[channels, positions]`, by blocks of channels.
                for first in (0..c).step_by(BLOCK) {
                    let n = BLOCK.min(c - first);
                    for p in 0..positions {
                        for (i, &value) in out[p * c + first..][..n].iter().enumerate() {
                            y[(first + i) * positions + p] =
                                if relu { value.max(0.0) } else { value };
                        }
                    }
                }
            },
        );
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

/// `dx`: each output position's gradient, scaled by each tap, added into the padded input
/// gradient under that tap, then the padding dropped.
fn input_gradient(weight: &[f32], dy: &[f32], shape: &ConvShape) -> Vec<f32> {
    let layout = Layout::of(shape);
    let (c, positions) = (shape.channels, shape.positions());
    let taps = taps_last(weight, shape);
    let mut dx = vec![0.0f32; shape.input_len()];
    dx.par_chunks_mut(shape.sample_input())
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; layout.len()], vec![0.0f32; positions * c]),
            |(padded, grads), (b, dx)| {
                transpose(
                    &dy[b * shape.sample_output()..][..shape.sample_output()],
                    c,
                    positions,
                    grads,
                );
                padded.fill(0.0);
                widest(
                    #[inline(always)]
                    || {
                        each_tap(shape, |p, o, tap, rt| {
                            let dst = &mut padded[layout.at(shape, o, rt)..][..c];
                            multiply_add(dst, &taps[tap * c..][..c], &grads[p * c..][..c]);
                        })
                    },
                );
                layout.scatter(shape, padded, dx);
            },
        );
    dx
}

/// `dW[c, tap] = Σ_{samples, positions} dy · (padded input under the tap)`: each sample's
/// sums in `f32` lanes over the channels, the samples' added in `f64`.
fn weight_gradient(x: &[f32], dy: &[f32], shape: &ConvShape) -> Vec<f32> {
    let layout = Layout::of(shape);
    let (c, positions, n_taps) = (shape.channels, shape.positions(), shape.taps());
    let new_sums = || vec![0.0f64; n_taps * c];
    let sums = fold_in_runs(
        (0..shape.batch).collect(),
        || {
            (
                new_sums(),
                vec![0.0f32; layout.len()],
                vec![0.0f32; positions * c],
                vec![0.0f32; n_taps * c],
            )
        },
        |(mut sums, mut padded, mut grads, mut lanes), b| {
            layout.gather(shape, &x[b * shape.sample_input()..], &mut padded);
            transpose(
                &dy[b * shape.sample_output()..][..shape.sample_output()],
                c,
                positions,
                &mut grads,
            );
            lanes.fill(0.0);
            widest(
                #[inline(always)]
                || {
                    each_tap(shape, |p, o, tap, rt| {
                        let src = &padded[layout.at(shape, o, rt)..][..c];
                        multiply_add(&mut lanes[tap * c..][..c], &grads[p * c..][..c], src);
                    })
                },
            );
            sums.iter_mut()
                .zip(&lanes)
                .for_each(|(s, &l)| *s += l as f64);
            (sums, padded, grads, lanes)
        },
        |mut a, b| {
            a.0.iter_mut().zip(&b.0).for_each(|(a, b)| *a += b);
            a
        },
    )
    .0;
    let mut dw = vec![0.0f32; c * n_taps];
    for (tap, line) in sums.chunks_exact(c).enumerate() {
        for (ch, &v) in line.iter().enumerate() {
            dw[ch * n_taps + tap] = v as f32;
        }
    }
    dw
}
