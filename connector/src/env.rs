//! The seam between the agent and the world: network, clock, randomness and
//! the event sink. The agent never calls `tokio::net`, `SystemTime::now()` or
//! an OS RNG itself; it receives an [`Env`]. Real mode uses
//! [`crate::net::TokioNet`], [`SystemClock`] and [`OsEntropy`]; the
//! simulator supplies its own [`Net`] and `Clock` over turmoil and a
//! [`SeededEntropy`]. Timers use tokio's clock in
//! both worlds: turmoil pauses and drives it, so `tokio::time` *is* simulated
//! time inside a simulation.

use std::fmt::Debug;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::event::AgentEvent;
use crate::evidence::{Attempt, Evidence, Outcome};
use crate::net::{BoxStream, ConnectFailure, Net, ProxyError};

/// Resolves `host` and connects to it on `port` within `timeout`, the
/// agent's one way out to a destination it depends on: the attempt, with
/// its route, round trip or failure, goes into the evidence log.
pub async fn connect_observed(
    env: &Env,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(IpAddr, BoxStream), (Option<IpAddr>, ConnectFailure)> {
    let net = env.net.as_ref();
    let result = match crate::time::timeout(timeout, net.resolve(host)).await {
        // A sinkhole answer (0.0.0.0) is no address to connect to: Windows
        // fails such a connect at once (WSAEADDRNOTAVAIL), so do we.
        Ok(Ok(addr)) if crate::net::is_sinkhole(addr) => {
            Err((Some(addr), ConnectFailure::Other(format!("{addr} is not an address to connect to"))))
        }
        Ok(Ok(addr)) => match crate::time::timeout(timeout, net.connect_timed(host, addr, port)).await {
            Ok(Ok((stream, rtt))) => Ok((addr, stream, rtt)),
            Ok(Err(e)) => Err((Some(addr), ConnectFailure::from_io(&e))),
            Err(_) => Err((Some(addr), ConnectFailure::TimedOut)),
        },
        // No answer from DNS in time is a name that did not resolve: a
        // finding about DNS, which probes of other names cannot refine
        // (unless it was the proxy's name: that is the proxy's failure).
        Ok(Err(e)) if matches!(ConnectFailure::from_io(&e), ConnectFailure::Proxy(_)) => {
            Err((None, ConnectFailure::from_io(&e)))
        }
        Err(_) if net.proxy().is_some() => {
            let proxy = net.proxy().map(|p| format!("{}:{}", p.host, p.port)).unwrap_or_default();
            let what = "its name did not resolve in time".to_string();
            Err((None, ConnectFailure::Proxy(Box::new(ProxyError::Down { proxy, what }))))
        }
        Ok(Err(_)) | Err(_) => Err((None, ConnectFailure::Unresolved)),
    };
    let outcome = match &result {
        Ok((addr, _, rtt)) => Outcome::Connected { addr: *addr, rtt: *rtt },
        Err((addr, failure)) => Outcome::Failed { addr: *addr, failure: failure.clone() },
    };
    env.evidence.record(Attempt::new(host, port, net.route(), outcome).by(net.account()));
    result.map(|(addr, stream, _)| (addr, stream))
}

/// Wall-clock time for certificates and CRLs. Monotonic timers come from
/// `tokio::time` (simulated under turmoil).
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> SystemTime;
}

/// Randomness. Every random byte the agent uses (TLS randoms, key exchange,
/// key generation, jitter, tokens) comes from here.
pub trait Entropy: Send + Sync + Debug {
    fn fill(&self, buf: &mut [u8]);

    fn next_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A uniformly distributed float in `[0, 1)`.
    fn unit_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where the agent reports what it does: the simulator stamps events with
/// simulated time into its trace; real mode logs them.
pub trait EventSink {
    fn emit(&self, event: AgentEvent);

    /// Whether events of single requests ([`AgentEvent::is_per_request`])
    /// are kept. When not, the agent does not build them: each names its
    /// tunnel in a new `String`, many times a second under load.
    fn wants_per_request(&self) -> bool {
        true
    }
}

/// Everything the agent may use from the outside world.
#[derive(Clone)]
pub struct Env {
    pub net: Rc<dyn Net>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub events: Rc<dyn EventSink>,
    /// Every connection attempt and what came of it (for diagnostics).
    pub evidence: Rc<Evidence>,
}

impl Env {
    pub fn emit(&self, event: AgentEvent) {
        self.events.emit(event);
    }

    /// Emits the event of a single request that `make` builds, if the
    /// sink keeps such events.
    pub fn emit_per_request(&self, make: impl FnOnce() -> AgentEvent) {
        if self.events.wants_per_request() {
            self.events.emit(make());
        }
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods, reason = "the real world's clock: the one place it is read")]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The operating system's RNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    #[allow(clippy::disallowed_methods, reason = "the real world's randomness: the one place it is drawn")]
    fn fill(&self, buf: &mut [u8]) {
        // getrandom only fails on platforms without an entropy source, where
        // continuing with predictable keys would be worse than stopping.
        if let Err(e) = getrandom::fill(buf) {
            panic!("OS random number generator unavailable: {e}");
        }
    }
}

/// A deterministic RNG: ChaCha20 seeded from a scenario seed and a label, so
/// every host of a simulation draws from its own stream and adding a host
/// does not shift the others' randomness.
#[derive(Debug)]
pub struct SeededEntropy {
    rng: Mutex<ChaCha20Rng>,
}

impl SeededEntropy {
    pub fn new(seed: u64, label: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, &[&seed.to_le_bytes()[..], label.as_bytes()].concat());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        SeededEntropy { rng: Mutex::new(ChaCha20Rng::from_seed(key)) }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // A poisoned lock only means another thread panicked mid-draw; the
        // RNG state is still a valid ChaCha state.
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.fill_bytes(buf);
    }
}

/// Logs agent events through `tracing` (real mode). Events of single
/// requests log at debug level (`RUST_LOG=connector::event=debug`): at info
/// they cost two log lines a request, which under load was a fifth of the
/// connector's system calls.
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn emit(&self, event: AgentEvent) {
        let per_request = event.is_per_request();
        if per_request && !self.wants_per_request() {
            return;
        }
        match serde_json::to_string(&event) {
            Ok(line) if per_request => tracing::debug!(target: "connector::event", "{line}"),
            Ok(line) => tracing::info!(target: "connector::event", "{line}"),
            Err(e) => tracing::warn!("unserializable event: {e}"),
        }
    }

    fn wants_per_request(&self) -> bool {
        tracing::enabled!(target: "connector::event", tracing::Level::DEBUG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_is_reproducible_and_labelled() {
        let a = SeededEntropy::new(7, "x").next_u64();
        assert_eq!(a, SeededEntropy::new(7, "x").next_u64());
        assert_ne!(a, SeededEntropy::new(7, "y").next_u64());
        assert_ne!(a, SeededEntropy::new(8, "x").next_u64());
    }
}
