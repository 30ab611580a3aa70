//! The diagnosis matrix: every combination of a network fault, the
//! allow-list group it hits, the path out (direct or through the explicit
//! proxy), the cloud, the moment it starts (at registration or while
//! serving) and how long it lasts, built as a scenario and run. Each cell
//! checks that the findings the fault must produce are reported, that
//! nothing else is (beyond the consequences the table allows), and, when
//! the fault ends, that the connector serves and bootstraps again within a
//! bound. Cells the world model cannot build are skipped with the reason.
//!
//! The expected findings come from [`expected`], a table written from the
//! spec's allow-list and requirements, not from the connector's classifier.

use std::fmt::Write as _;

use connector::allowlist::{Environment, Group};
use connector::event::AgentEvent;

use crate::run::Verdict;
use crate::scenario::Scenario;
use crate::trace::What;

/// When a fault that starts while serving begins.
const SERVING_FROM_S: u64 = 15 * 60;
/// A run lasts this long after the fault ends (or starts, if it never ends).
const AFTER_S: u64 = 90 * 60;
/// Users are served again this long after a fault ends: the tunnels'
/// reconnect backoff (60 s, +20 % jitter), a connect and a handshake, the
/// probes that explained the failure before (up to 5 s each), and the
/// next user request (one a minute).
pub const SERVING_AGAIN_S: u64 = 180;
/// The heartbeat (bootstrap) succeeds again this long after a fault ends:
/// its retry delay is capped at the bootstrap interval (10 minutes, +20 %),
/// and a tunnel that comes back asks for one at once.
pub const BOOTSTRAP_AGAIN_S: u64 = 13 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    PortDropped,
    PortRejected,
    EntryMissing,
    DnsNxdomain,
    DnsSinkhole,
    RangesMoved,
    ProxyRefuses,
    Proxy407,
    TlsInspection,
    LegacyTls,
    Revoked,
    Expired,
    ClockSkew,
}

impl Fault {
    pub const ALL: [Fault; 13] = [
        Fault::PortDropped,
        Fault::PortRejected,
        Fault::EntryMissing,
        Fault::DnsNxdomain,
        Fault::DnsSinkhole,
        Fault::RangesMoved,
        Fault::ProxyRefuses,
        Fault::Proxy407,
        Fault::TlsInspection,
        Fault::LegacyTls,
        Fault::Revoked,
        Fault::Expired,
        Fault::ClockSkew,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PortDropped => "port-dropped",
            Fault::PortRejected => "port-rejected",
            Fault::EntryMissing => "entry-missing",
            Fault::DnsNxdomain => "dns-nxdomain",
            Fault::DnsSinkhole => "dns-sinkhole",
            Fault::RangesMoved => "ip-ranges-moved",
            Fault::ProxyRefuses => "proxy-refuses",
            Fault::Proxy407 => "proxy-407",
            Fault::TlsInspection => "tls-inspection",
            Fault::LegacyTls => "legacy-tls",
            Fault::Revoked => "revoked",
            Fault::Expired => "expired",
            Fault::ClockSkew => "clock-skew",
        }
    }

    /// Faults the timeline can start and end at any time.
    fn timed(self) -> bool {
        matches!(
            self,
            Fault::PortDropped | Fault::PortRejected | Fault::EntryMissing | Fault::DnsNxdomain | Fault::DnsSinkhole
        )
    }
}

/// The destination group a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    Service443,
    Registration443,
    Crl80,
    Registration80,
    Renewtrust,
}

impl Dest {
    pub const ALL: [Dest; 5] =
        [Dest::Service443, Dest::Registration443, Dest::Crl80, Dest::Registration80, Dest::Renewtrust];

