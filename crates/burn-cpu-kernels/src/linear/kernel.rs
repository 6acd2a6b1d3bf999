//! The linear layer's arithmetic on host memory: `y = x·W + b` (then ReLU, when fused) and
//! its gradients, each product one strided GEMM; only `Wᵀ` for the input gradient is copied
//! out first, the one operand `gemm` is slow to read in place.

use crate::cpu::gemm::{Mat, MatMut, parallelism_for, product, transposed};
use crate::cpu::layer::{LayerGradients, Wanted};
use crate::cpu::relu::relu_in_place;
use gemm::Parallelism;
use rayon::prelude::*;

/// Elements per parallel task in the element-wise passes (bias, ReLU, bias gradient). A
/// smaller matrix is one task, done on the calling thread: handing a pass of a few hundred
/// kilobytes to rayon's pool costs a wake-up and a wait longer than the pass itself.
const TASK_ELEMENTS: usize = 64 * 1024;

/// Whole rows per parallel task for rows `columns` wide.
fn rows_per_task(columns: usize) -> usize {
    (TASK_ELEMENTS / columns.max(1)).max(1)
}

/// `x [rows × inputs] · W [inputs × outputs]`: the sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LinearShape {
    /// Samples (rows of `x`).
    pub rows: usize,
    /// Input features (`W`'s rows, as burn stores it: `[d_input, d_output]`).
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

impl LinearShape {
    fn parallelism(&self) -> Parallelism {
        parallelism_for(
            self.rows
                .saturating_mul(self.inputs)
                .saturating_mul(self.outputs),
        )
    }
}

/// `x·W + b`, then ReLU when `relu`, as `[rows × outputs]` row-major. The bias is added
/// after the product, in the order burn adds it, so that the results round alike.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &LinearShape,
    relu: bool,
) -> Vec<f32> {
    let LinearShape {
        rows,
        inputs,
        outputs,
    } = *shape;
    let mut y = vec![0.0; rows * outputs];
    product(
        MatMut::row_major(&mut y, rows, outputs),
        Mat::row_major(x, rows, inputs),
        Mat::row_major(weight, inputs, outputs),
        false,
        shape.parallelism(),
    );
    if bias.is_some() || relu {
        // Bias and ReLU in one pass over each block of rows.
        y.par_chunks_mut(rows_per_task(outputs) * outputs.max(1))
            .for_each(|block| {
                if let Some(bias) = bias {
                    for row in block.chunks_mut(outputs) {
                        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                    }
                }
                if relu {
                    relu_in_place(block);
                }
            });
    }
    y
}

/// The gradients of `x·W + b` from the output gradient `dy` (already through ReLU's mask):
/// `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ_rows dy`, each only when wanted.
pub(super) fn backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: &LinearShape,
    wanted: Wanted,
) -> LayerGradients {
    let LinearShape {
        rows,
        inputs,
        outputs,
    } = *shape;
    let dy_mat = Mat::row_major(dy, rows, outputs);
    let input = wanted.input.then(|| {
        let mut dx = vec![0.0; rows * inputs];
        // `dy·Wᵀ` with `Wᵀ` copied out first (see `transposed`: gemm's best case).
        let weight_t = transposed(weight, inputs, outputs);
        product(
            MatMut::row_major(&mut dx, rows, inputs),
            dy_mat,
            Mat::row_major(&weight_t, outputs, inputs),
            false,
            shape.parallelism(),
        );
        dx
    });
    let weight = wanted.weight.then(|| {
        let mut dw = vec![0.0; inputs * outputs];
        product(
            MatMut::row_major(&mut dw, inputs, outputs),
            Mat::row_major(x, rows, inputs).transposed(),
            dy_mat,
            false,
            shape.parallelism(),
        );
        dw
    });
    let bias = wanted.bias.then(|| column_sums(dy, outputs));
    LayerGradients {
        input,
        weight,
        bias,
    }
}

