//! Small maps through Winograd: the tiles of every sample in one set of 16 GEMMs.
//!
//! Why: at the 4×4 to 15×15 maps of the last stages of ImageNet CNNs at fine-tuning sizes,
//! one sample has 4 to 64 Winograd tiles, too few for [`winograd`]'s 16 GEMMs per sample.
//! Here each tile's window is read straight from its sample (zero outside the image), so
//! the transformed input `V_ξ` has a column per tile of the whole batch and each point's
//! GEMM `M_ξ = U_ξ · V_ξ` is one product over the batch, with no rows computed and dropped
//! (what stacking the samples into tall images cost: a fifth of the tiles at 8×8 maps, a
//! third at 4×4, where it lost to im2col's 2.25× more multiplications). The sixteen GEMMs
//! are independent and run in parallel, one per core at a time.
//!
//! The backward pass is the same transposed, over the same columns: `dM = A dY Aᵀ`, the
//! input gradient `B (U_ξᵀ · dM_ξ) Bᵀ` added into each tile's window, and the weight
//! gradient one GEMM per point over the whole batch, `dU_ξ = dM_ξ · V_ξᵀ` (no per-sample
//! partial sums to add up).
//!
//! Memory: the transformed input and output are `16 · (in + out) · tiles` floats; the batch
//! is cut into passes of at most [`MAX_TILES`] tiles so that they stay bounded for large
//! batches (the weight gradient adds up over the passes inside the GEMMs).

use super::frame::Frame;
use super::winograd::{
    self, POINTS, TILE, WINDOW, input_1d, input_gradient_1d, output_1d, output_gradient_1d,
};
use super::{ConvShape, batched, gemm, scratch};
use ::gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// Tiles (over samples) of one pass, at most: 16 samples of 8×8 maps. The GEMMs are as
/// wide as they need to be, and the scratch a 512-channel layer keeps stays under 60 MB
/// (backward) whatever the batch.
const MAX_TILES: usize = 256;

/// Whether the convolution runs here: a layer [`winograd`] computes, on maps small enough
/// for [`batched`] (under 256 output positions), on more than one sample.
pub(super) fn applies(shape: &ConvShape) -> bool {
    winograd::applies(shape) && batched::applies(shape)
}

/// Tiles over the batch from which the backward pass pays here: with fewer, the
/// transformed weights and their gradient (`16 · in · out` floats each, 16/9 of the
/// weights) cost more than Winograd saves in the GEMMs. From ResNet-18's 512-channel 4×4
/// layers at batch 16 (64 tiles) on, it trains faster than im2col's backward pass since the
/// transforms vectorise (BENCHMARKS.md, "small maps").
const BACKWARD_TILES: usize = 64;

/// Whether the backward pass of a layer that runs here pays too (see [`BACKWARD_TILES`]).
pub(super) fn pays_backward(shape: &ConvShape) -> bool {
    let tiles = Tiles::of(shape);
    shape.batch * tiles.per_sample() >= BACKWARD_TILES
}

/// Where the tiles lie: `rows × cols` per sample, the samples of each pass.
#[derive(Clone, Copy)]
struct Tiles {
    rows: usize,
    cols: usize,
    /// Samples per pass.
    samples: usize,
}

impl Tiles {
    fn of(shape: &ConvShape) -> Self {
        let [rows, cols] = winograd::tile_grid(shape);
        let per_sample = (rows * cols).max(1);
        Self {
            rows,
            cols,
            samples: (MAX_TILES / per_sample).clamp(1, shape.batch.max(1)),
        }
    }

    fn per_sample(&self) -> usize {
        self.rows * self.cols
    }

    /// The samples of each pass.
    fn passes(&self, batch: usize) -> impl Iterator<Item = Range<usize>> {
        let step = self.samples;
        (0..batch)
            .step_by(step)
            .map(move |start| start..(start + step).min(batch))
    }
}