    pub fn name(self) -> &'static str {
        match self {
            Dest::Service443 => "service-443",
            Dest::Registration443 => "registration-443",
            Dest::Crl80 => "crl-80",
            Dest::Registration80 => "registration-80",
            Dest::Renewtrust => "renewtrust",
        }
    }

    fn group(self) -> Group {
        match self {
            Dest::Service443 | Dest::Renewtrust => Group::Service443,
            Dest::Registration443 => Group::Registration443,
            Dest::Crl80 => Group::Crl80,
            Dest::Registration80 => Group::Registration80,
        }
    }

    /// The destinations a host-level fault covers: the relays for the
    /// service group (registration and bootstrap stay reachable, the case
    /// the field meets), the sign-in for registration, every CRL/OCSP host,
    /// the trust list.
    fn names(self, cloud: Environment) -> Vec<String> {
        let gov = cloud == Environment::UsGov;
        match self {
            Dest::Service443 => {
                vec![(if gov { "*.servicebus.usgovcloudapi.net" } else { "*.servicebus.windows.net" }).into()]
            }
            Dest::Registration443 => vec![connector::ServiceNames::in_cloud(cloud, "contoso").login],
            Dest::Crl80 => Group::Crl80.entries_in(cloud).iter().map(|e| e.to_string()).collect(),
            Dest::Registration80 => Group::Registration80.entries_in(cloud).iter().map(|e| e.to_string()).collect(),
            Dest::Renewtrust => vec![connector::ServiceNames::in_cloud(cloud, "contoso").renewtrust],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Direct,
    Proxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Moment {
    Registration,
    Serving,
}

/// How long the fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Span {
    Seconds,
    Minutes,
    /// Hours: past the portal's one-hour inactive threshold and, for port
    /// 80, past the CRLs' and OCSP answers' nextUpdate (set to 30 minutes).
    Hours,
    Never,
}

impl Span {
    pub const ALL: [Span; 4] = [Span::Seconds, Span::Minutes, Span::Hours, Span::Never];

    fn secs(self) -> Option<u64> {
        match self {
            Span::Seconds => Some(30),
            Span::Minutes => Some(20 * 60),
            Span::Hours => Some(3 * 3600),
            Span::Never => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Span::Seconds => "seconds",
            Span::Minutes => "minutes",
            Span::Hours => "hours",
            Span::Never => "never-ends",
        }
    }
}

/// One combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cell {
    pub fault: Fault,
    pub dest: Dest,
    pub path: Path,
    pub cloud: Environment,
    pub moment: Moment,
    pub span: Span,
}

impl Cell {
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}/{}",
            self.fault.name(),
            self.dest.name(),
            if self.path == Path::Direct { "direct" } else { "proxy" },
            self.cloud,
            if self.moment == Moment::Registration { "at-registration" } else { "while-serving" },
            self.span.name()
        )
    }
}

/// Every combination, in a fixed order.
pub fn cells() -> Vec<Cell> {
    let mut all = Vec::new();
    for fault in Fault::ALL {
        for dest in Dest::ALL {
            for path in [Path::Direct, Path::Proxy] {
                for cloud in [Environment::Public, Environment::UsGov] {
                    for moment in [Moment::Registration, Moment::Serving] {
                        for span in Span::ALL {
                            all.push(Cell { fault, dest, path, cloud, moment, span });
                        }
                    }
                }
            }
        }
    }
    all
}

/// What a cell must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Findings that must be reported.
    pub required: Vec<&'static str>,
    /// Findings that may also be reported (consequences, or what a short
    /// fault may or may not be seen as).
    pub allowed: Vec<&'static str>,
    /// The scenario's outcome at the end.
    pub outcome: &'static str,
}

fn exp(required: &[&'static str], allowed: &[&'static str], outcome: &'static str) -> Expected {
    Expected { required: required.to_vec(), allowed: allowed.to_vec(), outcome }
}

