//! Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016) for dense 3×3 convolutions with unit stride.
//!
//! The output is computed in 2×2 tiles, each from the 4×4 input window under it:
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, the element-wise product
//! becomes 16 independent GEMMs `M_ξ = U_ξ · V_ξ` (one per point ξ of the 4×4 transformed
//! tile, `U_ξ` the transformed weights `[out × in]`, `V_ξ` the transformed input
//! `[in × tiles]`): 16 multiply-adds per tile and channel pair where the direct form (im2col)
//! spends 36, so 2.25× fewer. The backward pass is the same algorithm transposed: the input
//! gradient is `dV_ξ = U_ξᵀ · dM_ξ` folded back through `B`, the weight gradient
//! `dU_ξ = Σ_tiles dM_ξ · V_ξᵀ` brought back through `G`, with `dM = A dY Aᵀ`.
//!
//! Why this tile size: the transforms' coefficients are 0, ±1 and ±½, so the results round
//! like the direct form's (the tests hold it to the same tolerance against the definition).
//! F(4×4, 3×3) would save 4× but uses ±2, ±4, ±8 and 1/24 and loses about a digit, which a
//! training library should not trade away silently.
//!
//! Every transform runs on whole rows of tiles, with even and odd columns kept in separate
//! lines, so its inner loops are unit-stride and vectorise.

use super::{ConvShape, gemm, scratch, sum_over_samples};
use ::gemm::Parallelism;
use rayon::prelude::*;
use std::ops::Range;

/// Side of an output tile.
pub(super) const TILE: usize = 2;
/// Side of the input window (and the transformed tile): TILE + 3 − 1.
pub(super) const WINDOW: usize = 4;
/// Points of a transformed tile: the number of GEMMs.
pub(super) const POINTS: usize = WINDOW * WINDOW;
/// Below this many input or output channels the GEMMs are too thin to pay for the
/// transforms (a first layer on a grey or RGB image stays with im2col).
const MIN_CHANNELS: usize = 8;
/// Floats of the transformed input and output of one block of tile rows, at most (512 KB):
/// blocks this size trained the reference CNN as fast as whole samples, and keep the
/// per-thread scratch bounded for large images.
const BLOCK_FLOATS: usize = 256 * 1024;
/// Tiles a block gets at least, whatever its size in floats: with fewer, the 16 GEMMs are
/// too thin, and each block reads all the transformed weights again (4 M floats for a
/// 512-channel layer).
const MIN_TILES: usize = 128;

/// Whether the convolution is one this algorithm computes: a dense 3×3 kernel with unit
/// stride and dilation, and enough channels.
pub(super) fn applies(shape: &ConvShape) -> bool {
    shape.kernel == [3, 3]
        && shape.stride == [1, 1]
        && shape.dilation == [1, 1]
        && shape.groups == 1
        && shape.channels >= MIN_CHANNELS
        && shape.out_channels >= MIN_CHANNELS
}

/// Tile rows and tiles per row that cover the output (the last ones cropped).
pub(super) fn tile_grid(shape: &ConvShape) -> [usize; 2] {
    shape.output.map(|side| side.div_ceil(TILE))
}

/// Blocks of tile rows the convolution is computed in (for the tests).
#[cfg(test)]
pub(super) fn block_count(shape: &ConvShape) -> usize {
    Tiling::of(shape).blocks().count()
}

/// How the output is cut into tiles, and the tiles into blocks of tile rows.
#[derive(Clone, Copy, Debug)]
struct Tiling {
    /// Tile rows.
    rows: usize,
    /// Tiles per row.
    cols: usize,
    /// Tile rows per block.
    block_rows: usize,
}

impl Tiling {
    fn of(shape: &ConvShape) -> Self {
        let [rows, cols] = tile_grid(shape);
        let per_row = POINTS * (shape.channels + shape.out_channels) * cols;
        Self {
            rows,
            cols,
            block_rows: (BLOCK_FLOATS / per_row.max(1))
                .max(MIN_TILES.div_ceil(cols.max(1)))
                .clamp(1, rows.max(1)),
        }
    }

    fn blocks(&self) -> impl Iterator<Item = Range<usize>> {
        let (step, rows) = (self.block_rows, self.rows);
        (0..rows)
            .step_by(step)
            .map(move |start| start..(start + step).min(rows))
    }

    /// Length of the line buffers: one more than the tiles of a row, since the windows of
    /// a row reach two columns past its last tile.
    fn line(&self) -> usize {
        self.cols + 1
    }

    /// Length of the planes [`transform_input`] reads a block's windows from: for each row
    /// parity and kind of column, one more row than the block has tile rows.
    fn planes(&self) -> usize {
        PARTS * (self.block_rows + 1) * self.cols
    }

    fn scratch_len(&self, shape: &ConvShape) -> usize {
        let tiles = self.block_rows * self.cols;
        POINTS * (shape.channels + shape.out_channels) * tiles + LINES * self.line() + self.planes()
    }

