//! Small maps through Winograd: the batch's samples stacked into tall images.
//!
//! Why: at the 8×8 to 15×15 maps of ResNet's third stage at fine-tuning sizes, one sample
//! has 16 to 56 Winograd tiles, too few for the 16 GEMMs per block; the layers went through
//! [`super::batched`]'s im2col GEMM instead, which does 2.25× the multiplications. Stacked
//! one under another, each sample framed by its own zero padding rows, the samples make one
//! image whose Winograd tiles come from every sample at once. Output rows whose window
//! straddles two samples are computed and dropped (2 rows per sample: a fifth of the tiles
//! at 8×8), which costs less than the multiplications saved. The gradients come the same
//! way: the dropped rows get a zero gradient, so they add nothing to the weight's, and the
//! padding rows' input gradient is dropped.
//!
//! The batch is cut into one tall image per thread (when it has enough samples), each image
//! computed on its own core; the last image is topped up with zero samples.

use super::{ConvShape, batched, winograd};

/// Whether the convolution runs here: a layer [`winograd`] computes, on maps small enough
/// for [`batched`] but at least 8 rows high, whose padded height frames each sample.
///
/// Why 8 rows: the two dropped rows per sample are then at most a fifth of the work; at
/// 4×4 (a half) the transforms and the extra rows cost more than Winograd saves (a
/// 512-channel ResNet layer at batch 16 took 6.8 ms here, 5.4 ms in `batched`; at 8×8 with
/// 256 channels 4.2 ms against 4.7 ms).
pub(super) fn applies(shape: &ConvShape) -> bool {
    const MIN_ROWS: usize = 8;
    winograd::applies(shape)
        && batched::applies(shape)
        && shape.output[0] >= MIN_ROWS
        && Stack::of(shape).is_some()
}

/// How the samples are stacked.
#[derive(Clone, Copy, Debug)]
struct Stack {
    /// Rows of one sample's frame: its top padding, its rows, its bottom padding.
    frame: usize,
    /// Samples per tall image.
    per_image: usize,
    /// The tall images' shape (`batch` images).
    tall: ConvShape,
}

impl Stack {
    fn of(shape: &ConvShape) -> Option<Self> {
        // A 3×3 kernel at stride 1 reads `output + 2` padded rows.
        let frame = shape.output[0] + 2;
        if frame < shape.padding[0] {
            return None;
        }
        let images = rayon::current_num_threads().clamp(1, shape.batch);
        let per_image = shape.batch.div_ceil(images);
        let images = shape.batch.div_ceil(per_image);
        let rows = per_image * frame;
        let tall = ConvShape {
            batch: images,
            input: [rows, shape.input[1]],
            output: [rows - 2, shape.output[1]],
            padding: [0, shape.padding[1]],
            ..*shape
        };
        Some(Self {
            frame,
            per_image,
            tall,
        })
    }

    /// Image and first row of sample `b`'s frame.
    fn place(&self, b: usize) -> (usize, usize) {
        (b / self.per_image, (b % self.per_image) * self.frame)
    }

    /// `x` `[batch, c, h, w]` as the tall images `[images, c, rows, w]`, zero around
    /// each sample.
    fn stack(&self, shape: &ConvShape, x: &[f32]) -> Vec<f32> {
        let [h, w] = shape.input;
        let top = shape.padding[0];
        let kept = h.min(self.frame - top);
        let mut tall = vec![0.0f32; self.tall.input_len()];
        for b in 0..shape.batch {
            let (image, row) = self.place(b);
            for c in 0..shape.channels {
                let src = &x[b * shape.sample_input() + c * h * w..][..kept * w];
                let at =
                    image * self.tall.sample_input() + (c * self.tall.input[0] + row + top) * w;
                tall[at..][..kept * w].copy_from_slice(src);
            }
        }
        tall
    }

    /// Where sample `b`'s output plane `k` lies in the tall images' output
    /// `[images, k, rows − 2, wo]`.
    fn output_at(&self, shape: &ConvShape, b: usize, k: usize) -> usize {
        let (image, row) = self.place(b);
        image * self.tall.sample_output() + (k * self.tall.output[0] + row) * shape.output[1]
    }

    /// The tall images' output back to `[batch, k, ho, wo]` (the rows that straddle two
    /// samples left out).
    fn unstack_output(&self, shape: &ConvShape, tall: &[f32]) -> Vec<f32> {
        let plane = shape.output[0] * shape.output[1];
        let mut y = vec![0.0f32; shape.output_len()];
        for (i, out) in y.chunks_mut(plane).enumerate() {
            let (b, k) = (i / shape.out_channels, i % shape.out_channels);
            out.copy_from_slice(&tall[self.output_at(shape, b, k)..][..plane]);
        }
        y
    }

    /// An output gradient `[batch, k, ho, wo]` as the tall images' (zero on the rows that
    /// straddle two samples).
    fn stack_output(&self, shape: &ConvShape, dy: &[f32]) -> Vec<f32> {
        let plane = shape.output[0] * shape.output[1];
        let mut tall = vec![0.0f32; self.tall.output_len()];
        for (i, dy) in dy.chunks(plane).enumerate() {
            let (b, k) = (i / shape.out_channels, i % shape.out_channels);
            tall[self.output_at(shape, b, k)..][..plane].copy_from_slice(dy);
        }
        tall
    }

    /// The input gradient of the tall images back to the samples' rows.
    fn unstack_input(&self, shape: &ConvShape, tall: &[f32]) -> Vec<f32> {
        let [h, w] = shape.input;
        let top = shape.padding[0];
        let kept = h.min(self.frame - top);
        let mut dx = vec![0.0f32; shape.input_len()];
        for b in 0..shape.batch {
            let (image, row) = self.place(b);
            for c in 0..shape.channels {
                let at =
                    image * self.tall.sample_input() + (c * self.tall.input[0] + row + top) * w;
                dx[b * shape.sample_input() + c * h * w..][..kept * w]
                    .copy_from_slice(&tall[at..][..kept * w]);
            }
        }
        dx
    }
}

fn stack_for(shape: &ConvShape) -> Stack {
    Stack::of(shape).expect("`applies` checked that the samples can be stacked")
}

/// `[batch, out, h_out, w_out]`, bias added and ReLU applied when asked.
pub(super) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: &ConvShape,
    relu: bool,
) -> Vec<f32> {
    let stack = stack_for(shape);
    let tall_x = stack.stack(shape, x);
    let tall_y = winograd::forward(&tall_x, weight, bias, &stack.tall, relu);
    stack.unstack_output(shape, &tall_y)
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
    let stack = stack_for(shape);
    let tall_x = stack.stack(shape, x);
    let tall_dy = stack.stack_output(shape, dy);
    let (dx, dw) = winograd::backward(
        &tall_x,
        weight,
        &tall_dy,
        &stack.tall,
        want_input,
        want_weight,
    );
    (dx.map(|dx| stack.unstack_input(shape, &dx)), dw)
}
