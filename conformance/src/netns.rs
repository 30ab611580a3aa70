//! The netns world: a scenario's network on the kernel's, to check the
//! simulation against. Two Linux network namespaces joined by a veth pair:
//!
//! ```text
//!  connector ns (10.250.0.2)          cloud ns (10.250.0.1; 10.251.0.0/24 local)
//!  connector run --resolve …  ──veth──  relay-sim serve --host-base 10.251.0.1
//!  nftables: the scenario's             login, registration, bootstrap,
//!  firewall, on output                  relays on :443, CRL/OCSP on :80,
//!                                       ingress :80, the backend, users
//! ```
//!
//! Every service host has its own address and its real port, so a rule
//! like "drop TCP 443" is a real nftables rule on real packets. Only
//! addresses inside the namespaces this run creates are used. Real time:
//! the run waits for the connector to settle (serving, or registration
//! given up) within a bound, sends the scenario's user requests at once,
//! and checks what real time can show (outcome, diagnostics and their text,
//! user answers). Namespaces and processes are removed when the run ends,
//! also on an error or Ctrl-C.

#![allow(clippy::disallowed_methods, reason = "the real-time world: scenarios run on the kernel's network and clock")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use relay_sim::serve::Manifest;
use relay_sim::world::{Action, Rule};

use crate::procs::{binary, Procs};
use crate::scenario::{Outcome, Scenario, TimelineEvent, WorldKind};

/// Address of the cloud side of the veth pair, and the range its service
/// hosts get (routed to its loopback device).
const CLOUD_LINK: &str = "10.250.0.1";
const CONNECTOR_LINK: &str = "10.250.0.2";
const HOST_RANGE: &str = "10.251.0.0/24";
const HOST_BASE: &str = "10.251.0.1";
/// Longest the connector gets to settle, real seconds.
const SETTLE_LIMIT: Duration = Duration::from_secs(150);
/// Longest scenario with a timeline (played in real time).
const TIMELINE_LIMIT: Duration = Duration::from_secs(300);

/// What a netns run found.
#[derive(Debug, Clone)]
pub struct NetnsResult {
    pub outcome: Outcome,
    /// Diagnostic codes the connector reported.
    pub diagnostics: BTreeSet<String>,
    /// The diagnostics themselves, first of each code.
    pub findings: Vec<connector::diag::Diagnostic>,
    /// Expectations that did not hold (empty: pass).
    pub failures: Vec<String>,
    /// User answers by status ("none" when no answer came).
    pub user_statuses: BTreeMap<String, u32>,
    pub wall: Duration,
}

impl NetnsResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// What real time showed, in the simulation's summary: the outcome,
    /// users' answers and the findings (the rest needs a trace).
    fn summary(&self) -> crate::check::Summary {
        let ok: u32 = self.user_statuses.iter().filter(|(k, _)| k.starts_with('2')).map(|(_, v)| *v).sum();
        let sent: u32 = self.user_statuses.values().sum();
        crate::check::Summary {
            outcome: Some(self.outcome),
            requests_sent: sent,
            requests_ok: ok,
            requests_failed: sent - ok,
            statuses: self.user_statuses.iter().filter_map(|(k, v)| Some((k.parse().ok()?, *v))).collect(),
            diagnostics: self.findings.clone(),
            ..crate::check::Summary::default()
        }
    }

    /// In the simulation's result shape, so every report format serves
    /// both worlds. "sim time" is the real time the run took; there is no
    /// trace hash (real time is not reproducible bit for bit).
    pub fn as_run_result(&self, s: &Scenario) -> crate::RunResult {
        let summary = self.summary();
        crate::RunResult {
            name: s.name.clone(),
            seed: 0,
            verdict: if self.passed() { crate::Verdict::Pass } else { crate::Verdict::Fail },
            failures: self.failures.clone(),
            sim_time_ms: u64::try_from(self.wall.as_millis()).unwrap_or(u64::MAX),
            wall_ms: self.wall.as_secs_f64() * 1000.0,
            trace_hash: "real-time".into(),
            steps: crate::run::Steps::default(),
            summary,
            trace: Vec::new(),
        }
    }

    /// How this run differs from the simulation's run of the same scenario
    /// (verdict or diagnostic codes), if it does: a bug in one of the two
    /// network models.
    pub fn differs_from(&self, sim: &crate::RunResult) -> Option<String> {
        let sim_codes: BTreeSet<String> = sim.summary.diagnostic_codes().into_iter().map(String::from).collect();
        let sim_pass = sim.verdict == crate::Verdict::Pass;
        if sim_pass == self.passed() && sim_codes == self.diagnostics {
            return None;
        }
        let verdict = |pass: bool| if pass { "pass" } else { "FAIL" };
        Some(format!(
            "worlds differ: sim {} {sim_codes:?}, netns {} {:?}",
            verdict(sim_pass),
            verdict(self.passed()),
            self.diagnostics
        ))
    }

    /// A run that could not be made (the world could not be built, or
    /// the scenario cannot be expressed in it), as a failed result.
    pub fn not_run(s: &Scenario, why: String) -> crate::RunResult {
        crate::RunResult {
            name: s.name.clone(),
            seed: 0,
            verdict: crate::Verdict::Fail,
            failures: vec![why],
            sim_time_ms: 0,
            wall_ms: 0.0,
            trace_hash: "-".into(),
            steps: crate::run::Steps::default(),
            summary: crate::check::Summary::default(),
            trace: Vec::new(),
        }
    }
}