/// Why a cell cannot be built, if it cannot.
pub fn skip_reason(c: &Cell) -> Option<&'static str> {
    let port = c.dest.group().port();
    let same_world = "same world as the service-443 cell: the fault is the host's or the proxy's, not a destination's";
    let static_fault = "the timeline can start and end port, host and DNS faults, revocations and revocation-server outages, not this one (world-model issue)";
    Some(match (c.fault, c.path) {
        (Fault::ProxyRefuses | Fault::Proxy407, Path::Direct) => "no proxy on the direct path",
        (Fault::RangesMoved, Path::Proxy) => {
            "behind the proxy the connector never sees the service's addresses: an IP allow-list on the proxy's egress is not modelled"
        }
        (Fault::PortDropped | Fault::PortRejected | Fault::EntryMissing | Fault::RangesMoved, _)
            if c.dest == Dest::Renewtrust =>
        {
            "same world as the service-443 cell: the port, the allow-list entry (*.msappproxy.net) and the ranges are the service group's"
        }
        (Fault::Proxy407 | Fault::ClockSkew | Fault::Revoked | Fault::Expired, _) if c.dest != Dest::Service443 => same_world,
        (Fault::TlsInspection | Fault::LegacyTls, _) if port == 80 => "port 80 carries plain HTTP: nothing to inspect",
        (Fault::RangesMoved, _) if port == 80 => "IP ranges are published for the 443 service tags only",
        (Fault::RangesMoved, _) if c.dest != Dest::Service443 => "same world as the service-443 cell: one allow-list by ranges covers both 443 groups",
        (Fault::RangesMoved, _) if c.moment == Moment::Registration => "ranges move while the connector runs",
        (Fault::RangesMoved, _) if c.span != Span::Never => "the allow-list is not updated mid-run (world-model issue)",
        (Fault::Revoked, _) if c.moment == Moment::Registration => "a certificate is revoked after it was issued",
        (Fault::Revoked, _) if c.span != Span::Never => "a revocation does not end",
        (Fault::Expired, _) if c.moment == Moment::Registration => "a certificate expires after it was issued",
        (Fault::Expired, _) if c.span != Span::Hours => "a certificate expires only across hours offline",
        (Fault::ClockSkew, _) if c.moment == Moment::Serving => "clock jumps mid-run are not in the timeline (world-model issue)",
        (f, _) if !f.timed() && !matches!(f, Fault::Revoked | Fault::Expired | Fault::RangesMoved) && c.moment == Moment::Serving => static_fault,
        (f, _) if !f.timed() && !matches!(f, Fault::Expired) && c.span != Span::Never => static_fault,
        _ => return None,
    })
}

/// The findings a cell must give, from the spec's groups: a closed port is
/// the port's finding; a missing group is the group's requirement; DNS,
/// proxy, inspection, TLS version, revocation, expiry and clock each have
/// their own. A fault on the relays alone leaves bootstrap working, so the
/// portal shows the connector active while it cannot serve (OPS-ACTIVE).
pub fn expected(c: &Cell) -> Expected {
    if c.dest == Dest::Renewtrust {
        return renewal(c);
    }
    let port = c.dest.group().port();
    let relays_only = c.dest == Dest::Service443;
    let active_but = if relays_only { vec!["OPS-ACTIVE.no-tunnel"] } else { vec![] };
    let host_level = |finding: &'static str| {
        let mut required = vec![finding];
        required.extend(active_but.iter().copied());
        let outcome = if relays_only { "not_serving" } else { "registration_failed" };
        Expected { required, allowed: vec![], outcome }
    };
    match c.fault {
        Fault::PortDropped | Fault::PortRejected => port_fault(c, port),
        Fault::EntryMissing => entry_missing(c),
        Fault::DnsNxdomain | Fault::DnsSinkhole => dns_fault(c),
        Fault::TlsInspection => host_level("NET-NOINSPECT.inspection-detected"),
        Fault::LegacyTls => host_level("TLS-MIN12.peer-too-old"),
        Fault::ProxyRefuses => host_level("NET-PROXY.refused"),
        Fault::Proxy407 => exp(&["NET-PROXY.auth-unsupported"], &[], "registration_failed"),
        Fault::RangesMoved => exp(&["NET-RULES.stale-ranges"], &[], "not_serving"),
        Fault::Revoked => exp(&["TLS-CLIENT.revoked"], &[], "not_serving"),
        Fault::Expired => exp(&["TLS-CLIENT.expired"], &[], "stopped"),
        Fault::ClockSkew => exp(&["TLS-TIME.skew"], &[], "registration_failed"),
    }
}

