//! Field repro: a `connector diagnose --format json` report (the bundle a
//! support engineer asks a customer for) becomes a scenario that rebuilds
//! the customer's network in simulation: names that did not resolve,
//! connections dropped or refused (per host, or the whole port when every
//! destination on it failed alike), TLS answered by an inspection box. The
//! scenario runs `diagnose` at the same point and expects the bundle's
//! findings; [`verify`] runs it and says which findings it reproduced.
//!
//! Evidence the simulation cannot rebuild is listed in the scenario's
//! header and in [`Translation::notes`], never silently dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use connector::allowlist::Environment;
use connector::diagnose::{Check, Report, Step};

use crate::catalogue::Catalogue;
use crate::run::run;
use crate::scenario::{region_latency, Outcome, Scenario};

/// A bundle turned into a scenario.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The scenario file (TOML), expecting `outcome = "serving"` until
    /// [`verify`] fills in what the simulation shows.
    pub toml: String,
    /// The bundle's finding codes, which the scenario expects.
    pub expected: Vec<String>,
    /// Evidence not rebuilt in the simulation.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a diagnose report: {0}")]
    Parse(String),
    #[error("the report has no checks: run `connector diagnose --format json` and pass its output")]
    Empty,
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Block {
    Drop,
    Reject,
}

impl Block {
    fn of(error: &str) -> Block {
        if error.contains("refused") {
            Block::Reject
        } else {
            Block::Drop
        }
    }

    fn name(self) -> &'static str {
        match self {
            Block::Drop => "drop",
            Block::Reject => "reject",
        }
    }
}

/// Reads a bundle (JSON).
pub fn parse(json: &str) -> Result<Report, BundleError> {
    let report: Report = serde_json::from_str(json).map_err(|e| BundleError::Parse(e.to_string()))?;
    if report.checks.is_empty() && report.findings.is_empty() {
        return Err(BundleError::Empty);
    }
    Ok(report)
}

/// The scenario that rebuilds `report`'s network. `name` names it.
pub fn translate(report: &Report, name: &str) -> Translation {
    let ctx = &report.context;
    let tenant = if ctx.tenant.is_empty() { "contoso".to_string() } else { ctx.tenant.clone() };
    // Relays: the bundle's, renamed to the simulation's pattern in order.
    let region = ctx
        .relays
        .first()
        .and_then(|r| r.host.strip_prefix("cwap-"))
        .and_then(|rest| rest.split('-').next())
        // A region's second instance is `cwap-weu2-N`.
        .map(|r| r.trim_end_matches(|c: char| c.is_ascii_digit()))
        .filter(|r| region_latency(r, r).is_some())
        .unwrap_or("weu")
        .to_string();
    let renamed: BTreeMap<&str, String> = ctx
        .relays
        .iter()
        .enumerate()
        .map(|(i, r)| (r.host.as_str(), relay_sim::placement::relay_host(ctx.cloud, &region, 1, i + 1)))
        .collect();
    let host_of = |c: &Check| renamed.get(c.host.as_str()).cloned().unwrap_or_else(|| c.host.to_ascii_lowercase());
    let seen = Observed::from_checks(&report.checks, host_of);
    let mut expected: Vec<String> = Vec::new();
    for d in &report.findings {
        if !expected.contains(&d.code) {
            expected.push(d.code.clone());
        }
    }
    let place = Place { tenant, region, relays: ctx.relays.len().max(1), cloud: ctx.cloud };
    let toml = render(report, name, &place, &seen, &expected);
    Translation { toml, expected, notes: seen.notes }
}

/// Where the rebuilt world is.
struct Place {
    tenant: String,
    region: String,
    relays: usize,
    cloud: Environment,
}

/// What the bundle's checks say about the network, per destination.
#[derive(Default)]
struct Observed {
    dns_fail: BTreeSet<String>,
    dns_sinkhole: BTreeSet<String>,
    blocked: BTreeMap<u16, Vec<(String, Block)>>,
    reached: BTreeMap<u16, usize>,
    inspected: BTreeSet<String>,
    inspection_ca: Option<String>,
    legacy_tls: bool,
    /// Failures the scenario format cannot rebuild.
    notes: Vec<String>,
}

