//! The kernel convolution against the definition, summed in f64 by direct loops.

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
/// Checks every algorithm that computes `s` against the definition.
fn check(s: ConvShape) {
    let algorithms = [
        Algorithm::BatchWinograd,
        Algorithm::Batched,
        Algorithm::Winograd,
        Algorithm::ChannelsLast,
        Algorithm::Depthwise,
        Algorithm::Unfolded,
    ];
    for algorithm in algorithms.into_iter().filter(|a| a.computes(&s)) {
        // Shown with a failure's message.
        eprintln!("{algorithm:?} on {s:?}");
        check_with(algorithm, s);
    }
}

fn check_with(algorithm: Algorithm, s: ConvShape) {
    let forward = |x: &[f32], w: &[f32], b: Option<&[f32]>, s: &ConvShape, relu: bool| {
        forward_with(algorithm, x, w, b, s, relu)
    };
    let backward = |x: &[f32], w: &[f32], dy: &[f32], s: &ConvShape, wanted: Wanted| {
        backward_with(algorithm, x, w, dy, s, wanted)
    };
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

    assert_close(&forward(&x, &wt, Some(&bias), &s, false), &y, "output");
    let relu: Vec<Exact> = y
        .iter()
        .map(|e| Exact {
            value: e.value.max(0.0),
            ..*e
        })
        .collect();
    assert_close(
        &forward(&x, &wt, Some(&bias), &s, true),
        &relu,
        "output after ReLU",
    );
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
fn depthwise_layers_are_computed_directly() {
    let cases = [
        // MobileNetV2's: 3×3, stride 1 and 2, "same" padding.
        conv(3, 6, 6, [9, 8], [3, 3]).padding([(1, 1); 2]).groups(6),
        conv(2, 5, 5, [9, 10], [3, 3])
            .stride([2, 2])
            .padding([(1, 1); 2])
            .groups(5),
        // Odd strides, kernels and paddings, one side only, wider than the kernel reaches.
        conv(2, 3, 3, [11, 7], [5, 2])
            .stride([3, 2])
            .padding([(2, 0), (0, 3)])
            .groups(3),
        conv(1, 4, 4, [3, 3], [2, 2])
            .stride([3, 3])
            .padding([(4, 4), (4, 4)])
            .groups(4),
        // Pointwise per channel.
        conv(2, 4, 4, [5, 5], [1, 1]).groups(4),
    ];
    for case in cases {
        assert!(depthwise::applies(&case.shape()));
        case.check();
    }
    // Maps up to 4×4 go channels last, and up to 8×8 in the backward pass; larger ones
    // plane by plane.
    let map = |side: usize| {
        conv(2, 4, 4, [side, side], [3, 3])
            .padding([(1, 1); 2])
            .groups(4)
            .shape()
    };
    assert_eq!(Algorithm::for_shape(&map(4)), Algorithm::ChannelsLast);
    assert_eq!(Algorithm::for_shape(&map(5)), Algorithm::Depthwise);
    assert_eq!(Algorithm::for_backward(&map(8)), Algorithm::ChannelsLast);
    assert_eq!(Algorithm::for_backward(&map(9)), Algorithm::Depthwise);
    // Two filters per channel, or dilation: the general grouped path.
    assert!(!depthwise::applies(
        &conv(2, 4, 8, [5, 5], [3, 3]).groups(4).shape()
    ));
    let dilated = conv(2, 4, 4, [7, 7], [3, 3]).dilation([2, 1]).groups(4);
    assert!(!depthwise::applies(&dilated.shape()));
}

#[test]
fn small_maps_put_several_samples_in_one_gemm() {
    let cases = [
        // 8×8 maps: four samples a GEMM, the last chunk one sample short.
        conv(7, 6, 10, [8, 8], [3, 3]).padding([(1, 1); 2]),
        // 4×4 maps, stride 2 from 8×8 (a downsampling shortcut), and a pointwise layer.
        conv(5, 8, 4, [8, 8], [1, 1]).stride([2, 2]),
        conv(3, 12, 6, [4, 4], [1, 1]),
    ];
    for case in cases {
        assert_eq!(Algorithm::for_shape(&case.shape()), Algorithm::Batched);
        case.check();
    }
    // Large maps, or one sample, keep to one sample per GEMM.
    let large = conv(2, 8, 8, [18, 18], [3, 3]);
    assert_ne!(Algorithm::for_shape(&large.shape()), Algorithm::Batched);
    let single = conv(1, 8, 8, [6, 6], [3, 3]);
    assert_ne!(Algorithm::for_shape(&single.shape()), Algorithm::Batched);
}

/// One chunk alone unfolds and folds its channels on every thread, several chunks each on
/// their own: both ways, whatever the machine, with channel counts the tasks do not divide.
#[test]
fn small_maps_split_channels_between_threads_when_one_chunk_runs() {
    let cases = [
        conv(5, 11, 6, [4, 4], [3, 3]).padding([(1, 1); 2]),
        conv(9, 13, 4, [6, 6], [3, 3])
            .stride([2, 2])
            .padding([(1, 1); 2]),
        conv(3, 10, 5, [4, 4], [1, 1]),
    ];
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for case in &cases {
            let shape = case.shape();
            assert_eq!(Algorithm::for_shape(&shape), Algorithm::Batched);
            pool.install(|| check(shape));
        }
    }
}

