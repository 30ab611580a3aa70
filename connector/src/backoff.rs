//! Jittered exponential backoff. Pure: the random draw is passed in, so the
//! schedule is reproducible under a seeded entropy and testable alone.

use std::time::Duration;

/// `delay(n) = min(max, initial * multiplier^n) * (1 ± jitter)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    /// Fraction of the delay randomised either way (0.2 = ±20 %).
    pub jitter: f64,
}

impl Backoff {
    /// Tunnel reconnects: 1 s doubling to 60 s, ±20 %.
    pub const TUNNEL: Backoff =
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60), multiplier: 2.0, jitter: 0.2 };

    /// Bootstrap (heartbeat) retries: 3 s growing ×5.9 each time, as the
    /// real connector's, but capped at the bootstrap interval (10 minutes)
    /// instead of its hour, ±20 %. With the hour, a connector whose network
    /// came back waited up to 72 minutes for its next heartbeat, and the
    /// portal (inactive after 60 minutes without one) showed it inactive
    /// while it served; a retry per interval costs what a heartbeat costs.
    pub const BOOTSTRAP: Backoff =
        Backoff { initial: Duration::from_secs(3), max: Duration::from_secs(600), multiplier: 5.885, jitter: 0.2 };

    /// The delay before retry number `attempt` (0-based), given a uniform
    /// draw `unit` in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let b = Backoff::TUNNEL;
        assert_eq!(b.delay(0, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(8));
        assert_eq!(b.delay(30, 0.5), Duration::from_secs(60));
        assert!(b.delay(30, 0.0) >= Duration::from_secs(48));
        assert!(b.delay(30, 0.999) <= Duration::from_secs(72));
    }

    #[test]
    fn bootstrap_retries_grow_to_the_heartbeat_interval_and_stay() {
        let b = Backoff::BOOTSTRAP;
        assert_eq!(b.delay(0, 0.5), Duration::from_secs(3));
        assert!((100.0..110.0).contains(&b.delay(2, 0.5).as_secs_f64()));
        assert_eq!(b.delay(3, 0.5), Duration::from_secs(600));
        // Never past 12 minutes: the portal's inactive threshold is 60.
        assert!(b.delay(40, 0.999) <= Duration::from_secs(720));
    }
}