/// Why this machine cannot run the netns world, if it cannot: not root,
/// or `ip` / `nft` missing.
pub fn unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(String::from))
    });
    if uid.as_deref() != Some("0") {
        return Some("the netns world needs root (network namespaces, veth, nftables)".into());
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        match Command::new(tool).arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => return Some(format!("`{tool}` is not installed (Debian package {package})")),
        }
    }
    None
}

/// Why a scenario cannot run in the netns world, if it cannot. Scenarios
/// marked `worlds = ["sim", "netns"]` must pass this; anything the real
/// world here cannot build is named.
pub fn unsupported(s: &Scenario) -> Option<String> {
    let w = &s.world;
    let mut why = Vec::new();
    if !s.worlds.contains(&WorldKind::Netns) {
        why.push("not marked for it (worlds = [\"sim\", \"netns\"])".to_string());
    }
    if w.connectors.len() != 1 {
        why.push(format!("{} connectors (one is supported)", w.connectors.len()));
    }
    if w.backends.len() != 1 || w.apps.len() != 1 {
        why.push("more than one backend or app".into());
    }
    if w.backends.iter().any(|b| b.down || b.behaviour != relay_sim::backend::Behaviour::Echo) {
        why.push("a backend that is down or not an echo".into());
    }
    for t in &s.timeline {
        if !matches!(
            t.event.get_ref(),
            TimelineEvent::BlockPort(_) | TimelineEvent::RejectPort(_) | TimelineEvent::UnblockPort(_)
        ) {
            why.push(format!("timeline event \"{}\" (only port blocks are driven in real time)", t.event.get_ref()));
        }
    }
    if !s.timeline.is_empty() && s.duration.0 > TIMELINE_LIMIT {
        why.push(format!("a timeline over {} s of real time", TIMELINE_LIMIT.as_secs()));
    }
    if w.proxy.is_some() || w.inspection.is_some() || w.allow_list.is_some() {
        why.push("a proxy, TLS inspection or an allow-list".into());
    }
    if w.feed.withheld.len() + w.feed.rollout.len() + w.feed.faults.len() > 0 || !w.users.is_empty() {
        why.push("a release feed under control, or directory users".into());
    }
    if w.admin.mfa || w.admin.signs_in_interactively {
        why.push("an administrator's MFA or interactive sign-in".into());
    }
    if w.connectors.iter().any(|c| c.installed_by.is_some() || c.dns != relay_sim::world::Dns::default()) {
        why.push("a connector's setup account or own resolver".into());
    }
    if !s.expect.window.is_empty() {
        why.push("[[expect.window]] expectations (judged on the simulation's trace)".into());
    }
    let preauth = w.apps.iter().any(|a| a.pre_authentication != relay_sim::directory::PreAuthentication::Passthrough);
    if preauth || s.load.iter().any(|l| l.user.is_some() || l.forged_principal.is_some()) {
        why.push("pre-authenticated users".into());
    }
    if w.dns != relay_sim::world::Dns::default() {
        why.push("DNS faults".into());
    }
    if !w.pki.faults.is_empty() {
        why.push("revocation-server faults".into());
    }
    if w.instances != 1 || !w.pinned.is_empty() {
        why.push("several cloud instances or pinned groups (the real relay-sim serves one instance)".into());
    }
    if w.cloud != connector::allowlist::Environment::Public || w.relays != 2 {
        why.push("another cloud or relay count than the public cloud's two relays".into());
    }
    for c in &w.connectors {
        if c.clock_skew.is_some() || !c.host_firewall.is_empty() || c.use_proxy || c.diagnose_at.is_some() {
            why.push(format!("connector {}: clock skew, host firewall, proxy or diagnose", c.name));
        }
    }
    for r in &w.firewall {
        if r.cidr.is_some() || r.user.is_some() || r.host_suffix.is_some() {
            why.push("a firewall rule by address, domain or account (ports only)".into());
        }
    }
    if why.is_empty() {
        None
    } else {
        Some(why.join("; "))
    }
}