    /// The scratch cut into the transformed input (`V` or `dV`) and the transformed output
    /// (`M` or `dM`) of one block, the line buffers and the planes.
    fn split<'a>(&self, shape: &ConvShape, scratch: &'a mut [f32]) -> Scratch<'a> {
        let tiles = self.block_rows * self.cols;
        let (v, rest) = scratch.split_at_mut(POINTS * shape.channels * tiles);
        let (m, rest) = rest.split_at_mut(POINTS * shape.out_channels * tiles);
        let (lines, planes) = rest.split_at_mut(LINES * self.line());
        Scratch {
            v,
            m,
            lines: Lines::new(lines, self.line()),
            planes: &mut planes[..self.planes()],
        }
    }
}

/// One worker's scratch for a block (see [`Tiling::split`]).
struct Scratch<'a> {
    v: &'a mut [f32],
    m: &'a mut [f32],
    lines: Lines<'a>,
    planes: &'a mut [f32],
}

/// The parts a padded input row is kept in by [`transform_input`]: its even columns, its
/// odd columns, and both shifted by one (the columns `2t + 2`, `2t + 3` of tile `t`); for
/// even and odd rows apart.
const PARTS: usize = 2 * 4;

/// Four disjoint `len`-long slices of `data` at increasing `offsets`.
fn four_mut(data: &mut [f32], offsets: [usize; 4], len: usize) -> [&mut [f32]; 4] {
    let (a, rest) = data[offsets[0]..].split_at_mut(offsets[1] - offsets[0]);
    let (b, rest) = rest.split_at_mut(offsets[2] - offsets[1]);
    let (c, d) = rest.split_at_mut(offsets[3] - offsets[2]);
    [&mut a[..len], &mut b[..len], &mut c[..len], &mut d[..len]]
}

/// Line buffers a transform works in: 2 × WINDOW lines (even and odd columns).
const LINES: usize = 2 * WINDOW;

/// `WINDOW` lines of even columns and `WINDOW` of odd ones, each `len` long.
struct Lines<'a> {
    even: [&'a mut [f32]; WINDOW],
    odd: [&'a mut [f32]; WINDOW],
}

impl<'a> Lines<'a> {
    fn new(buffer: &'a mut [f32], len: usize) -> Self {
        let mut chunks = buffer.chunks_exact_mut(len);
        let mut next = || chunks.next().expect("scratch holds the line buffers");
        Self {
            even: std::array::from_fn(|_| next()),
            odd: std::array::from_fn(|_| next()),
        }
    }
}

/// The transformed weights `U[ξ][out][in] = (G g Gᵀ)[ξ]`, each `g` a 3×3 kernel.
fn transform_weights(weight: &[f32], shape: &ConvShape) -> Vec<f32> {
    let mut u = vec![0.0; POINTS * shape.out_channels * shape.channels];
    transform_weights_into(weight, shape, &mut u);
    u
}

/// [`transform_weights`] into `u` (`16 · out · in` floats, every one written).
pub(super) fn transform_weights_into(weight: &[f32], shape: &ConvShape, u: &mut [f32]) {
    let kc = shape.out_channels * shape.channels;
    // Blocks of filters in parallel, each writing its run of every point's row: the
    // sixteen rows are written in unit-stride runs rather than one value per row at a
    // time (a 512×512 layer's 16 MB scattered that way cost as much as its GEMMs on a
    // small map).
    const FILTERS: usize = 256;
    let mut blocks: Vec<Vec<&mut [f32]>> = (0..kc.div_ceil(FILTERS))
        .map(|_| Vec::with_capacity(POINTS))
        .collect();
    for row in u.chunks_mut(kc.max(1)) {
        for (block, run) in blocks.iter_mut().zip(row.chunks_mut(FILTERS)) {
            block.push(run);
        }
    }
    blocks
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut rows)| {
            let n = rows[0].len();
            let filters = &weight[b * FILTERS * 9..][..n * 9];
            crate::cpu::vector_isa::widest(
                #[inline(always)]
                || transform_filters(filters, n, &mut rows),
            )
        });
}

/// [`transform_weights_into`] on one thread for the filters `[n, 3, 3]` (a block of output
/// channels' weights), into `u` (`16 · n` floats, point `ξ`'s row at `u[ξ·n..][..n]`), 256
/// filters at a time.
pub(super) fn transform_filters_into(filters: &[f32], u: &mut [f32]) {
    const FILTERS: usize = 256;
    let n = filters.len() / 9;
    let mut rows: Vec<&mut [f32]> = u[..POINTS * n].chunks_exact_mut(n.max(1)).collect();
    for start in (0..n).step_by(FILTERS) {
        let len = FILTERS.min(n - start);
        let mut runs: Vec<&mut [f32]> = rows
            .iter_mut()
            .map(|row| &mut row[start..][..len])
            .collect();
        crate::cpu::vector_isa::widest(
            #[inline(always)]
            || transform_filters(&filters[start * 9..][..len * 9], len, &mut runs),
        );
    }
}

