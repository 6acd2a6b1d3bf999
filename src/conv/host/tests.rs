//! The host convolution against the definition, summed in f64 by direct loops.

use super::*;
use proptest::prelude::*;

/// For every (sample, out channel, output position, in channel of the group, tap) with an
/// input pixel inside the image: `f(x index, weight index, y index)`.
fn for_each_term(s: &ConvShape, mut f: impl FnMut(usize, usize, usize)) {
    let (cg, og) = (s.group_channels(), s.group_out_channels());
    let [h, w] = s.input;
    let [ho, wo] = s.output;
    let [kh, kw] = s.kernel;
    for b in 0..s.batch {
        for o in 0..s.out_channels {
            let g = o / og;
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((b * s.out_channels + o) * ho + oy) * wo + ox;
                    for ci in 0..cg {
                        let c = g * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s.stride[0] + ky * s.dilation[0]) as isize
                                    - s.padding[0] as isize;
                                let ix = (ox * s.stride[1] + kx * s.dilation[1]) as isize
                                    - s.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xi = ((b * s.channels + c) * h + iy as usize) * w + ix as usize;
                                let wi = ((o * cg + ci) * kh + ky) * kw + kx;
                                f(xi, wi, yi);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.618).sin()).collect()
}

/// A sum computed exactly (f64) and the sum of its terms' magnitudes, which bounds the
/// rounding error an f32 computation may make.
#[derive(Clone, Copy, Default)]
struct Exact {
    value: f64,
    magnitude: f64,
}

impl Exact {
    fn add(&mut self, term: f64) {
        self.value += term;
        self.magnitude += term.abs();
    }
}

fn assert_close(ours: &[f32], reference: &[Exact], what: &str) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        // f32 sums of many terms drift with their magnitude; a wrong term does not hide in
        // that (it is of the terms' own size).
        let tol = 1e-4 * (1.0 + b.value.abs()) + 1e-6 * b.magnitude;
        assert!(
            (*a as f64 - b.value).abs() <= tol,
            "{what}[{i}]: {a} vs {}",
            b.value
        );
    }
}

/// Forward and every gradient against the definition.
fn check(s: ConvShape) {
    let x = values(s.input_len(), 0.3);
    let wt = values(s.weight_len(), 1.7);
    let bias = values(s.out_channels, 2.9);
    let dy = values(s.output_len(), 4.1);

    let mut y = vec![Exact::default(); s.output_len()];
    let mut dx = vec![Exact::default(); s.input_len()];
    let mut dw = vec![Exact::default(); s.weight_len()];
    let mut db = vec![Exact::default(); s.out_channels];
    for_each_term(&s, |xi, wi, yi| {
        y[yi].add(x[xi] as f64 * wt[wi] as f64);
        dx[xi].add(wt[wi] as f64 * dy[yi] as f64);
        dw[wi].add(x[xi] as f64 * dy[yi] as f64);
    });
    let positions = s.positions();
    for (i, v) in y.iter_mut().enumerate() {
        let o = (i / positions) % s.out_channels;
        v.add(bias[o] as f64);
        db[o].add(dy[i] as f64);
    }

    assert_close(&forward(&x, &wt, Some(&bias), &s), &y, "output");
    let all = Wanted {
        input: true,
        weight: true,
        bias: true,
    };
    let grads = backward(&x, &wt, &dy, &s, all);
    assert_close(grads.input.as_deref().unwrap(), &dx, "input gradient");
    assert_close(grads.weight.as_deref().unwrap(), &dw, "weight gradient");
    assert_close(grads.bias.as_deref().unwrap(), &db, "bias gradient");
    // Asking for fewer gradients gives the same ones and skips the rest.
    let weight_only = backward(
        &x,
        &wt,
        &dy,
        &s,
        Wanted {
            input: false,
            weight: true,
            bias: false,
        },
    );
    assert!(weight_only.input.is_none() && weight_only.bias.is_none());
    assert_close(
        weight_only.weight.as_deref().unwrap(),
        &dw,
        "weight gradient alone",
    );
    let input_only = backward(
        &x,
        &wt,
        &dy,
        &s,
        Wanted {
            input: true,
            weight: false,
            bias: false,
        },
    );
    assert!(input_only.weight.is_none());
    assert_close(
        input_only.input.as_deref().unwrap(),
        &dx,
        "input gradient alone",
    );
}

/// A convolution to check: dense, unit stride, no padding, unless told otherwise.
struct Case {
    batch: usize,
    channels: usize,
    out_channels: usize,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [(usize, usize); 2],
    dilation: [usize; 2],
    groups: usize,
}