/// The tiles' padded frame: rows and columns `2·tiles + 2` (the windows of the last tile
/// reach two past its output), the image at the padding's corner.
fn frame_of(shape: &ConvShape, tiles: &Tiles) -> Frame {
    Frame {
        rows: TILE * tiles.rows + 2,
        cols: TILE * tiles.cols + 2,
        top: shape.padding[0],
        left: shape.padding[1],
    }
}

/// `F X Fᵀ` for every tile of a set of lines: point `(r, s)` of the `n` tiles is the line
/// `src[(r·I + s)·src_stride..][..n]`, and point `(o, q)` of the result goes to the line
/// `dst[(o·O + q)·n..][..n]`; `f` is `F` on one column. Line by line, so that the loops run
/// over the tiles and vectorise; `mid` (`I·O·n` floats) holds the columns' results.
#[inline(always)]
fn transform_lines<const I: usize, const O: usize>(
    f: impl Fn([f32; I]) -> [f32; O] + Copy,
    (src, src_stride): (&[f32], usize),
    dst: &mut [f32],
    n: usize,
    mid: &mut [f32],
) {
    // Down each column s: mid[s][o] = (F · src[·, s])[o].
    for (s, column) in mid[..I * O * n].chunks_exact_mut(O * n).enumerate() {
        let col: [&[f32]; I] = std::array::from_fn(|r| &src[(r * I + s) * src_stride..][..n]);
        let mut lines = column.chunks_exact_mut(n);
        let out: [&mut [f32]; O] = std::array::from_fn(|_| lines.next().expect("O lines"));
        map_lines(f, col, out);
    }
    // Along each row o: dst[o][q] = (mid[·][o] · Fᵀ)[q].
    for (o, row_out) in dst[..O * O * n].chunks_exact_mut(O * n).enumerate() {
        let row: [&[f32]; I] = std::array::from_fn(|s| &mid[(s * O + o) * n..][..n]);
        let mut lines = row_out.chunks_exact_mut(n);
        let out: [&mut [f32]; O] = std::array::from_fn(|_| lines.next().expect("O lines"));
        map_lines(f, row, out);
    }
}

/// `outputs[o][t] = f([inputs[0][t], …])[o]` for every `t` (all lines one length), sixteen
/// `t` at a time through fixed-size arrays. Why: indexed through arrays of slices, every
/// access kept its bounds check and the transforms compiled to scalar code, one value per
/// instruction (`perf annotate` on a 512-channel layer's forward pass).
#[inline(always)]
fn map_lines<const I: usize, const O: usize>(
    f: impl Fn([f32; I]) -> [f32; O] + Copy,
    inputs: [&[f32]; I],
    outputs: [&mut [f32]; O],
) {
    const LANES: usize = 16;
    let n = outputs[0].len();
    let whole = n - n % LANES;
    for start in (0..whole).step_by(LANES) {
        let x: [[f32; LANES]; I] = std::array::from_fn(|r| {
            inputs[r][start..start + LANES]
                .try_into()
                .expect("sixteen values")
        });
        let mut y = [[0.0f32; LANES]; O];
        for lane in 0..LANES {
            let value = f(std::array::from_fn(|r| x[r][lane]));
            for o in 0..O {
                y[o][lane] = value[o];
            }
        }
        for o in 0..O {
            outputs[o][start..start + LANES].copy_from_slice(&y[o]);
        }
    }
    for t in whole..n {
        let value = f(std::array::from_fn(|r| inputs[r][t]));
        for o in 0..O {
            outputs[o][t] = value[o];
        }
    }
}

