//! Reading a trace: a [`Summary`] of what happened, and the checks of a
//! scenario's expectations plus the invariants every run must keep (no user
//! request served twice; every user request answered or failed cleanly).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use connector::diag::Diagnostic;
use connector::event::AgentEvent;
use relay_sim::backend::ServedLog;
use serde::{Deserialize, Serialize};

use crate::scenario::{Expect, Outcome, TimelineEvent};
use crate::trace::{TraceEvent, UserEvent, What, WorldEvent};

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Reads [`Summary::statuses`] back from a JSON report, whose map keys are
/// text (serde reads a flattened struct's number keys only as numbers).
fn statuses_from_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<u16, u32>, D::Error> {
    use serde::de::Error;
    BTreeMap::<String, u32>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| k.parse().map(|k| (k, v)).map_err(|_| D::Error::custom(format!("{k:?} is not an HTTP status"))))
        .collect()
}

/// What a run amounted to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    pub outcome: Option<Outcome>,
    pub registered: u32,
    pub stopped: Vec<String>,
    pub bootstraps: u32,
    pub tunnel_opens: u32,
    pub tunnel_reconnects: u32,
    pub tunnels_up_at_end: u32,
    pub requests_sent: u32,
    pub requests_ok: u32,
    pub requests_failed: u32,
    /// Answers by HTTP status.
    #[serde(deserialize_with = "statuses_from_json")]
    pub statuses: BTreeMap<u16, u32>,
    /// User requests sent but never answered nor failed, with the time sent.
    pub unanswered: Vec<(String, u64)>,
    pub diagnostics: Vec<Diagnostic>,
    /// Request marks a backend served more than once.
    pub duplicates: Vec<(String, u32)>,
    /// Successes whose body was wrong (mark, what).
    pub corrupted: Vec<(String, String)>,
    /// The codes each connector host reported.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub diagnostics_by_host: BTreeMap<String, BTreeSet<String>>,
    /// Answers with the status their load expects (`expect_status`).
    #[serde(skip_serializing_if = "is_zero")]
    pub requests_as_expected: u32,
    /// Successes where the load expects an error (the backend cannot
    /// succeed): (mark, what). Other unexpected answers count as `not_ok`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unexpected: Vec<(String, String)>,
    pub backend_served: u64,
    /// Agent and cloud events by name (`crl_fetched`, `tls_refused`, ...).
    pub events: BTreeMap<String, u32>,
    /// Requests each connector host served.
    pub served_by: BTreeMap<String, u32>,
    /// User answers carrying an ingress error code (`no-active-connector`).
    pub relay_errors: BTreeMap<String, u32>,
    /// Mean time from sending to a 2xx answer, in milliseconds.
    pub user_latency_ms_avg: Option<u64>,
    /// User requests answered with an error or failed, with the time sent.
    pub not_ok: Vec<(String, u64)>,
    /// The version each connector host runs: installed, upgraded or rolled
    /// back to (a switch not yet confirmed does not count).
    pub versions: BTreeMap<String, String>,
    /// Every finding as reported: when, by which host (for `[[expect.window]]`).
    #[serde(skip)]
    pub findings: Vec<crate::window::Finding>,
    /// Every request served: when, by which host.
    #[serde(skip)]
    pub served_at: Vec<(u64, String)>,
}

impl Summary {
    pub fn diagnostic_codes(&self) -> BTreeSet<&str> {
        self.diagnostics.iter().map(|d| d.code.as_str()).collect()
    }
}

