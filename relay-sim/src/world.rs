//! The world of a simulation: its network (see [`crate::network`]) and a
//! [`SimClock`] over the simulated clock. Firewalls live in the world, never
//! in the connector.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use connector::env::Clock;

pub use crate::network::{Action, AddressPlan, Cidr, Dns, Firewall, HostSuffix, Interception, Rule, SimNet};

/// Simulated wall clock: a fixed epoch plus simulated elapsed time, plus a
/// per-host skew. Outside any host (the runner applying a timeline event)
/// turmoil has no current clock; `outside_ms`, which the runner keeps at
/// the simulation's elapsed time, stands in.
#[derive(Debug, Clone)]
pub struct SimClock {
    pub epoch: SystemTime,
    /// Seconds this host's clock is ahead (negative: behind); shared, so
    /// that the world can set the host's clock while it runs.
    pub skew_s: Arc<AtomicI64>,
    pub outside_ms: Arc<AtomicU64>,
}

impl SimClock {
    pub fn new(epoch: SystemTime, skew_s: i64, outside_ms: Arc<AtomicU64>) -> Self {
        SimClock::shared(epoch, Arc::new(AtomicI64::new(skew_s)), outside_ms)
    }

    /// A clock whose skew is `skew_s`, which its owner may change.
    pub fn shared(epoch: SystemTime, skew_s: Arc<AtomicI64>, outside_ms: Arc<AtomicU64>) -> Self {
        SimClock { epoch, skew_s, outside_ms }
    }
}

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        let elapsed = turmoil::sim_elapsed()
            .unwrap_or_else(|| Duration::from_millis(self.outside_ms.load(std::sync::atomic::Ordering::Relaxed)));
        let t = self.epoch + elapsed;
        let skew = self.skew_s.load(std::sync::atomic::Ordering::Relaxed);
        if skew >= 0 {
            t + Duration::from_secs(skew.unsigned_abs())
        } else {
            t - Duration::from_secs(skew.unsigned_abs())
        }
    }
}
