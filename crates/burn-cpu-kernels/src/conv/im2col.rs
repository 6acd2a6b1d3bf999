//! Convolution as gather + GEMM: the receptive field of every output position is gathered
//! into a row (im2col, one `select` on the channels-last input), and the rows are
//! multiplied with the kernel reshaped into a matrix. Autodiff then differentiates a GEMM
//! (two GEMMs back) and a `select` (one scatter-add back).

use burn::prelude::*;

/// Stride, padding `[(top, bottom), (left, right)]`, dilation and groups.
pub(super) struct Geometry {
    pub stride: [usize; 2],
    pub padding: [(usize, usize); 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// Number of output positions along one axis; `None` when the kernel does not fit.
pub(super) fn out_len(
    padded: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    padded.checked_sub(span).map(|rest| rest / stride + 1)
}

/// For every output position `(oy, ox)` and kernel tap `(i, j)`, in that order, the index of
/// the input pixel it reads in the padded image flattened row-major (`y * width + x`).
fn tap_indices(out: [usize; 2], kernel: [usize; 2], padded_width: usize, g: &Geometry) -> Vec<i64> {
    let mut idx = Vec::with_capacity(out[0] * out[1] * kernel[0] * kernel[1]);
    for oy in 0..out[0] {
        for ox in 0..out[1] {
            for i in 0..kernel[0] {
                let y = oy * g.stride[0] + i * g.dilation[0];
                for j in 0..kernel[1] {
                    let x = ox * g.stride[1] + j * g.dilation[1];
                    idx.push((y * padded_width + x) as i64);
                }
            }
        }
    }
    idx
}

/// The convolution of `x` `[n, c, h, w]` with `weight` `[o, c / groups, kh, kw]`, or `None`
/// when the (padded) input is smaller than the kernel's span.
pub(super) fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    g: &Geometry,
) -> Option<Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    let [o, cg, kh, kw] = weight.dims();
    let [(top, bottom), (left, right)] = g.padding;
    let (hp, wp) = (h + top + bottom, w + left + right);
    let ho = out_len(hp, kh, g.stride[0], g.dilation[0])?;
    let wo = out_len(wp, kw, g.stride[1], g.dilation[1])?;
    let (l, kk) = (ho * wo, kh * kw);
    let device = x.device();

    // Channels last, so that each gathered pixel is `c` contiguous values.
    let mut x = x.permute([0, 2, 3, 1]);
    if top + bottom + left + right > 0 {
        x = x.pad(
            [(top, bottom), (left, right), (0, 0)],
            burn::tensor::ops::PadMode::Constant(0.0),
        );
    }
    let x = x.reshape([n, hp * wp, c]);
    let index = tap_indices([ho, wo], [kh, kw], wp, g);
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [l * kk]), &device);
    // [n, l·kk, c]: row-major this is [n·l, (kh, kw, c)].
    let cols = x.select(1, index);

    let groups = g.groups;
    let og = o / groups;
    let out = if groups == 1 {
        let kernel = weight.permute([2, 3, 1, 0]).reshape([kk * c, o]);
        cols.reshape([n * l, kk * c]).matmul(kernel)
    } else if cg == 1 && og == 1 {
        // Depthwise (MobileNet): one kernel per channel, a product and a sum over the taps.
        let kernel = weight.reshape([c, kk]).transpose().reshape([1, kk, c]);
        (cols.reshape([n * l, kk, c]) * kernel)
            .sum_dim(1)
            .reshape([n * l, c])
    } else {
        let cols = cols
            .reshape([n * l, kk, groups, cg])
            .permute([2, 0, 1, 3])
            .reshape([groups, n * l, kk * cg]);
        let kernel = weight
            .reshape([groups, og, cg, kh, kw])
            .permute([0, 3, 4, 2, 1])
            .reshape([groups, kk * cg, og]);
        cols.matmul(kernel).permute([1, 0, 2]).reshape([n * l, o])
    };
    let out = match bias {
        Some(b) => out + b.reshape([1, o]),
        None => out,
    };
    Some(out.reshape([n, ho, wo, o]).permute([0, 3, 1, 2]))
}
