//! A safe face on the `gemm` crate's strided `f32` product: matrices are slices with row
//! and column strides, checked to lie inside their slices before the unsafe call. The host
//! convolution and the host linear layer are built on it.

use gemm::Parallelism;

/// A read-only matrix view.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// `data` holds a `rows × cols` matrix row after row.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::with_row_stride(data, rows, cols, cols)
    }

    /// A `rows × cols` matrix whose rows start `row_stride` elements apart (a block of
    /// columns of a wider row-major matrix).
    pub fn with_row_stride(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        let m = Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        };
        m.check();
        m
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The same data read as the transposed matrix (no copy).
    pub fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn check(&self) {
        assert!(
            fits(
                self.data.len(),
                self.rows,
                self.cols,
                self.row_stride,
                self.col_stride
            ),
            "matrix view outside its slice"
        );
    }
}

/// A writable matrix view with unit column stride.
pub(crate) struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// `data` holds a `rows × cols` matrix row after row.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::with_row_stride(data, rows, cols, cols)
    }

    /// A `rows × cols` matrix whose rows start `row_stride` elements apart.
    pub fn with_row_stride(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        assert!(
            fits(data.len(), rows, cols, row_stride, 1),
            "matrix view outside its slice"
        );
        // Rows that overlapped would be written twice at once.
        assert!(rows <= 1 || row_stride >= cols, "overlapping rows");
        Self {
            data,
            rows,
            cols,
            row_stride,
        }
    }
}

/// Whether every element of a `rows × cols` matrix with these strides lies inside a slice
/// of `len` elements.
fn fits(len: usize, rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    (rows - 1)
        .checked_mul(row_stride)
        .zip((cols - 1).checked_mul(col_stride))
        .and_then(|(a, b)| a.checked_add(b))
        .is_some_and(|last| last < len)
}

/// Products smaller than this many multiply-adds run on one thread: splitting them costs
/// more in synchronisation than it saves (the threshold burn's Flex backend uses too).
const PARALLEL_MACS: usize = 192 * 192 * 192;

/// How to run a product of `macs` multiply-adds: on rayon's threads when it is large enough
/// to pay for them, on the calling thread otherwise.
pub(crate) fn parallelism_for(macs: usize) -> Parallelism {
    if macs >= PARALLEL_MACS {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`.
///
/// Panics when the shapes do not chain; the callers derive them from one checked layer
/// shape, so that would be a bug here, not a user error.
pub(crate) fn product(
    dst: MatMut<'_>,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    accumulate: bool,
    parallelism: Parallelism,
) {
    assert!(
        lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows,
        "GEMM shapes do not chain: [{}×{}] · [{}×{}] → [{}×{}]",
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols,
        dst.rows,
        dst.cols
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if lhs.cols == 0 {
        if !accumulate {
            for row in 0..dst.rows {
                dst.data[row * dst.row_stride..][..dst.cols].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the three views were checked (`fits`) to lie inside their slices, the
    // destination is a unique borrow that aliases neither operand, and the shapes chain.
    // `gemm` computes dst := alpha·dst + beta·lhs·rhs, reading dst only when `read_dst`.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Side of the square tiles [`transposed`] copies through: sixteen `f32` are one cache line,
/// so each tile reads sixteen whole source lines and writes sixteen whole destination lines
/// (element by element, rows whose length is a power of two map to the same cache set and
/// evict each other: six times slower for 1024 × 1024).
const TILE: usize = 16;

/// The transpose of a row-major `rows × cols` matrix, row-major (`cols × rows`), blocks of
/// its rows in parallel.
///
/// Why: the `gemm` crate runs at its best rate when the left operand of its column-major
/// product is column-major; a row-major one is repacked inside, at about half the rate
/// (measured: `dy·Wᵀ` for a 1024 × 1024 weight took twice as long as `x·W`). Copying the
/// operand once, the right way round, costs a third of that difference.
pub(crate) fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols, "matrix size");
    let mut dst = vec![0.0; rows * cols];
    if rows == 0 || cols == 0 {
        return dst;
    }
    use rayon::prelude::*;
    // Destination rows j0..j0 + TILE are source columns j0..j0 + TILE.
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(block, out)| {
            let j0 = block * TILE;
            let width = out.len() / rows;
            let mut tile = [[0f32; TILE]; TILE];
            for i0 in (0..rows).step_by(TILE) {
                let height = TILE.min(rows - i0);
                for i in 0..height {
                    let row = &src[(i0 + i) * cols + j0..][..width];
                    for (j, &v) in row.iter().enumerate() {
                        tile[j][i] = v;
                    }
                }
                for (j, line) in tile.iter().enumerate().take(width) {
                    out[j * rows + i0..][..height].copy_from_slice(&line[..height]);
                }
            }
        });
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop.
    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols)
            .flat_map(|j| (0..rows).map(move |i| a[i * cols + j]))
            .collect()
    }

    #[test]
    fn products_with_transposed_views_match_the_triple_loop() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let expected = naive(&a, &b, m, k, n);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        let mut c = vec![f32::NAN; m * n];
        product(
            MatMut::row_major(&mut c, m, n),
            Mat::row_major(&at, k, m).transposed(),
            Mat::row_major(&bt, n, k).transposed(),
            false,
            Parallelism::None,
        );
        for (x, y) in c.iter().zip(&expected) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // Accumulating adds the product once more.
        product(
            MatMut::row_major(&mut c, m, n),
            Mat::row_major(&a, m, k),
            Mat::row_major(&b, k, n),
            true,
            Parallelism::None,
        );
        for (x, y) in c.iter().zip(&expected) {
            assert!((x - 2.0 * y).abs() < 1e-5, "{x} vs {}", 2.0 * y);
        }
    }

    #[test]
    fn transposes_match_the_definition_for_ragged_sizes() {
        for (rows, cols) in [(1, 1), (3, 5), (16, 16), (17, 33), (40, 7), (0, 4)] {
            let a: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            assert_eq!(
                transposed(&a, rows, cols),
                transpose(&a, rows, cols),
                "{rows}×{cols}"
            );
        }
    }

    #[test]
    fn empty_inner_dimension_clears_or_keeps() {
        let mut c = vec![3.0; 4];
        for (accumulate, expected) in [(true, 3.0), (false, 0.0)] {
            product(
                MatMut::row_major(&mut c, 2, 2),
                Mat::row_major(&[], 2, 0),
                Mat::row_major(&[], 0, 2),
                accumulate,
                Parallelism::None,
            );
            assert_eq!(c, vec![expected; 4]);
        }
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn views_outside_the_slice_are_refused() {
        let _ = Mat::row_major(&[1.0; 5], 2, 3);
    }
}
