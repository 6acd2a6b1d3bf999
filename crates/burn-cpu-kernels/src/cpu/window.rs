//! Where a window reads: the output positions whose input index falls inside the input,
//! shared by the convolution's unfolding and the pooling.

/// The output positions `o` in `0..out_len` whose input index `o·stride + offset` lies in
/// `0..in_len`: a contiguous range.
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
}
