//! The simulator's own floor: the cheapest world with a connector's
//! keepalive traffic, to tell what a long simulated period costs because of
//! the connector and what it costs because of the simulator.
//!
//! A connector that is up spends its simulated days on keepalives: every
//! tunnel sends a ping 10 s after its last send and the relay answers. This
//! world has the same hosts, links, latencies, stepping and timer
//! announcements as a scenario run, but (over [`Wire::Tcp`]) no TLS, no
//! protocol and no agent:
//! `tunnels` plain TCP connections from one host to one relay host each, a
//! 16-byte ping 10 s after the last (an announced
//! [`connector::time::sleep_until`]) and a 16-byte echo. Whatever a
//! scenario costs above this world is ours to cut; what this world costs is
//! turmoil's and tokio's, per step and per host run.
//!
//! With [`Wire::Tls`] the same world speaks the TLS the spec asks of a
//! connector (see [`tls`]): each tunnel is TLS 1.3, and a bootstrap
//! connection every 10 minutes makes a resumed handshake, sends one ping
//! and closes. That is the floor under any connector that follows the spec
//! on this simulator with this cryptography.

mod requests;
pub(crate) mod tls;

pub use requests::Requests;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::run::DEFAULT_TICK;
use crate::stopwatch::Stopwatch;
use crate::wakeups::Stepper;

/// The keepalive interval of the real connector (CONNECTOR-FACTS).
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(10);
/// The real connector's bootstrap interval (CONNECTOR-FACTS).
const BOOTSTRAP: Duration = Duration::from_secs(600);
pub(crate) const PING: [u8; 16] = [0x50; 16];
/// Tunnels of a connector in a default world: one per relay, two relays.
pub const TUNNELS: usize = 2;

/// When the floor's tunnels ping, relative to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// All at the same instants: one step serves every tunnel. The
    /// cheapest world there is, but not the traffic of a connector that
    /// has run a while.
    Together,
    /// Spread evenly over the interval. A connector's tunnels open
    /// together, but each pings 10 s after its own last send, so the first
    /// request one of them carries, or its first reconnect, puts it out of
    /// phase for good (in 30 simulated days every tunnel has both): each
    /// tunnel's keepalive is then a step of its own, as here.
    Spread,
}

/// What the floor's connections carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Bare TCP: the simulator alone.
    Tcp,
    /// TLS 1.3 tunnels, and a resumed TLS handshake every 10 minutes as a
    /// bootstrap: the simulator and the cryptography the spec asks for.
    Tls,
}

/// What the floor world cost.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub wall: Duration,
    pub steps: u64,
    pub host_runs: u64,
    /// Ping-echo exchanges completed, over all tunnels.
    pub exchanges: u64,
    /// Bootstraps completed (each a TLS handshake; none over bare TCP).
    pub bootstraps: u64,
    /// Bootstraps that resumed a session (all but the first, or the floor
    /// would be a full handshake dearer than a connector's).
    pub resumed: u64,
    /// Users' requests answered.
    pub answered: u64,
}

/// The floor's counters, shared by its hosts.
#[derive(Clone, Default)]
struct Counts {
    exchanges: Arc<AtomicU64>,
    bootstraps: Arc<AtomicU64>,
    resumed: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
}

/// What a floor world carries besides its keepalives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Tunnels of the one connector, one relay host each.
    pub tunnels: usize,
    pub phase: Phase,
    pub wire: Wire,
    /// Users' requests, through the first relay and its tunnel to a
    /// backend ([`requests`]); none when `None`.
    pub requests: Option<Requests>,
}

impl Shape {
    /// Keepalives alone, over `wire`.
    pub fn keepalives(phase: Phase, wire: Wire) -> Self {
        Shape { tunnels: TUNNELS, phase, wire, requests: None }
    }
}

