//! Which of a loop's sources woke it.
//!
//! A tunnel's loop waits on several sources at once (the TLS stream, the
//! handlers' answers, a timer, the drain signal). A biased `tokio::select!`
//! polls them in order at every wake-up until one is ready, so the sources
//! before the one that woke it are polled for nothing: a keepalive exchange
//! polled the TLS stream four times to read one record (each poll of a TLS
//! stream with nothing to read walks tokio-rustls, rustls' reader and the
//! socket; ~1,200 instructions in a simulation).
//!
//! [`Wakes`] gives each source a waker of its own, which marks the source
//! woken and then wakes the task; a loop polls only the marked sources, in
//! its fixed order ([`Wakes::poll`]). A source not marked since it last
//! returned `Pending` is still pending as long as its readiness reaches it
//! only through its waker, so the loop takes what `select!` took, in the
//! same order. Where readiness can come otherwise, the loop marks the
//! source itself ([`Wakes::mark`]): a source that was ready (it may hold
//! more; `poll` does this), one whose state the loop changed (a timer aimed
//! anew, a batch loaded), one made anew for the turn, and every source at
//! the start.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

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
        // Woken outside the lock: a task's waker may run anything.
        let task = self.shared.task().clone();
        if let Some(task) = task {
            task.wake();
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

    /// Starts a poll of the loop: `Pending` while the task's budget is
    /// spent (tokio's cooperative yield, which `select!` makes before any
    /// branch; the marks wait for the next poll), else makes `cx`'s task
    /// the one the sources wake.
    pub fn begin(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Taken and given back at once: only whether any is left matters.
        drop(std::task::ready!(tokio::task::coop::poll_proceed(cx)));
        self.register(cx);
        Poll::Ready(())
    }

    /// Makes `cx`'s task the one the sources wake.
    fn register(&self, cx: &Context<'_>) {
        let mut task = self.shared.task();
        if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            *task = Some(cx.waker().clone());
        }
    }

    /// Polls `source` with its own waker if it was woken or marked since
    /// last taken (else it is still pending); marks it again when ready.
    pub fn poll<T>(&self, source: usize, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        if !self.take(source) {
            return Poll::Pending;
        }
        let polled = poll(&mut self.context(source));
        if polled.is_ready() {
            self.mark(source);
        }
        polled
    }

    /// Whether `source` was woken or marked since last taken; unmarks it.
    fn take(&self, source: usize) -> bool {
        let bit = 1u32 << source;
        self.shared.woken.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Has `source` polled at the next turn although its waker did not run.
    pub fn mark(&self, source: usize) {
        self.shared.woken.fetch_or(1u32 << source, Ordering::AcqRel);
    }

    /// A context whose waker marks `source` and wakes the task.
    fn context(&self, source: usize) -> Context<'_> {
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

    /// Every start mark taken, and a task that counts its wake-ups registered.
    fn quiet<const N: usize>(wakes: &Wakes<N>) -> Arc<Count> {
        (0..N).for_each(|i| {
            wakes.take(i);
        });
        let count = Arc::new(Count(AtomicUsize::new(0)));
        wakes.register(&Context::from_waker(&Waker::from(count.clone())));
        count
    }

    #[test]
    fn a_source_waker_marks_its_source_and_wakes_the_task() {
        let wakes = Wakes::<3>::new();
        let count = quiet(&wakes);
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
        let count = quiet(&wakes);
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
    fn only_a_marked_source_is_polled_and_a_ready_one_stays_marked() {
        let wakes = Wakes::<2>::new();
        assert_eq!(wakes.poll(0, |_| Poll::Ready(7)), Poll::Ready(7));
        assert_eq!(wakes.poll(1, |_| Poll::<()>::Pending), Poll::Pending);
        // Ready: polled again. Pending and not woken since: skipped.
        assert_eq!(wakes.poll(0, |_| Poll::Ready(8)), Poll::Ready(8));
        assert_eq!(wakes.poll(1, |_| -> Poll<()> { panic!("polled without a wake") }), Poll::Pending);
        // Its waker (the one the source kept) marks it again.
        let mut kept = None;
        wakes.mark(1);
        let _ = wakes.poll(1, |cx| -> Poll<()> {
            kept = Some(cx.waker().clone());
            Poll::Pending
        });
        kept.expect("polled").wake();
        assert_eq!(wakes.poll(1, |_| Poll::Ready(())), Poll::Ready(()));
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
