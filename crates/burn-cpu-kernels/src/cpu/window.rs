//! Where a window reads: the output positions whose input index falls inside the input,
//! shared by the convolution's unfolding and the pooling; and the strided copies a stride
//! makes of a row.

/// The output positions `o` in `0..out_len` whose input index `o·stride + offset` lies in
/// `0..in_len`: a contiguous range.
#[inline(always)]
pub(crate) fn inside(
    out_len: usize,
    stride: usize,
    offset: isize,
    in_len: usize,
) -> std::ops::Range<usize> {
    let stride = stride as isize;
    // First o with o·stride + offset ≥ 0.
    let first = if offset >= 0 {
        0
    } else {
        (-offset + stride - 1) / stride
    };
    // First o with o·stride + offset ≥ in_len.
    let past = in_len as isize - offset;
    let end = if past <= 0 {
        0
    } else {
        (past + stride - 1) / stride
    };
    let (first, end) = (first as usize, (end as usize).min(out_len));
    first.min(end)..end
}

/// `dst[k] = src[k·step]` for every `k` of `dst`. Stride 2 (MobileNet's and ResNet's
/// downsampling layers) is written as a walk over pairs, which compiles to vector shuffles
/// where the general strided iterator reads one element at a time.
#[inline(always)]
pub(crate) fn gather(dst: &mut [f32], src: &[f32], step: usize) {
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    match step {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            // The last value's partner may lie past the end of the row.
            let (body, tail) = dst.split_at_mut(last);
            for (d, pair) in body.iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            tail[0] = src[2 * last];
        }
        _ => dst
            .iter_mut()
            .zip(src.iter().step_by(step))
            .for_each(|(d, &v)| *d = v),
    }
}

/// The adjoint of [`gather`]: `dst[k·step] += src[k]` for every `k` of `src`.
#[inline(always)]
pub(crate) fn scatter_add(dst: &mut [f32], src: &[f32], step: usize) {
    let Some(last) = src.len().checked_sub(1) else {
        return;
    };
    match step {
        1 => dst[..src.len()]
            .iter_mut()
            .zip(src)
            .for_each(|(d, &v)| *d += v),
        2 => {
            for (pair, &v) in dst.chunks_exact_mut(2).zip(&src[..last]) {
                pair[0] += v;
            }
            dst[2 * last] += src[last];
        }
        _ => dst
            .iter_mut()
            .step_by(step)
            .zip(src)
            .for_each(|(d, &v)| *d += v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_finds_the_positions_that_read_the_image() {
        // Padding 1 before, stride 1: position 0 reads index -1.
        assert_eq!(inside(5, 1, -1, 5), 1..5);
        // Stride 2, offset -1: indices -1, 1, 3, 5 → positions 1 and 2 read 1 and 3.
        assert_eq!(inside(4, 2, -1, 5), 1..3);
        // Offset past the end: nothing.
        assert_eq!(inside(3, 1, 7, 5), 0..0);
        // Every position out of range on the left.
        assert!(inside(2, 1, -5, 3).is_empty());
    }

    #[test]
    fn strided_copies_read_and_add_every_step_th_value() {
        let src: Vec<f32> = (0..9).map(|v| v as f32).collect();
        for step in 1..4 {
            // Every length that fits, the last value at the row's very end included.
            for n in 0..=(src.len() - 1) / step + 1 {
                let mut dst = vec![-1.0; n];
                gather(&mut dst, &src, step);
                let expected: Vec<f32> = src.iter().step_by(step).take(n).copied().collect();
                assert_eq!(dst, expected, "step {step}, {n} values");
                let mut back = vec![1.0; src.len()];
                scatter_add(&mut back, &dst, step);
                for (i, &v) in back.iter().enumerate() {
                    let read = i % step == 0 && i / step < n;
                    assert_eq!(v, if read { 1.0 + i as f32 } else { 1.0 }, "step {step}");
                }
            }
        }
    }
}
