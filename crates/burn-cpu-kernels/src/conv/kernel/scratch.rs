//! Per-thread scratch memory for the unfolded matrices, kept between calls: a fresh
//! buffer per sample and step would be zeroed and page-faulted in every time.

use std::cell::RefCell;

thread_local! {
    static BUFFER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static TASK_BUFFER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's scratch memory. The contents are whatever the
/// last user left: `f` must write before it reads.
pub(super) fn with<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&BUFFER, len, f)
}

/// [`with`] for the parallel tasks of a call that holds its own scratch: a second buffer,
/// so that the task the calling thread runs itself does not allocate one.
pub(super) fn with_task<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_buffer(&TASK_BUFFER, len, f)
}

fn with_buffer<R>(
    buffer: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    buffer.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        // Re-entered on this thread (a rayon job run while this one waits inside a parallel
        // GEMM): a buffer of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reentry_gets_its_own_buffer() {
        with(4, |outer| {
            outer.fill(1.0);
            with(3, |inner| inner.fill(2.0));
            assert_eq!(outer, &[1.0; 4]);
        });
        // The kept buffer grows to the largest request.
        with(8, |b| assert_eq!(b.len(), 8));
        // A task inside a call has a buffer of its own.
        with(2, |call| {
            call.fill(3.0);
            with_task(2, |task| task.fill(4.0));
            assert_eq!(call, &[3.0; 2]);
        });
    }
}