/// `V[c][ξ][t] = (Bᵀ d B)_ξ` for every channel `c` and tile `t` of the samples `pass`, `d`
/// the tile's 4×4 input window (zero outside the image). `v` holds `channels · 16 · n`
/// floats for the pass's `n` tiles: each channel's sixteen lines together, so that the
/// channels are transformed in parallel.
fn transform_input(
    shape: &ConvShape,
    tiles: &Tiles,
    x: &[f32],
    pass: &Range<usize>,
    v: &mut [f32],
) {
    let n = pass.len() * tiles.per_sample();
    let frame = frame_of(shape, tiles);
    let [h, w] = shape.input;
    v.par_chunks_mut(POINTS * n).enumerate().for_each_init(
        || vec![0.0f32; frame.len() + 2 * POINTS * n],
        |scratch, (c, v)| {
            let (framed, rest) = scratch.split_at_mut(frame.len());
            let (windows, mid) = rest.split_at_mut(POINTS * n);
            for (j, b) in pass.clone().enumerate() {
                let plane = &x[b * shape.sample_input() + c * h * w..][..h * w];
                frame.fill(plane, [h, w], framed);
                for ty in 0..tiles.rows {
                    for tx in 0..tiles.cols {
                        let t = j * tiles.per_sample() + ty * tiles.cols + tx;
                        for r in 0..WINDOW {
                            let row = &framed[(TILE * ty + r) * frame.cols + TILE * tx..];
                            for s in 0..WINDOW {
                                windows[(r * WINDOW + s) * n + t] = row[s];
                            }
                        }
                    }
                }
            }
            crate::cpu::vector_isa::widest(
                #[inline(always)]
                || transform_lines(input_1d, (windows, n), v, n, mid),
            );
        },
    );
}