/// A fault on the trust-renewal host alone: nothing uses it but renewal,
/// so it is seen only if it covers a renewal point (certificates live
/// [`RENEWAL_LIFETIME`], renewed past half of it, checked every 30
/// minutes: about two hours in). Then the renewal fails with the fault's
/// own finding, and `TLS-CLIENT.renewal-failed` says what is at stake; users
/// are served throughout (the tunnels' certificate is still valid).
fn renewal(c: &Cell) -> Expected {
    let cause = match c.fault {
        Fault::DnsNxdomain => "NET-DNS.unresolved",
        Fault::DnsSinkhole => "NET-DNS.sinkhole",
        Fault::TlsInspection => "NET-NOINSPECT.inspection-detected",
        Fault::LegacyTls => "TLS-MIN12.peer-too-old",
        Fault::ProxyRefuses => "NET-PROXY.refused",
        // The service group's cells are skipped (see skip_reason); should
        // one be built, it fails on this name instead of passing on nothing.
        _ => "MATRIX.no-expectation-for-this-cell",
    };
    match c.span {
        Span::Hours | Span::Never => exp(&[cause, "TLS-CLIENT.renewal-failed"], &[], "serving"),
        Span::Seconds | Span::Minutes => exp(&[], &[], "serving"),
    }
}

/// Client certificates' lifetime in the trust-renewal cells.
const RENEWAL_LIFETIME: &str = "4h";
/// Those cells last at least this long: past the renewal point and one
/// more check.
const RENEWAL_RUN_S: u64 = 2 * 3600 + 45 * 60;

/// The group's allow-list entries dropped by the perimeter (every entry of
/// the group, so for the service group registration's own host too). At
/// registration it fails registration, unless it lasts only seconds: the
/// first attempt is held by the request timeout and the retry after it
/// gets through. While serving only what is used then can see it: the
/// heartbeat (service group; established tunnels keep going) and, once the
/// cached ones expire, the CRLs; sign-in and the trust list are used only
/// at registration, so their loss is invisible until the next one.
fn entry_missing(c: &Cell) -> Expected {
    let group = c.dest.group();
    let finding = match group {
        Group::Service443 => "NET-SVC.unreachable",
        Group::Crl80 => "NET-CRL.unreachable",
        Group::Registration443 | Group::Registration80 => "NET-REG.unreachable",
    };
    match (c.moment, c.span, group) {
        (Moment::Registration, Span::Seconds, _) => exp(&[], &[finding], "serving"),
        (Moment::Registration, _, _) => exp(&[finding], &[], "registration_failed"),
        (Moment::Serving, Span::Seconds, _) | (Moment::Serving, _, Group::Registration443 | Group::Registration80) => {
            exp(&[], &[], "serving")
        }
        (Moment::Serving, _, Group::Service443) => exp(&[finding], &[], "serving"),
        (Moment::Serving, _, Group::Crl80) => exp(&["NET-CRL.stale"], &["NET-CRL.ocsp-unreachable"], "serving"),
    }
}

/// The group's names do not resolve (or resolve to a sinkhole). A failed
/// lookup is immediate, so at registration even seconds of it fail the
/// three attempts, except for the relays: registration does not use them,
/// and the tunnels keep retrying until the names resolve again (after two
/// heartbeats and two minutes the portal's "active" is called out too). While
/// serving, established tunnels need no lookup; the CRLs' names are looked
/// up again once the cached lists expire.
fn dns_fault(c: &Cell) -> Expected {
    let finding = if c.fault == Fault::DnsNxdomain { "NET-DNS.unresolved" } else { "NET-DNS.sinkhole" };
    let active = "OPS-ACTIVE.no-tunnel";
    match (c.moment, c.span, c.dest) {
        (Moment::Registration, Span::Seconds, Dest::Service443) => exp(&[], &[finding], "serving"),
        (Moment::Registration, Span::Never, Dest::Service443) => exp(&[finding, active], &[], "not_serving"),
        (Moment::Registration, _, Dest::Service443) => exp(&[finding, active], &[], "serving"),
        (Moment::Registration, _, _) => exp(&[finding], &[], "registration_failed"),
        (Moment::Serving, Span::Seconds, _)
        | (Moment::Serving, _, Dest::Service443 | Dest::Registration443 | Dest::Registration80 | Dest::Renewtrust) => {
            exp(&[], &[], "serving")
        }
        (Moment::Serving, _, Dest::Crl80) => exp(&[finding], &["NET-CRL.ocsp-unreachable"], "serving"),
    }
}

