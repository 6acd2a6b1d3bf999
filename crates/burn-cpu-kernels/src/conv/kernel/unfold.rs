//! im2col and its adjoint for one group of one sample: row `(channel, ky, kx)` of the
//! unfolded matrix holds, for every output position, the input pixel that kernel tap reads
//! (zero in the padding). Along an output row the pixels read are evenly spaced, so each
//! row segment is a copy (unit stride) or a strided gather ([`gather`]), with the padded
//! ends zero.
//!
//! Where a tap reads does not depend on the channel, so it is worked out once per tap and
//! call ([`TapWindow`]): on the 4×4 maps of ResNet's last stage an unfolded row segment is
//! four values, and working the window out again for each of the 4,608 rows of a
//! 512-channel layer cost as much as the copies.
//!
//! Maps with short output rows ([`SHORT_ROW`]) go through [`Framed`] instead: each plane
//! is copied once into a zero-bordered frame and every tap's whole row of the unfolded
//! matrix is one gather through a table of offsets into it. Row segment by row segment,
//! a 4×4 map costs three library calls (two fills and a copy) per four values, which cost
//! more than the copying itself.

use super::ConvShape;
use super::frame::Frame;
use crate::cpu::vector_isa::widest;
use crate::cpu::window::{gather, inside, scatter_add};
use std::ops::Range;

/// Output rows at most this wide are unfolded and folded through [`Framed`].
const SHORT_ROW: usize = 8;

/// A plane's frame wide enough for every tap's reads, and where each tap reads: for the
/// output rows of one block, `offsets[tap][position]` indexes the frame.
struct Framed {
    frame: Frame,
    /// `[taps][block positions]` offsets into the frame.
    offsets: Vec<u32>,
    /// Positions of the block.
    len: usize,
}

impl Framed {
    fn new(shape: &ConvShape, block: &Range<usize>) -> Self {
        let [kh, kw] = shape.kernel;
        let wo = shape.output[1];
        // Rows and columns the taps reach from the frame's corner; the frame holds them
        // and the whole image (rows past both stay zero and are never read).
        let reach = |axis: usize, taps: usize, outputs: usize| {
            (outputs - 1) * shape.stride[axis] + (taps - 1) * shape.dilation[axis] + 1
        };
        let [top, left] = shape.padding;
        let frame = Frame {
            rows: reach(0, kh, block.end.max(1)).max(top + shape.input[0]),
            cols: reach(1, kw, wo).max(left + shape.input[1]),
            top,
            left,
        };
        let mut offsets = Vec::with_capacity(kh * kw * block.len() * wo);
        for tap in 0..kh * kw {
            let (ty, tx) = (tap / kw, tap % kw);
            for oy in block.clone() {
                let y = oy * shape.stride[0] + ty * shape.dilation[0];
                for ox in 0..wo {
                    let x = ox * shape.stride[1] + tx * shape.dilation[1];
                    offsets.push((y * frame.cols + x) as u32);
                }
            }
        }
        Self {
            frame,
            offsets,
            len: block.len() * wo,
        }
    }

    /// Tap `t`'s offsets, one per position of the block.
    fn tap(&self, t: usize) -> &[u32] {
        &self.offsets[t * self.len..][..self.len]
    }

    /// [`im2col`] for a short-row map: per channel, the plane into the frame, then each
    /// tap's row one gather.
    fn unfold(&self, shape: &ConvShape, input: &[f32], cols: &mut [f32], row_stride: usize) {
        let (plane, taps) = (shape.input_plane(), shape.taps());
        let mut framed = vec![0.0f32; self.frame.len()];
        for (c, channel) in input
            .chunks_exact(plane)
            .take(shape.group_channels())
            .enumerate()
        {
            self.frame.fill(channel, shape.input, &mut framed);
            for t in 0..taps {
                let out = &mut cols[(c * taps + t) * row_stride..][..self.len];
                for (d, &o) in out.iter_mut().zip(self.tap(t)) {
                    *d = framed[o as usize];
                }
            }
        }
    }

    /// [`col2im_add`] for a short-row map: per channel, each tap's row scattered into the
    /// zeroed frame, then the frame's image part added to the plane.
    fn fold_add(&self, shape: &ConvShape, cols: &[f32], input: &mut [f32], row_stride: usize) {
        let (plane, taps) = (shape.input_plane(), shape.taps());
        let mut framed = vec![0.0f32; self.frame.len()];
        for (c, channel) in input
            .chunks_exact_mut(plane)
            .take(shape.group_channels())
            .enumerate()
        {
            framed.fill(0.0);
            for t in 0..taps {
                let col = &cols[(c * taps + t) * row_stride..][..self.len];
                for (&v, &o) in col.iter().zip(self.tap(t)) {
                    framed[o as usize] += v;
                }
            }
            self.frame.add_into(&framed, shape.input, channel);
        }
    }
}