/// Runs `duration` of simulated time of one connector's keepalive loops
/// (and, as `shape` says, bootstraps and users' requests).
pub fn keepalive(duration: Duration, shape: Shape, seed: u64) -> Result<Floor, String> {
    let mut sim = crate::run::new_sim(seed, duration, DEFAULT_TICK);
    let relays: Vec<String> = (0..shape.tunnels.max(1)).map(|i| format!("relay-{i}")).collect();
    let tls = match shape.wire {
        Wire::Tcp => None,
        Wire::Tls => Some(tls::Tls::new(seed, &relays)?),
    };
    let counts = Counts::default();
    for (i, relay) in relays.iter().enumerate() {
        match shape.requests {
            Some(_) if i == 0 => requests::relay_host(&mut sim, relay, tls.clone()),
            _ => relay_host(&mut sim, relay, tls.clone()),
        }
    }
    if let Some(r) = shape.requests {
        requests::backend_host(&mut sim);
        requests::users_host(&mut sim, relays[0].clone(), r, &counts.answered);
    }
    let counted = counts.clone();
    let serves = shape.requests.is_some();
    sim.host("connector", move || {
        let (relays, counted, tls) = (relays.clone(), counted.clone(), tls.clone());
        async move {
            let mut loops = Vec::new();
            if let Some(tls) = &tls {
                loops.push(tokio::task::spawn_local(bootstraps(relays[0].clone(), tls.clone(), counted.clone())));
            }
            let n = relays.len();
            for (i, relay) in relays.into_iter().enumerate() {
                let delay = if shape.phase == Phase::Spread { spread(i, n) } else { Duration::ZERO };
                let serving = serves && i == 0;
                loops.push(tokio::task::spawn_local(ping_loop(relay, delay, tls.clone(), serving, counted.clone())));
            }
            for l in loops {
                l.await??;
            }
            turmoil::Result::Ok(())
        }
    });
    let floor = step_through(sim, duration, counts)?;
    check(&floor, duration, shape)?;
    Ok(floor)
}

/// A floor that did less than it claims (a request lost) or more (a
/// bootstrap not resumed) would measure the wrong thing: an error, not a
/// row.
fn check(floor: &Floor, duration: Duration, shape: Shape) -> Result<(), String> {
    if floor.resumed + 1 < floor.bootstraps {
        return Err(format!("floor world: {} of {} bootstraps resumed", floor.resumed, floor.bootstraps));
    }
    if let Some(r) = shape.requests {
        // Every request sent a minute before the end has had time to be answered.
        let due = (0..r.count).filter(|i| r.at(*i).saturating_add(Duration::from_secs(60)) <= duration).count();
        if floor.answered < due as u64 {
            return Err(format!("floor world: {} of {due} requests answered", floor.answered));
        }
    }
    Ok(())
}

/// The floor of the scale worlds (`connsim bench-world scale`): as many
/// connector hosts, each with the one tunnel a one-relay world gives it,
/// pinging one relay host out of phase, over bare TCP. What the simulator
/// itself costs for a fleet of that size, so that 1,000 connectors against
/// 100 can be read against the same ratio of its floors.
pub fn fleet(duration: Duration, connectors: usize, seed: u64) -> Result<Floor, String> {
    let mut sim = crate::run::new_sim(seed, duration, DEFAULT_TICK);
    relay_host(&mut sim, "relay-0", None);
    let counts = Counts::default();
    let n = connectors.max(1);
    for i in 0..n {
        let counted = counts.clone();
        let delay = spread(i, n);
        sim.host(format!("connector-{i}").as_str(), move || {
            ping_loop("relay-0".to_string(), delay, None, false, counted.clone())
        });
    }
    step_through(sim, duration, counts)
}

/// When the `i`th of `n` keepalive loops starts, so that the `n` are
/// spread evenly over one interval.
fn spread(i: usize, n: usize) -> Duration {
    KEEPALIVE / u32::try_from(n.max(1)).unwrap_or(u32::MAX) * u32::try_from(i).unwrap_or(0)
}

/// A relay host that echoes every ping on port 443, over TLS when given.
fn relay_host(sim: &mut turmoil::Sim<'_>, name: &str, tls: Option<tls::Tls>) {
    sim.host(name, move || {
        let tls = tls.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 443)).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                let tls = tls.clone();
                tokio::task::spawn_local(async move {
                    match tls {
                        None => echo(stream).await,
                        Some(tls) => {
                            if let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls.server).accept(stream).await {
                                echo(stream).await;
                            }
                        }
                    }
                });
            }
        }
    });
}