/// Winograd over the whole batch's tiles: every kind of padding (none, both sides, top
/// only, bottom only), odd sizes (tiles cropped), 4×4 maps, a batch cut into passes (64
/// tiles a sample: 4 samples a pass, the last one short), with one thread and with three.
#[test]
fn small_winograd_maps_take_the_whole_batchs_tiles() {
    let cases = [
        conv(5, 9, 8, [8, 8], [3, 3]).padding([(1, 1); 2]),
        conv(7, 8, 10, [10, 8], [3, 3]),
        conv(4, 10, 9, [9, 5], [3, 3]).padding([(1, 0), (0, 1)]),
        conv(3, 8, 8, [8, 6], [3, 3]).padding([(0, 2), (1, 1)]),
        conv(6, 8, 12, [4, 4], [3, 3]).padding([(1, 1); 2]),
        conv(17, 8, 8, [15, 15], [3, 3]).padding([(1, 1); 2]),
    ];
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for case in &cases {
            let shape = case.shape();
            assert_eq!(Algorithm::for_shape(&shape), Algorithm::BatchWinograd);
            pool.install(|| check(shape));
        }
    }
    // The backward pass stays with Winograd from 64 tiles over the batch (16 samples of
    // 4×4 maps); with fewer, it unfolds.
    let many = conv(16, 8, 8, [4, 4], [3, 3]).padding([(1, 1); 2]).shape();
    assert_eq!(Algorithm::for_backward(&many), Algorithm::BatchWinograd);
    let few = conv(8, 8, 8, [4, 4], [3, 3]).padding([(1, 1); 2]).shape();
    assert_eq!(Algorithm::for_backward(&few), Algorithm::Batched);
    // One sample, or a large map, stays with one sample at a time.
    let single = conv(1, 8, 8, [8, 8], [3, 3]).padding([(1, 1); 2]);
    assert_eq!(Algorithm::for_shape(&single.shape()), Algorithm::Winograd);
    let large = conv(2, 8, 8, [18, 18], [3, 3]);
    assert_eq!(Algorithm::for_shape(&large.shape()), Algorithm::Winograd);
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