/// The scenario's perimeter rules as an nftables ruleset for the
/// connector's namespace (output hook: the connector's own packets).
/// Stateful, as the simulation's firewall: rules judge new connections,
/// established ones carry on. The timeline's rules (chain `timeline`) come
/// first, as the simulation inserts them in front. Traffic to the backend is
/// inside the private network and not filtered.
pub fn nft_ruleset(rules: &[Rule], backend_ip: &str) -> String {
    let mut out = String::from("table inet connsim {\n  chain timeline {\n  }\n  chain output {\n");
    out.push_str("    type filter hook output priority 0; policy accept;\n");
    out.push_str("    oifname \"lo\" accept\n    ct state established,related accept\n");
    out.push_str(&format!("    ip daddr {backend_ip} accept\n    jump timeline\n"));
    for r in rules {
        out.push_str(&format!("    {}\n", nft_rule(r)));
    }
    out.push_str("  }\n}\n");
    out
}

fn nft_rule(r: &Rule) -> String {
    let matcher = match r.port {
        Some(p) => format!("tcp dport {p} "),
        None => "meta l4proto tcp ".to_string(),
    };
    let verdict = match r.action {
        Action::Allow => "accept",
        Action::Drop => "drop",
        Action::Reject => "reject with tcp reset",
    };
    format!("{matcher}{verdict}")
}

/// The `timeline` chain's content after the timeline's port rules so far
/// (newest first, as the simulation inserts them).
pub fn nft_timeline(rules: &[Rule]) -> String {
    let mut out = String::from("flush chain inet connsim timeline\n");
    for r in rules.iter().rev() {
        out.push_str(&format!("add rule inet connsim timeline {}\n", nft_rule(r)));
    }
    out
}

/// Namespaces made by this process and not yet removed, for the Ctrl-C
/// handler.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Removes this process's namespaces on Ctrl-C, then exits 130.
pub fn clean_up_on_interrupt() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            let names = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
            for n in names {
                let _ = Command::new("ip").args(["netns", "del", &n]).output();
            }
            #[allow(clippy::print_stderr, reason = "the process ends here, with no caller left to report to")]
            {
                eprintln!("interrupted: removed this run's network namespaces");
            }
            std::process::exit(130);
        }
    });
}

/// Runs a command, failing with the command line and its stderr.
fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Two namespaces and their veth pair; removed on drop.
struct Namespaces {
    connector: String,
    cloud: String,
}

