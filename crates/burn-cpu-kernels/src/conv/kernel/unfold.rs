//! im2col and its adjoint for one group of one sample: row `(channel, ky, kx)` of the
//! unfolded matrix holds, for every output position, the input pixel that kernel tap reads
//! (zero in the padding). Along an output row the pixels read are evenly spaced, so each
//! row segment is a copy (unit stride) or a strided gather ([`gather`]), with the padded
//! ends zero.

use super::ConvShape;
use crate::cpu::vector_isa::widest;
use crate::cpu::window::{gather, inside, scatter_add};
use std::ops::Range;

/// Offsets of a kernel tap's first read along each axis, relative to the input's origin.
#[inline(always)]
fn tap_offset(shape: &ConvShape, axis: usize, tap: usize) -> isize {
    (tap * shape.dilation[axis]) as isize - shape.padding[axis] as isize
}

/// Calls `row(channel_plane, tap_y, tap_x, row_index)` for every row of the unfolded
/// matrix, in order.
#[inline(always)]
fn for_each_row(shape: &ConvShape, mut row: impl FnMut(usize, usize, usize, usize)) {
    let [kh, kw] = shape.kernel;
    for c in 0..shape.group_channels() {
        for ky in 0..kh {
            for kx in 0..kw {
                row(c, ky, kx, (c * kh + ky) * kw + kx);
            }
        }
    }
}

/// The output rows of `block` whose kernel row `offset` reads inside the image.
#[inline(always)]
fn rows_inside(shape: &ConvShape, block: &Range<usize>, offset: isize) -> Range<usize> {
    let rows = inside(shape.output[0], shape.stride[0], offset, shape.input[0]);
    rows.start.clamp(block.start, block.end)..rows.end.clamp(block.start, block.end)
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
    // Under the widest vector instructions: the strided gathers of stride-2 layers are
    // shuffles there.
    widest(
        #[inline(always)]
        || {
            for_each_row(
                shape,
                #[inline(always)]
                |c, ky, kx, r| {
                    let plane = &input[c * h * w..][..h * w];
                    let out = &mut cols[r * row_stride..][..len];
                    let (dy, dx) = (tap_offset(shape, 0, ky), tap_offset(shape, 1, kx));
                    let rows = rows_inside(shape, &block, dy);
                    let xs = inside(wo, sx, dx, w);
                    out[..(rows.start - block.start) * wo].fill(0.0);
                    out[(rows.end - block.start) * wo..].fill(0.0);
                    for oy in rows {
                        let src = &plane[(oy as isize * sy as isize + dy) as usize * w..][..w];
                        let dst = &mut out[(oy - block.start) * wo..][..wo];
                        dst[..xs.start].fill(0.0);
                        dst[xs.end..].fill(0.0);
                        if xs.is_empty() {
                            continue;
                        }
                        let first = (xs.start as isize * sx as isize + dx) as usize;
                        gather(&mut dst[xs.clone()], &src[first..], sx);
                    }
                },
            );
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
    widest(
        #[inline(always)]
        || {
            for_each_row(
                shape,
                #[inline(always)]
                |c, ky, kx, r| {
                    let plane = &mut input[c * h * w..][..h * w];
                    let col = &cols[r * row_stride..][..len];
                    let (dy, dx) = (tap_offset(shape, 0, ky), tap_offset(shape, 1, kx));
                    let xs = inside(wo, sx, dx, w);
                    if xs.is_empty() {
                        return;
                    }
                    for oy in rows_inside(shape, &block, dy) {
                        let dst = &mut plane[(oy as isize * sy as isize + dy) as usize * w..][..w];
                        let src = &col[(oy - block.start) * wo..][..wo][xs.clone()];
                        let first = (xs.start as isize * sx as isize + dx) as usize;
                        scatter_add(&mut dst[first..], src, sx);
                    }
                },
            );
        },
    );
}