/// Summarizes a trace and the backends' logs.
pub fn summarize(events: &[TraceEvent], logs: &ServedLog) -> Summary {
    let mut s = Summary::default();
    let mut tunnel_state: BTreeMap<(String, String), bool> = BTreeMap::new();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen_diag: BTreeSet<Diagnostic> = BTreeSet::new();
    let mut latencies: Vec<u64> = Vec::new();
    for e in events {
        if let What::Agent(_) | What::Cloud(_) = &e.what {
            if let Some(name) = event_name(&e.what) {
                *s.events.entry(name).or_default() += 1;
            }
        }
        match &e.what {
            What::Agent(a) => match a {
                AgentEvent::Registered { .. } | AgentEvent::IdentityLoaded { .. } => {
                    s.registered += 1;
                    // A new boot of the host: whatever tunnels it had are gone.
                    host_down(&mut tunnel_state, &e.host);
                }
                AgentEvent::Stopped { reason } => {
                    s.stopped.push(format!("{}: {reason}", e.host));
                    host_down(&mut tunnel_state, &e.host);
                }
                AgentEvent::BootstrapOk { .. } => s.bootstraps += 1,
                AgentEvent::Installed { version }
                | AgentEvent::Upgraded { version }
                | AgentEvent::RolledBack { to: version, .. } => {
                    s.versions.insert(e.host.clone(), version.clone());
                }
                AgentEvent::RequestServed { .. } => {
                    *s.served_by.entry(e.host.clone()).or_default() += 1;
                    s.served_at.push((e.t_ms, e.host.clone()));
                }
                AgentEvent::TunnelUp { endpoint } => {
                    s.tunnel_opens += 1;
                    if tunnel_state.insert((e.host.clone(), endpoint.clone()), true).is_some() {
                        s.tunnel_reconnects += 1;
                    }
                }
                AgentEvent::TunnelDown { endpoint, .. } => {
                    if let Some(up) = tunnel_state.get_mut(&(e.host.clone(), endpoint.clone())) {
                        *up = false;
                    }
                }
                AgentEvent::Diagnostic(d) => {
                    s.diagnostics_by_host.entry(e.host.clone()).or_default().insert(d.code.clone());
                    let finding = crate::window::Finding { t_ms: e.t_ms, host: e.host.clone(), diagnostic: d.clone() };
                    s.findings.push(finding);
                    if seen_diag.insert(d.clone()) {
                        s.diagnostics.push(d.clone());
                    }
                }
                _ => {}
            },
            What::User(u) => user_event(&mut s, &mut sent, &mut latencies, u, e.t_ms),
            What::World(WorldEvent::Applied { what }) => {
                // A crashed connector host keeps no tunnel.
                if let Some(host) = what.parse::<TimelineEvent>().ok().as_ref().and_then(TimelineEvent::stops_host) {
                    host_down(&mut tunnel_state, host);
                }
            }
            What::Cloud(_) => {}
        }
    }
    s.tunnels_up_at_end = tunnel_state.values().filter(|up| **up).count() as u32;
    if !latencies.is_empty() {
        s.user_latency_ms_avg = Some(latencies.iter().sum::<u64>() / latencies.len() as u64);
    }
    s.unanswered = sent.into_iter().collect();
    s.duplicates = logs.duplicates();
    s.backend_served = logs.total();
    s.outcome = Some(outcome(s.registered > 0, s.tunnels_up_at_end > 0, !s.stopped.is_empty()));
    s
}

/// A run's outcome from what its connectors reported: whether one
/// registered (or loaded its identity), holds a tunnel at the end, or
/// stopped. Both worlds judge with it.
pub fn outcome(registered: bool, tunnel_up_at_end: bool, stopped: bool) -> Outcome {
    if !registered {
        Outcome::RegistrationFailed
    } else if tunnel_up_at_end {
        Outcome::Serving
    } else if stopped {
        Outcome::Stopped
    } else {
        Outcome::NotServing
    }
}

/// What a simulated user saw, into the summary: `sent` holds requests not
/// answered yet (with the time sent), `latencies` successes' round trips.
fn user_event(s: &mut Summary, sent: &mut BTreeMap<String, u64>, latencies: &mut Vec<u64>, u: &UserEvent, t_ms: u64) {
    match u {
        UserEvent::Sent { mark } => {
            s.requests_sent += 1;
            sent.insert(mark.clone(), t_ms);
        }
        UserEvent::Answered { mark, status, relay_error } => {
            if let (Some(t0), true) = (sent.get(mark), (200..300).contains(status)) {
                latencies.push(t_ms.saturating_sub(*t0));
            }
            if let (Some(t0), false) = (sent.get(mark), (200..300).contains(status)) {
                s.not_ok.push((mark.clone(), *t0));
            }
            sent.remove(mark);
            if let Some(code) = relay_error {
                *s.relay_errors.entry(code.clone()).or_default() += 1;
            }
            *s.statuses.entry(*status).or_default() += 1;
            if (200..300).contains(status) {
                s.requests_ok += 1;
            } else {
                s.requests_failed += 1;
            }
        }
        UserEvent::Failed { mark, .. } => {
            if let Some(t0) = sent.remove(mark) {
                s.not_ok.push((mark.clone(), t0));
            }
            s.requests_failed += 1;
        }
        UserEvent::Expected { mark, status, relay_error } => {
            sent.remove(mark);
            if let Some(code) = relay_error {
                *s.relay_errors.entry(code.clone()).or_default() += 1;
            }
            *s.statuses.entry(*status).or_default() += 1;
            s.requests_as_expected += 1;
        }
        UserEvent::Unexpected { mark, status, expected } => {
            let ok = |c: &u16| (200..300).contains(c);
            if ok(status) && !ok(expected) {
                // A success from a backend that cannot succeed.
                s.unexpected.push((mark.clone(), format!("got {status} where only {expected} is possible")));
            } else if let Some(t0) = sent.get(mark) {
                // Like any failed answer: fine during a fault, not after.
                s.not_ok.push((mark.clone(), *t0));
            }
            sent.remove(mark);
            *s.statuses.entry(*status).or_default() += 1;
            s.requests_failed += 1;
        }
        UserEvent::Corrupted { mark, what, .. } => {
            if let Some(t0) = sent.remove(mark) {
                s.not_ok.push((mark.clone(), t0));
            }
            s.corrupted.push((mark.clone(), what.clone()));
            s.requests_failed += 1;
        }
    }
}

