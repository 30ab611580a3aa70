//! The one place the harness reads the machine's clock: to report how long
//! a run took in wall time. Nothing measured here reaches a trace.

use std::time::{Duration, Instant};

/// Measures elapsed wall time.
pub struct Stopwatch(Instant);

impl Stopwatch {
    #[allow(clippy::disallowed_methods, reason = "wall time for reports, never for a trace")]
    pub fn start() -> Self {
        Stopwatch(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