/// `G g Gᵀ` for `n` filters `[n, 3, 3]` into the sixteen rows `rows[ξ][..n]`.
///
/// Why tap by tap: filter by filter, sixteen values went to sixteen rows at a time and the
/// transform ran one filter at a time (for a 512-channel layer it took longer than the
/// convolution's GEMMs on a 4×4 map). Laid out as nine arrays (one per tap) the
/// arithmetic is the same element-wise lines, in the same order (so the same rounding),
/// over all the filters at once.
#[inline(always)]
fn transform_filters(filters: &[f32], n: usize, rows: &mut [&mut [f32]]) {
    let mut taps = vec![0.0f32; 9 * n];
    for (i, g) in filters.chunks_exact(9).enumerate() {
        for (t, &v) in g.iter().enumerate() {
            taps[t * n + i] = v;
        }
    }
    let tap = |t: usize| &taps[t * n..][..n];
    // G along each kernel row r: along[r][j] for the tile's points j.
    let mut along = vec![0.0f32; 12 * n];
    for r in 0..3 {
        let [p0, p1, p2, p3] = along[4 * r * n..][..4 * n]
            .chunks_exact_mut(n)
            .collect::<Vec<_>>()
            .try_into()
            .expect("four lines");
        spread_lanes(
            [tap(3 * r), tap(3 * r + 1), tap(3 * r + 2)],
            [p0, p1, p2, p3],
        );
    }
    // Then down each column j: point (o, j) of the transformed filter is row 4·o + j.
    for j in 0..WINDOW {
        let line = |r: usize| &along[(4 * r + j) * n..][..n];
        let out = rows
            .get_disjoint_mut([j, WINDOW + j, 2 * WINDOW + j, 3 * WINDOW + j])
            .expect("sixteen distinct rows");
        spread_lanes([line(0), line(1), line(2)], out.map(|r| &mut r[..n]));
    }
}

/// [`spread_kernel`] element by element: `out[j][i] = spread_kernel([g0[i], g1[i], g2[i]])[j]`.
#[inline(always)]
fn spread_lanes([g0, g1, g2]: [&[f32]; 3], [o0, o1, o2, o3]: [&mut [f32]; WINDOW]) {
    o0.copy_from_slice(g0);
    o3.copy_from_slice(g2);
    // Indexed over slices of one length, which vectorises (a chain of five zipped
    // iterators compiled to scalar code).
    let n = o1.len();
    let (o2, g0, g1, g2) = (&mut o2[..n], &g0[..n], &g1[..n], &g2[..n]);
    for i in 0..n {
        [_, o1[i], o2[i], _] = spread_kernel([g0[i], g1[i], g2[i]]);
    }
}

/// The weight gradient `dg = Gᵀ dU G` from the transformed one `dU[ξ][out][in]`.
///
/// Blocks of filters in parallel, each read as sixteen unit-stride runs (one per point) and
/// transformed line by line, as [`transform_weights_into`] does the other way: filter by
/// filter, sixteen strided reads and a collected iterator took a fifth of a 512-channel
/// layer's backward pass on 4×4 maps.
pub(super) fn weight_gradient(du: &[f32], shape: &ConvShape) -> Vec<f32> {
    const FILTERS: usize = 256;
    let kc = shape.out_channels * shape.channels;
    let mut dw = vec![0.0f32; 9 * kc];
    dw.par_chunks_mut(9 * FILTERS)
        .enumerate()
        .for_each(|(b, dw)| {
            let (first, n) = (b * FILTERS, dw.len() / 9);
            crate::cpu::vector_isa::widest(
                #[inline(always)]
                || gather_filters(du, kc, first, n, dw),
            )
        });
    dw
}

/// `Gᵀ dU G` for the `n` filters from `first` on, each point's run `du[ξ·kc + first..][..n]`,
/// into `dw` `[n, 3, 3]`: [`gather_kernel`] along each transformed row, then down each
/// kernel column (the order the filter-by-filter form took, so the same rounding).
#[inline(always)]
fn gather_filters(du: &[f32], kc: usize, first: usize, n: usize, dw: &mut [f32]) {
    let point = |xi: usize| &du[xi * kc + first..][..n];
    // along[r][j]: the row r of points, gathered to the kernel's column j.
    let mut along = vec![0.0f32; WINDOW * 3 * n];
    for (r, out) in along.chunks_exact_mut(3 * n).enumerate() {
        let [d0, d1, d2, d3] = std::array::from_fn(|s| point(r * WINDOW + s));
        let (o0, rest) = out.split_at_mut(n);
        let (o1, o2) = rest.split_at_mut(n);
        for i in 0..n {
            [o0[i], o1[i], o2[i]] = gather_kernel([d0[i], d1[i], d2[i], d3[i]]);
        }
    }
    // taps[o][j] = Gᵀ down column j of `along`, for the kernel's row o.
    let mut taps = vec![0.0f32; 9 * n];
    let mut lines: Vec<&mut [f32]> = taps.chunks_exact_mut(n).collect();
    for j in 0..3 {
        let [l0, l1, l2, l3] = std::array::from_fn(|r| &along[(3 * r + j) * n..][..n]);
        let [t0, t1, t2] = lines
            .get_disjoint_mut([j, 3 + j, 6 + j])
            .expect("three distinct taps")
            .map(|t| &mut t[..n]);
        for i in 0..n {
            [t0[i], t1[i], t2[i]] = gather_kernel([l0[i], l1[i], l2[i], l3[i]]);
        }
    }
    drop(lines);
    for (i, filter) in dw.chunks_exact_mut(9).enumerate() {
        for (t, v) in filter.iter_mut().enumerate() {
            *v = taps[t * n + i];
        }
    }
}

