//! Which of a loop's sources woke it.
//!
//! A tunnel's loop waits on several sources at once (the TLS stream, the
//! handlers' answers, a timer, the drain signal). `tokio::select!` polls
//! every one of them each time the task is woken, though one woke it: a
//! keepalive exchange polled the TLS stream four times to read one record
//! (each poll of a TLS stream with nothing to read walks tokio-rustls,
//! rustls' reader and the socket; ~1,200 instructions in a simulation).
//!
//! [`Wakes`] gives each source a waker of its own, which marks the source
//! woken and then wakes the task; a loop polls only the marked sources, in
//! its fixed order. A source not marked since it last returned `Pending`
//! is still pending as long as its readiness reaches it only through its
//! waker, so the loop sees what `select!` saw, in the same order. Where
//! readiness can come otherwise, the loop marks the source itself
//! ([`Wakes::mark`]): a source that was ready (it may hold more), one whose
//! state the loop changed (a timer aimed anew, a batch loaded), and every
//! source at the start.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Wake, Waker};

/// Up to 32 sources' wakers, and which were woken since last polled.
pub struct Wakes<const N: usize> {
    shared: Arc<Shared>,
    wakers: [Waker; N],
}

struct Shared {
    /// One bit a source: woken (or marked) since last taken.
    woken: AtomicU32,
    /// The task to wake: the waker of the loop's latest poll.
    task: Mutex<Option<Waker>>,
}

impl Shared {
    fn task(&self) -> MutexGuard<'_, Option<Waker>> {
        // A panic while the lock was held left a waker or none: either is usable.
        self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One source's waker.
struct Source {
    shared: Arc<Shared>,
    bit: u32,
}

impl Wake for Source {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.bit, Ordering::AcqRel);
        if let Some(task) = self.shared.task().as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<const N: usize> Default for Wakes<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Wakes<N> {
    /// Every source marked, so each is polled once before any is skipped.
    pub fn new() -> Self {
        const { assert!(N <= 32, "one bit a source in a u32") };
        let all = if N == 32 { u32::MAX } else { (1u32 << N) - 1 };
        let shared = Arc::new(Shared { woken: AtomicU32::new(all), task: Mutex::new(None) });
        let wakers = std::array::from_fn(|i| Waker::from(Arc::new(Source { shared: shared.clone(), bit: 1u32 << i })));
        Wakes { shared, wakers }
    }

    /// Makes `cx`'s task the one the sources wake (call at each poll).
    pub fn register(&self, cx: &Context<'_>) {
        let mut task = self.shared.task();
        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            *task = Some(cx.waker().clone());
        }
    }

    /// Whether `source` was woken or marked since last taken; unmarks it.
    pub fn take(&self, source: usize) -> bool {
        let bit = 1u32 << source;
        self.shared.woken.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Has `source` polled at the next turn although its waker did not run.
    pub fn mark(&self, source: usize) {
        self.shared.woken.fetch_or(1u32 << source, Ordering::AcqRel);
    }

    /// A context whose waker marks `source` and wakes the task.
    pub fn context(&self, source: usize) -> Context<'_> {
        Context::from_waker(&self.wakers[source])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn every_source_starts_marked_and_is_taken_once() {
        let wakes = Wakes::<3>::new();
        assert!((0..3).all(|i| wakes.take(i)));
        assert!((0..3).all(|i| !wakes.take(i)));
    }

    #[test]
    fn a_source_waker_marks_its_source_and_wakes_the_task() {
        let wakes = Wakes::<3>::new();
        (0..3).for_each(|i| {
            wakes.take(i);
        });
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        wakes.register(&Context::from_waker(&task));
        wakes.context(1).waker().wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!wakes.take(0) && wakes.take(1) && !wakes.take(2));
        // A clone wakes the same way, also by value.
        let clone = wakes.context(2).waker().clone();
        clone.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(wakes.take(2) && !wakes.take(1));
    }

    #[test]
    fn a_mark_needs_no_waker_and_wakes_nothing() {
        let wakes = Wakes::<2>::new();
        (0..2).for_each(|i| {
            wakes.take(i);
        });
        let count = Arc::new(Count(AtomicUsize::new(0)));
        wakes.register(&Context::from_waker(&Waker::from(count.clone())));
        wakes.mark(0);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        assert!(wakes.take(0) && !wakes.take(1));
    }

    #[test]
    fn a_source_woken_before_any_poll_marks_and_wakes_nobody() {
        let wakes = Wakes::<1>::new();
        wakes.take(0);
        wakes.context(0).waker().wake_by_ref();
        assert!(wakes.take(0));
    }

    #[test]
    fn the_latest_task_is_the_one_woken() {
        let wakes = Wakes::<1>::new();
        let (first, second) = (Arc::new(Count(AtomicUsize::new(0))), Arc::new(Count(AtomicUsize::new(0))));
        wakes.register(&Context::from_waker(&Waker::from(first.clone())));
        wakes.register(&Context::from_waker(&Waker::from(second.clone())));
        wakes.context(0).waker().wake_by_ref();
        assert_eq!((first.0.load(Ordering::SeqCst), second.0.load(Ordering::SeqCst)), (0, 1));
    }
}