/// Answers each ping with itself until the peer goes.
pub(crate) async fn echo(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = [0u8; PING.len()];
    while stream.read_exact(&mut buf).await.is_ok() {
        if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
            break;
        }
    }
}

/// One tunnel's keepalives to `relay`, starting after `delay`: like the
/// connector, the next ping is due 10 s after the last send, whenever the
/// echo comes. A `serving` tunnel answers requests too ([`requests`]).
async fn ping_loop(
    relay: String,
    delay: Duration,
    tls: Option<tls::Tls>,
    serving: bool,
    counted: Counts,
) -> turmoil::Result {
    if !delay.is_zero() {
        connector::time::sleep(delay).await;
    }
    let tcp = turmoil::net::TcpStream::connect((relay.as_str(), 443)).await?;
    match (tls, serving) {
        (None, false) => pings(tcp, &counted.exchanges).await,
        (None, true) => requests::tunnel(tcp, counted).await,
        (Some(tls), false) => pings(tls.connect(&relay, tcp).await?, &counted.exchanges).await,
        (Some(tls), true) => requests::tunnel(tls.connect(&relay, tcp).await?, counted).await,
    }
}

/// A ping 10 s after the last send, and its echo, for ever.
async fn pings(mut stream: impl AsyncRead + AsyncWrite + Unpin, counted: &AtomicU64) -> turmoil::Result {
    let mut buf = [0u8; PING.len()];
    let mut due = connector::time::Instant::now() + KEEPALIVE;
    loop {
        connector::time::sleep_until(due).await;
        stream.write_all(&PING).await?;
        stream.flush().await?;
        due = connector::time::Instant::now() + KEEPALIVE;
        stream.read_exact(&mut buf).await?;
        counted.fetch_add(1, Ordering::Relaxed);
    }
}

/// A bootstrap every 10 minutes, from the start: a TLS connection to
/// `relay` (resumed after the first), one ping and its echo, a clean close.
async fn bootstraps(relay: String, tls: tls::Tls, counted: Counts) -> turmoil::Result {
    let mut buf = [0u8; PING.len()];
    loop {
        let tcp = turmoil::net::TcpStream::connect((relay.as_str(), 443)).await?;
        let mut stream = tls.connect(&relay, tcp).await?;
        stream.write_all(&PING).await?;
        stream.flush().await?;
        stream.read_exact(&mut buf).await?;
        stream.shutdown().await?;
        counted.bootstraps.fetch_add(1, Ordering::Relaxed);
        if stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            counted.resumed.fetch_add(1, Ordering::Relaxed);
        }
        connector::time::sleep(BOOTSTRAP).await;
    }
}