fn host_down(tunnels: &mut BTreeMap<(String, String), bool>, host: &str) {
    for ((h, _), up) in tunnels.iter_mut() {
        if h == host {
            *up = false;
        }
    }
}

/// The `event` tag of an agent or cloud event.
fn event_name(what: &What) -> Option<String> {
    let value = match what {
        What::Agent(a) => serde_json::to_value(a).ok()?,
        What::Cloud(c) => serde_json::to_value(c).ok()?,
        _ => return None,
    };
    value.get("event")?.as_str().map(str::to_string)
}

/// How an expected count compares.
#[derive(Clone, Copy)]
enum Bound {
    Exactly,
    AtLeast,
    AtMost,
}

/// Checks expected counts by name against what happened.
fn counts(
    failures: &mut Vec<String>,
    what: &str,
    expected: &BTreeMap<String, u32>,
    actual: &BTreeMap<String, u32>,
    bound: Bound,
) {
    for (name, n) in expected {
        let got = actual.get(name).copied().unwrap_or(0);
        let (ok, word) = match bound {
            Bound::Exactly => (got == *n, "exactly"),
            Bound::AtLeast => (got >= *n, "at least"),
            Bound::AtMost => (got <= *n, "at most"),
        };
        if !ok {
            failures.push(format!("{what} {name}: expected {word} {n}, got {got} (all: {actual:?})"));
        }
    }
}

/// What breaks the invariants every scenario keeps, whatever it expects.
fn invariant_failures(s: &Summary, duration: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    // Invariant: at most once.
    for (mark, n) in &s.duplicates {
        failures.push(format!("invariant: user request {mark} was served {n} times by its backend"));
    }
    // Invariant: never a truncated or changed success.
    for (mark, what) in &s.corrupted {
        failures.push(format!("invariant: user request {mark} succeeded with a wrong answer: {what}"));
    }
    for (mark, what) in &s.unexpected {
        failures.push(format!("invariant: user request {mark}: {what} (its load's expect_status)"));
    }
    // Invariant: no user request silently lost. A request sent in the last
    // two minutes may legitimately still be in flight.
    let grace_ms = 120_000;
    for (mark, t) in &s.unanswered {
        if t + grace_ms <= duration.as_millis() as u64 {
            failures.push(format!("invariant: user request {mark} (sent at {t} ms) was never answered"));
        }
    }
    failures
}

/// Everything in `expect` (and the invariants) that `s` violates.
pub fn check(expect: &Expect, s: &Summary, duration: Duration) -> Vec<String> {
    let mut failures = invariant_failures(s, duration);
    if s.outcome != Some(expect.outcome) {
        failures
            .push(format!("outcome: expected {:?}, got {:?} (stopped: {:?})", expect.outcome, s.outcome, s.stopped));
    }
    failures.extend(request_failures(expect, s));
    failures.extend(agent_failures(expect, s));
    failures
}