impl Observed {
    /// Reads each check's steps (DNS, TCP, TLS) in order; the first that
    /// failed says what the network did.
    fn from_checks(checks: &[Check], host_of: impl Fn(&Check) -> String) -> Self {
        let mut o = Observed::default();
        for c in checks {
            let host = host_of(c);
            match &c.dns {
                Step::Failed { .. } => {
                    o.dns_fail.insert(host);
                    continue;
                }
                Step::Ok { detail } if detail == "0.0.0.0" || detail == "::" => {
                    o.dns_sinkhole.insert(host);
                    continue;
                }
                _ => {}
            }
            match &c.tcp {
                Step::Failed { error } => {
                    o.blocked.entry(c.port).or_default().push((host, Block::of(error)));
                    continue;
                }
                Step::Ok { .. } => *o.reached.entry(c.port).or_default() += 1,
                Step::Skipped => {}
            }
            if let Step::Failed { error } = &c.protocol {
                o.tls_failed(c, host, error);
            }
        }
        o
    }

    /// A TLS failure: an old protocol or a foreign issuer is an inspection
    /// box; anything else is noted, not rebuilt.
    fn tls_failed(&mut self, c: &Check, host: String, error: &str) {
        if c.port == 443 && (error.contains("ProtocolVersion") || error.contains("protocol_version")) {
            self.legacy_tls = true;
            self.inspected.insert(host);
        } else if let Some(issuer) = c
            .chain
            .last()
            .and_then(|l| l.split(" ← ").nth(1))
            .filter(|i| !i.contains("Baltimore") && !i.contains("DigiCert"))
        {
            self.inspection_ca.get_or_insert_with(|| issuer.to_string());
            self.inspected.insert(host);
        } else {
            self.notes.push(format!("{}:{}: {error} (not rebuilt)", c.host, c.port));
        }
    }

    /// Perimeter rules: a whole port when nothing on it was reached and
    /// every failure looked the same, else one rule a destination.
    fn firewall(&self) -> Vec<String> {
        let mut firewall = Vec::new();
        for (port, hosts) in &self.blocked {
            let actions: BTreeSet<Block> = hosts.iter().map(|(_, b)| *b).collect();
            let whole_port =
                self.reached.get(port).copied().unwrap_or(0) == 0 && hosts.len() >= 2 && actions.len() == 1;
            if whole_port {
                let action = actions.iter().next().copied().unwrap_or(Block::Drop);
                firewall.push(format!("  {{ action = \"{}\", port = {port} }},", action.name()));
            } else {
                for (host, action) in hosts {
                    firewall.push(format!(
                        "  {{ action = \"{}\", port = {port}, host_suffix = {} }},",
                        action.name(),
                        q(host)
                    ));
                }
            }
        }
        firewall
    }
}

/// The scenario file.
fn render(report: &Report, name: &str, place: &Place, seen: &Observed, expected: &[String]) -> String {
    let catalogue = Catalogue::builtin();
    let mut covers: Vec<String> = Vec::new();
    for code in expected {
        let id = code.split('.').next().unwrap_or_default();
        if catalogue.get(id).is_some() && !covers.iter().any(|c| c == id) {
            covers.push(id.to_string());
        }
    }
    let Place { tenant, region, relays, cloud } = place;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Rebuilt from a `connector diagnose` bundle: {} destinations checked, {} failed, {} findings.",
        report.checks.len(),
        report.failed(),
        report.findings.len()
    );
    for n in &seen.notes {
        let _ = writeln!(t, "# Not rebuilt: {n}");
    }
    let _ = writeln!(t, "name = {}\ncovers = [{}]\nduration = \"30m\"\n", q(name), list(&covers));
    let _ = writeln!(t, "[world]\ntenant = {}\nregion = {}\nrelays = {relays}", q(tenant), q(region));
    if *cloud == Environment::UsGov {
        t.push_str("cloud = \"us-gov\"\n");
    }
    let _ = writeln!(t, "admin = {{ user = {}, password = \"correct-horse\" }}", q(&format!("admin@{tenant}.com")));
    let _ = writeln!(t, "domain = {}", q(&format!("{tenant}.com")));
    let firewall = seen.firewall();
    if !firewall.is_empty() {
        let _ = writeln!(t, "firewall = [\n{}\n]", firewall.join("\n"));
    }
    if !seen.dns_fail.is_empty() || !seen.dns_sinkhole.is_empty() {
        let (fail, sinkhole) = (list(&seen.dns_fail), list(&seen.dns_sinkhole));
        let _ = writeln!(t, "dns = {{ fail = [{fail}], sinkhole = [{sinkhole}] }}");
    }
    if !seen.inspected.is_empty() {
        let mode = if seen.legacy_tls { ", mode = \"legacy-tls\"" } else { "" };
        let ca = seen.inspection_ca.as_ref().map(|c| format!(", ca = {}", q(c))).unwrap_or_default();
        let _ = writeln!(t, "inspection = {{ hosts = [{}]{mode}{ca} }}", list(&seen.inspected));
    }
    t.push_str("\n[[world.connectors]]\nname = \"connector-1\"\ndiagnose_at = \"10m\"\n");
    if *cloud == Environment::UsGov {
        t.push_str("environment_name = \"AzureUSGovernment\"\n");
    }
    t.push_str("\n[[world.backends]]\nname = \"app1.corp.local\"\n\n[[world.apps]]\nname = \"app1\"\nbackend = \"app1.corp.local\"\n");
    let _ = writeln!(t, "\n[expect]\noutcome = \"serving\"\ndiagnostics = [{}]", list(expected));
    t
}