/// `Bᵀ`, the input's transform in one direction: `[d0 − d2, d1 + d2, d2 − d1, d1 − d3]`.
pub(super) fn input_1d([d0, d1, d2, d3]: [f32; WINDOW]) -> [f32; WINDOW] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `Aᵀ`, from the transformed tile back to outputs: `[m0 + m1 + m2, m1 − m2 − m3]`.
pub(super) fn output_1d([m0, m1, m2, m3]: [f32; WINDOW]) -> [f32; TILE] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// `A`, the adjoint of [`output_1d`]: `[d0, d0 + d1, d0 − d1, −d1]`.
pub(super) fn output_gradient_1d([d0, d1]: [f32; TILE]) -> [f32; WINDOW] {
    [d0, d0 + d1, d0 - d1, -d1]
}

/// `G` applied to a kernel row: the kernel at the tile's four transformed points.
#[inline(always)]
fn spread_kernel(g: [f32; 3]) -> [f32; WINDOW] {
    [
        g[0],
        0.5 * (g[0] + g[1] + g[2]),
        0.5 * (g[0] - g[1] + g[2]),
        g[2],
    ]
}

/// `Gᵀ`, the adjoint of [`spread_kernel`].
fn gather_kernel(d: [f32; WINDOW]) -> [f32; 3] {
    [
        d[0] + 0.5 * (d[1] + d[2]),
        0.5 * (d[1] - d[2]),
        0.5 * (d[1] + d[2]) + d[3],
    ]
}

/// `B`, the adjoint of [`input_1d`]: `[v0, v1 − v2 + v3, −v0 + v1 + v2, −v3]`.
pub(super) fn input_gradient_1d([v0, v1, v2, v3]: [f32; WINDOW]) -> [f32; WINDOW] {
    [v0, v1 - v2 + v3, v1 + v2 - v0, -v3]
}

/// [`input_1d`] across four lines in place.
fn input_rows([d0, d1, d2, d3]: &mut [&mut [f32]; WINDOW]) {
    for (((a, b), c), d) in d0
        .iter_mut()
        .zip(d1.iter_mut())
        .zip(d2.iter_mut())
        .zip(d3.iter_mut())
    {
        [*a, *b, *c, *d] = input_1d([*a, *b, *c, *d]);
    }
}

/// [`input_gradient_1d`] down four lines in place (the adjoint of [`input_rows`]).
fn input_gradient_rows([v0, v1, v2, v3]: &mut [&mut [f32]; WINDOW]) {
    for (((a, b), c), d) in v0
        .iter_mut()
        .zip(v1.iter_mut())
        .zip(v2.iter_mut())
        .zip(v3.iter_mut())
    {
        [*a, *b, *c, *d] = input_gradient_1d([*a, *b, *c, *d]);
    }
}

/// `Bᵀ d B` for every channel and tile of the tile rows `block`: `V[ξ][c][t]`, `d` the tile's
/// 4×4 input window (zero outside the image).
///
/// Why the planes: with each padded input row split by row parity and column parity (and
/// shifted copies for the window's last two columns), every value of tile `q = r·cols + t`'s
/// window is at `q` or `q + cols` of some plane, so each step of the transform is one loop
/// over all the block's tiles, where row by row it was 26 loops of a dozen tiles each.
fn transform_input(
    shape: &ConvShape,
    tiling: &Tiling,
    x: &[f32],
    block: &Range<usize>,
    v: &mut [f32],
    planes: &mut [f32],
    lines: &mut Lines<'_>,
) {
    let (c_len, cols) = (shape.channels, tiling.cols);
    let tiles = block.len() * cols;
    let span = (block.len() + 1) * cols;
    let plane = shape.input_plane();
    for c in 0..c_len {
        load_planes(shape, &x[c * plane..][..plane], block, cols, planes, lines);
        let at = |i: usize, j: usize| ((i * WINDOW + j) * c_len + c) * tiles;
        // Bᵀ down, for each kind of column: the window's rows are the even and odd rows at
        // `q` and at `q + cols` (the next tile row's first two).
        for kind in 0..WINDOW {
            let even_rows = &planes[kind * span..][..span];
            let odd_rows = &planes[(WINDOW + kind) * span..][..span];
            let (d0, d1) = (&even_rows[..tiles], &odd_rows[..tiles]);
            let (d2, d3) = (&even_rows[cols..][..tiles], &odd_rows[cols..][..tiles]);
            let [v0, v1, v2, v3] = four_mut(v, [0, 1, 2, 3].map(|i| at(i, kind)), tiles);
            for q in 0..tiles {
                [v0[q], v1[q], v2[q], v3[q]] = input_1d([d0[q], d1[q], d2[q], d3[q]]);
            }
        }
        // Bᵀ across, in place: the kinds of column are the window's columns in order.
        for i in 0..WINDOW {
            input_rows(&mut four_mut(v, [0, 1, 2, 3].map(|j| at(i, j)), tiles));
        }
    }
}