/// `A dY Aᵀ` for every output channel and tile of the pass: `dm[k][ξ][t]`, with the same
/// layout as [`transform_input`]'s (zero where a tile reaches past the output).
fn transform_output_gradient(
    shape: &ConvShape,
    tiles: &Tiles,
    dy: &[f32],
    pass: &Range<usize>,
    dm: &mut [f32],
) {
    let n = pass.len() * tiles.per_sample();
    let [ho, wo] = shape.output;
    dm.par_chunks_mut(POINTS * n).enumerate().for_each_init(
        || vec![0.0f32; TILE * TILE * n + POINTS * n],
        |scratch, (k, dm)| {
            let (grads, mid) = scratch.split_at_mut(TILE * TILE * n);
            for (j, b) in pass.clone().enumerate() {
                let plane = &dy[b * shape.sample_output() + k * ho * wo..][..ho * wo];
                for ty in 0..tiles.rows {
                    for tx in 0..tiles.cols {
                        let t = j * tiles.per_sample() + ty * tiles.cols + tx;
                        for r in 0..TILE {
                            for s in 0..TILE {
                                let (y, x) = (TILE * ty + r, TILE * tx + s);
                                grads[(r * TILE + s) * n + t] = if y < ho && x < wo {
                                    plane[y * wo + x]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
            crate::cpu::vector_isa::widest(
                #[inline(always)]
                || transform_lines(output_gradient_1d, (grads, n), dm, n, mid),
            );
        },
    );
}

/// The sixteen products `dst_ξ = lhs_ξ · rhs_ξ` in parallel (each on one core), `dst` laid
/// out point after point (`[16][rows × cols]`); `accumulate` adds to it.
fn products<'a>(
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    lhs: impl Fn(usize) -> gemm::Mat<'a> + Sync,
    rhs: impl Fn(usize) -> gemm::Mat<'a> + Sync,
    accumulate: bool,
) {
    dst.par_chunks_mut(rows * cols)
        .enumerate()
        .for_each(|(xi, dst)| {
            gemm::product(
                gemm::MatMut::row_major(dst, rows, cols),
                lhs(xi),
                rhs(xi),
                accumulate,
                Parallelism::None,
            )
        });
}

/// Point `ξ` of a `[rows][16][n]` transform as a `rows × n` matrix.
fn point(data: &[f32], rows: usize, n: usize, xi: usize) -> gemm::Mat<'_> {
    gemm::Mat::with_row_stride(&data[xi * n..], rows, n, POINTS * n)
}

/// Floats of one block's transformed weights in the forward pass, at most (512 KB): they
/// stay in the core's L2 cache between the transform and the sixteen GEMMs that read them.
const WEIGHT_BLOCK_FLOATS: usize = 128 * 1024;

/// Output channels per block of the forward pass: as many as [`WEIGHT_BLOCK_FLOATS`]
/// allows, and at least two blocks per thread so that the cores share the work.
fn out_block(shape: &ConvShape) -> usize {
    let (c, k) = (shape.channels, shape.out_channels);
    let fits = WEIGHT_BLOCK_FLOATS / (POINTS * c).max(1);
    let shared = k.div_ceil(2 * rayon::current_num_threads());
    fits.min(shared).clamp(1, k.max(1))
}

/// The convolution's output `[batch, out, h_out, w_out]`.
///
/// Block by block of output channels: each block's filters are transformed into the
/// thread's scratch and its sixteen GEMMs `M_ξ = U_ξ · V_ξ` run right after, while those
/// transformed weights are in cache. Transformed whole first, a 512-channel layer's
/// weights (16.8 MB) went out to memory and were read back by the GEMMs, on a 4×4 map as
/// long as the GEMMs themselves took.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    let tiles = Tiles::of(shape);
    let (c, k) = (shape.channels, shape.out_channels);
    let [ho, wo] = shape.output;
    let most = tiles.samples * tiles.per_sample();
    let kb = out_block(shape);
    let mut y = vec![0.0; shape.output_len()];
    // The transformed input and output in this thread's scratch: each is written whole
    // before it is read.
    scratch::with(POINTS * (c + k) * most, |buffer| {
        for pass in tiles.passes(shape.batch) {
            let n = pass.len() * tiles.per_sample();
            let (v, rest) = buffer.split_at_mut(c * POINTS * n);
            // M by blocks of output channels: block `b`'s point ξ is the `[kn × n]` matrix
            // at `m[b·16·kb·n + ξ·kn·n..]`, `kn` its channels (`kb`, fewer in the last).
            let m = &mut rest[..POINTS * k * n];
            transform_input(shape, &tiles, x, &pass, v);
            let v = &*v;
            m.par_chunks_mut(POINTS * kb * n)
                .enumerate()
                .for_each(|(b, m)| {
                    let kn = m.len() / (POINTS * n);
                    scratch::with_task(POINTS * kn * c, |u| {
                        winograd::transform_filters_into(
                            &weight[b * kb * c * 9..][..kn * c * 9],
                            u,
                        );
                        for (xi, m) in m.chunks_exact_mut(kn * n).enumerate() {
                            // M_ξ[kn × n] = U_ξ[kn × c] · V_ξ[c × n]
                            gemm::product(
                                gemm::MatMut::row_major(m, kn, n),
                                gemm::Mat::row_major(&u[xi * kn * c..][..kn * c], kn, c),
                                point(v, c, n, xi),
                                false,
                                Parallelism::None,
                            );
                        }
                    });
                });
            let m = &*m;
            // Y = Aᵀ M A, sample by sample in parallel.
            let y =
                &mut y[pass.start * shape.sample_output()..][..pass.len() * shape.sample_output()];
            let per = tiles.per_sample();
            y.par_chunks_mut(shape.sample_output())
                .enumerate()
                .for_each_init(
                    || vec![0.0f32; TILE * TILE * per + POINTS * per],
                    |scratch, (j, y)| {
                        let (out, mid) = scratch.split_at_mut(TILE * TILE * per);
                        for (o, plane) in y.chunks_mut(ho * wo).enumerate() {
                            let (b, within) = (o / kb, o % kb);
                            let kn = kb.min(k - b * kb);
                            let src = &m[b * POINTS * kb * n + within * n + j * per..];
                            crate::cpu::vector_isa::widest(
                                #[inline(always)]
                                || transform_lines(output_1d, (src, kn * n), out, per, mid),
                            );
                            let b = bias.map_or(0.0, |b| b[o]);
                            for ty in 0..tiles.rows {
                                for tx in 0..tiles.cols {
                                    let t = ty * tiles.cols + tx;
                                    for r in 0..TILE {
                                        let oy = TILE * ty + r;
                                        for s in 0..TILE {
                                            let ox = TILE * tx + s;
                                            if oy < ho && ox < wo {
                                                let value = out[(r * TILE + s) * per + t] + b;
                                                plane[oy * wo + ox] =
                                                    if relu { value.max(0.0) } else { value };
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    },
                );
        }
    });
    y
}

/// The input gradient (when `input`) and the weight gradient (when `weight_wanted`) from the
/// output gradient `dy`.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    input: bool,
    weight_wanted: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let tiles = Tiles::of(shape);
    let (c, k) = (shape.channels, shape.out_channels);
    let most = tiles.samples * tiles.per_sample();
    let mut dx = input.then(|| vec![0.0; shape.input_len()]);
    let kc = POINTS * k * c;
    // Scratch as in `forward`: the transformed weights (for the input gradient) or their
    // gradient, and the pass's transformed output gradient, input and input gradient.
    let du = scratch::with(2 * kc + POINTS * (k + 2 * c) * most, |buffer| {
        let (u, rest) = buffer.split_at_mut(kc);
        let (du, rest) = rest.split_at_mut(kc);
        if input {
            winograd::transform_weights_into(weight, shape, u);
        }
        let u = &*u;
        for (i, pass) in tiles.passes(shape.batch).enumerate() {
            let n = pass.len() * tiles.per_sample();
            let (dm, rest) = rest.split_at_mut(k * POINTS * n);
            let (v, rest) = rest.split_at_mut(c * POINTS * n);
            let dv = &mut rest[..POINTS * c * n];
            transform_output_gradient(shape, &tiles, dy, &pass, dm);
            let dm = &*dm;
            if weight_wanted {
                // dU_ξ[k × c] (+)= dM_ξ[k × n] · V_ξᵀ[n × c]
                transform_input(shape, &tiles, x, &pass, v);
                let v = &*v;
                products(
                    du,
                    k,
                    c,
                    |xi| point(dm, k, n, xi),
                    |xi| point(v, c, n, xi).transposed(),
                    i > 0,
                );
            }
            if let Some(dx) = dx.as_deref_mut() {
                // dV_ξ[c × n] = U_ξᵀ[c × k] · dM_ξ[k × n]
                products(
                    dv,
                    c,
                    n,
                    |xi| gemm::Mat::row_major(&u[xi * k * c..][..k * c], k, c).transposed(),
                    |xi| point(dm, k, n, xi),
                    false,
                );
                let dx = &mut dx[pass.start * shape.sample_input()..]
                    [..pass.len() * shape.sample_input()];
                add_input_gradient(shape, &tiles, dv, n, dx);
            }
        }
        weight_wanted.then(|| winograd::weight_gradient(du, shape))
    });
    (dx, du)
}

/// `dx[c][window of t] += B dV_ξ Bᵀ` for every sample of the pass (in parallel), channel
/// and tile, cropped to the image: the windows of neighbouring tiles overlap by two rows
/// and columns, so their contributions add.
fn add_input_gradient(shape: &ConvShape, tiles: &Tiles, dv: &[f32], n: usize, dx: &mut [f32]) {
    let c = shape.channels;
    let [h, w] = shape.input;
    let frame = frame_of(shape, tiles);
    let per = tiles.per_sample();
    dx.par_chunks_mut(shape.sample_input())
        .enumerate()
        .for_each_init(
            || vec![0.0f32; frame.len() + 2 * POINTS * per],
            |scratch, (j, dx)| {
                let (framed, rest) = scratch.split_at_mut(frame.len());
                let (windows, mid) = rest.split_at_mut(POINTS * per);
                for (ch, plane) in dx.chunks_mut(h * w).enumerate() {
                    let src = &dv[ch * n + j * per..];
                    crate::cpu::vector_isa::widest(
                        #[inline(always)]
                        || transform_lines(input_gradient_1d, (src, c * n), windows, per, mid),
                    );
                    framed.fill(0.0);
                    for ty in 0..tiles.rows {
                        for tx in 0..tiles.cols {
                            let t = ty * tiles.cols + tx;
                            for r in 0..WINDOW {
                                let row = &mut framed[(TILE * ty + r) * frame.cols + TILE * tx..];
                                for s in 0..WINDOW {
                                    row[s] += windows[(r * WINDOW + s) * per + t];
                                }
                            }
                        }
                    }
                    frame.add_into(framed, [h, w], plane);
                }
            },
        );
}
