//! Small maps: several samples' unfolded inputs side by side in one GEMM.
//!
//! Why: the last stages of ImageNet CNNs at fine-tuning sizes have maps of 4×4 to 8×8
//! pixels (ResNet's `layer3`/`layer4` and MobileNetV2's last blocks at 128 px). One
//! sample's GEMM is then 16 to 64 columns wide against hundreds of filters, too thin for
//! the vector units; a frozen ResNet-18 spent a third of its time in such GEMMs. Here the
//! columns of enough samples for [`COLUMNS`] are unfolded next to each other, the product
//! computed once, and the outputs scattered back to their samples (and the same for the
//! gradients).

use super::{ConvShape, add_into, gemm, scratch, unfold};
use crate::cpu::ordered::fold_in_runs;
use ::gemm::Parallelism;
use rayon::prelude::*;

/// Columns (output positions, over samples) a GEMM gets at least.
const COLUMNS: usize = 256;

/// Whether the convolution runs here: a dense one whose map is smaller than [`COLUMNS`],
/// on more than one sample.
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.groups == 1 && shape.positions() < COLUMNS && shape.batch > 1
}

/// How the batch is cut: samples per GEMM, and whether the chunks run in parallel (each
/// GEMM on one core) or one after another (each GEMM on every core).
#[derive(Clone, Copy)]
struct Chunks {
    samples: usize,
    count: usize,
    parallel: bool,
}

impl Chunks {
    fn of(shape: &ConvShape) -> Self {
        let samples = COLUMNS.div_ceil(shape.positions()).min(shape.batch);
        let count = shape.batch.div_ceil(samples);
        Self {
            samples,
            count,
            parallel: count >= rayon::current_num_threads(),
        }
    }

    fn gemm_parallelism(&self) -> Parallelism {
        if self.parallel {
            Parallelism::None
        } else {
            Parallelism::Rayon(0)
        }
    }
}

/// Channels per task when one chunk's unfolding or folding is split between threads:
/// `tasks_per_thread` tasks for each thread, so that uneven ones even out.
fn channels_per_task(shape: &ConvShape, parallel: bool) -> usize {
    const TASKS_PER_THREAD: usize = 4;
    let tasks = if parallel {
        rayon::current_num_threads() * TASKS_PER_THREAD
    } else {
        1
    };
    shape.channels.div_ceil(tasks).max(1)
}

/// Unfolds the `n` samples of `x` (a chunk of the input) into `cols` `[rows, n·positions]`.
/// With `parallel` (the chunk is the only one running), blocks of channels, whose rows are
/// contiguous in `cols`, go to different threads: the last stages' maps are so small that
/// unfolding one chunk alone took as long as its GEMM on both cores.
fn unfold_chunk(shape: &ConvShape, x: &[f32], n: usize, cols: &mut [f32], parallel: bool) {
    let (p, width) = (shape.positions(), n * shape.positions());
    let per_task = channels_per_task(shape, parallel);
    let channel_rows = shape.taps() * width;
    let cols = &mut cols[..shape.unfolded_rows() * width];
    let unfold = |(t, cols): (usize, &mut [f32])| {
        let first = t * per_task;
        // The block's channels as a convolution of their own (rows and planes in order).
        let block = ConvShape {
            channels: cols.len() / channel_rows,
            ..*shape
        };
        for j in 0..n {
            let sample = &x[j * shape.sample_input() + first * shape.input_plane()..];
            if shape.is_pointwise() {
                for c in 0..block.channels {
                    cols[c * width + j * p..][..p].copy_from_slice(&sample[c * p..][..p]);
                }
            } else {
                unfold::im2col(
                    &block,
                    sample,
                    &mut cols[j * p..],
                    0..shape.output[0],
                    width,
                );
            }
        }
    };
    if parallel {
        cols.par_chunks_mut(per_task * channel_rows)
            .enumerate()
            .for_each(unfold);
    } else {
        unfold((0, cols));
    }
}

/// The adjoint of [`unfold_chunk`]: adds `cols` `[rows, n·positions]` into the `n` samples'
/// input gradients `dx` (split between threads by channel blocks with `parallel`).
fn fold_chunk(shape: &ConvShape, cols: &[f32], dx: &mut [f32], parallel: bool) {
    let (p, width) = (
        shape.positions(),
        dx.len() / shape.sample_input() * shape.positions(),
    );
    let per_task = channels_per_task(shape, parallel);
    let plane = shape.input_plane();
    let fold = |(j, t, dx): (usize, usize, &mut [f32])| {
        let first = t * per_task;
        let block = ConvShape {
            channels: dx.len() / plane,
            ..*shape
        };
        let cols = &cols[first * shape.taps() * width + j * p..];
        if shape.is_pointwise() {
            for (c, plane) in dx.chunks_mut(p).enumerate() {
                plane.copy_from_slice(&cols[c * width..][..p]);
            }
        } else {
            unfold::col2im_add(&block, cols, dx, 0..shape.output[0], width);
        }
    };
    let tasks = dx
        .chunks_mut(shape.sample_input())
        .enumerate()
        .flat_map(|(j, dx)| {
            dx.chunks_mut(per_task * plane)
                .enumerate()
                .map(move |(t, dx)| (j, t, dx))
        });
    if parallel {
        tasks.collect::<Vec<_>>().into_par_iter().for_each(fold);
    } else {
        tasks.for_each(fold);
    }
}

