//! Timers that announce their deadlines.
//!
//! Every sleep and timeout of the agent (and of relay-sim) goes through this
//! module instead of `tokio::time` directly. The timers themselves *are*
//! tokio's; what this adds is that, while a [`Wakeups`] registry is installed
//! on the thread, each pending timer's deadline is recorded there until the
//! timer completes or is dropped.
//!
//! Why: a simulation steps time in fixed ticks, and most simulated time is
//! idle (a connector waiting ten minutes for its next bootstrap). A runner
//! that knows the earliest pending deadline of every host, and sees nothing
//! in flight on the network, can skip straight to it. Real mode installs no
//! registry and pays one thread-local read per timer.
//!
//! A timer that bypasses this module is still correct, only invisible: the
//! simulator may then skip past its deadline in one step, and it fires at the
//! right time but anything it sends arrives late.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use tokio::time::error::Elapsed;
pub use tokio::time::Instant;

/// A registry of pending timer deadlines (the simulator's; see the module
/// docs).
pub trait Wakeups: Send + Sync {
    /// Records a deadline; returns a key for [`Wakeups::remove`].
    fn add(&self, deadline: Instant) -> Option<u64>;
    /// Forgets a deadline recorded by `add`.
    fn remove(&self, key: u64);
}

thread_local! {
    static REGISTRY: RefCell<Option<Arc<dyn Wakeups>>> = const { RefCell::new(None) };
}

/// Installs `registry` for timers created on this thread until the returned
/// guard is dropped.
pub fn install(registry: Arc<dyn Wakeups>) -> Installed {
    let previous = REGISTRY.with(|r| r.borrow_mut().replace(registry));
    Installed { previous }
}

/// Keeps a registry installed; restores the previous one when dropped.
pub struct Installed {
    previous: Option<Arc<dyn Wakeups>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // During thread teardown the slot may already be gone: nothing to restore then.
        let _ = REGISTRY.try_with(|r| *r.borrow_mut() = previous);
    }
}

/// A deadline recorded in the registry for as long as it lives.
struct Announced(Option<(Arc<dyn Wakeups>, u64)>);

impl Announced {
    fn new(deadline: Instant) -> Self {
        let registry = REGISTRY.try_with(|r| r.borrow().clone()).ok().flatten();
        Announced(registry.and_then(|reg| reg.add(deadline).map(|key| (reg, key))))
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let Some((reg, key)) = self.0.take() {
            reg.remove(key);
        }
    }
}

/// `tokio::time::sleep`, announced.
pub async fn sleep(duration: Duration) {
    sleep_until(Instant::now() + duration).await;
}

/// `tokio::time::sleep_until`, announced.
pub async fn sleep_until(deadline: Instant) {
    let _announced = Announced::new(deadline);
    tokio::time::sleep_until(deadline).await;
}

/// `tokio::time::timeout`, announced.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    timeout_at(Instant::now() + duration, future).await
}

/// `tokio::time::timeout_at`, announced.
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    let _announced = Announced::new(deadline);
    tokio::time::timeout_at(deadline, future).await
}

/// A deadline a loop waits for turn after turn: one tokio `Sleep`, kept,
/// and reset only when the deadline moves; announced like the others.
///
/// Why: a select loop that builds `sleep_until(deadline)` at every turn
/// registers a timer entry with tokio's wheel and removes it again each
/// time, though the deadline (a session's next keepalive, say) seldom
/// moves. A tunnel's loop turns several times per request.
pub struct Timer {
    /// Its deadline and whether it has passed are the sleep's own.
    sleep: Pin<Box<tokio::time::Sleep>>,
    announced: Announced,
}

impl Timer {
    /// A timer for `deadline`, announced from now on.
    pub fn new(deadline: Instant) -> Self {
        Timer { sleep: Box::pin(tokio::time::sleep_until(deadline)), announced: Announced::new(deadline) }
    }

    /// Aims the timer at `deadline`. A timer that has fired fires again
    /// (at once, if `deadline` has passed), as a new sleep would. True if
    /// it was aimed anew (false: it already waited for `deadline`).
    pub fn set(&mut self, deadline: Instant) -> bool {
        if deadline == self.sleep.deadline() && !self.sleep.is_elapsed() {
            return false;
        }
        self.announced = Announced(None);
        self.sleep.as_mut().reset(deadline);
        self.announced = Announced::new(deadline);
        true
    }

    /// Completes at the deadline; the announcement ends with it. Once
    /// fired it stays complete until [`Timer::set`] aims it again, so a
    /// loop sets it at every turn, as it would build a new sleep.
    pub fn wait(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_wait(cx))
    }

    /// [`Timer::wait`] as a poll, for a loop that polls its sources itself.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.announced = Announced(None);
        Poll::Ready(())
    }
}

/// hyper's timer over announced tokio sleeps (for servers' header timeouts).
#[derive(Clone, Debug, Default)]
pub struct HyperTimer;

pin_project_lite::pin_project! {
    /// The sleep inside, not boxed again: hyper boxes the whole, and a
    /// server makes one for every request's head (two allocations a
    /// request were one in twelve of relay-sim's ingress).
    struct HyperSleep {
        #[pin]
        sleep: tokio::time::Sleep,
        announced: Announced,
    }
}

impl Future for HyperSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().sleep.poll(cx)
    }
}

impl hyper::rt::Sleep for HyperSleep {}

fn announced_sleep(deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
    Box::pin(HyperSleep { sleep: tokio::time::sleep_until(deadline), announced: Announced::new(deadline) })
}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // From tokio's clock, which a simulation pauses and drives.
        announced_sleep(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        announced_sleep(Instant::from_std(deadline))
    }

    /// tokio's now: hyper computes deadlines from it, and under a paused
    /// (simulated) clock the machine's `Instant::now()` is another timeline.
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<(u64, bool)>>);

    impl Wakeups for Log {
        fn add(&self, _deadline: Instant) -> Option<u64> {
            let mut log = self.0.lock().unwrap();
            let key = log.iter().filter(|(_, added)| *added).count() as u64;
            log.push((key, true));
            Some(key)
        }
        fn remove(&self, key: u64) {
            self.0.lock().unwrap().push((key, false));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_are_announced_while_pending() {
        let log = Arc::new(Log::default());
        let _installed = install(log.clone());
        sleep(Duration::from_secs(5)).await;
        let r = timeout(Duration::from_secs(1), std::future::pending::<()>()).await;
        assert!(r.is_err());
        assert_eq!(*log.0.lock().unwrap(), vec![(0, true), (0, false), (1, true), (1, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_timer_fires_at_each_deadline_it_is_set_to() {
        let log = Arc::new(Log::default());
        let _installed = install(log.clone());
        let start = Instant::now();
        let mut timer = Timer::new(start + Duration::from_secs(5));
        // The same deadline again: nothing is registered anew.
        timer.set(start + Duration::from_secs(5));
        timer.wait().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        // Fired and set to the same (past) deadline: fires at once.
        timer.set(start + Duration::from_secs(5));
        timer.wait().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        // Moved later, then earlier before it fires.
        timer.set(start + Duration::from_secs(9));
        timer.set(start + Duration::from_secs(7));
        timer.wait().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(7));
        let log = log.0.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![(0, true), (0, false), (1, true), (1, false), (2, true), (2, false), (3, true), (3, false)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_recorded_without_a_registry() {
        sleep(Duration::from_millis(1)).await;
        assert!(timeout(Duration::from_millis(1), async { 3 }).await.is_ok());
    }
}