/// Steps `sim` through `duration` the way scenario runs are stepped.
fn step_through(mut sim: turmoil::Sim<'_>, duration: Duration, counts: Counts) -> Result<Floor, String> {
    let mut stepper = Stepper::attach(&mut sim, DEFAULT_TICK, true);
    let watch = Stopwatch::start();
    while sim.elapsed() < duration {
        stepper.step(&mut sim, duration).map_err(|e| format!("floor world: {e}"))?;
    }
    let wall = watch.elapsed();
    Ok(Floor {
        wall,
        steps: stepper.steps,
        host_runs: sim.host_runs(),
        exchanges: counts.exchanges.load(Ordering::Relaxed),
        bootstraps: counts.bootstraps.load(Ordering::Relaxed),
        resumed: counts.resumed.load(Ordering::Relaxed),
        answered: counts.answered.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tunnel_pings_every_interval() {
        let f = keepalive(Duration::from_secs(86_400), Shape::keepalives(Phase::Together, Wire::Tcp), 7).unwrap();
        // 8,640 intervals a day per tunnel; the first ping goes 10 s
        // after connecting, the last echo may be cut off by the end.
        assert!((17_270..=17_280).contains(&f.exchanges), "{f:?}");
        // Each exchange runs its relay at least once (the connector's runs
        // may serve both tunnels).
        assert!(f.host_runs >= f.exchanges, "{f:?}");
    }

    #[test]
    fn a_keepalive_costs_three_host_runs() {
        // One tunnel: the connector sends (its timer is due on the tick
        // grid), the relay echoes, the connector reads. A timer due exactly
        // at a step's end must not run its host in that step as well.
        let f = keepalive(
            Duration::from_secs(3600),
            Shape { tunnels: 1, ..Shape::keepalives(Phase::Together, Wire::Tcp) },
            3,
        )
        .unwrap();
        assert_eq!(f.exchanges, 359, "{f:?}");
        assert!(f.host_runs <= 3 * f.exchanges + 10, "{f:?}");
    }

    #[test]
    fn a_fleet_pings_from_every_connector() {
        let f = fleet(Duration::from_secs(600), 10, 3).unwrap();
        // 60 intervals in 10 minutes, each connector's first ping 10 s
        // after it connects, the starts spread over one interval.
        assert!((10 * 58..=10 * 60).contains(&f.exchanges), "{f:?}");
        assert!(f.host_runs >= 2 * f.exchanges, "{f:?}");
    }

    #[test]
    fn the_tls_floor_pings_as_often_and_bootstraps_resumed() {
        let hour = Duration::from_secs(3600);
        let tcp = keepalive(hour, Shape::keepalives(Phase::Spread, Wire::Tcp), 3).unwrap();
        let tls = keepalive(hour, Shape::keepalives(Phase::Spread, Wire::Tls), 3).unwrap();
        // A handshake's round trips may cost a tunnel its last exchange.
        assert!(tcp.exchanges.abs_diff(tls.exchanges) <= 2, "{tcp:?} {tls:?}");
        assert_eq!((tcp.bootstraps, tcp.resumed), (0, 0));
        // At 0, 10, ..., 50 minutes; only the first is a full handshake.
        assert_eq!((tls.bootstraps, tls.resumed), (6, 5), "{tls:?}");
        assert!(tls.host_runs > tcp.host_runs, "{tcp:?} {tls:?}");
    }

    #[test]
    fn every_request_of_the_users_is_answered_through_the_tunnel() {
        let hour = Duration::from_secs(3600);
        let requests =
            Some(Requests { start: Duration::from_secs(120), interval: Duration::from_secs(30), count: 100 });
        for wire in [Wire::Tcp, Wire::Tls] {
            let plain = keepalive(hour, Shape::keepalives(Phase::Spread, wire), 3).unwrap();
            let users = keepalive(hour, Shape { requests, ..Shape::keepalives(Phase::Spread, wire) }, 3).unwrap();
            assert_eq!(users.answered, 100, "{wire:?}: {users:?}");
            assert_eq!(plain.answered, 0);
            // Answers are sends: the serving tunnel pings less while busy.
            assert!(users.exchanges < plain.exchanges && users.exchanges > plain.exchanges / 2, "{users:?}");
            assert!(users.host_runs > plain.host_runs, "{plain:?} {users:?}");
        }
    }

    #[test]
    fn a_floor_that_lost_a_request_is_an_error_not_a_figure() {
        // A user at the very start reaches the relay before the tunnel's TLS
        // handshake is done: its request has no tunnel to go down.
        let early = Some(Requests { start: Duration::ZERO, interval: Duration::from_secs(30), count: 5 });
        let shape = Shape { requests: early, ..Shape::keepalives(Phase::Spread, Wire::Tls) };
        let e = keepalive(Duration::from_secs(600), shape, 3).unwrap_err();
        assert!(e.contains("4 of 5 requests answered"), "{e}");
    }

    #[test]
    fn spread_tunnels_take_a_step_each() {
        let hour = Duration::from_secs(3600);
        let together = keepalive(hour, Shape::keepalives(Phase::Together, Wire::Tcp), 3).unwrap();
        let spread = keepalive(hour, Shape::keepalives(Phase::Spread, Wire::Tcp), 3).unwrap();
        // The second tunnel starts 5 s late: at most one exchange fewer.
        assert!(together.exchanges.abs_diff(spread.exchanges) <= 1, "{together:?} {spread:?}");
        // Nearly twice the steps (the start's steps are shared either way).
        assert!(spread.steps * 10 >= together.steps * 19, "{together:?} {spread:?}");
    }
}
