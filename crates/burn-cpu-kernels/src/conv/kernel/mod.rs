//! The convolution on host memory (`f32`, NCHW), for the CPU backends: per sample and
//! block of output rows, the receptive fields are unfolded into a matrix that stays in the
//! core's cache (im2col), and the forward pass, the weight gradient and the input gradient
//! are each one GEMM on it (the `gemm` crate, which reads strided operands, so no
//! transposed copy is ever made); the input gradient is folded back (col2im).
//! Samples run in parallel on rayon's pool; each thread unfolds into its own scratch
//! buffer, kept between calls.
//!
//! Why per sample: unfolding the whole batch at once (what the tensor-op path in
//! `super::im2col` does) writes a matrix of 85 MB for a 32→64 3×3 layer at batch 128,
//! which costs more in page faults and memory traffic than the GEMMs themselves.

mod batch_winograd;
mod batched;
mod channels_last;
mod depthwise;
mod frame;
mod scratch;
mod unfold;
mod winograd;

use crate::cpu::gemm;
use crate::cpu::layer::{LayerGradients, Wanted};
use crate::cpu::ordered::fold_in_runs;
use crate::cpu::relu::relu_in_place;
use rayon::prelude::*;
use std::ops::Range;

/// Every size of one convolution, checked: the output fits (`out ≥ 1`) and the channels
/// split evenly into the groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvShape {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub channels: usize,
    /// Input `[height, width]`.
    pub input: [usize; 2],
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[height, width]`.
    pub kernel: [usize; 2],
    /// Output `[height, width]`.
    pub output: [usize; 2],
    /// Stride `[y, x]`.
    pub stride: [usize; 2],
    /// Zero padding before the first row and column `[top, left]` (the padding after them
    /// only shows in `output`).
    pub padding: [usize; 2],
    /// Dilation `[y, x]`.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
}

impl ConvShape {
    fn group_channels(&self) -> usize {
        self.channels / self.groups
    }

    fn group_out_channels(&self) -> usize {
        self.out_channels / self.groups
    }

    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// Rows of one group's unfolded matrix: `(channel, ky, kx)`.
    fn unfolded_rows(&self) -> usize {
        self.group_channels() * self.taps()
    }

    fn positions(&self) -> usize {
        self.output[0] * self.output[1]
    }

    fn input_plane(&self) -> usize {
        self.input[0] * self.input[1]
    }

    /// Elements of one sample's input.
    fn sample_input(&self) -> usize {
        self.channels * self.input_plane()
    }

    /// Elements of one sample's output.
    fn sample_output(&self) -> usize {
        self.out_channels * self.positions()
    }

    /// Rows and columns of the padded input that the taps read, undilated (the kernels that
    /// lay the padded input out themselves: `depthwise`, `channels_last`).
    fn tap_extent(&self) -> [usize; 2] {
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        [
            (self.output[0] - 1) * sh + kh,
            (self.output[1] - 1) * sw + kw,
        ]
    }

    /// A 1×1 kernel with unit stride and no padding (before or after, so the output has
    /// the input's size): the input planes already are the unfolded matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.stride == [1, 1]
            && self.padding == [0, 0]
            && self.output == self.input
    }

    /// Elements of the weight `[out, in / groups, kh, kw]`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.unfolded_rows()
    }

    /// Elements of the input `[batch, in, h, w]`.
    pub fn input_len(&self) -> usize {
        self.batch * self.sample_input()
    }

    /// Elements of the output `[batch, out, h_out, w_out]`.
    pub fn output_len(&self) -> usize {
        self.batch * self.sample_output()
    }

    /// How the GEMMs share the cores: across samples when there are enough of them (each
    /// GEMM on one core, no synchronisation), otherwise inside each GEMM.
    fn split(&self) -> Split {
        if self.batch >= rayon::current_num_threads() {
            Split::Samples
        } else {
            Split::WithinGemm
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Samples,
    WithinGemm,
}

impl Split {
    fn gemm_parallelism(self) -> ::gemm::Parallelism {
        match self {
            Split::Samples => ::gemm::Parallelism::None,
            Split::WithinGemm => ::gemm::Parallelism::Rayon(0),
        }
    }
}

/// Floats of one block of the unfolded matrix, at most (256 KB): a block, the sample's
/// input and output and the GEMM's packed operands then fit in a core's L2 cache together,
/// and the per-thread scratch stays small for large images (a 224×224 ResNet stem would
/// otherwise unfold 7 MB per sample). On the reference CNN, whose whole sample unfolds to
/// 166 K floats, blocks of 32 K to 256 K floats trained equally fast (within the noise of
/// alternating runs).
const BLOCK_FLOATS: usize = 64 * 1024;

/// Output rows per block of the unfolded matrix.
fn block_rows(shape: &ConvShape) -> usize {
    let per_row = shape.unfolded_rows() * shape.output[1];
    (BLOCK_FLOATS / per_row.max(1)).clamp(1, shape.output[0].max(1))
}

/// The output rows, block by block.
fn blocks(shape: &ConvShape) -> impl Iterator<Item = Range<usize>> {
    let (step, rows) = (block_rows(shape), shape.output[0]);
    (0..rows)
        .step_by(step)
        .map(move |start| start..(start + step).min(rows))
}

/// Elements of the scratch one block needs (none for a pointwise kernel, which reads the
/// input directly).
fn unfolded_len(shape: &ConvShape) -> usize {
    if shape.is_pointwise() {
        0
    } else {
        shape.unfolded_rows() * block_rows(shape) * shape.output[1]
    }
}

/// One group of one sample's input, unfolded for the output rows `block`, as a matrix
/// `[rows, block positions]`: a view of the input itself for a pointwise kernel, otherwise
/// unfolded into `scratch`.
fn unfolded<'a>(
    shape: &ConvShape,
    sample: &'a [f32],
    group: usize,
    block: &Range<usize>,
    scratch: &'a mut [f32],
) -> gemm::Mat<'a> {
    let input = &sample[group * shape.group_channels() * shape.input_plane()..]
        [..shape.group_channels() * shape.input_plane()];
    let (rows, wo) = (shape.unfolded_rows(), shape.output[1]);
    let len = block.len() * wo;
    if shape.is_pointwise() {
        gemm::Mat::with_row_stride(&input[block.start * wo..], rows, len, shape.positions())
    } else {
        let scratch = &mut scratch[..rows * len];
        unfold::im2col(shape, input, scratch, block.clone(), len);
        gemm::Mat::row_major(scratch, rows, len)
    }
}

/// Whether the convolution is depthwise (one channel per group), computed directly.
pub(crate) fn is_depthwise(shape: &ConvShape) -> bool {
    depthwise::applies(shape)
}

/// The ways a convolution is computed here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// Winograd over the whole batch's tiles (small maps): [`batch_winograd`].
    BatchWinograd,
    /// Several samples per GEMM (small maps): [`batched`].
    Batched,
    /// Winograd's F(2×2, 3×3): [`winograd`].
    Winograd,
    /// One filter per channel on small maps, the channels last: [`channels_last`].
    ChannelsLast,
    /// One filter per channel, directly: [`depthwise`].
    Depthwise,
    /// im2col per sample and block of rows, one GEMM each.
    Unfolded,
}

impl Algorithm {
    /// The fastest one for `shape`.
    pub(crate) fn for_shape(shape: &ConvShape) -> Self {
        if batch_winograd::applies(shape) {
            Self::BatchWinograd
        } else if batched::applies(shape) {
            Self::Batched
        } else if winograd::applies(shape) {
            Self::Winograd
        } else if channels_last::applies(shape) {
            Self::ChannelsLast
        } else if depthwise::applies(shape) {
            Self::Depthwise
        } else {
            Self::Unfolded
        }
    }

    /// The fastest one for `shape`'s backward pass: [`Self::for_shape`]'s, except where
    /// Winograd's transformed weights outweigh its savings on a batch's few tiles
    /// ([`batch_winograd::pays_backward`]) and where a depthwise layer's two gradients
    /// share the change to channels last on larger maps than its forward pass
    /// ([`channels_last::applies_backward`]).
    pub(crate) fn for_backward(shape: &ConvShape) -> Self {
        match Self::for_shape(shape) {
            Self::BatchWinograd if !batch_winograd::pays_backward(shape) => Self::Batched,
            Self::Depthwise if channels_last::applies_backward(shape) => Self::ChannelsLast,
            algorithm => algorithm,
        }
    }

    /// Whether it computes `shape` at all (the tests run every one that does).
    #[cfg(test)]
    fn computes(self, shape: &ConvShape) -> bool {
        match self {
            Self::BatchWinograd => batch_winograd::applies(shape),
            Self::Batched => shape.groups == 1,
            Self::Winograd => winograd::applies(shape),
            Self::ChannelsLast | Self::Depthwise => depthwise::applies(shape),
            Self::Unfolded => true,
        }
    }
}

/// The convolution's output `[batch, out, h_out, w_out]`, with ReLU applied when `relu`
/// (to each sample's output right after it is computed, while it is still in cache).
pub(crate) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    forward_with(Algorithm::for_shape(shape), x, weight, bias, shape, relu)
}

fn forward_with(
    algorithm: Algorithm,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    debug_assert_eq!(x.len(), shape.input_len());
    debug_assert_eq!(weight.len(), shape.weight_len());
    match algorithm {
        Algorithm::BatchWinograd => {
            return batch_winograd::forward(x, weight, bias, shape, relu);
        }
        Algorithm::Batched => return batched::forward(x, weight, bias, shape, relu),
        Algorithm::Winograd => return winograd::forward(x, weight, bias, shape, relu),
        Algorithm::ChannelsLast => return channels_last::forward(x, weight, bias, shape, relu),
        Algorithm::Depthwise => return depthwise::forward(x, weight, bias, shape, relu),
        Algorithm::Unfolded => {}
    }
    let mut y = vec![0.0; shape.output_len()];
    let split = shape.split();
    each_sample(split, &mut y, shape.sample_output(), |b, out| {
        let x = &x[b * shape.sample_input()..][..shape.sample_input()];
        scratch::with(unfolded_len(shape), |cols| {
            forward_sample(shape, x, weight, bias, out, cols, split)
        });
        if relu {
            relu_in_place(out);
        }
    });
    y
}

/// Runs `f(b, out_b)` for every sample `b` and its chunk of `out` (`len` elements), in
/// parallel across samples or one after another, as `split` says.
fn each_sample(
    split: Split,
    out: &mut [f32],
    len: usize,
    f: impl Fn(usize, &mut [f32]) + Send + Sync,
) {
    match split {
        Split::Samples => out
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(b, out)| f(b, out)),
        Split::WithinGemm => out
            .chunks_mut(len)
            .enumerate()
            .for_each(|(b, out)| f(b, out)),
    }
}

/// Runs `f(b, dx_b, partial)` for every sample `b`, `dx_b` its chunk of the input gradient
/// when there is one, and returns the sum of the workers' `partial` buffers (each starts as
/// `partial_len` zeros; the weight gradient, summed over samples).
fn sum_over_samples(
    split: Split,
    shape: &ConvShape,
    dx: Option<&mut [f32]>,
    partial_len: usize,
    f: impl Fn(usize, Option<&mut [f32]>, &mut [f32]) + Send + Sync,
) -> Vec<f32> {
    let new_partial = || vec![0.0; partial_len];
    let step = |mut partial: Vec<f32>, (b, dx): (usize, Option<&mut [f32]>)| {
        f(b, dx, &mut partial);
        partial
    };
    match (split, dx) {
        (Split::Samples, Some(dx)) => fold_in_runs(
            dx.chunks_mut(shape.sample_input())
                .enumerate()
                .map(|(b, dx)| (b, Some(dx)))
                .collect(),
            new_partial,
            step,
            add_into,
        ),
        (Split::Samples, None) => fold_in_runs(
            (0..shape.batch).map(|b| (b, None)).collect(),
            new_partial,
            step,
            add_into,
        ),
        (Split::WithinGemm, Some(dx)) => dx
            .chunks_mut(shape.sample_input())
            .enumerate()
            .map(|(b, dx)| (b, Some(dx)))
            .fold(new_partial(), step),
        (Split::WithinGemm, None) => (0..shape.batch)
            .map(|b| (b, None))
            .fold(new_partial(), step),
    }
}

fn forward_sample(
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    cols: &mut [f32],
    split: Split,
) {
    let (rows, positions, og) = (
        shape.unfolded_rows(),
        shape.positions(),
        shape.group_out_channels(),
    );
    let wo = shape.output[1];
    for g in 0..shape.groups {
        let w_g = gemm::Mat::row_major(&weight[g * og * rows..][..og * rows], og, rows);
        let y_g = &mut y[g * og * positions..][..og * positions];
        for block in blocks(shape) {
            let cols = unfolded(shape, x, g, &block, cols);
            // y_g[:, block] = W_g[og × rows] · cols[rows × block]
            gemm::product(
                gemm::MatMut::with_row_stride(
                    &mut y_g[block.start * wo..],
                    og,
                    cols.cols(),
                    positions,
                ),
                w_g,
                cols,
                false,
                split.gemm_parallelism(),
            );
        }
    }
    if let Some(bias) = bias {
        for (plane, &b) in y.chunks_mut(positions).zip(bias) {
            plane.iter_mut().for_each(|v| *v += b);
        }
    }
}

/// The backward pass (the gradients `wanted`), with [`Algorithm::for_backward`]'s
/// algorithm (every one gives the same gradients up to rounding, whichever computed the
/// forward pass).
pub(crate) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    wanted: Wanted,
) -> LayerGradients {
    backward_with(Algorithm::for_backward(shape), x, weight, dy, shape, wanted)
}

fn backward_with(
    algorithm: Algorithm,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    wanted: Wanted,
) -> LayerGradients {
    debug_assert_eq!(x.len(), shape.input_len());
    debug_assert_eq!(dy.len(), shape.output_len());
    let bias = wanted.bias.then(|| bias_gradient(dy, shape));
    if !wanted.input && !wanted.weight {
        return LayerGradients {
            input: None,
            weight: None,
            bias,
        };
    }
    let (want_input, want_weight) = (wanted.input, wanted.weight);
    let (input, weight) = match algorithm {
        Algorithm::BatchWinograd => {
            batch_winograd::backward(x, weight, dy, shape, want_input, want_weight)
        }
        Algorithm::Batched => batched::backward(x, weight, dy, shape, want_input, want_weight),
        Algorithm::Winograd => winograd::backward(x, weight, dy, shape, want_input, want_weight),
        Algorithm::ChannelsLast => {
            channels_last::backward(x, weight, dy, shape, want_input, want_weight)
        }
        Algorithm::Depthwise => depthwise::backward(x, weight, dy, shape, want_input, want_weight),
        Algorithm::Unfolded => unfolded_backward(x, weight, dy, shape, wanted),
    };
    LayerGradients {
        input,
        weight,
        bias,
    }
}

/// The backward pass of [`Algorithm::Unfolded`]: `dW = Σ_b dy_b · colsᵀ_b`,
/// `dx_b = col2im(Wᵀ · dy_b)`. One pass over the samples computes both, so each sample's
/// input is unfolded once.
fn unfolded_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    wanted: Wanted,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let mut dx = wanted.input.then(|| vec![0.0; shape.input_len()]);
    let split = shape.split();
    // Each worker's partial sum of the weight gradient (empty when not wanted).
    let partial_len = if wanted.weight { shape.weight_len() } else { 0 };
    let dw = sum_over_samples(split, shape, dx.as_deref_mut(), partial_len, |b, dx, dw| {
        let x = &x[b * shape.sample_input()..][..shape.sample_input()];
        let dy = &dy[b * shape.sample_output()..][..shape.sample_output()];
        scratch::with(unfolded_len(shape), |unfolded| {
            let mut buffers = Buffers { unfolded, dw };
            backward_sample(shape, x, weight, dy, dx, &mut buffers, split);
        });
    });
    (dx, wanted.weight.then_some(dw))
}

/// What one sample's backward step writes into.
struct Buffers<'a> {
    /// Scratch for one group's unfolded input, then (once the weight gradient has used
    /// it) its unfolded input gradient: one buffer, so that the working set of a sample
    /// stays in the core's cache.
    unfolded: &'a mut [f32],
    /// This worker's partial sum of the weight gradient.
    dw: &'a mut [f32],
}

/// Sums two partial weight gradients (an empty one is zero).
fn add_into(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    if a.is_empty() {
        return b;
    }
    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
    a
}

fn backward_sample(
    shape: &ConvShape,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    buffers: &mut Buffers<'_>,
    split: Split,
) {
    let (rows, positions, og) = (
        shape.unfolded_rows(),
        shape.positions(),
        shape.group_out_channels(),
    );
    let par = split.gemm_parallelism();
    if let Some(dx) = dx.as_deref_mut() {
        // Written before it is read: the fresh allocation's pages are then mapped once,
        // where reading them first (the `+=` of col2im) maps the shared zero page and
        // copies it on the first write, with a TLB flush on every core each time.
        dx.fill(0.0);
    }
    let wo = shape.output[1];
    for g in 0..shape.groups {
        let dy_g = &dy[g * og * positions..][..og * positions];
        let w_g = &weight[g * og * rows..][..og * rows];
        let plane = shape.group_channels() * shape.input_plane();
        for block in blocks(shape) {
            let len = block.len() * wo;
            let dy_block =
                gemm::Mat::with_row_stride(&dy_g[block.start * wo..], og, len, positions);
            if !buffers.dw.is_empty() {
                let cols = unfolded(shape, x, g, &block, buffers.unfolded);
                // dW_g[og × rows] += dy_g[og × block] · colsᵀ[block × rows]
                gemm::product(
                    gemm::MatMut::row_major(
                        &mut buffers.dw[g * og * rows..][..og * rows],
                        og,
                        rows,
                    ),
                    dy_block,
                    cols.transposed(),
                    true,
                    par,
                );
            }
            let Some(dx) = dx.as_deref_mut() else {
                continue;
            };
            let dx_g = &mut dx[g * plane..][..plane];
            let w_t = gemm::Mat::row_major(w_g, og, rows).transposed();
            if shape.is_pointwise() {
                // The input gradient is the unfolded gradient itself.
                gemm::product(
                    gemm::MatMut::with_row_stride(
                        &mut dx_g[block.start * wo..],
                        rows,
                        len,
                        positions,
                    ),
                    w_t,
                    dy_block,
                    false,
                    par,
                );
            } else {
                // dcols[rows × block] = W_gᵀ[rows × og] · dy_g[og × block], into the
                // scratch the weight gradient has finished with; then folded back.
                let dcols = &mut buffers.unfolded[..rows * len];
                gemm::product(
                    gemm::MatMut::row_major(dcols, rows, len),
                    w_t,
                    dy_block,
                    false,
                    par,
                );
                unfold::col2im_add(shape, dcols, dx_g, block, len);
            }
        }
    }
}

/// `db[o] = Σ_{b, position} dy[b, o, position]`, the samples summed in parallel.
fn bias_gradient(dy: &[f32], shape: &ConvShape) -> Vec<f32> {
    let positions = shape.positions();
    let per_sample =
        |sample: &[f32]| -> Vec<f64> { sample.chunks(positions).map(plane_sum).collect() };
    let add = |mut a: Vec<f64>, b: Vec<f64>| {
        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
        a
    };
    // Collected in order and added in order: the same sum whichever thread took a sample.
    dy.par_chunks(shape.sample_output())
        .map(per_sample)
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0; shape.out_channels], add)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// The sum of a plane in f64 (thousands of f32 terms per channel would otherwise lose
/// digits), in 8 independent lanes: a single running sum is one long chain of dependent
/// additions, which cost 3% of a CNN's training step; the lanes vectorise.
fn plane_sum(plane: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut groups = plane.chunks_exact(lanes.len());
    for group in groups.by_ref() {
        lanes
            .iter_mut()
            .zip(group)
            .for_each(|(l, &v)| *l += v as f64);
    }
    let tail: f64 = groups.remainder().iter().map(|&v| v as f64).sum();
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests;
