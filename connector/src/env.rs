//! The seam between the agent and the world: network, clock, randomness and
//! the event sink. The agent never calls `tokio::net`, `SystemTime::now()` or
//! an OS RNG itself; it receives an [`Env`]. Real mode uses [`TokioNet`],
//! [`SystemClock`] and [`OsEntropy`]; the simulator supplies its own `Net` and
//! `Clock` over turmoil and a [`SeededEntropy`]. Timers use tokio's clock in
//! both worlds: turmoil pauses and drives it, so `tokio::time` *is* simulated
//! time inside a simulation.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::diag::ConnectFailure;
use crate::event::AgentEvent;
use crate::evidence::{Attempt, Evidence, Outcome, Route};

/// A boxed future that need not be `Send`: everything runs on one thread
/// (turmoil hosts, and the real agent's `LocalSet`).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A byte stream to a peer.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncStream for T {}

/// An owned, type-erased stream.
pub type BoxStream = Box<dyn AsyncStream>;

/// The Windows account a connection originates from, as a firewall that
/// filters by user sees it (NET-USER): registration runs in the context of
/// the administrator who runs setup; both services run as Network Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Account {
    #[default]
    NetworkService,
    /// A user account (`contoso\alice`).
    User(String),
}

impl Account {
    /// The name a firewall rule uses for it (`network-service`, or the
    /// user's name).
    pub fn rule_name(&self) -> &str {
        match self {
            Account::NetworkService => "network-service",
            Account::User(u) => u,
        }
    }

    /// The account a rule name stands for.
    pub fn from_rule_name(name: &str) -> Account {
        if name.eq_ignore_ascii_case("network-service") {
            Account::NetworkService
        } else {
            Account::User(name.to_string())
        }
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Account::NetworkService => f.write_str("Network Service"),
            Account::User(u) => f.write_str(u),
        }
    }
}

/// Outbound connections. The only network capability the agent has: there is
/// deliberately no `listen` (NET-OUTONLY).
pub trait Net {
    /// Resolves `host` as the machine's DNS would.
    fn resolve<'a>(&'a self, host: &'a str) -> LocalBoxFuture<'a, io::Result<IpAddr>>;

    /// Opens TCP to `addr:port`, the address `host` resolved to. The name
    /// travels along because firewalls and proxies match on it. No timeout
    /// here: callers bound it, because a firewall that drops packets makes
    /// connect hang.
    fn connect_addr<'a>(&'a self, host: &'a str, addr: IpAddr, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>>;

    /// The way connections go out (for the evidence log).
    fn route(&self) -> Route {
        Route::Direct
    }

    /// The account connections originate from (for the evidence log).
    fn account(&self) -> Account {
        Account::NetworkService
    }

    /// This network for connections made as `account`; `None` when the
    /// account makes no difference to it (real sockets: the operating
    /// system uses the account the process runs as).
    fn as_account(&self, _account: &Account) -> Option<Rc<dyn Net>> {
        None
    }

    /// The outbound proxy this network goes through, if any: requests to
    /// backends on the private network go around it, and a failure is
    /// explained by asking first whether the proxy itself answers.
    fn proxy(&self) -> Option<ProxyHop<'_>> {
        None
    }

    /// [`Net::connect_addr`], and one round trip to the destination itself:
    /// the TCP handshake's time when direct. A proxy overrides this with its
    /// onward leg, so that a proxy next to the connector does not make the
    /// service look far away.
    fn connect_timed<'a>(
        &'a self,
        host: &'a str,
        addr: IpAddr,
        port: u16,
    ) -> LocalBoxFuture<'a, io::Result<(BoxStream, Duration)>> {
        Box::pin(async move {
            let started = crate::time::Instant::now();
            let stream = self.connect_addr(host, addr, port).await?;
            Ok((stream, started.elapsed()))
        })
    }
}

/// An outbound proxy, and the network beneath it.
pub struct ProxyHop<'a> {
    /// The network without the proxy.
    pub inner: &'a dyn Net,
    pub host: &'a str,
    pub port: u16,
}

/// Why [`connect`] failed: the error, and the address if the name resolved.
#[derive(Debug)]
pub struct ConnectError {
    pub addr: Option<IpAddr>,
    pub error: io::Error,
}