/// The sum of each column of a row-major matrix `columns` wide, accumulated in `f64` (a
/// large batch of `f32` terms would otherwise lose digits), blocks of rows in parallel.
fn column_sums(values: &[f32], columns: usize) -> Vec<f32> {
    if columns == 0 {
        return Vec::new();
    }
    let block_sums = |block: &[f32]| {
        let mut sums = vec![0f64; columns];
        for row in block.chunks(columns) {
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
        }
        sums
    };
    // Collected in order and added in order: the same sum whichever thread took a block.
    values
        .par_chunks(rows_per_task(columns) * columns)
        .map(block_sums)
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0; columns], |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .into_iter()
        .map(|s| s as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * seed).sin()).collect()
    }

    /// `y[r][o] = Σ_i x[r][i]·W[i][o] + b[o]`, written out.
    fn by_definition(x: &[f32], w: &[f32], b: &[f32], s: &LinearShape) -> Vec<f32> {
        let mut y = vec![0.0; s.rows * s.outputs];
        for r in 0..s.rows {
            for o in 0..s.outputs {
                let dot: f64 = (0..s.inputs)
                    .map(|i| x[r * s.inputs + i] as f64 * w[i * s.outputs + o] as f64)
                    .sum();
                y[r * s.outputs + o] = (dot + b[o] as f64) as f32;
            }
        }
        y
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// Large enough for the parallel product and several row blocks, odd sizes throughout.
    const SHAPE: LinearShape = LinearShape {
        rows: 97,
        inputs: 203,
        outputs: 389,
    };

    #[test]
    fn forward_is_the_definition_with_and_without_relu() {
        let s = SHAPE;
        assert!(matches!(s.parallelism(), Parallelism::Rayon(_)));
        let (x, w, b) = (
            values(s.rows * s.inputs, 0.37),
            values(s.inputs * s.outputs, 0.11),
            values(s.outputs, 0.7),
        );
        let expected = by_definition(&x, &w, &b, &s);
        close(&forward(&x, &w, Some(&b), &s, false), &expected);
        let relu: Vec<f32> = expected.iter().map(|v| v.max(0.0)).collect();
        close(&forward(&x, &w, Some(&b), &s, true), &relu);
        let zero = vec![0.0; s.outputs];
        close(
            &forward(&x, &w, None, &s, false),
            &by_definition(&x, &w, &zero, &s),
        );
    }

    #[test]
    fn gradients_are_the_transposed_products_and_only_the_wanted_ones() {
        let s = LinearShape {
            rows: 5,
            inputs: 3,
            outputs: 4,
        };
        let (x, w, dy) = (values(15, 0.37), values(12, 0.11), values(20, 0.5));
        let found = backward(
            &x,
            &w,
            &dy,
            &s,
            Wanted {
                input: true,
                weight: true,
                bias: true,
            },
        );
        let dx: Vec<f32> = (0..5 * 3)
            .map(|k| {
                (0..4)
                    .map(|o| dy[(k / 3) * 4 + o] * w[(k % 3) * 4 + o])
                    .sum()
            })
            .collect();
        let dw: Vec<f32> = (0..3 * 4)
            .map(|k| (0..5).map(|r| x[r * 3 + k / 4] * dy[r * 4 + k % 4]).sum())
            .collect();
        let db: Vec<f32> = (0..4)
            .map(|o| (0..5).map(|r| dy[r * 4 + o]).sum())
            .collect();
        close(&found.input.unwrap(), &dx);
        close(&found.weight.unwrap(), &dw);
        close(&found.bias.unwrap(), &db);
        let only_bias = backward(
            &x,
            &w,
            &dy,
            &s,
            Wanted {
                input: false,
                weight: false,
                bias: true,
            },
        );
        assert!(only_bias.input.is_none() && only_bias.weight.is_none());
        assert!(only_bias.bias.is_some());
    }

    #[test]
    fn column_sums_cover_every_row_block() {
        let columns = 7;
        let rows = rows_per_task(columns) * 3 + 5;
        let v = values(rows * columns, 0.21);
        let expected: Vec<f32> = (0..columns)
            .map(|c| (0..rows).map(|r| v[r * columns + c] as f64).sum::<f64>() as f32)
            .collect();
        close(&column_sums(&v, columns), &expected);
        assert!(column_sums(&[], 0).is_empty());
    }
}