#[test]
fn three_by_three_layers_go_through_winograd() {
    let cases = [
        // Even output: whole tiles.
        conv(3, 8, 16, [10, 10], [3, 3]),
        // Odd output height and width: the last tiles are cropped.
        conv(2, 9, 8, [9, 8], [3, 3]),
        // `Same` padding, and padding on one side only.
        conv(2, 8, 12, [7, 6], [3, 3]).padding([(1, 1); 2]),
        conv(2, 10, 8, [6, 9], [3, 3]).padding([(2, 0), (0, 1)]),
        // One sample: the GEMMs split instead.
        conv(1, 8, 8, [8, 8], [3, 3]).padding([(1, 1); 2]),
    ];
    for case in cases {
        assert!(winograd::applies(&case.shape()));
        case.check();
    }
}

#[test]
fn winograd_works_block_by_block() {
    // 48 + 48 channels × 16 points × 30 tiles a row: blocks of 5 tile rows (the last one
    // shorter), whose windows overlap at the blocks' edges.
    let case = conv(2, 48, 48, [22, 60], [3, 3]).padding([(1, 1); 2]);
    assert!(winograd::applies(&case.shape()));
    assert_eq!(winograd::block_count(&case.shape()), 3);
    case.check();
}

#[test]
fn plane_sums_keep_f64_precision_over_long_planes() {
    // 50 176 values (a 224×224 plane) around 1e4 with small parts that an f32 running sum
    // would drop: the lanes and the f64 total keep them.
    let plane: Vec<f32> = (0..224 * 224)
        .map(|i| 1.0e4 + (i % 7) as f32 * 0.001)
        .collect();
    let exact: f64 = plane.iter().map(|&v| v as f64).sum();
    let sum = plane_sum(&plane);
    assert!(
        (sum - exact).abs() <= 1e-9 * exact.abs() + 0.5,
        "{sum} vs {exact}"
    );
    // Runs shorter than a group of lanes, and empty planes.
    assert_eq!(plane_sum(&[1.5, 2.5, -1.0]), 3.0);
    assert_eq!(plane_sum(&[]), 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any geometry whose output is non-empty agrees with the definition (rows short
    /// enough for the unfolding's frame and longer ones, which it copies segment by
    /// segment).
    #[test]
    fn any_geometry_matches_the_definition(
        batch in 1usize..4,
        groups in 1usize..3,
        cg in 1usize..3,
        og in 1usize..3,
        h in 1usize..8,
        w in 1usize..20,
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

    /// Any 3×3 geometry Winograd takes (every size of tile cropping, any padding) agrees
    /// with the definition.
    #[test]
    fn any_winograd_geometry_matches_the_definition(
        batch in 1usize..3,
        channels in 8usize..11,
        out_channels in 8usize..11,
        h in 1usize..9,
        w in 1usize..9,
        pads in proptest::array::uniform4(0usize..3),
    ) {
        prop_assume!(h + pads[0] + pads[1] >= 3 && w + pads[2] + pads[3] >= 3);
        let case = conv(batch, channels, out_channels, [h, w], [3, 3])
            .padding([(pads[0], pads[1]), (pads[2], pads[3])]);
        prop_assert!(winograd::applies(&case.shape()));
        case.check();
    }

    /// Any depthwise geometry (kernel, stride, padding on each side) agrees with the
    /// definition.
    #[test]
    fn any_depthwise_geometry_matches_the_definition(
        batch in 1usize..3,
        channels in 2usize..5,
        h in 1usize..9,
        w in 1usize..9,
        kh in 1usize..5,
        kw in 1usize..5,
        sy in 1usize..4,
        sx in 1usize..4,
        pads in proptest::array::uniform4(0usize..3),
    ) {
        prop_assume!(h + pads[0] + pads[1] >= kh && w + pads[2] + pads[3] >= kw);
        let case = conv(batch, channels, channels, [h, w], [kh, kw])
            .stride([sy, sx])
            .padding([(pads[0], pads[1]), (pads[2], pads[3])])
            .groups(channels);
        prop_assert!(depthwise::applies(&case.shape()));
        case.check();
    }
}