/// Where one kernel tap reads, for the output rows of one block.
struct TapWindow {
    /// The block's output rows whose input row lies inside the image.
    rows: Range<usize>,
    /// The output columns whose input column lies inside the image.
    columns: Range<usize>,
    /// Input row read by output row 0 (negative in the padding).
    row_offset: isize,
    /// Input column read by the first output column of `columns`.
    first: usize,
}

impl TapWindow {
    /// The `kh·kw` taps' windows, in the unfolded matrix's row order.
    fn all(shape: &ConvShape, block: &Range<usize>) -> Vec<Self> {
        let [kh, kw] = shape.kernel;
        let offset = |axis: usize, tap: usize| {
            (tap * shape.dilation[axis]) as isize - shape.padding[axis] as isize
        };
        (0..kh * kw)
            .map(|tap| {
                let (dy, dx) = (offset(0, tap / kw), offset(1, tap % kw));
                let rows = inside(shape.output[0], shape.stride[0], dy, shape.input[0]);
                let columns = inside(shape.output[1], shape.stride[1], dx, shape.input[1]);
                Self {
                    rows: rows.start.clamp(block.start, block.end)
                        ..rows.end.clamp(block.start, block.end),
                    first: (columns.start as isize * shape.stride[1] as isize + dx).max(0) as usize,
                    columns,
                    row_offset: dy,
                }
            })
            .collect()
    }

    /// The input row output row `oy` reads (`oy` in [`Self::rows`]).
    #[inline(always)]
    fn input_row(&self, oy: usize, stride: usize) -> usize {
        (oy as isize * stride as isize + self.row_offset) as usize
    }
}

/// Unfolds one group's input planes `[channels, h, w]` for the output rows `block` into
/// `cols` `[channels·kh·kw, block.len()·w_out]`, whose rows start `row_stride` apart (the
/// matrix's width, or wider when it is one sample's columns of a batch's matrix).
pub(super) fn im2col(
    shape: &ConvShape,
    input: &[f32],
    cols: &mut [f32],
    block: Range<usize>,
    row_stride: usize,
) {
    let [h, w] = shape.input;
    let wo = shape.output[1];
    let [sy, sx] = shape.stride;
    let len = block.len() * wo;
    if wo <= SHORT_ROW {
        return Framed::new(shape, &block).unfold(shape, input, cols, row_stride);
    }
    let taps = TapWindow::all(shape, &block);
    // Under the widest vector instructions: the strided gathers of stride-2 layers are
    // shuffles there.
    widest(
        #[inline(always)]
        || {
            for c in 0..shape.group_channels() {
                let plane = &input[c * h * w..][..h * w];
                for (t, tap) in taps.iter().enumerate() {
                    let r = c * taps.len() + t;
                    let out = &mut cols[r * row_stride..][..len];
                    out[..(tap.rows.start - block.start) * wo].fill(0.0);
                    out[(tap.rows.end - block.start) * wo..].fill(0.0);
                    let xs = tap.columns.clone();
                    for oy in tap.rows.clone() {
                        let dst = &mut out[(oy - block.start) * wo..][..wo];
                        dst[..xs.start].fill(0.0);
                        dst[xs.end..].fill(0.0);
                        if !xs.is_empty() {
                            let src = &plane[tap.input_row(oy, sy) * w + tap.first..];
                            gather(&mut dst[xs.clone()], src, sx);
                        }
                    }
                }
            }
        },
    );
}

/// The adjoint of [`im2col`] for the output rows `block` (rows of `cols` `row_stride`
/// apart): adds every entry of `cols` to the input pixel it was read from (entries read
/// from the padding are dropped).
pub(super) fn col2im_add(
    shape: &ConvShape,
    cols: &[f32],
    input: &mut [f32],
    block: Range<usize>,
    row_stride: usize,
) {
    let [h, w] = shape.input;
    let wo = shape.output[1];
    let [sy, sx] = shape.stride;
    let len = block.len() * wo;
    if wo <= SHORT_ROW {
        return Framed::new(shape, &block).fold_add(shape, cols, input, row_stride);
    }
    let taps = TapWindow::all(shape, &block);
    widest(
        #[inline(always)]
        || {
            for c in 0..shape.group_channels() {
                let plane = &mut input[c * h * w..][..h * w];
                for (t, tap) in taps.iter().enumerate() {
                    let xs = tap.columns.clone();
                    if xs.is_empty() {
                        continue;
                    }
                    let col = &cols[(c * taps.len() + t) * row_stride..][..len];
                    for oy in tap.rows.clone() {
                        let dst = &mut plane[tap.input_row(oy, sy) * w + tap.first..];
                        let src = &col[(oy - block.start) * wo..][..wo][xs.clone()];
                        scatter_add(dst, src, sx);
                    }
                }
            }
        },
    );
}