/// The padded input rows of `block`'s windows into `planes[parity · 4 + kind][p · cols + t]`
/// for padded row `2 (block.start + p) + parity`: kinds 0 and 1 its columns `2t` and
/// `2t + 1`, kinds 2 and 3 the columns `2t + 2` and `2t + 3`; zero outside the image.
fn load_planes(
    shape: &ConvShape,
    channel: &[f32],
    block: &Range<usize>,
    cols: usize,
    planes: &mut [f32],
    lines: &mut Lines<'_>,
) {
    let [h, w] = shape.input;
    let [pt, pl] = shape.padding;
    let span = (block.len() + 1) * cols;
    let (even, odd) = (&mut *lines.even[0], &mut *lines.odd[0]);
    for p in 0..=block.len() {
        for parity in 0..2 {
            even.fill(0.0);
            odd.fill(0.0);
            let padded = TILE * (block.start + p) + parity;
            if let Some(y) = padded.checked_sub(pt).filter(|&y| y < h) {
                deinterleave(&channel[y * w..][..w], pl, even, odd);
            }
            let row = |kind: usize| (parity * WINDOW + kind) * span + p * cols;
            planes[row(0)..][..cols].copy_from_slice(&even[..cols]);
            planes[row(1)..][..cols].copy_from_slice(&odd[..cols]);
            planes[row(2)..][..cols].copy_from_slice(&even[1..=cols]);
            planes[row(3)..][..cols].copy_from_slice(&odd[1..=cols]);
        }
    }
}

/// Puts `row[x]` at padded column `x + shift`: column `p` is `even[p / 2]` or `odd[p / 2]`.
/// (Pairs of columns at a time, so that there is no branch per element.)
fn deinterleave(row: &[f32], shift: usize, even: &mut [f32], odd: &mut [f32]) {
    let (row, start) = match row.split_first() {
        Some((&first, rest)) if shift % 2 == 1 => {
            odd[shift / 2] = first;
            (rest, shift / 2 + 1)
        }
        _ => (row, shift / 2),
    };
    let mut pairs = row.chunks_exact(2);
    let lines = even[start..].iter_mut().zip(odd[start..].iter_mut());
    for ((e, o), pair) in lines.zip(pairs.by_ref()) {
        (*e, *o) = (pair[0], pair[1]);
    }
    if let [last] = pairs.remainder() {
        even[start + row.len() / 2] = *last;
    }
}

/// `apply(row[x], value)` for the value at padded column `x + shift` (the inverse of
/// [`deinterleave`]): `=` to write rows of tiles out, `+=` to add windows back.
fn interleave(
    even: &[f32],
    odd: &[f32],
    shift: usize,
    row: &mut [f32],
    apply: impl Fn(&mut f32, f32),
) {
    let (row, start) = match row.split_first_mut() {
        Some((first, rest)) if shift % 2 == 1 => {
            apply(first, odd[shift / 2]);
            (rest, shift / 2 + 1)
        }
        _ => (row, shift / 2),
    };
    let half = row.len() / 2;
    let mut pairs = row.chunks_exact_mut(2);
    for ((&e, &o), pair) in even[start..].iter().zip(&odd[start..]).zip(pairs.by_ref()) {
        apply(&mut pair[0], e);
        apply(&mut pair[1], o);
    }
    if let [last] = pairs.into_remainder() {
        apply(last, even[start + half]);
    }
}

