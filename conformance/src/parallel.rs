//! Running independent simulations on several threads.
//!
//! Each simulation is single-threaded and keeps its whole world in
//! thread-locals (turmoil's world, the timer registry), so runs on different
//! threads share nothing and give the same trace as on one thread. What
//! changes is only the order in which runs finish; results come back in the
//! order of the inputs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Threads to use by default: one per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `items.iter().map(f)` on up to `jobs` threads, results in input order.
/// `done(&result)` is called as each result arrives (from the thread that
/// produced it), for progress reports.
pub fn map<T, R>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync, done: impl Fn(&R) + Sync) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    let jobs = jobs.clamp(1, items.len().max(1));
    if jobs == 1 {
        return items
            .iter()
            .map(|item| {
                let r = f(item);
                done(&r);
                r
            })
            .collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                done(&r);
                slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    // Every index below `items.len()` was taken by exactly one thread, and
    // a thread that panicked propagated its panic out of the scope above.
    slots.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_input_order_on_any_number_of_threads() {
        let items: Vec<u64> = (0..200).collect();
        for jobs in [1, 2, 7, 500] {
            let seen = AtomicUsize::new(0);
            let out = map(
                &items,
                jobs,
                |x| x * x,
                |_| {
                    seen.fetch_add(1, Ordering::Relaxed);
                },
            );
            assert_eq!(out, items.iter().map(|x| x * x).collect::<Vec<_>>(), "jobs {jobs}");
            assert_eq!(seen.load(Ordering::Relaxed), items.len());
        }
        assert!(map(&[] as &[u64], 4, |x| *x, |_| {}).is_empty());
    }
}
