//! Letting the thread that trains compute too, as one of the threads of rayon's pool.
//!
//! Why: burn's CPU backends, the `gemm` crate and this crate's host layers split their work
//! on rayon's global pool, which by default has one thread per core *besides* the thread
//! that runs the training loop. Each parallel operation is then handed from that thread to
//! the pool, which it waits for asleep, and between operations the pool's threads spin on
//! the cores the training thread needs for the serial work (the loss, autodiff's
//! bookkeeping, the optimizer). With the training thread made one of the pool's threads, it
//! takes its share of each operation itself and nothing is handed over. Measured on 2 cores:
//! cached-teacher distillation of a small student +18% steps/s, full fine-tuning of a
//! 784→1024³ MLP +6% (README, Benchmarks); results do not change.
//!
//! rayon's global pool is built once per process, so the crate never does this by itself:
//! a program calls [`join_compute_pool`] once at the start of `main`, from the thread that
//! will train, before anything runs in parallel.

/// Builds rayon's global pool with the calling thread as one of its threads (index 0) and
/// one more thread per remaining core (`RAYON_NUM_THREADS` is respected). Returns whether
/// it did: `false` when the pool already exists (something ran in parallel before, or this
/// was called twice) or when there is a single thread, where a pool made only of the
/// calling thread would never run jobs that other code hands to it. Nothing changes then.
///
/// The calling thread should be the one that trains and should live as long as the
/// program (the main thread): it computes for the pool whenever it waits for parallel work.
///
/// ```no_run
/// // First thing in `main` of a program that trains on ndarray or Flex.
/// let joined = burn_transfer::threads::join_compute_pool();
/// # let _ = joined;
/// ```
pub fn join_compute_pool() -> bool {
    // rayon's own rule for the default size; asking rayon would build the pool.
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    threads > 1
        && rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build_global()
            .is_ok()
}