impl Namespaces {
    fn create() -> Result<Namespaces, String> {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("cs{}x{k}", std::process::id());
        let ns = Namespaces { connector: format!("{tag}c"), cloud: format!("{tag}s") };
        for n in [&ns.connector, &ns.cloud] {
            sh(&["ip", "netns", "add", n])?;
            if let Ok(mut l) = LIVE.lock() {
                l.push(n.clone());
            }
        }
        let (vc, vs) = (format!("{tag}a"), format!("{tag}b"));
        let (c, s) = (ns.connector.as_str(), ns.cloud.as_str());
        sh(&["ip", "link", "add", &vc, "type", "veth", "peer", "name", &vs])?;
        sh(&["ip", "link", "set", &vc, "netns", c])?;
        sh(&["ip", "link", "set", &vs, "netns", s])?;
        sh(&["ip", "-n", c, "addr", "add", &format!("{CONNECTOR_LINK}/24"), "dev", &vc])?;
        sh(&["ip", "-n", s, "addr", "add", &format!("{CLOUD_LINK}/24"), "dev", &vs])?;
        for (n, dev) in [(c, vc.as_str()), (s, vs.as_str())] {
            sh(&["ip", "-n", n, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        }
        // Every address of the range is local in the cloud namespace.
        sh(&["ip", "-n", s, "route", "add", "local", HOST_RANGE, "dev", "lo"])?;
        sh(&["ip", "-n", c, "route", "add", HOST_RANGE, "via", CLOUD_LINK])?;
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in [&self.connector, &self.cloud] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            if let Ok(mut l) = LIVE.lock() {
                l.retain(|x| x != n);
            }
        }
    }
}

/// The binaries a netns run starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub relay_sim: PathBuf,
    pub connector: PathBuf,
    /// connsim itself (sends the users' requests from the cloud side).
    pub connsim: PathBuf,
}

impl Binaries {
    /// The workspace's binaries in `dir`.
    pub fn in_dir(dir: &Path) -> Result<Binaries, String> {
        Ok(Binaries {
            relay_sim: binary(dir, "relay-sim")?,
            connector: binary(dir, "connector")?,
            connsim: binary(dir, "connsim")?,
        })
    }
}

/// The agent events in a real connector's log (`LogSink` lines), as JSON.
pub fn events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| l.contains("connector::event"))
        .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str::<serde_json::Value>(&l[i..]).ok()))
        .collect()
}

fn ns_cmd(bin: &Path, ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(bin).env("NO_COLOR", "1").env("RUST_LOG", "info");
    c
}

/// Runs `s` in network namespaces. `Err` is a failure to build or drive
/// the world (with the command that failed), not a scenario failure.
pub fn run(s: &Scenario, bins: &Binaries) -> Result<NetnsResult, String> {
    if let Some(why) = unsupported(s) {
        return Err(format!("{}: cannot run in the netns world: {why}", s.name));
    }
    let started = Instant::now();
    let scratch = tempfile::tempdir().map_err(|e| format!("scratch folder: {e}"))?;
    let ns = Namespaces::create()?;
    let mut procs = Procs::new(scratch.path());
    let manifest = start_cloud(s, bins, &ns, &mut procs, &scratch.path().join("cloud"))?;

    let rules = scratch.path().join("rules.nft");
    std::fs::write(&rules, nft_ruleset(&s.world.firewall, &manifest.backend.ip().to_string()))
        .map_err(|e| format!("{}: {e}", rules.display()))?;
    sh(&["ip", "netns", "exec", &ns.connector, "nft", "-f", &rules.to_string_lossy()])?;
    start_connector(s, bins, &ns, &mut procs, &manifest, &scratch.path().join("connector"))?;

    let host = manifest.apps.first().cloned().unwrap_or_default();
    let stage = Stage { s, bins, ns: &ns, manifest: &manifest, host: &host, scratch: scratch.path() };
    let user_statuses =
        if s.timeline.is_empty() { stage.settled_users(&mut procs)? } else { stage.in_real_time(&mut procs)? };
    procs.stop("connector");
    let evs = events(&procs.log("connector"));
    Ok(judge(s, &evs, user_statuses, started.elapsed()))
}

