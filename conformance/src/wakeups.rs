//! Skipping idle simulated time.
//!
//! turmoil advances every host by a fixed tick per step; at 10 ms a
//! simulated hour is 360,000 steps over every host, though the connector
//! mostly waits (ten minutes between bootstraps, seconds between
//! keepalives). [`SimWakeups`] collects the deadline of every pending timer
//! of every host (see `connector::time`), in simulated time. [`Stepper`]
//! then takes one long step to the last tick at or before the earliest
//! deadline whenever the network is empty and no host was woken and has
//! yet to run (`Sim::is_quiet`), and otherwise steps by the normal tick.
//! The same deadlines tell turmoil which hosts must run within a step. The
//! result is the same trace as fine stepping would give, because nothing
//! could have happened in the skipped span (`connsim run --check-stepping`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector::time::{Instant, Wakeups};

/// Pending deadlines of all hosts, in simulated time since the start.
#[derive(Default)]
pub struct SimWakeups {
    inner: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next_key: u64,
    by_key: BTreeMap<u64, (Duration, Arc<str>)>,
    by_deadline: BTreeSet<(Duration, u64)>,
}

impl SimWakeups {
    /// The earliest pending deadline.
    pub fn earliest(&self) -> Option<Duration> {
        let p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.by_deadline.first().map(|(at, _)| *at)
    }

    /// Calls `f` with every host that has a deadline before `at`, the end of
    /// a step (for turmoil's lazy ticking, which runs a host only when it
    /// has something to do), once for each such deadline. A deadline at `at`
    /// itself is the next step's: the timer fires at the step's end, but the
    /// step's own sleep ends it first, so its task runs in the next step.
    pub fn due_hosts(&self, at: Duration, f: &mut dyn FnMut(&str)) {
        let p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (_, key) in p.by_deadline.iter().take_while(|(deadline, _)| *deadline < at) {
            if let Some((_, host)) = p.by_key.get(key) {
                f(host);
            }
        }
    }
}

impl Wakeups for SimWakeups {
    fn add(&self, deadline: Instant) -> Option<u64> {
        // Outside a host (no simulated clock to relate to) nothing is recorded.
        let now = turmoil::sim_elapsed()?;
        let host = turmoil::current_host_name().unwrap_or_else(|| Arc::from(""));
        let at = now + deadline.saturating_duration_since(Instant::now());
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.next_key += 1;
        let key = p.next_key;
        p.by_deadline.insert((at, key));
        p.by_key.insert(key, (at, host));
        Some(key)
    }

    fn remove(&self, key: u64) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, _)) = p.by_key.remove(&key) {
            p.by_deadline.remove(&(at, key));
        }
    }
}

/// Chooses each step's length, from the deadlines of this thread's timers.
pub struct Stepper {
    tick: Duration,
    skip_idle: bool,
    wakeups: Arc<SimWakeups>,
    /// Keeps `wakeups` the registry of timers created on this thread.
    _installed: connector::time::Installed,
    /// Steps taken, and how many of them skipped idle time.
    pub steps: u64,
    pub skips: u64,
}

impl Stepper {
    /// Steps of `tick` for `sim`, recording every timer created on this
    /// thread while the stepper lives. With `skip_idle`, idle spans go in
    /// one step and a step runs only the hosts with something to do.
    pub fn attach(sim: &mut turmoil::Sim<'_>, tick: Duration, skip_idle: bool) -> Self {
        let wakeups = Arc::new(SimWakeups::default());
        let installed = connector::time::install(wakeups.clone());
        if skip_idle {
            let due = wakeups.clone();
            sim.set_lazy_hosts(move |at, f| due.due_hosts(at, f));
        }
        Stepper { tick, skip_idle, wakeups, _installed: installed, steps: 0, skips: 0 }
    }

    /// Takes one step of `sim`, never past `limit` (the next timeline event
    /// or the end of the scenario).
    pub fn step(&mut self, sim: &mut turmoil::Sim<'_>, limit: Duration) -> turmoil::Result<()> {
        let now = sim.elapsed();
        let mut length = self.tick;
        if self.skip_idle && sim.is_quiet() && sim.messages_in_flight() == 0 {
            let due = self.wakeups.earliest().unwrap_or(limit).min(limit);
            // Stop on the tick grid at or before the deadline: the timer's
            // task then runs inside an ordinary tick (a timer due exactly at
            // a step's end runs in the next step; see `due_hosts`), with
            // ordinary message latency after it.
            let ticks = due.saturating_sub(now).as_nanos() / self.tick.as_nanos().max(1);
            if ticks > 1 {
                length = self.tick * u32::try_from(ticks).unwrap_or(u32::MAX);
            }
        }
        if length > self.tick {
            self.skips += 1;
        }
        self.steps += 1;
        sim.step_by(length)?;
        Ok(())
    }
}