/// `[batch, out, h_out, w_out]`, bias added and ReLU applied when asked.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    let chunks = Chunks::of(shape);
    let (rows, p, k) = (shape.unfolded_rows(), shape.positions(), shape.out_channels);
    let mut y = vec![0.0f32; shape.output_len()];
    let run = |(i, out): (usize, &mut [f32])| {
        let n = out.len() / shape.sample_output();
        let width = n * p;
        let x = &x[i * chunks.samples * shape.sample_input()..];
        scratch::with((rows + k) * width, |buffer| {
            let (cols, product) = buffer.split_at_mut(rows * width);
            unfold_chunk(shape, x, n, cols, !chunks.parallel);
            gemm::product(
                gemm::MatMut::row_major(product, k, width),
                gemm::Mat::row_major(weight, k, rows),
                gemm::Mat::row_major(cols, rows, width),
                false,
                chunks.gemm_parallelism(),
            );
            // Back to each sample's `[out, positions]`.
            for (j, sample) in out.chunks_mut(shape.sample_output()).enumerate() {
                for (o, plane) in sample.chunks_mut(p).enumerate() {
                    let b = bias.map_or(0.0, |b| b[o]);
                    let src = &product[o * width + j * p..][..p];
                    for (v, &s) in plane.iter_mut().zip(src) {
                        *v = if relu { (s + b).max(0.0) } else { s + b };
                    }
                }
            }
        });
    };
    let chunk_len = chunks.samples * shape.sample_output();
    if chunks.parallel {
        y.par_chunks_mut(chunk_len).enumerate().for_each(run);
    } else {
        y.chunks_mut(chunk_len).enumerate().for_each(run);
    }
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
    let chunks = Chunks::of(shape);
    let (rows, p, k) = (shape.unfolded_rows(), shape.positions(), shape.out_channels);
    let mut dx = want_input.then(|| vec![0.0f32; shape.input_len()]);
    let dx_chunks: Vec<Option<&mut [f32]>> = match dx.as_deref_mut() {
        Some(dx) => dx
            .chunks_mut(chunks.samples * shape.sample_input())
            .map(Some)
            .collect(),
        None => (0..chunks.count).map(|_| None).collect(),
    };
    let partial_len = if want_weight { shape.weight_len() } else { 0 };
    let step = |mut dw: Vec<f32>, (i, dx): (usize, Option<&mut [f32]>)| {
        let first = i * chunks.samples;
        let n = chunks.samples.min(shape.batch - first);
        let width = n * p;
        scratch::with((rows + k) * width, |buffer| {
            let (cols, dy_chunk) = buffer.split_at_mut(rows * width);
            // The chunk's output gradient as one `[out, n·positions]` matrix.
            let dy = &dy[first * shape.sample_output()..];
            for j in 0..n {
                for o in 0..k {
                    dy_chunk[o * width + j * p..][..p]
                        .copy_from_slice(&dy[j * shape.sample_output() + o * p..][..p]);
                }
            }
            let dy_chunk = gemm::Mat::row_major(dy_chunk, k, width);
            if want_weight {
                unfold_chunk(
                    shape,
                    &x[first * shape.sample_input()..],
                    n,
                    cols,
                    !chunks.parallel,
                );
                // dW[out × rows] += dy[out × cols] · colsᵀ[cols × rows]
                gemm::product(
                    gemm::MatMut::row_major(&mut dw, k, rows),
                    dy_chunk,
                    gemm::Mat::row_major(cols, rows, width).transposed(),
                    true,
                    chunks.gemm_parallelism(),
                );
            }
            if let Some(dx) = dx {
                // dcols[rows × cols] = Wᵀ · dy, then folded back sample by sample.
                gemm::product(
                    gemm::MatMut::row_major(cols, rows, width),
                    gemm::Mat::row_major(weight, k, rows).transposed(),
                    dy_chunk,
                    false,
                    chunks.gemm_parallelism(),
                );
                fold_chunk(shape, cols, dx, !chunks.parallel);
            }
        });
        dw
    };
    let new_partial = || vec![0.0f32; partial_len];
    let dw = if chunks.parallel {
        fold_in_runs(
            dx_chunks.into_iter().enumerate().collect(),
            new_partial,
            step,
            add_into,
        )
    } else {
        dx_chunks.into_iter().enumerate().fold(new_partial(), step)
    };
    (dx, want_weight.then_some(dw))
}
