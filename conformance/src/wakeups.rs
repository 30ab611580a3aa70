//! Skipping idle simulated time.
//!
//! turmoil advances every host by a fixed tick per step; at 10 ms a
//! simulated hour is 360,000 steps over every host, though the connector
//! mostly waits (ten minutes between bootstraps, seconds between
//! keepalives). [`SimWakeups`] collects the deadline of every pending timer
//! of every host (see `connector::time`), in simulated time. [`Stepper`]
//! then takes one long step to just before the earliest deadline whenever
//! the network is empty and the last steps were quiet, and otherwise steps
//! by the normal tick. The result is the same trace as fine stepping would
//! give, because nothing could have happened in the skipped span.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
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
    by_key: BTreeMap<u64, (Duration, String)>,
    by_deadline: BTreeSet<(Duration, u64)>,
    /// Per host: its pending deadlines.
    by_host: BTreeMap<String, BTreeSet<(Duration, u64)>>,
}

impl SimWakeups {
    /// The earliest pending deadline.
    pub fn earliest(&self) -> Option<Duration> {
        let p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.by_deadline.first().map(|(at, _)| *at)
    }

    /// Whether `host` has a deadline at or before `at` (for turmoil's lazy
    /// ticking, which runs a host only when it has something to do).
    pub fn host_due(&self, host: &str, at: Duration) -> bool {
        let p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.by_host.get(host).and_then(|d| d.first()).is_some_and(|(first, _)| *first <= at)
    }
}

impl Wakeups for SimWakeups {
    fn add(&self, deadline: Instant) -> Option<u64> {
        // Outside a host (no simulated clock to relate to) nothing is recorded.
        let now = turmoil::sim_elapsed()?;
        let host = turmoil::current_host_name().unwrap_or_default();
        let at = now + deadline.saturating_duration_since(Instant::now());
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        p.next_key += 1;
        let key = p.next_key;
        p.by_deadline.insert((at, key));
        p.by_host.entry(host.clone()).or_default().insert((at, key));
        p.by_key.insert(key, (at, host));
        Some(key)
    }

    fn remove(&self, key: u64) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, host)) = p.by_key.remove(&key) {
            p.by_deadline.remove(&(at, key));
            if let Some(d) = p.by_host.get_mut(&host) {
                d.remove(&(at, key));
                if d.is_empty() {
                    p.by_host.remove(&host);
                }
            }
        }
    }
}

/// Quiet steps needed before skipping: a task woken by another host
/// through shared memory (the cloud's routing table) runs one step later,
/// and what it sends must be seen on the network first.
const QUIET_STEPS_BEFORE_SKIP: u32 = 2;

/// Chooses each step's length.
pub struct Stepper {
    tick: Duration,
    skip_idle: bool,
    quiet_steps: u32,
    /// Steps taken, and how many of them skipped idle time.
    pub steps: u64,
    pub skips: u64,
}

impl Stepper {
    /// Steps of `tick`; with `skip_idle`, idle spans in one step.
    pub fn new(tick: Duration, skip_idle: bool) -> Self {
        Stepper { tick, skip_idle, quiet_steps: 0, steps: 0, skips: 0 }
    }

    /// Takes one step of `sim`, never past `limit` (the next timeline event
    /// or the end of the scenario).
    pub fn step(&mut self, sim: &mut turmoil::Sim<'_>, wakeups: &SimWakeups, limit: Duration) -> turmoil::Result<()> {
        let now = sim.elapsed();
        let mut length = self.tick;
        if self.skip_idle && self.quiet_steps >= QUIET_STEPS_BEFORE_SKIP && sim.messages_in_flight() == 0 {
            let due = wakeups.earliest().unwrap_or(limit).min(limit);
            // Stop on the tick grid before the deadline: the timer then fires
            // inside an ordinary tick, with ordinary message latency after it.
            let ticks = due.saturating_sub(now).as_nanos() / self.tick.as_nanos().max(1);
            if ticks > 1 {
                length = self.tick * u32::try_from(ticks - 1).unwrap_or(u32::MAX);
            }
        }
        if length > self.tick {
            self.skips += 1;
        }
        self.steps += 1;
        sim.step_by(length)?;
        self.quiet_steps = if sim.messages_in_flight() == 0 { self.quiet_steps.saturating_add(1) } else { 0 };
        Ok(())
    }
}