/// `y[k][2ty + a][2tx + b] = (Aᵀ M A)[a][b] + bias[k]` for the block's tiles, cropped to the
/// output. Works in `m`, which it leaves changed; nothing depends on a neighbouring tile, so
/// each step is one loop over all the block's tiles.
fn transform_output(
    shape: &ConvShape,
    tiling: &Tiling,
    m: &mut [f32],
    block: &Range<usize>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (k_len, cols) = (shape.out_channels, tiling.cols);
    let tiles = block.len() * cols;
    let [ho, wo] = shape.output;
    for k in 0..k_len {
        let b = bias.map_or(0.0, |bias| bias[k]);
        let at = |i: usize, j: usize| ((i * WINDOW + j) * k_len + k) * tiles;
        // Aᵀ down, for each column j of the tile: rows 0 and 1 of M become the tile's two
        // output rows.
        for j in 0..WINDOW {
            let [m0, m1, m2, m3] = four_mut(m, [0, 1, 2, 3].map(|i| at(i, j)), tiles);
            for q in 0..tiles {
                [m0[q], m1[q]] = output_1d([m0[q], m1[q], m2[q], m3[q]]);
            }
        }
        // Aᵀ across, each output row a: its even and odd columns into columns 0 and 1.
        for a in 0..TILE {
            let [s0, s1, s2, s3] = four_mut(m, [0, 1, 2, 3].map(|j| at(a, j)), tiles);
            for q in 0..tiles {
                let [even, odd] = output_1d([s0[q], s1[q], s2[q], s3[q]]);
                [s0[q], s1[q]] = [even + b, odd + b];
            }
        }
        let y = &mut y[k * ho * wo..][..ho * wo];
        for (r, ty) in block.clone().enumerate() {
            for a in 0..TILE {
                let oy = ty * TILE + a;
                if oy < ho {
                    let even = &m[at(a, 0) + r * cols..][..cols];
                    let odd = &m[at(a, 1) + r * cols..][..cols];
                    interleave(even, odd, 0, &mut y[oy * wo..][..wo], |y, v| *y = v);
                }
            }
        }
    }
}

/// `dM = A dY Aᵀ` for the block's tiles: `dM[ξ][k][t]`, `dY` the tile's 2×2 output gradient
/// (zero past the output's edge). Each step is one loop over all the block's tiles.
fn transform_output_gradient(
    shape: &ConvShape,
    tiling: &Tiling,
    dy: &[f32],
    block: &Range<usize>,
    dm: &mut [f32],
    planes: &mut [f32],
) {
    let (k_len, cols) = (shape.out_channels, tiling.cols);
    let tiles = block.len() * cols;
    let [ho, wo] = shape.output;
    for k in 0..k_len {
        let dy = &dy[k * ho * wo..][..ho * wo];
        // Output row a of every tile, even and odd columns apart, into planes 2a and 2a + 1.
        for (r, ty) in block.clone().enumerate() {
            for a in 0..TILE {
                let (even_at, odd_at) = (2 * a * tiles + r * cols, (2 * a + 1) * tiles + r * cols);
                let (low, high) = planes.split_at_mut(odd_at);
                let (even, odd) = (&mut low[even_at..][..cols], &mut high[..cols]);
                even.fill(0.0);
                odd.fill(0.0);
                let oy = ty * TILE + a;
                if oy < ho {
                    deinterleave(&dy[oy * wo..][..wo], 0, even, odd);
                }
            }
        }
        let part = |p: usize| &planes[p * tiles..][..tiles];
        let at = |i: usize, j: usize| ((i * WINDOW + j) * k_len + k) * tiles;
        // A down: the even columns' rows into column 0 of dM, the odd columns' into
        // column 3, for now.
        for (parity, j) in [(0, 0), (1, WINDOW - 1)] {
            let (d0, d1) = (part(parity), part(2 + parity));
            let [v0, v1, v2, v3] = four_mut(dm, [0, 1, 2, 3].map(|i| at(i, j)), tiles);
            for q in 0..tiles {
                [v0[q], v1[q], v2[q], v3[q]] = output_gradient_1d([d0[q], d1[q]]);
            }
        }
        // A across, each row i, from the even columns' value (column 0) and the odd
        // columns' (column 3).
        for i in 0..WINDOW {
            let [v0, v1, v2, v3] = four_mut(dm, [0, 1, 2, 3].map(|j| at(i, j)), tiles);
            for q in 0..tiles {
                [v0[q], v1[q], v2[q], v3[q]] = output_gradient_1d([v0[q], v3[q]]);
            }
        }
    }
}

/// `dx[c][window of t] += B dV Bᵀ` for every channel and tile of the block, cropped to the
/// image (the windows of neighbouring tiles overlap by two rows and columns, so their
/// contributions add).
fn transform_input_gradient(
    shape: &ConvShape,
    tiling: &Tiling,
    dv: &[f32],
    block: &Range<usize>,
    dx: &mut [f32],
    lines: &mut Lines<'_>,
) {
    let (c_len, cols) = (shape.channels, tiling.cols);
    let tiles = block.len() * cols;
    let plane = shape.input_plane();
    let [h, w] = shape.input;
    let [pt, pl] = shape.padding;
    for c in 0..c_len {
        let dx = &mut dx[c * plane..][..plane];
        for (r, ty) in block.clone().enumerate() {
            let point = |i: usize, j: usize| {
                &dv[((i * WINDOW + j) * c_len + c) * tiles + r * cols..][..cols]
            };
            // B across, each row i: tile t gives [v0, v1 − v2 + v3, −v0 + v1 + v2, −v3] to
            // padded columns 2t .. 2t+4, that is even[t], odd[t], even[t+1], odd[t+1].
            for i in 0..WINDOW {
                let (v0, v1, v2, v3) = (point(i, 0), point(i, 1), point(i, 2), point(i, 3));
                let (even, odd) = (&mut *lines.even[i], &mut *lines.odd[i]);
                even[..cols].copy_from_slice(v0);
                even[cols] = 0.0;
                for (((e, v0), v1), v2) in even[1..].iter_mut().zip(v0).zip(v1).zip(v2) {
                    *e += v1 + v2 - v0;
                }
                for (((o, v1), v2), v3) in odd[..cols].iter_mut().zip(v1).zip(v2).zip(v3) {
                    *o = v1 - v2 + v3;
                }
                odd[cols] = 0.0;
                for (o, v3) in odd[1..].iter_mut().zip(v3) {
                    *o -= v3;
                }
            }
            input_gradient_rows(&mut lines.even);
            input_gradient_rows(&mut lines.odd);
            // Into the image: padded row top + i, padded column p is image column p − pl.
            for i in 0..WINDOW {
                let Some(y) = (ty * TILE + i).checked_sub(pt).filter(|&y| y < h) else {
                    continue;
                };
                interleave(
                    lines.even[i],
                    lines.odd[i],
                    pl,
                    &mut dx[y * w..][..w],
                    |x, v| *x += v,
                );
            }
        }
    }
}

