//! Letting the thread that trains compute too, as one of the threads of rayon's pool, and
//! keeping the pool's other threads awake while training runs.
//!
//! Why: burn's CPU backends, the `gemm` crate and this crate's kernels split their work
//! on rayon's global pool, which by default has one thread per core *besides* the thread
//! that runs the training loop. Each parallel operation is then handed from that thread to
//! the pool, which it waits for asleep, and between operations the pool's threads spin on
//! the cores the training thread needs for the serial work (the loss, autodiff's
//! bookkeeping, the optimizer). With the training thread made one of the pool's threads, it
//! takes its share of each operation itself and nothing is handed over; results do not
//! change. (What it is worth is measured in the repository's BENCHMARKS.md.)
//!
//! The pool's other threads still fall asleep after about 20 µs without work (rayon's
//! rule), and the serial work between two products of a training step is longer than that:
//! each product then began by waking a thread, tens of microseconds on a virtual machine.
//! So once the training thread has joined the pool, every kernel of this crate (layers,
//! loss, optimizer) also keeps the other threads spinning, ready to take their share, until
//! they have found no work for [`SPIN_WITHOUT_WORK`]: what OpenMP does for PyTorch (it spins
//! for a while before sleeping). The cores are the pool's anyway; no thread spins once
//! training stops.
//!
//! rayon's global pool is built once per process, so the crate never does this by itself:
//! a program calls [`join_compute_pool`] once at the start of `main`, from the thread that
//! will train, before anything runs in parallel.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a kept-awake thread spins without finding work before it goes back to rayon's
/// own rule (sleep), unless [`set_spin_without_work`] says otherwise. Longer than the serial
/// stretches of a training step (the loss, the optimizer, autodiff's bookkeeping: tens to
/// hundreds of microseconds), short enough that nothing spins noticeably once training
/// stops.
pub const SPIN_WITHOUT_WORK: Duration = Duration::from_millis(1);

/// The spin time in nanoseconds ([`set_spin_without_work`]).
static SPIN_NANOS: AtomicU64 = AtomicU64::new(SPIN_WITHOUT_WORK.as_nanos() as u64);

thread_local! {
    /// Whether this thread joined rayon's pool through [`join_compute_pool`].
    static TRAINING_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The kept-awake threads: spinning, or asked to and not yet started.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

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
/// let joined = burn_cpu_kernels::threads::join_compute_pool();
/// # let _ = joined;
/// ```
pub fn join_compute_pool() -> bool {
    // rayon's own rule for the default size; asking rayon would build the pool.
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let joined = threads > 1
        && rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build_global()
            .is_ok();
    if joined {
        TRAINING_THREAD.with(|t| t.set(true));
    }
    joined
}

/// Sets how long the threads that [`keep_pool_awake`] keeps spinning go on without finding
/// work (default [`SPIN_WITHOUT_WORK`]); threads spinning now follow the new time. Zero
/// turns the spinning off: on a machine whose cores other programs need more than training
/// does, say (what `OMP_WAIT_POLICY=passive` is to OpenMP).
pub fn set_spin_without_work(time: Duration) {
    let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
    SPIN_NANOS.store(nanos, Ordering::Relaxed);
}

fn spin_without_work() -> Duration {
    Duration::from_nanos(SPIN_NANOS.load(Ordering::Relaxed))
}

/// Keeps rayon's other threads spinning, ready for the next parallel operation, until they
/// have found no work for [`SPIN_WITHOUT_WORK`] (or [`set_spin_without_work`]'s time). Does
/// nothing unless called from the thread that [`join_compute_pool`] made one of the pool's
/// (anywhere else, a spinning thread would take a core from the thread that trains), while
/// they already spin, or when the spin time is zero.
///
/// This crate's kernels call it; call it once per step in a training loop of your
/// own whose operations are burn's alone. Returns how many threads were asked to spin.
pub fn keep_pool_awake() -> usize {
    if !TRAINING_THREAD.with(Cell::get)
        || SPINNING.load(Ordering::Relaxed) > 0
        || spin_without_work().is_zero()
    {
        return 0;
    }
    let others = rayon::current_num_threads().saturating_sub(1);
    SPINNING.fetch_add(others, Ordering::Relaxed);
    // Every thread of the pool receives the closure; the training thread's copy returns at
    // once (it runs when the training thread next waits for work, never to spin there).
    rayon::spawn_broadcast(|_| {
        if TRAINING_THREAD.with(Cell::get) {
            return;
        }
        spin_while_work_comes();
        SPINNING.fetch_sub(1, Ordering::Relaxed);
    });
    others
}

/// How many of rayon's threads [`keep_pool_awake`] keeps spinning now (or has asked to).
pub fn spinning_threads() -> usize {
    SPINNING.load(Ordering::Relaxed)
}

/// Runs the pool's pending jobs as they come, and returns after the spin time without any.
///
/// A thread that receives this while it waits inside another job (rayon runs other jobs in
/// any wait) resumes that job only when this returns. The request is made only when no
/// thread spins, that is after the spin time without work, when the pool's threads are idle
/// rather than inside jobs; and were one inside a job, the training thread would be waiting
/// for it, so no new work would come and this would return after the spin time.
fn spin_while_work_comes() {
    let mut last_work = Instant::now();
    loop {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => last_work = Instant::now(),
            _ => {
                if last_work.elapsed() >= spin_without_work() {
                    return;
                }
                std::hint::spin_loop();
            }
        }
    }
}