/// A closed port. At registration, a refused connect fails each of the
/// three attempts within seconds, so even a 30-second block fails it; a
/// dropped one holds the first attempt for the 30-second request timeout,
/// and the retry after it finds the port open. While serving, established
/// tunnels keep going (stateful firewalls let established flows through)
/// and the next heartbeat sees the port; port 80 only once the cached CRLs
/// and OCSP answers expire (30 minutes after they were fetched here, so
/// inside even the 20-minute block that starts at 15 minutes).
fn port_fault(c: &Cell, port: u16) -> Expected {
    let finding = if port == 80 { "NET-80.unreachable" } else { "NET-443.unreachable" };
    let consequences: &[&'static str] = if port == 80 { &["NET-80.ocsp-unreachable"] } else { &[] };
    let dropped = c.fault == Fault::PortDropped;
    match (c.moment, c.span) {
        (Moment::Registration, Span::Seconds) if dropped => exp(&[], &[finding], "serving"),
        (Moment::Registration, _) => exp(&[finding], &[], "registration_failed"),
        (Moment::Serving, Span::Seconds) => exp(&[], &[finding], "serving"),
        (Moment::Serving, _) => exp(&[finding], consequences, "serving"),
    }
}

/// The world's lines for the proxy path: the proxy (refusing `names`, or
/// demanding authentication, for the proxy's own faults) and a perimeter
/// that lets only the proxy out.
fn proxy_world(fault: Fault, names: &[String]) -> String {
    let proxy = match fault {
        Fault::Proxy407 => "proxy = { auth = true }".to_string(),
        Fault::ProxyRefuses => {
            let rules: Vec<String> =
                names.iter().map(|n| format!("{{ action = \"drop\", host_suffix = {n:?} }}")).collect();
            format!("proxy = {{ allow = [{}] }}", rules.join(", "))
        }
        _ => "proxy = {}".to_string(),
    };
    format!(
        "{proxy}\nfirewall = [\n  {{ action = \"allow\", port = 8080, host_suffix = \"proxy.corp.local\" }},\n  {{ action = \"drop\", port = 443 }},\n  {{ action = \"drop\", port = 80 }},\n]\n"
    )
}

/// The scenario file of a cell, and when its fault ends (seconds).
pub fn scenario(c: &Cell) -> (String, Option<u64>) {
    let mut w = String::new();
    let mut timeline: Vec<(u64, String)> = Vec::new();
    let mut connector = String::from("[[world.connectors]]\nname = \"connector-1\"\n");
    let names = c.dest.names(c.cloud);
    let quoted = names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    let start = if c.moment == Moment::Serving { SERVING_FROM_S } else { 0 };
    let end = c.span.secs().map(|s| start + s);
    let port = c.dest.group().port();
    if c.cloud == Environment::UsGov {
        w.push_str("cloud = \"us-gov\"\n");
        connector.push_str("environment_name = \"AzureUSGovernment\"\n");
    }
    // Behind the proxy, firewall faults are on the proxy's egress: the
    // perimeter lets only the proxy out.
    let at = if c.path == Path::Proxy { " at proxy" } else { "" };
    if c.path == Path::Proxy {
        w.push_str(&proxy_world(c.fault, &names));
        connector.push_str("use_proxy = true\n");
    }
    match c.fault {
        Fault::PortDropped | Fault::PortRejected => {
            let verb = if c.fault == Fault::PortDropped { "block" } else { "reject" };
            timeline.push((start, format!("{verb} port {port}{at}")));
            if let Some(end) = end {
                timeline.push((end, format!("unblock port {port}{at}")));
            }
        }
        Fault::EntryMissing => {
            for entry in c.dest.group().entries_in(c.cloud) {
                timeline.push((start, format!("block host {entry}{at}")));
                if let Some(end) = end {
                    timeline.push((end, format!("unblock host {entry}{at}")));
                }
            }
        }
        Fault::DnsNxdomain | Fault::DnsSinkhole => {
            let verb = if c.fault == Fault::DnsNxdomain { "fail" } else { "sinkhole" };
            for name in &names {
                timeline.push((start, format!("dns {verb} {name}")));
                if let Some(end) = end {
                    timeline.push((end, format!("dns restore {name}")));
                }
            }
        }
        Fault::RangesMoved => {
            w.push_str("allow_list = { by = \"ranges\", week = 1 }\n");
            timeline.push((start, "advance ip week".into()));
            timeline.push((start + 60, "restart relay".into()));
        }
        // Set up with the proxy above.
        Fault::ProxyRefuses | Fault::Proxy407 => {}
        Fault::TlsInspection | Fault::LegacyTls => {
            let mode = if c.fault == Fault::LegacyTls { ", mode = \"legacy-tls\"" } else { "" };
            let _ = writeln!(w, "inspection = {{ hosts = [{quoted}]{mode} }}");
            if c.fault == Fault::TlsInspection {
                connector.push_str("roots = [\"baltimore\", \"digicert-g2\", \"enterprise\"]\n");
            }
        }
        Fault::Revoked => timeline.push((start, "revoke connector connector-1".into())),
        Fault::Expired => {
            w.push_str("pki = { client_cert_lifetime = \"2h\" }\n");
            timeline.push((start, "stop connector connector-1".into()));
            if let Some(end) = end {
                timeline.push((end, "start connector connector-1".into()));
            }
        }
        // Past the CRLs' 7-day validity: every revocation list looks expired.
        Fault::ClockSkew => connector.push_str("clock_skew = \"+10d\"\n"),
    }
    if port == 80 && c.moment == Moment::Serving && c.fault != Fault::Expired {
        // Revocation data that expires inside the fault: 30 minutes.
        w.push_str("pki = { crl_validity = \"30m\", ocsp_validity = \"30m\" }\n");
    }
    let mut duration = end.unwrap_or(start) + AFTER_S;
    if c.dest == Dest::Renewtrust {
        let _ =
            writeln!(w, "trust_renewal_interval = \"30m\"\npki = {{ client_cert_lifetime = \"{RENEWAL_LIFETIME}\" }}");
        duration = duration.max(RENEWAL_RUN_S);
    }
    let mut t = format!(
        "# Diagnosis matrix cell {}.\nname = \"matrix\"\ncovers = [\"NET-443\"]\nduration = \"{duration}s\"\n\n[world]\nadmin = {{ user = \"admin@contoso.com\", password = \"correct-horse\" }}\n{w}\n{connector}\n",
        c.id()
    );
    t.push_str("[[world.backends]]\nname = \"app1.corp.local\"\n\n[[world.apps]]\nname = \"app1\"\nbackend = \"app1.corp.local\"\n\n");
    let requests = duration / 60 - 3;
    let _ = writeln!(t, "[[load]]\napp = \"app1\"\nrequests = {requests}\nstart = \"2m\"\ninterval = \"1m\"\n");
    for (at, event) in &timeline {
        let _ = writeln!(t, "[[timeline]]\nat = \"{at}s\"\nevent = \"{event}\"\n");
    }
    let e = expected(c);
    let list = |v: &[&str]| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(t, "[expect]\noutcome = \"{}\"\ndiagnostics = [{}]", e.outcome, list(&e.required));
    if !e.allowed.is_empty() {
        let _ = writeln!(t, "allowed_diagnostics = [{}]", list(&e.allowed));
    }
    (t, end)
}

/// How a cell came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail(Vec<String>),
    Skip(&'static str),
}

/// Runs one cell with `seed`.
pub fn run_cell(c: &Cell, seed: u64) -> Status {
    if let Some(why) = skip_reason(c) {
        return Status::Skip(why);
    }
    let (toml, end) = scenario(c);
    let scenario = match Scenario::parse(&toml, std::path::Path::new("matrix.toml")) {
        Ok(s) => s,
        Err(e) => return Status::Fail(vec![format!("the cell's scenario does not parse: {e}")]),
    };
    let r = crate::run::run(&scenario, seed);
    let mut failures = if r.verdict == Verdict::Pass { Vec::new() } else { r.failures.clone() };
    if let Some(end) = end {
        failures.extend(recovery(c, &r.trace, end));
    }
    if failures.is_empty() {
        Status::Pass
    } else {
        Status::Fail(failures)
    }
}

/// After a fault that ends, and unless the connector stopped for good: a
/// request is served and a bootstrap succeeds within the bounds.
fn recovery(c: &Cell, trace: &[crate::trace::TraceEvent], end_s: u64) -> Vec<String> {
    let expected = expected(c);
    if matches!(expected.outcome, "registration_failed" | "stopped" | "not_serving") {
        return Vec::new();
    }
    let end_ms = end_s * 1000;
    let first = |pred: &dyn Fn(&What) -> bool| trace.iter().find(|e| e.t_ms >= end_ms && pred(&e.what)).map(|e| e.t_ms);
    let served = first(&|w| matches!(w, What::Agent(AgentEvent::RequestServed { .. })));
    let bootstrapped = first(&|w| matches!(w, What::Agent(AgentEvent::BootstrapOk { .. })));
    let mut failures = Vec::new();
    let late = |at: Option<u64>, bound_s: u64| at.is_none_or(|t| t > end_ms + bound_s * 1000);
    if late(served, SERVING_AGAIN_S) {
        failures
            .push(format!("no request served within {SERVING_AGAIN_S} s of the fault's end (first: {served:?} ms)"));
    }
    if late(bootstrapped, BOOTSTRAP_AGAIN_S) {
        failures.push(format!(
            "no bootstrap within {BOOTSTRAP_AGAIN_S} s of the fault's end at {end_s} s (first: {bootstrapped:?} ms)"
        ));
    }
    failures
}

/// The matrix's results as a table with totals.
pub fn render(results: &[(Cell, Status)], verbose: bool) -> String {
    let mut out = String::new();
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let mut reasons: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (cell, status) in results {
        match status {
            Status::Pass => {
                pass += 1;
                if verbose {
                    let _ = writeln!(out, "pass  {}", cell.id());
                }
            }
            Status::Fail(why) => {
                fail += 1;
                let _ = writeln!(out, "FAIL  {}", cell.id());
                for w in why {
                    let _ = writeln!(out, "        - {w}");
                }
            }
            Status::Skip(why) => {
                skip += 1;
                *reasons.entry(why).or_default() += 1;
                if verbose {
                    let _ = writeln!(out, "skip  {}  ({why})", cell.id());
                }
            }
        }
    }
    let _ = writeln!(out, "\nskipped, by reason:");
    for (why, n) in &reasons {
        let _ = writeln!(out, "  {n:>5}  {why}");
    }
    let _ = writeln!(out, "\n{} cells: {pass} passed, {fail} failed, {skip} skipped", results.len());
    out
}

/// A cell's id for filtering: every word of `filter` must appear in it.
pub fn matches(c: &Cell, filter: &str) -> bool {
    let id = c.id();
    filter.split_whitespace().all(|w| id.contains(w))
}

/// Runs every cell matching `filter` on up to `jobs` threads, reporting
/// progress through `progress` (cells done, total).
pub fn run_all(filter: &str, seed: u64, jobs: usize, progress: impl Fn(usize, usize) + Sync) -> Vec<(Cell, Status)> {
    let chosen: Vec<Cell> = cells().into_iter().filter(|c| matches(c, filter)).collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let statuses = crate::parallel::map(
        &chosen,
        jobs,
        |c| run_cell(c, seed),
        |_| progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, chosen.len()),
    );
    chosen.into_iter().zip(statuses).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_parses_or_is_skipped_with_a_reason() {
        for c in cells() {
            if skip_reason(&c).is_some() {
                continue;
            }
            let (toml, _) = scenario(&c);
            if let Err(e) = Scenario::parse(&toml, std::path::Path::new("m.toml")) {
                panic!("{}: {e}\n{toml}", c.id());
            }
        }
    }

    #[test]
    fn the_table_names_one_cause_per_fault() {
        let c = Cell {
            fault: Fault::EntryMissing,
            dest: Dest::Crl80,
            path: Path::Direct,
            cloud: Environment::Public,
            moment: Moment::Registration,
            span: Span::Never,
        };
        assert_eq!(expected(&c).required, vec!["NET-CRL.unreachable"]);
        let relays = Cell { fault: Fault::DnsSinkhole, dest: Dest::Service443, ..c };
        assert_eq!(expected(&relays).required, vec!["NET-DNS.sinkhole", "OPS-ACTIVE.no-tunnel"]);
    }
}