/// The convolution's output `[batch, out, h_out, w_out]`.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    let tiling = Tiling::of(shape);
    let u = transform_weights(weight, shape);
    let mut y = vec![0.0; shape.output_len()];
    let par = shape.split().gemm_parallelism();
    super::each_sample(shape.split(), &mut y, shape.sample_output(), |b, y| {
        let x = &x[b * shape.sample_input()..][..shape.sample_input()];
        scratch::with(tiling.scratch_len(shape), |scratch| {
            forward_sample(shape, &tiling, x, &u, bias, y, scratch, par)
        });
        if relu {
            crate::cpu::relu::relu_in_place(y);
        }
    });
    y
}

/// One sample's output into `y`, block of tile rows by block: transform, 16 GEMMs,
/// transform back (bias added there).
#[allow(clippy::too_many_arguments)]
fn forward_sample(
    shape: &ConvShape,
    tiling: &Tiling,
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
    par: Parallelism,
) {
    let Scratch {
        v,
        m,
        mut lines,
        planes,
    } = tiling.split(shape, scratch);
    let (k, c) = (shape.out_channels, shape.channels);
    for block in tiling.blocks() {
        let tiles = block.len() * tiling.cols;
        transform_input(shape, tiling, x, &block, v, planes, &mut lines);
        for xi in 0..POINTS {
            // M_ξ[k × tiles] = U_ξ[k × c] · V_ξ[c × tiles]
            gemm::product(
                gemm::MatMut::row_major(&mut m[xi * k * tiles..][..k * tiles], k, tiles),
                gemm::Mat::row_major(&u[xi * k * c..][..k * c], k, c),
                gemm::Mat::row_major(&v[xi * c * tiles..][..c * tiles], c, tiles),
                false,
                par,
            );
        }
        transform_output(shape, tiling, m, &block, bias, y);
    }
}

/// The input gradient (when `input`) and the weight gradient (when `weight`) from the output
/// gradient `dy`.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &ConvShape,
    input: bool,
    weight_wanted: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let tiling = Tiling::of(shape);
    let u = transform_weights(weight, shape);
    let mut dx = input.then(|| vec![0.0; shape.input_len()]);
    let par = shape.split().gemm_parallelism();
    let partial_len = if weight_wanted {
        POINTS * shape.out_channels * shape.channels
    } else {
        0
    };
    let du = sum_over_samples(
        shape.split(),
        shape,
        dx.as_deref_mut(),
        partial_len,
        |b, dx, du| {
            let x = &x[b * shape.sample_input()..][..shape.sample_input()];
            let dy = &dy[b * shape.sample_output()..][..shape.sample_output()];
            scratch::with(tiling.scratch_len(shape), |scratch| {
                backward_sample(shape, &tiling, x, &u, dy, dx, du, scratch, par)
            });
        },
    );
    (dx, weight_wanted.then(|| weight_gradient(&du, shape)))
}

