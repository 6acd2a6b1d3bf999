//! Keeping freed memory in the process for the next training step (glibc's `malloc`).
//!
//! Why: a training step on the CPU backends allocates and frees the same tensors, megabytes
//! each, every step. glibc's `malloc` serves blocks that large with `mmap` or trims them
//! off the heap when they are freed, so the next step gets fresh pages and pays a page fault
//! for every 4 KiB it writes: thousands of page faults per step for an MLP of a few million
//! weights. Kept in the process, the blocks are reused; results do not change. What it is
//! worth is measured in the repository's BENCHMARKS.md, not here.
//!
//! This is a setting of the whole process, so the crate never makes it by itself: a program
//! that trains on the CPU calls [`reuse_freed_memory`] once at start, or sets the same thing
//! from outside with `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647`.
//! Other allocators (musl, macOS, Windows, a custom `#[global_allocator]`) are left alone.

/// Largest block `malloc` takes from its heap instead of `mmap`: glibc's own maximum for this
/// setting (32 MiB on 64-bit targets); larger requests are rare in a step and still mapped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free memory at the top of the heap that `malloc` keeps instead of returning it: the
/// largest value the setting takes (an `int`, 2 GiB), more than a step's transient tensors.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = i32::MAX;

/// Makes glibc's `malloc` keep freed memory for reuse: blocks up to 32 MiB come from its heap
/// (not `mmap`), and up to 2 GiB of free memory stays on the heap. Returns whether the setting
/// took (`false` on targets without glibc, where nothing is changed).
///
/// The memory the process holds stays at its peak (a training step's working set), which
/// is what a training process needs anyway. Call it once, before training.
///
/// ```
/// // At the top of `main` of a program that trains on ndarray or Flex.
/// let kept = burn_cpu_kernels::allocator::reuse_freed_memory();
/// # let _ = kept;
/// ```
pub fn reuse_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes malloc's parameters, under malloc's own lock; both
        // values are in the ranges glibc documents (it returns 0 for one it rejects).
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults taken by this thread so far.
    fn page_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `getrusage` fills the struct it is given.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: filled by the successful call above.
        unsafe { usage.assume_init() }.ru_minflt
    }

    /// Faults taken while allocating and filling a 16 MiB buffer.
    fn faults_for_a_fresh_buffer() -> i64 {
        let before = page_faults();
        let buffer = std::hint::black_box(vec![1.0f32; 4 << 20]);
        let after = page_faults();
        drop(buffer);
        after - before
    }

    #[test]
    fn freed_blocks_come_back_without_page_faults() {
        assert!(reuse_freed_memory());
        // The first buffer may need new pages; the same size again must reuse them (4,096
        // pages would fault if the block had been returned to the system).
        faults_for_a_fresh_buffer();
        let again = faults_for_a_fresh_buffer();
        assert!(again < 64, "{again} page faults for a reused 16 MiB block");
    }
}