fn list<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items.into_iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
}

/// What running the translated scenario showed.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The scenario with the outcome the simulation shows.
    pub toml: String,
    pub reproduced: Vec<String>,
    pub missing: Vec<String>,
}

/// Runs the translation (seed 1), sets the expected outcome to what the
/// simulation shows, and compares the diagnostics with the bundle's.
pub fn verify(tr: &Translation) -> Result<Verification, String> {
    let scenario = Scenario::parse(&tr.toml, Path::new("from-bundle.toml")).map_err(|e| e.to_string())?;
    let r = run(&scenario, 1);
    let codes = r.summary.diagnostic_codes();
    let (reproduced, missing): (Vec<String>, Vec<String>) =
        tr.expected.iter().cloned().partition(|c| codes.contains(c.as_str()));
    let outcome = r.summary.outcome.unwrap_or(Outcome::Serving).name();
    let toml = tr.toml.replace("[expect]\noutcome = \"serving\"", &format!("[expect]\noutcome = \"{outcome}\""));
    Ok(Verification { toml, reproduced, missing })
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector::api::RelayEndpoint;
    use connector::diag::Diagnostic;
    use connector::diagnose::Context;

    fn check(host: &str, port: u16, dns: Step, tcp: Step, protocol: Step, chain: &[&str]) -> Check {
        Check {
            host: host.into(),
            port,
            entry: None,
            dns,
            tcp,
            protocol,
            chain: chain.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ok(d: &str) -> Step {
        Step::Ok { detail: d.into() }
    }

    fn failed(e: &str) -> Step {
        Step::Failed { error: e.into() }
    }

    #[test]
    fn evidence_becomes_world_rules() {
        let report = Report {
            context: Context {
                tenant: "fabrikam".into(),
                cloud: Environment::Public,
                relays: vec![RelayEndpoint { host: "cwap-neu-7.servicebus.windows.net".into(), port: 443 }],
            },
            checks: vec![
                check("login.microsoftonline.com", 443, ok("20.190.128.1"), ok("x"), ok("TLS"), &[]),
                check("cwap-neu-7.servicebus.windows.net", 443, failed("NXDOMAIN"), Step::Skipped, Step::Skipped, &[]),
                check("crl.microsoft.com", 80, ok("1.2.3.4"), failed("connection timed out"), Step::Skipped, &[]),
                check("ctldl.windowsupdate.com", 80, ok("1.2.3.5"), failed("connection timed out"), Step::Skipped, &[]),
                check(
                    "fabrikam.bootstrap.msappproxy.net",
                    443,
                    ok("40.126.33.4"),
                    ok("x"),
                    failed("invalid peer certificate: UnknownIssuer"),
                    &["fabrikam.bootstrap.msappproxy.net ← Fabrikam Inspection CA"],
                ),
            ],
            findings: vec![Diagnostic::new(connector::code::NET_80_UNREACHABLE, None, "m", "r")],
        };
        let tr = translate(&report, "x");
        let t = &tr.toml;
        assert!(t.contains("tenant = \"fabrikam\"") && t.contains("region = \"neu\""), "{t}");
        assert!(t.contains("fail = [\"cwap-neu-1.servicebus.windows.net\"]"), "{t}");
        assert!(t.contains("{ action = \"drop\", port = 80 }"), "{t}");
        assert!(t.contains("hosts = [\"fabrikam.bootstrap.msappproxy.net\"], ca = \"Fabrikam Inspection CA\""), "{t}");
        assert_eq!(tr.expected, vec!["NET-80.unreachable".to_string()]);
        assert!(t.contains("covers = [\"NET-80\"]"), "{t}");
        Scenario::parse(t, Path::new("x.toml")).expect("a valid scenario");
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(parse("{\"checks\": 3}"), Err(BundleError::Parse(_))));
        assert!(matches!(parse("{\"checks\": [], \"findings\": []}"), Err(BundleError::Empty)));
    }
}