/// The expectations on users' answers (`requests_ok`, `requests_ok_min`,
/// `requests_failed_max`, `user_statuses`) that `s` violates. Both worlds
/// judge with it.
pub fn request_failures(expect: &Expect, s: &Summary) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(n) = expect.requests_ok {
        if s.requests_ok != n {
            failures.push(format!("requests_ok: expected {n}, got {} (statuses {:?})", s.requests_ok, s.statuses));
        }
    }
    if let Some(n) = expect.requests_ok_min {
        if s.requests_ok < n {
            failures.push(format!("requests_ok: expected at least {n}, got {}", s.requests_ok));
        }
    }
    if let Some(n) = expect.requests_failed_max {
        if s.requests_failed > n {
            failures.push(format!(
                "requests failed: at most {n} allowed, got {} (statuses {:?})",
                s.requests_failed, s.statuses
            ));
        }
    }
    for (status, n) in &expect.user_statuses {
        let got = status.parse::<u16>().ok().and_then(|st| s.statuses.get(&st)).copied().unwrap_or(0);
        if got != *n {
            failures.push(format!("user_statuses: expected {n} answers with {status}, got {got}"));
        }
    }
    failures
}

/// The rest of `expect`: what the connectors did and reported (the netns
/// world judges its findings with [`diagnostic_failures`] alone).
fn agent_failures(expect: &Expect, s: &Summary) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(n) = expect.bootstraps_min {
        if s.bootstraps < n {
            failures.push(format!("bootstraps: expected at least {n}, got {}", s.bootstraps));
        }
    }
    if let Some(n) = expect.tunnel_reconnects_min {
        if s.tunnel_reconnects < n {
            failures.push(format!("tunnel reconnects: expected at least {n}, got {}", s.tunnel_reconnects));
        }
    }
    if let Some(min) = expect.user_latency_ms_avg_min {
        if s.user_latency_ms_avg.is_none_or(|a| a < min) {
            failures.push(format!("mean user latency: expected at least {min} ms, got {:?}", s.user_latency_ms_avg));
        }
    }
    if let Some(max) = expect.user_latency_ms_avg_max {
        if s.user_latency_ms_avg.is_none_or(|a| a > max) {
            failures.push(format!("mean user latency: expected at most {max} ms, got {:?}", s.user_latency_ms_avg));
        }
    }
    if let Some(after) = expect.ok_after {
        let after_ms = after.0.as_millis() as u64;
        let late: Vec<String> = s
            .not_ok
            .iter()
            .chain(&s.unanswered)
            .filter(|(_, t)| *t >= after_ms)
            .map(|(mark, t)| format!("{mark} sent at {t} ms"))
            .collect();
        if !late.is_empty() {
            failures.push(format!(
                "serving again by {} ms: {} request(s) sent later did not get a 2xx answer: {}",
                after_ms,
                late.len(),
                late.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for (host, want) in &expect.versions {
        if s.versions.get(host) != Some(want) {
            failures.push(format!("version of {host}: expected {want}, got {:?}", s.versions.get(host)));
        }
    }
    counts(&mut failures, "requests served by", &expect.served_by, &s.served_by, Bound::Exactly);
    counts(&mut failures, "requests served by", &expect.served_by_min, &s.served_by, Bound::AtLeast);
    counts(&mut failures, "answers with relay error", &expect.relay_errors, &s.relay_errors, Bound::Exactly);
    counts(&mut failures, "event", &expect.events_min, &s.events, Bound::AtLeast);
    counts(&mut failures, "event", &expect.events_max, &s.events, Bound::AtMost);
    failures.extend(diagnostic_failures(expect, &s.diagnostics));
    failures.extend(host_diagnostic_failures(expect, &s.diagnostics_by_host));
    failures.extend(crate::window::failures(&expect.window, &s.findings, &s.served_at));
    let named = |code: &str| {
        expect.diagnostics.iter().chain(&expect.allowed_diagnostics).any(|c| c == code)
            || expect.diagnostics_by_host.values().flatten().any(|c| c == code)
    };
    failures.extend(crate::window::stray_failures(&expect.window, &s.findings, named));
    failures
}

/// What is wrong with each listed host's own findings (`diagnostics_by_host`):
/// a code it should report missing, or one it reports that is neither
/// listed for it nor allowed.
fn host_diagnostic_failures(expect: &Expect, reported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut failures = Vec::new();
    let none = BTreeSet::new();
    for (host, codes) in &expect.diagnostics_by_host {
        let host = host.get_ref();
        let got = reported.get(host).unwrap_or(&none);
        for code in codes.iter().filter(|c| !got.contains(*c)) {
            failures.push(format!("{host}: diagnostic {code} expected, it reported {got:?}"));
        }
        for code in got.iter().filter(|c| !codes.contains(c) && !expect.allowed_diagnostics.contains(c)) {
            failures.push(format!("{host}: unexpected diagnostic {code} (not listed for it nor allowed)"));
        }
    }
    failures
}

/// What is wrong with the reported findings against a scenario's
/// expectations: an expected code missing, a forbidden or unexpected one
/// present (strict: any code neither expected nor allowed fails), or a word
/// no expected finding mentions. Both worlds judge findings with this.
pub fn diagnostic_failures(expect: &Expect, reported: &[Diagnostic]) -> Vec<String> {
    let mut failures = Vec::new();
    let codes: BTreeSet<&str> = reported.iter().map(|d| d.code.as_str()).collect();
    for code in &expect.diagnostics {
        if !codes.contains(code.as_str()) {
            failures.push(format!("diagnostic {code} expected, reported: {codes:?}"));
        }
    }
    for code in &expect.no_diagnostics {
        if codes.contains(code.as_str()) {
            failures.push(format!("diagnostic {code} must not be reported, but was"));
        }
    }
    let known = |code: &str| {
        expect.diagnostics.iter().chain(&expect.allowed_diagnostics).any(|c| c == code)
            || expect.diagnostics_by_host.values().flatten().any(|c| c == code)
            || expect.window.iter().any(|w| w.names(code))
    };
    let mut unexpected: Vec<&Diagnostic> = Vec::new();
    for d in reported {
        if !known(&d.code) && !expect.no_diagnostics.contains(&d.code) && !unexpected.iter().any(|u| u.code == d.code) {
            unexpected.push(d);
        }
    }
    for d in unexpected {
        failures.push(format!(
            "unexpected diagnostic {} (neither expected nor in allowed_diagnostics): {}",
            d.code, d.message
        ));
    }
    for word in &expect.diagnostic_mentions {
        let hit = reported
            .iter()
            .filter(|d| expect.diagnostics.contains(&d.code))
            .any(|d| d.message.contains(word.as_str()) || d.remedy.contains(word.as_str()));
        if !hit {
            failures.push(format!("no expected diagnostic mentions {word:?}"));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(events: &[UserEvent]) -> Summary {
        let (mut s, mut sent, mut lat) = (Summary::default(), BTreeMap::new(), Vec::new());
        for (t, u) in events.iter().enumerate() {
            user_event(&mut s, &mut sent, &mut lat, u, t as u64 * 1000);
        }
        s
    }

    fn sent(mark: &str) -> UserEvent {
        UserEvent::Sent { mark: mark.into() }
    }

    /// `expect_status`: the expected answer is no failure; another error
    /// counts like any failed answer (against `ok_after`); a success where
    /// only an error is possible breaks an invariant.
    #[test]
    fn expected_statuses() {
        let s = answered(&[
            sent("a"),
            UserEvent::Expected { mark: "a".into(), status: 502, relay_error: Some("backend-broke-off".into()) },
            sent("b"),
            UserEvent::Unexpected { mark: "b".into(), status: 503, expected: 502 },
            sent("c"),
            UserEvent::Unexpected { mark: "c".into(), status: 200, expected: 502 },
        ]);
        assert_eq!(s.requests_as_expected, 1);
        assert_eq!(s.not_ok, vec![("b".to_string(), 2000)]);
        assert_eq!(s.unexpected.len(), 1, "{:?}", s.unexpected);
        let expect: Expect = toml::from_str("outcome = \"serving\"").unwrap();
        let failures = check(&expect, &s, Duration::from_secs(3600));
        assert!(failures.iter().any(|f| f.contains("user request c") && f.contains("200")), "{failures:?}");
        assert!(!failures.iter().any(|f| f.contains("user request a") || f.contains("user request b")), "{failures:?}");
    }

    /// `diagnostics_by_host`: a listed host must report its codes and no
    /// other (allowed codes aside); hosts not listed are not judged alone.
    #[test]
    fn findings_by_host() {
        let expect: Expect = toml::from_str(
            "outcome = \"serving\"\nallowed_diagnostics = [\"A\"]\n[diagnostics_by_host]\nc1 = []\nc2 = [\"X\"]",
        )
        .unwrap();
        let reported = |pairs: &[(&str, &str)]| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (h, c) in pairs {
                m.entry(h.to_string()).or_default().insert(c.to_string());
            }
            m
        };
        assert!(host_diagnostic_failures(&expect, &reported(&[("c2", "X"), ("c1", "A"), ("c3", "Y")])).is_empty());
        let f = host_diagnostic_failures(&expect, &reported(&[("c1", "X")]));
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].starts_with("c1: unexpected diagnostic X"), "{f:?}");
        assert!(f[1].starts_with("c2: diagnostic X expected"), "{f:?}");
    }
}
