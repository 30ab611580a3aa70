//! What the connector has learned about reaching the network, and how it
//! explains a destination it cannot reach.
//!
//! A refused or timed-out connect says little by itself. A field engineer
//! asks: does anything on this port work? Did this name work before, and at
//! which address? Does it resolve at all, or to a sinkhole? The agent keeps
//! the address every (host, port) last worked at, and when nothing on the
//! port has worked yet it tries one reference host of another allow-list
//! group. From that it tells "port 443 is blocked" (NET-443) from "this
//! allow-list entry is missing" (NET-SVC, NET-REG) from "the service moved
//! to addresses your IP allow-list does not have" (NET-RULES).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::allowlist;
use crate::diag::{ConnectFailure, Diagnostic};
use crate::env::Env;

/// How long a reference probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's memory of working destinations.
#[derive(Debug, Default)]
pub struct Reach {
    worked: RefCell<BTreeMap<(String, u16), IpAddr>>,
    references: RefCell<Vec<(String, u16)>>,
    /// Last TLS handshake time (one round trip) per host.
    rtts: RefCell<BTreeMap<String, Duration>>,
}

impl Reach {
    /// Records that `host:port` worked at `addr`.
    pub fn worked(&self, host: &str, port: u16, addr: IpAddr) {
        self.worked.borrow_mut().insert((host.to_ascii_lowercase(), port), addr);
    }

    /// Records how long a TLS handshake with `host` took (one round trip).
    pub fn note_rtt(&self, host: &str, rtt: Duration) {
        self.rtts.borrow_mut().insert(host.to_ascii_lowercase(), rtt);
    }

    /// The last measured round trip to `host`.
    pub fn rtt(&self, host: &str) -> Option<Duration> {
        self.rtts.borrow().get(&host.to_ascii_lowercase()).copied()
    }

    /// The address `host:port` last worked at.
    pub fn last_good(&self, host: &str, port: u16) -> Option<IpAddr> {
        self.worked.borrow().get(&(host.to_ascii_lowercase(), port)).copied()
    }

    /// Hosts that worked on `port` at some time, other than `except`.
    pub fn worked_on(&self, port: u16, except: &str) -> Vec<String> {
        let except = except.to_ascii_lowercase();
        self.worked.borrow().keys().filter(|(h, p)| *p == port && *h != except).map(|(h, _)| h.clone()).collect()
    }

    /// Hosts worth probing when nothing has worked yet (the tenant's
    /// service names, in different allow-list groups).
    pub fn set_references(&self, hosts: Vec<(String, u16)>) {
        *self.references.borrow_mut() = hosts;
    }

    fn references(&self) -> Vec<(String, u16)> {
        self.references.borrow().clone()
    }
}

/// Whether `addr` is a sinkhole answer (what DNS filters return for names
/// they block). Loopback is not counted: `--resolve` to 127.0.0.1 is how
/// tests and local setups point names at a local server.
pub fn is_sinkhole(addr: IpAddr) -> bool {
    addr.is_unspecified()
}

fn entry_text(host: &str, port: u16) -> String {
    match allowlist::entry_for(host, port) {
        Some((g, e)) => format!("{e} on TCP {port} ({}, group {g})", g.requirement()),
        None => format!("{host} on TCP {port}"),
    }
}

/// The diagnostic for `host:port` that could not be reached (`addr`: what
/// it resolved to). May probe a reference host (bounded by [`PROBE_TIMEOUT`]).
pub async fn explain(env: &Env, host: &str, port: u16, addr: Option<IpAddr>, failure: &ConnectFailure) -> Diagnostic {
    let at = addr.map(|a| format!(" ({a})")).unwrap_or_default();
    if *failure == ConnectFailure::Unresolved {
        return crate::diag::unreachable(host, port, failure);
    }
    if let ConnectFailure::Proxy(p) = failure {
        return match p {
            crate::proxy::ProxyError::AuthRequired { proxy } => Diagnostic::new(
                "NET-PROXY",
                "auth-unsupported",
                Some(12020),
                format!("the outbound proxy {proxy} demands authentication (407) for {host}:{port}; the connector does not support proxy authentication"),
                "let the connector's traffic (Network Service) through the proxy without authentication, or bypass the proxy for the service's names",
            ),
            other => Diagnostic::new(
                "NET-PROXY",
                "refused",
                Some(12020),
                format!("{other}"),
                format!("add {} to the proxy's allow-list", entry_text(host, port)),
            ),
        };
    }
    if let Some(a) = addr.filter(|a| is_sinkhole(*a)) {
        return Diagnostic::new(
            "NET-DNS",
            "sinkhole",
            Some(12020),
            format!("{host} resolves to {a}, a sinkhole address: a DNS filter is blocking the name"),
            format!("allow {} in the DNS filter (and the firewall)", entry_text(host, port)),
        );
    }
    if let (Some(now), Some(before)) = (addr, env.reach.last_good(host, port)) {
        if now != before {
            return Diagnostic::new(
                "NET-RULES",
                "stale-ranges",
                Some(12020),
                format!(
                    "cannot reach {host}:{port} at {now} ({failure}); it worked at {before} before: the service moved to addresses outside the allowed ranges"
                ),
                "the service's IP ranges change every week: allow by domain suffix where possible, else update the allow-list to this week's published ranges (service tags)",
            );
        }
    }
    let entry = allowlist::entry_for(host, port);
    let works = probe(env, host, port, entry.map(|(_, e)| e)).await;
    match (works, entry) {
        (Some(other), Some((g, _))) => Diagnostic::new(
            g.requirement(),
            "unreachable",
            Some(12020),
            format!("cannot reach {host}:{port}{at} ({failure}) while {other}:{port} works"),
            format!(
                "the allow-list misses an entry: allow {} on every firewall and proxy; if firewalls filter by user, allow the Network Service account (NET-USER)",
                entry_text(host, port)
            ),
        ),
        _ => {
            let requirement = if port == 80 { "NET-80" } else { "NET-443" };
            Diagnostic::new(
                requirement,
                "unreachable",
                Some(12020),
                format!("cannot reach {host}:{port}{at} ({failure}), and no other host the connector needs answers on {port} either"),
                format!(
                    "outbound TCP {port} appears blocked: allow {} on every firewall and proxy between the connector and the service; if firewalls filter by user, allow the Network Service account (NET-USER)",
                    entry_text(host, port)
                ),
            )
        }
    }
}

/// Tries hosts under other allow-list entries on `port`, those that worked
/// before first, then the reference hosts; returns one that accepts a TCP
/// connection now. Memory alone is not enough: a host that worked before
/// the port was closed says nothing about the port now (seen in the netns
/// world: 443 closed while serving was blamed on a missing allow-list
/// entry because registration had worked an hour earlier).
pub(crate) async fn probe(env: &Env, host: &str, port: u16, entry: Option<&str>) -> Option<String> {
    let mut candidates = env.reach.worked_on(port, host);
    for (reference, rport) in env.reach.references() {
        if rport == port && !reference.eq_ignore_ascii_case(host) && !candidates.contains(&reference) {
            candidates.push(reference);
        }
    }
    for reference in candidates {
        if entry.is_some() && allowlist::entry_for(&reference, port).map(|(_, e)| e) == entry {
            continue;
        }
        if let Ok(Ok((addr, _stream))) =
            crate::time::timeout(PROBE_TIMEOUT, crate::env::connect(env.net.as_ref(), &reference, port)).await
        {
            env.reach.worked(&reference, port, addr);
            return Some(reference);
        }
    }
    None
}
