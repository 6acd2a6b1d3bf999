//! A plane inside a zero border: where a kernel's reads past the image edge land on zeros
//! instead of being tested for, shared by batch Winograd's tile windows and the unfolding
//! of short rows.

/// A `rows × cols` frame holding an image at `(top, left)`, zero around it.
#[derive(Clone, Copy)]
pub(super) struct Frame {
    pub rows: usize,
    pub cols: usize,
    pub top: usize,
    pub left: usize,
}

impl Frame {
    /// Floats of the frame.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// The image's rows and columns that lie inside the frame (the others are read by no
    /// window: their gradient is zero).
    fn inside(&self, [h, w]: [usize; 2]) -> (usize, usize) {
        (
            h.min(self.rows.saturating_sub(self.top)),
            w.min(self.cols.saturating_sub(self.left)),
        )
    }

    /// `plane` (`h × w`) copied into the image part of `framed`. The border is left as it
    /// is: a buffer zeroed once keeps it zero through any number of planes.
    pub fn fill(&self, plane: &[f32], [h, w]: [usize; 2], framed: &mut [f32]) {
        let (rows, cols) = self.inside([h, w]);
        for y in 0..rows {
            framed[(y + self.top) * self.cols + self.left..][..cols]
                .copy_from_slice(&plane[y * w..][..cols]);
        }
    }

    /// `plane` (`h × w`) += the image part of `framed`.
    pub fn add_into(&self, framed: &[f32], [h, w]: [usize; 2], plane: &mut [f32]) {
        let (rows, cols) = self.inside([h, w]);
        for y in 0..rows {
            let src = &framed[(y + self.top) * self.cols + self.left..][..cols];
            for (d, s) in plane[y * w..][..cols].iter_mut().zip(src) {
                *d += s;
            }
        }
    }
}