/// Starts relay-sim in the cloud's namespace and reads what it serves.
fn start_cloud(
    s: &Scenario,
    bins: &Binaries,
    ns: &Namespaces,
    procs: &mut Procs,
    state: &Path,
) -> Result<Manifest, String> {
    let backend = &s.world.backends[0];
    let mut cloud = ns_cmd(&bins.relay_sim, &ns.cloud);
    cloud
        .args(["serve", "--tenant", &s.world.tenant, "--domain", &s.world.domain])
        .args(["--admin", &s.world.admin.user, "--password", &s.world.admin.password])
        .args(["--host-base", HOST_BASE, "--backend", &format!("{}:{}", backend.name, backend.port)])
        .arg("--state-dir")
        .arg(state);
    if let Some(b) = &s.world.bootstrap_interval {
        cloud.args(["--bootstrap-interval", &b.0.as_secs().max(1).to_string()]);
    }
    procs.spawn("relay-sim", &mut cloud)?;
    let manifest_path = state.join("manifest.json");
    let give_up = Instant::now() + Duration::from_secs(20);
    while !manifest_path.is_file() {
        procs.check_alive()?;
        if Instant::now() > give_up {
            return Err("relay-sim: no manifest after 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))
}

/// Starts the connector in its namespace, registering with the manifest's
/// administrator.
fn start_connector(
    s: &Scenario,
    bins: &Binaries,
    ns: &Namespaces,
    procs: &mut Procs,
    manifest: &Manifest,
    install_dir: &Path,
) -> Result<(), String> {
    let spec = &s.world.connectors[0];
    let mut agent = ns_cmd(&bins.connector, &ns.connector);
    agent
        .args(["run", "--tenant", &manifest.tenant_id, "--machine-name", &spec.name])
        .arg("--install-dir")
        .arg(install_dir)
        .arg("--trust-root")
        .arg(&manifest.root_pem)
        .args(["--user", &manifest.admin])
        // Not on the command line, where `ps` shows it.
        .env("CONNECTOR_PASSWORD", &manifest.password);
    if spec.revocation == connector::pki::RevocationPolicy::SoftFail {
        agent.args(["--revocation", "soft-fail"]);
    }
    for r in &manifest.resolve {
        agent.arg("--resolve").arg(r);
    }
    procs.spawn("connector", &mut agent).map(drop)
}

/// The world once it runs: what the users and the timeline need.
struct Stage<'a> {
    s: &'a Scenario,
    bins: &'a Binaries,
    ns: &'a Namespaces,
    manifest: &'a Manifest,
    host: &'a str,
    scratch: &'a Path,
}

impl Stage<'_> {
    /// No timeline: once the tunnels are up, every user request at once.
    fn settled_users(&self, procs: &mut Procs) -> Result<BTreeMap<String, u32>, String> {
        let s = self.s;
        settle(procs, s.world.relays, SETTLE_LIMIT.min(s.duration.0))?;
        let requests: u32 = s.load.iter().map(|l| l.requests).sum();
        if requests == 0 {
            return Ok(BTreeMap::new());
        }
        let out = users(self.bins, &self.ns.cloud, self.manifest, self.host, requests, Duration::ZERO, Duration::ZERO)
            .output()
            .map_err(|e| format!("sending the users' requests: {e}"))?;
        parse_statuses(&out.stdout, &out.stderr)
    }

    /// Real time: users on their schedule, the timeline's port rules at
    /// their times, until the scenario's end.
    fn in_real_time(&self, procs: &mut Procs) -> Result<BTreeMap<String, u32>, String> {
        let (s, t0) = (self.s, Instant::now());
        let mut waiting = Vec::new();
        for (i, l) in s.load.iter().enumerate() {
            let label = format!("users-{i}");
            let mut cmd =
                users(self.bins, &self.ns.cloud, self.manifest, self.host, l.requests, l.start.0, l.interval.0);
            procs.spawn(&label, &mut cmd)?;
            waiting.push(label);
        }
        let mut rules: Vec<Rule> = Vec::new();
        let ruleset = self.scratch.join("timeline.nft");
        for t in &s.timeline {
            sleep_until(t0 + t.at.0);
            match t.event.get_ref() {
                TimelineEvent::BlockPort(p) => rules.push(Rule::port(Action::Drop, *p)),
                TimelineEvent::RejectPort(p) => rules.push(Rule::port(Action::Reject, *p)),
                TimelineEvent::UnblockPort(p) => rules.retain(|r| r.port != Some(*p)),
                other => return Err(format!("timeline event \"{other}\" cannot be driven in real time")),
            }
            std::fs::write(&ruleset, nft_timeline(&rules)).map_err(|e| format!("{}: {e}", ruleset.display()))?;
            sh(&["ip", "netns", "exec", &self.ns.connector, "nft", "-f", &ruleset.to_string_lossy()])?;
        }
        sleep_until(t0 + s.duration.0);
        let mut statuses = BTreeMap::new();
        for label in waiting {
            // Answers still on their way get a little longer.
            let give_up = Instant::now() + Duration::from_secs(30);
            while !procs.exited(&label) && Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(100));
            }
            procs.stop(&label);
            let out = procs.log(&label);
            let part = parse_statuses(out.lines().last().unwrap_or_default().as_bytes(), out.as_bytes())?;
            for (k, v) in part {
                *statuses.entry(k).or_insert(0) += v;
            }
        }
        Ok(statuses)
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Waits until registration was given up (the process ends) or every
/// tunnel is up, at most `limit`.
fn settle(procs: &mut Procs, relays: usize, limit: Duration) -> Result<(), String> {
    let give_up = Instant::now() + limit;
    loop {
        let up = events(&procs.log("connector")).iter().filter(|e| e["event"] == "tunnel_up").count();
        if procs.exited("connector") || up >= relays || Instant::now() >= give_up {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `connsim users` in the cloud's namespace.
fn users(
    bins: &Binaries,
    cloud_ns: &str,
    manifest: &Manifest,
    host: &str,
    requests: u32,
    start: Duration,
    interval: Duration,
) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", cloud_ns])
        .arg(&bins.connsim)
        .args(["users", "--addr", &manifest.ingress.to_string(), "--host", host])
        .args(["--requests", &requests.to_string()])
        .args(["--start-ms", &start.as_millis().to_string(), "--interval-ms", &interval.as_millis().to_string()]);
    c
}

fn parse_statuses(stdout: &[u8], stderr: &[u8]) -> Result<BTreeMap<String, u32>, String> {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.trim())
        .map_err(|e| format!("users: {e}; printed {text:?}, stderr {:?}", String::from_utf8_lossy(stderr)))
}

/// The outcome and the expectations real time can show, judged by the same
/// functions as a simulated run (`check::outcome`, `check::request_failures`,
/// `check::diagnostic_failures`).
fn judge(s: &Scenario, evs: &[serde_json::Value], user_statuses: BTreeMap<String, u32>, wall: Duration) -> NetnsResult {
    let registered = evs.iter().any(|e| e["event"] == "registered" || e["event"] == "identity_loaded");
    let mut tunnels: BTreeMap<String, bool> = BTreeMap::new();
    for e in evs {
        let endpoint = e["endpoint"].as_str().unwrap_or_default().to_string();
        if e["event"] == "tunnel_up" {
            tunnels.insert(endpoint, true);
        } else if e["event"] == "tunnel_down" {
            tunnels.insert(endpoint, false);
        }
    }
    let stopped = evs.iter().any(|e| e["event"] == "stopped");
    let outcome = crate::check::outcome(registered, tunnels.values().any(|up| *up), stopped);
    let diags: Vec<&serde_json::Value> = evs.iter().filter(|e| e["event"] == "diagnostic").collect();
    let diagnostics: BTreeSet<String> = diags.iter().filter_map(|d| d["code"].as_str().map(String::from)).collect();
    let reported: Vec<connector::diag::Diagnostic> =
        diags.iter().filter_map(|d| serde_json::from_value((*d).clone()).ok()).collect();
    let mut findings: Vec<connector::diag::Diagnostic> = Vec::new();
    for f in &reported {
        if !findings.iter().any(|x| x.code == f.code) {
            findings.push(f.clone());
        }
    }
    let mut result = NetnsResult { outcome, diagnostics, findings, failures: Vec::new(), user_statuses, wall };
    let x = &s.expect;
    if outcome != x.outcome {
        result.failures.push(format!("outcome: expected {:?}, got {outcome:?}", x.outcome));
    }
    result.failures.extend(crate::check::diagnostic_failures(x, &reported));
    // Each with the users' answers as they came ("none": no answer).
    let answers = format!("{:?}", result.user_statuses);
    let requests = crate::check::request_failures(x, &result.summary());
    result.failures.extend(requests.into_iter().map(|f| format!("{f} (answers: {answers})")));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_nftables_in_order_with_the_backend_exempt() {
        let rules = vec![Rule::port(Action::Reject, 80), Rule::port(Action::Drop, 443)];
        let text = nft_ruleset(&rules, "10.251.0.12");
        let body: Vec<&str> = text.lines().map(str::trim).collect();
        let backend = body.iter().position(|l| *l == "ip daddr 10.251.0.12 accept").unwrap();
        let reject = body.iter().position(|l| *l == "tcp dport 80 reject with tcp reset").unwrap();
        let drop = body.iter().position(|l| *l == "tcp dport 443 drop").unwrap();
        assert!(backend < reject && reject < drop, "{text}");
    }
}