fn conv(
    batch: usize,
    channels: usize,
    out_channels: usize,
    input: [usize; 2],
    kernel: [usize; 2],
) -> Case {
    Case {
        batch,
        channels,
        out_channels,
        input,
        kernel,
        stride: [1, 1],
        padding: [(0, 0); 2],
        dilation: [1, 1],
        groups: 1,
    }
}

impl Case {
    fn stride(self, stride: [usize; 2]) -> Self {
        Self { stride, ..self }
    }

    /// `[(top, bottom), (left, right)]`.
    fn padding(self, padding: [(usize, usize); 2]) -> Self {
        Self { padding, ..self }
    }

    fn dilation(self, dilation: [usize; 2]) -> Self {
        Self { dilation, ..self }
    }

    fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    fn shape(&self) -> ConvShape {
        let output = [0, 1].map(|a| {
            let padded = self.input[a] + self.padding[a].0 + self.padding[a].1;
            (padded - self.dilation[a] * (self.kernel[a] - 1) - 1) / self.stride[a] + 1
        });
        ConvShape {
            batch: self.batch,
            channels: self.channels,
            input: self.input,
            out_channels: self.out_channels,
            kernel: self.kernel,
            output,
            stride: self.stride,
            padding: [self.padding[0].0, self.padding[1].0],
            dilation: self.dilation,
            groups: self.groups,
        }
    }

    fn check(self) {
        check(self.shape());
    }
}

#[test]
fn plain_3x3() {
    conv(4, 3, 8, [9, 7], [3, 3]).check();
}

#[test]
fn padding_stride_dilation_asymmetric() {
    conv(3, 4, 6, [11, 10], [3, 3])
        .stride([2, 1])
        .padding([(1, 0), (2, 1)])
        .dilation([1, 2])
        .check();
    conv(2, 3, 5, [8, 6], [5, 3])
        .padding([(2, 2), (1, 1)])
        .check();
    // Padding wider than the kernel reaches: whole rows and columns of zeros.
    conv(2, 2, 3, [3, 3], [2, 2])
        .stride([3, 3])
        .padding([(4, 4), (4, 4)])
        .check();
}

#[test]
fn pointwise_and_strided_pointwise() {
    conv(3, 6, 4, [5, 5], [1, 1]).check();
    conv(3, 6, 4, [7, 7], [1, 1]).stride([2, 2]).check();
    // Padding only after the image: not the input itself any more.
    conv(2, 3, 2, [3, 4], [1, 1])
        .padding([(0, 2), (0, 1)])
        .check();
}

#[test]
fn groups_and_depthwise() {
    conv(2, 4, 6, [6, 6], [3, 3]).groups(2).check();
    conv(3, 5, 5, [9, 9], [3, 3])
        .stride([2, 2])
        .padding([(1, 1); 2])
        .groups(5)
        .check();
    conv(2, 4, 4, [5, 5], [1, 1]).groups(4).check();
}

#[test]
fn wide_layers_are_unfolded_block_by_block() {
    // 32 channels × 3×3 taps × 240 output columns exceed one block: one output row per
    // block, with padding rows at both ends of the image.
    let case = conv(2, 32, 3, [6, 242], [3, 3]).padding([(1, 1), (0, 0)]);
    assert_eq!(block_rows(&case.shape()), 1);
    case.check();
    // The same for a pointwise kernel, whose blocks are views of the input.
    let case = conv(1, 300, 2, [3, 256], [1, 1]);
    assert_eq!(block_rows(&case.shape()), 1);
    case.check();
}

#[test]
fn a_single_sample_splits_inside_the_gemm() {
    conv(1, 3, 4, [8, 8], [3, 3]).padding([(1, 1); 2]).check();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any geometry whose output is non-empty agrees with the definition.
    #[test]
    fn any_geometry_matches_the_definition(
        batch in 1usize..4,
        groups in 1usize..3,
        cg in 1usize..3,
        og in 1usize..3,
        h in 1usize..8,
        w in 1usize..8,
        kh in 1usize..4,
        kw in 1usize..4,
        sy in 1usize..3,
        sx in 1usize..3,
        pads in proptest::array::uniform4(0usize..3),
        dy in 1usize..3,
        dx in 1usize..3,
    ) {
        let (ph, pw) = (pads[0] + pads[1], pads[2] + pads[3]);
        prop_assume!(h + ph > dy * (kh - 1) && w + pw > dx * (kw - 1));
        conv(batch, groups * cg, groups * og, [h, w], [kh, kw])
            .stride([sy, sx])
            .padding([(pads[0], pads[1]), (pads[2], pads[3])])
            .dilation([dy, dx])
            .groups(groups)
            .check();
    }
}