/// One sample's input gradient into `dx` (when given) and its transformed weight gradient
/// added to `du` (unless empty).
#[allow(clippy::too_many_arguments)]
fn backward_sample(
    shape: &ConvShape,
    tiling: &Tiling,
    x: &[f32],
    u: &[f32],
    dy: &[f32],
    mut dx: Option<&mut [f32]>,
    du: &mut [f32],
    scratch: &mut [f32],
    par: Parallelism,
) {
    if let Some(dx) = dx.as_deref_mut() {
        // Written before it is read (see `super::backward_sample`).
        dx.fill(0.0);
    }
    let Scratch {
        v,
        m: dm,
        mut lines,
        planes,
    } = tiling.split(shape, scratch);
    let (k, c) = (shape.out_channels, shape.channels);
    for block in tiling.blocks() {
        let tiles = block.len() * tiling.cols;
        transform_output_gradient(shape, tiling, dy, &block, dm, planes);
        let dm_point =
            |xi: usize| gemm::Mat::row_major(&dm[xi * k * tiles..][..k * tiles], k, tiles);
        if !du.is_empty() {
            transform_input(shape, tiling, x, &block, v, planes, &mut lines);
            for xi in 0..POINTS {
                // dU_ξ[k × c] += dM_ξ[k × tiles] · V_ξᵀ[tiles × c]
                gemm::product(
                    gemm::MatMut::row_major(&mut du[xi * k * c..][..k * c], k, c),
                    dm_point(xi),
                    gemm::Mat::row_major(&v[xi * c * tiles..][..c * tiles], c, tiles).transposed(),
                    true,
                    par,
                );
            }
        }
        let Some(dx) = dx.as_deref_mut() else {
            continue;
        };
        for xi in 0..POINTS {
            // dV_ξ[c × tiles] = U_ξᵀ[c × k] · dM_ξ[k × tiles], over V (used).
            gemm::product(
                gemm::MatMut::row_major(&mut v[xi * c * tiles..][..c * tiles], c, tiles),
                gemm::Mat::row_major(&u[xi * k * c..][..k * c], k, c).transposed(),
                dm_point(xi),
                false,
                par,
            );
        }
        transform_input_gradient(shape, tiling, v, &block, dx, &mut lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 1-D F(2, 3) on scalars: [Aᵀ (G g ⊙ Bᵀ d)] is the 2-output correlation.
    #[test]
    fn one_dimensional_transforms_compute_the_correlation() {
        let d = [0.3f32, -1.2, 2.5, 0.7];
        let g = [1.5f32, -0.4, 0.9];
        let v = {
            let mut lines: [Vec<f32>; WINDOW] = d.map(|d| vec![d]);
            let mut refs = lines.each_mut().map(|l| l.as_mut_slice());
            input_rows(&mut refs);
            lines.map(|l| l[0])
        };
        let u = spread_kernel(g);
        let m: [f32; WINDOW] = std::array::from_fn(|i| u[i] * v[i]);
        let y = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]];
        for (t, y) in y.iter().enumerate() {
            let expected: f32 = (0..3).map(|s| d[t + s] * g[s]).sum();
            assert!((y - expected).abs() < 1e-6, "{y} vs {expected}");
        }
    }

    /// Each backward transform is the adjoint of its forward one: ⟨F a, b⟩ = ⟨a, Fᵀ b⟩.
    #[test]
    fn backward_transforms_are_the_adjoints() {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
        let a = [0.3f32, -1.2, 2.5, 0.7];
        let b = [1.1f32, 0.4, -0.8, 2.0];
        let apply = |f: fn(&mut [&mut [f32]; WINDOW]), x: [f32; WINDOW]| {
            let mut lines: [Vec<f32>; WINDOW] = x.map(|x| vec![x]);
            let mut refs = lines.each_mut().map(|l| l.as_mut_slice());
            f(&mut refs);
            lines.map(|l| l[0])
        };
        let lhs = dot(&apply(input_rows, a), &b);
        let rhs = dot(&a, &apply(input_gradient_rows, b));
        assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
        let g = [0.5f32, -1.5, 0.25];
        let lhs = dot(&spread_kernel(g), &b);
        let rhs = dot(&g, &gather_kernel(b));
        assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
    }

    #[test]
    fn deinterleaving_places_columns_by_parity_and_interleaving_adds_them_back() {
        for len in 1..6 {
            for shift in 0..4 {
                let row: Vec<f32> = (1..=len).map(|x| x as f32).collect();
                let (mut even, mut odd) = (vec![0.0; 5], vec![0.0; 5]);
                deinterleave(&row, shift, &mut even, &mut odd);
                for (x, value) in row.iter().enumerate() {
                    let p = x + shift;
                    let line = if p % 2 == 0 { &even } else { &odd };
                    assert_eq!(line[p / 2], *value, "len {len}, shift {shift}, x {x}");
                }
                let placed = even.iter().chain(&odd).filter(|v| **v != 0.0).count();
                assert_eq!(placed, len, "nothing else written");
                let mut back = vec![1.0; len];
                interleave(&even, &odd, shift, &mut back, |x, v| *x += v);
                let expected: Vec<f32> = row.iter().map(|v| v + 1.0).collect();
                assert_eq!(back, expected, "len {len}, shift {shift}");
            }
        }
    }

    #[test]
    fn thin_strided_or_grouped_convolutions_are_left_to_im2col() {
        let shape = |channels, stride, groups| ConvShape {
            batch: 2,
            channels,
            input: [8, 8],
            out_channels: 16,
            kernel: [3, 3],
            output: [6, 6],
            stride,
            padding: [0, 0],
            dilation: [1, 1],
            groups,
        };
        assert!(applies(&shape(16, [1, 1], 1)));
        assert!(!applies(&shape(3, [1, 1], 1)));
        assert!(!applies(&shape(16, [2, 2], 1)));
        assert!(!applies(&shape(16, [1, 1], 2)));
    }
}