/// Resolves `host` and connects to it on `port`.
pub async fn connect(net: &dyn Net, host: &str, port: u16) -> Result<(IpAddr, BoxStream), ConnectError> {
    let addr = net.resolve(host).await.map_err(|error| ConnectError { addr: None, error })?;
    let stream = net.connect_addr(host, addr, port).await.map_err(|error| ConnectError { addr: Some(addr), error })?;
    Ok((addr, stream))
}

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
        Ok(Ok(addr)) if crate::classify::is_sinkhole(addr) => {
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
            Err((None, ConnectFailure::Proxy(Box::new(crate::proxy::ProxyError::Down { proxy, what }))))
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

/// A `--resolve` override: connections to `host` (optionally only on `port`)
/// go to `addr` instead of what DNS says, like curl's `--resolve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveEntry {
    pub host: String,
    pub port: Option<u16>,
    pub addr: SocketAddr,
}

impl std::str::FromStr for ResolveEntry {
    type Err = String;

    /// Parses `name=addr:port` or `name:port=addr:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (lhs, rhs) = s.split_once('=').ok_or_else(|| format!("--resolve {s:?}: expected NAME[:PORT]=ADDR:PORT"))?;
        let addr: SocketAddr = rhs.parse().map_err(|e| format!("--resolve {s:?}: {rhs:?} is not ADDR:PORT ({e})"))?;
        let (host, port) = match lhs.rsplit_once(':') {
            Some((h, p)) => {
                let port = p.parse().map_err(|_| format!("--resolve {s:?}: bad port {p:?}"))?;
                (h, Some(port))
            }
            None => (lhs, None),
        };
        if host.is_empty() {
            return Err(format!("--resolve {s:?}: empty host name"));
        }
        Ok(ResolveEntry { host: host.to_ascii_lowercase(), port, addr })
    }
}

/// Real sockets, with an optional `--resolve` map.
#[derive(Debug, Default, Clone)]
pub struct TokioNet {
    overrides: BTreeMap<(String, Option<u16>), SocketAddr>,
}

impl TokioNet {
    pub fn new(entries: impl IntoIterator<Item = ResolveEntry>) -> Self {
        let overrides = entries.into_iter().map(|e| ((e.host, e.port), e.addr)).collect();
        TokioNet { overrides }
    }

    fn lookup(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let host = host.to_ascii_lowercase();
        self.overrides.get(&(host.clone(), Some(port))).or_else(|| self.overrides.get(&(host, None))).copied()
    }
}

impl Net for TokioNet {
    fn resolve<'a>(&'a self, host: &'a str) -> LocalBoxFuture<'a, io::Result<IpAddr>> {
        Box::pin(async move {
            let lower = host.to_ascii_lowercase();
            if let Some(addr) = self.overrides.iter().find(|((h, _), _)| *h == lower).map(|(_, a)| *a) {
                return Ok(addr.ip());
            }
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(ip);
            }
            // A failed lookup is "not found" whatever the resolver's
            // wording, so the agent classifies it by kind, not by text.
            tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{host}: {e}")))?
                .next()
                .map(|a| a.ip())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))
        })
    }

    fn connect_addr<'a>(&'a self, host: &'a str, addr: IpAddr, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let target = self.lookup(host, port).unwrap_or(SocketAddr::new(addr, port));
            let stream = tokio::net::TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
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
        if per_request && !tracing::enabled!(target: "connector::event", tracing::Level::DEBUG) {
            return;
        }
        match serde_json::to_string(&event) {
            Ok(line) if per_request => tracing::debug!(target: "connector::event", "{line}"),
            Ok(line) => tracing::info!(target: "connector::event", "{line}"),
            Err(e) => tracing::warn!("unserializable event: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_parses_both_forms() {
        let e: ResolveEntry = "a.example=127.0.0.1:9".parse().unwrap();
        assert_eq!(e.port, None);
        let e: ResolveEntry = "A.example:443=127.0.0.1:9".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("a.example", Some(443)));
        assert!("nonsense".parse::<ResolveEntry>().is_err());
        assert!("a=notanaddr".parse::<ResolveEntry>().is_err());
    }

    #[test]
    fn seeded_entropy_is_reproducible_and_labelled() {
        let a = SeededEntropy::new(7, "x").next_u64();
        assert_eq!(a, SeededEntropy::new(7, "x").next_u64());
        assert_ne!(a, SeededEntropy::new(7, "y").next_u64());
        assert_ne!(a, SeededEntropy::new(8, "x").next_u64());
    }
}
