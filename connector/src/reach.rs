//! Explaining a destination the connector cannot reach: the I/O half of
//! [`crate::classify`]. A refused or timed-out connect says little by
//! itself; a field engineer asks whether another host under the same
//! allow-list entry answers, whether anything of another entry or group on
//! the port answers, whether the name worked before and at which address.
//! This module asks the network those questions now, and the classifier
//! turns the answers (and the evidence log's memory) into one finding.

use std::net::IpAddr;
use std::time::Duration;

use crate::classify;
use crate::diag::Diagnostic;
use crate::env::Env;
use crate::evidence::Outcome;
use crate::net::{BoxStream, ConnectFailure};

/// How long a reference probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// An attempt this recent at a probe's destination answers the probe
/// (several failures explained one after another ask the same questions).
pub const PROBE_FRESH: Duration = Duration::from_secs(10);

/// A failed connect, explained.
pub struct Unreachable {
    pub addr: Option<IpAddr>,
    pub failure: ConnectFailure,
    pub verdict: classify::Verdict,
    pub diagnostic: Diagnostic,
}

/// Connects to `host:port` (see [`crate::env::connect_observed`]); a
/// connect refused or unanswered is tried once more (bounded by
/// [`PROBE_TIMEOUT`]) before it is explained: a fault that ended while the
/// first attempt waited is no finding, and the probes that explain a
/// failure are only meaningful while the destination still fails.
pub async fn connect(env: &Env, host: &str, port: u16, timeout: Duration) -> Result<(IpAddr, BoxStream), Unreachable> {
    let (addr, failure) = match crate::env::connect_observed(env, host, port, timeout).await {
        Ok(done) => return Ok(done),
        Err(e) => e,
    };
    let transport = matches!(failure.onward(), ConnectFailure::Refused | ConnectFailure::TimedOut);
    if transport && addr.is_some() {
        if let Ok(done) = crate::env::connect_observed(env, host, port, PROBE_TIMEOUT).await {
            return Ok(done);
        }
    }
    let (verdict, diagnostic) = explain(env, host, port, addr, &failure).await;
    // Another destination answered just now: if this one does too, the
    // fault ended while it was being explained, and there is no finding.
    if transport && verdict.another_answered() {
        if let Ok(done) = crate::env::connect_observed(env, host, port, PROBE_TIMEOUT).await {
            return Ok(done);
        }
    }
    Err(Unreachable { addr, failure, verdict, diagnostic })
}

/// The diagnostic for `host:port` that could not be reached (`addr`: what
/// it resolved to): probes chosen by [`classify::probe_plan`] are tried now
/// (each bounded by [`PROBE_TIMEOUT`]) and [`classify::unreachable`] names
/// the cause.
pub async fn explain(
    env: &Env,
    host: &str,
    port: u16,
    addr: Option<IpAddr>,
    failure: &ConnectFailure,
) -> (classify::Verdict, Diagnostic) {
    let last_good = env.evidence.last_good(host, port);
    let route = env.net.route();
    let via = match &route {
        crate::net::Route::Proxy(p) => Some(p.as_str()),
        crate::net::Route::Direct => None,
    };
    let account = env.net.account();
    let other_account = env.evidence.worked_only_as_other(port, &account);
    let cloud = env.evidence.cloud();
    let replaced = env.evidence.replaced_relay(host, port);
    let failed = classify::Failed {
        host,
        port,
        addr,
        failure,
        last_good,
        cloud,
        via,
        account: &account,
        other_account,
        replaced,
    };
    let mut probes = if classify::needs_probes(&failed) { probe(env, host, port).await } else { Vec::new() };
    let mut verdict = classify::verdict(&failed, &probes);
    if let classify::Verdict::OtherCloud { .. } = verdict {
        // The other cloud is asked last: before the network is called the
        // other cloud's, the hosts of this cloud that failed are asked
        // again (until one answers). A fault that ended while the probes
        // ran is no such network.
        let cloud = env.evidence.cloud();
        let ours = |p: &classify::Probe| crate::allowlist::cloud_of(&p.host, p.port) == Some(cloud);
        for p in probes.iter_mut().filter(|p| p.failure.is_some() && ours(p)) {
            if crate::env::connect_observed(env, &p.host, p.port, PROBE_TIMEOUT).await.is_ok() {
                p.failure = None;
                break;
            }
        }
        verdict = classify::verdict(&failed, &probes);
    }
    let diagnostic = classify::diagnostic(&failed, &verdict);
    (verdict, diagnostic)
}

/// Tries, now, the destinations [`classify::probe_plan`] picks for a
/// failure of `host:port`, until one answers. Memory alone is not enough:
/// a host that worked before the port was closed says nothing about the
/// port now (seen in the netns world: 443 closed while serving was blamed
/// on a missing allow-list entry because registration had worked an hour
/// earlier).
pub(crate) async fn probe(env: &Env, host: &str, port: u16) -> Vec<classify::Probe> {
    let candidates = env.evidence.candidates(port, host);
    // Through a proxy, first the proxy itself: if it does not answer,
    // nothing beyond it can be asked.
    let proxy = probe_proxy(env).await;
    if proxy.as_ref().is_some_and(|p| p.failure.is_some()) {
        return proxy.into_iter().collect();
    }
    let mut probes = Vec::new();
    for reference in classify::probe_plan(host, port, env.evidence.cloud(), &candidates) {
        let before = env.evidence.last_good(&reference, port);
        let failed = match env.evidence.recent(&reference, port, &env.net.account(), PROBE_FRESH) {
            Some(Outcome::Connected { .. }) => None,
            Some(Outcome::Failed { addr, failure }) => Some((addr, failure)),
            None => crate::env::connect_observed(env, &reference, port, PROBE_TIMEOUT).await.err(),
        };
        let failed_where_it_worked = matches!((&failed, before), (Some((Some(a), _)), Some(b)) if *a == b);
        let failure = failed.map(|(_, f)| f);
        probes.push(classify::Probe { host: reference, port, failure, failed_where_it_worked });
        if classify::probes_settle(&probes) {
            break;
        }
    }
    proxy.into_iter().chain(probes).collect()
}

/// A TCP connect to the outbound proxy itself, if there is one.
async fn probe_proxy(env: &Env) -> Option<classify::Probe> {
    let hop = env.net.proxy()?;
    let reached = crate::time::timeout(PROBE_TIMEOUT, crate::net::connect(hop.inner, hop.host, hop.port)).await;
    let failure = match reached {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(ConnectFailure::from_io(&e.error)),
        Err(_) => Some(ConnectFailure::TimedOut),
    };
    Some(classify::Probe { host: hop.host.to_string(), port: hop.port, failure, failed_where_it_worked: false })
}
