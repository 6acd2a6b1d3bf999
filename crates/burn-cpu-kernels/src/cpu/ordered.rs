//! Parallel sums whose grouping depends on the number of threads only.
//!
//! rayon's `fold` + `reduce` group the items by how work happened to be stolen, and a
//! float sum depends on its grouping, so the same seeded training gave different weights
//! from run to run. Here each thread folds one fixed, contiguous run of items, and the
//! runs' partials are added in order.

use rayon::prelude::*;

const RUNS_PER_THREAD: usize = 4;

/// Folds `items` into one partial per contiguous run (four runs per thread of the pool, so
/// that a thread slowed by other work leaves its runs to the others; at most one run per
/// item) in parallel, then adds the partials in order: `add(add(run₀, run₁), run₂)…`. No
/// items give `new_partial()`.
pub(crate) fn fold_in_runs<T: Send, P: Send>(
    items: Vec<T>,
    new_partial: impl Fn() -> P + Sync,
    step: impl Fn(P, T) -> P + Sync,
    add: impl Fn(P, P) -> P,
) -> P {
    let runs = (RUNS_PER_THREAD * rayon::current_num_threads()).clamp(1, items.len().max(1));
    let per_run = items.len().div_ceil(runs).max(1);
    let mut grouped: Vec<Vec<T>> = Vec::with_capacity(runs);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        grouped.push(items.by_ref().take(per_run).collect());
    }
    let partials: Vec<P> = grouped
        .into_par_iter()
        .map(|run| run.into_iter().fold(new_partial(), &step))
        .collect();
    partials.into_iter().reduce(add).unwrap_or_else(new_partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grouping written out: `[a b c]` for a run folded from `a`, `b`, `c`, `(x + y)`
    /// for two partials added.
    fn grouping(items: usize, threads: usize) -> String {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            fold_in_runs(
                (0..items).collect(),
                String::new,
                |run, i| {
                    if run.is_empty() {
                        format!("[{i}]")
                    } else {
                        format!("{} {i}]", &run[..run.len() - 1])
                    }
                },
                |a, b| format!("({a} + {b})"),
            )
        })
    }

    #[test]
    fn runs_are_fixed_by_the_thread_count_and_added_in_order() {
        for _ in 0..50 {
            assert_eq!(
                grouping(16, 2),
                "((((((([0 1] + [2 3]) + [4 5]) + [6 7]) + [8 9]) + [10 11]) + [12 13]) + [14 15])"
            );
            assert_eq!(grouping(9, 1), "(([0 1 2] + [3 4 5]) + [6 7 8])");
        }
        assert_eq!(grouping(3, 2), "(([0] + [1]) + [2])");
        assert_eq!(grouping(0, 2), "");
    }
}
