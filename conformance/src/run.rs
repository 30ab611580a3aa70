//! One (scenario, seed) → a turmoil simulation → a trace, a summary and a
//! verdict. Everything random is seeded from the seed; every clock is the
//! simulated one; the same inputs give the same trace hash.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use connector::diagnose::DiagnoseConfig;
use connector::env::{Env, SeededEntropy};
use connector::event::AgentEvent;
use connector::install::Installation;
use connector::service::{ServiceState, ServiceSwitch};
use connector::{Agent, AgentConfig, Credentials};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use relay_sim::backend::{ServedLog, REQUEST_MARK};
use relay_sim::cloud::{Cloud, CloudConfig};
use relay_sim::directory::{App, Tenant, User};
use relay_sim::network::NETWORK_SERVICE;
use relay_sim::pki::{Generation, REVOCATION_HOSTS};
use relay_sim::proxy::ProxyPolicy;
use relay_sim::services;
use relay_sim::services::revocation::TRUST_LIST_HOSTS;
use relay_sim::world::{Action, AddressPlan, Dns, Firewall, Interception, Rule, SimClock, SimNet};
use serde::Serialize;

use crate::check::{self, Summary};
use crate::scenario::{AllowBy, RootName, Scenario, TimelineEvent};
use crate::stopwatch::Stopwatch;
use crate::trace::{self, AgentSink, CloudTraceSink, Trace, TraceEvent, UserEvent, What, WorldEvent};
use crate::wakeups::Stepper;
use connector::allowlist::{Environment, Group};

/// Simulated wall-clock time at the start of every run: 2026-01-01T00:00Z.
pub const EPOCH_UNIX_S: u64 = 1_767_225_600;
/// Port of the user-facing ingress in the simulation.
pub const INGRESS_PORT: u16 = 80;
/// How long a simulated user waits for an answer.
const USER_TIMEOUT: Duration = Duration::from_secs(120);
/// The simulation host serving every CRL/OCSP name.
const REVOCATION_HOST: &str = "revocation.cdn.example";
/// The simulation host serving the certificate trust list's names (Windows
/// Update's CDN: another service than the CA's revocation servers, so
/// stopping those leaves it up).
const TRUST_LIST_HOST: &str = "windowsupdate.cdn.example";
/// The cloud-internal host that keeps the portal's connector status.
const PORTAL_HOST: &str = "portal.cloud.internal";
/// The simulation host of the explicit proxy.
const PROXY_HOST: &str = "proxy.corp.local";
/// The simulation host of the TLS inspection box.
const INSPECTOR_HOST: &str = "inspection.corp.local";
/// Default simulation step.
pub(crate) const DEFAULT_TICK: Duration = Duration::from_millis(10);

/// Pass or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
}

/// Everything one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub name: String,
    pub seed: u64,
    pub verdict: Verdict,
    /// Why it failed (empty on pass).
    pub failures: Vec<String>,
    pub sim_time_ms: u64,
    pub wall_ms: f64,
    pub trace_hash: String,
    pub steps: Steps,
    pub summary: Summary,
    #[serde(skip)]
    pub trace: Vec<TraceEvent>,
}

fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S)
}

/// A simulation as every world of the harness has it: seeded, starting at
/// the fixed epoch, stepping by `tick`, messages taking 1 to 20 ms, and an
/// hour of slack past `duration` before turmoil calls the run overdue.
pub(crate) fn new_sim<'a>(seed: u64, duration: Duration, tick: Duration) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(epoch())
        .simulation_duration(duration + Duration::from_secs(3600))
        .tick_duration(tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .tcp_capacity(4096)
        .build()
}

/// The host names and ports of a scenario's world.
struct Layout {
    config: CloudConfig,
}

fn layout(s: &Scenario) -> Layout {
    let w = &s.world;
    let backends: BTreeMap<String, u16> = w.backends.iter().map(|b| (b.name.clone(), b.port)).collect();
    let apps = w
        .apps
        .iter()
        .map(|a| {
            let backend = a.backend.get_ref();
            let port = backends.get(backend).copied().unwrap_or(80);
            App {
                name: a.name.clone(),
                external_host: format!("{}-{}.msappproxy.net", a.name, w.tenant),
                internal_url: format!("http://{backend}:{port}"),
                group: a.group.clone(),
            }
        })
        .collect();
    let tenant = Tenant {
        id: w.tenant.clone(),
        domains: std::iter::once(w.domain.clone()).chain(w.aliases.iter().cloned()).collect(),
        region: w.region.clone(),
        users: vec![User {
            upn: w.admin.user.clone(),
            password: w.admin.password.clone(),
            role: w.admin.role,
            directories: w.admin.directories.clone(),
        }],
        app_proxy_enabled: w.app_proxy_enabled,
        apps,
        group_of_machine: w.connectors.iter().map(|c| (c.name.clone(), c.group.clone())).collect(),
    };
    let mut config = CloudConfig::in_cloud(w.cloud, tenant, w.relays.max(1));
    if let Some(i) = w.bootstrap_interval {
        config.bootstrap_interval_s = i.0.as_secs().max(1);
    }
    config.private_access = w.private_access;
    config.pulled_releases = w.pulled_releases.clone();
    config.tls12_only = w.service_tls12_only;
    if let Some(i) = w.update_check_interval {
        config.update_check_interval_min = (i.0.as_secs() / 60).max(1);
    }
    if let Some(i) = w.trust_renewal_interval {
        config.trust_renewal_interval_min = (i.0.as_secs() / 60).max(1);
    }
    let p = &w.pki;
    if let Some(d) = p.client_cert_lifetime {
        config.pki.client_cert_lifetime = d.0;
    }
    if let Some(d) = p.crl_validity {
        config.pki.crl_validity = d.0;
    }
    if let Some(d) = p.ocsp_validity {
        config.pki.ocsp_validity = d.0;
    }
    if let Some(ca) = w.inspection.as_ref().and_then(|i| i.ca.clone()) {
        config.enterprise_ca = ca;
    }
    Layout { config }
}

/// How the runner advances simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stepping {
    /// Skip idle spans in one step (see [`crate::wakeups`]); the default.
    #[default]
    SkipIdle,
    /// Every step is one tick: slow, and the reference the skipping is
    /// tested against (equal trace hashes).
    Fixed,
}

/// Runs `scenario` with `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> RunResult {
    run_with(scenario, seed, Stepping::default())
}

/// Runs `scenario` with `seed`, stepping as `stepping` says.
pub fn run_with(scenario: &Scenario, seed: u64, stepping: Stepping) -> RunResult {
    let watch = Stopwatch::start();
    let trace = Trace::default();
    let logs = ServedLog::default();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| simulate(scenario, seed, stepping, &trace, &logs)));
    let mut steps = Steps::default();
    let mut failures = match outcome {
        Ok(Ok(s)) => {
            steps = s;
            Vec::new()
        }
        Ok(Err(e)) => vec![format!("simulation error: {e}")],
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            vec![format!("simulation panicked: {msg}")]
        }
    };
    let events = trace.events();
    let summary = check::summarize(&events, &logs);
    failures.extend(check::check(&scenario.expect, &summary, scenario.duration.0));
    RunResult {
        name: scenario.name.clone(),
        seed,
        verdict: if failures.is_empty() { Verdict::Pass } else { Verdict::Fail },
        failures,
        sim_time_ms: scenario.duration.0.as_millis() as u64,
        wall_ms: watch.elapsed().as_secs_f64() * 1000.0,
        trace_hash: trace::hash(&events),
        steps,
        summary,
        trace: events,
    }
}

type HostResult = Result<(), Box<dyn std::error::Error>>;

/// How the simulation was stepped.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Steps {
    /// Steps taken.
    pub steps: u64,
    /// Steps that skipped idle time.
    pub skips: u64,
    /// Host runs: one host's software run for one step (the main cost).
    pub host_runs: u64,
}

fn simulate(
    scenario: &Scenario,
    seed: u64,
    stepping: Stepping,
    trace: &Trace,
    logs: &ServedLog,
) -> Result<Steps, String> {
    let w = &scenario.world;
    let Layout { config } = layout(scenario);
    let outside_ms = Arc::new(AtomicU64::new(0));
    let clock = Arc::new(SimClock::new(epoch(), 0, outside_ms.clone()));
    let cloud = Cloud::new(
        config,
        clock.clone(),
        Arc::new(SeededEntropy::new(seed, "cloud")),
        Rc::new(CloudTraceSink { trace: trace.clone() }),
    )
    .map_err(|e| e.to_string())?;
    cloud.with_pki(|p| p.faults = w.pki.faults.iter().copied().collect());
    let firewall = Rc::new(RefCell::new(Firewall { rules: perimeter_rules(w) }));
    // The world's DNS: the CRL/OCSP names are served by one host, the
    // trust list's by another.
    let aliases: Rc<BTreeMap<String, String>> = Rc::new(
        REVOCATION_HOSTS
            .iter()
            .map(|h| (h.to_string(), REVOCATION_HOST.to_string()))
            .chain(TRUST_LIST_HOSTS.iter().map(|h| (h.to_string(), TRUST_LIST_HOST.to_string())))
            .collect(),
    );
    let mut names: Vec<String> = cloud.config.service_hosts();
    names.extend(REVOCATION_HOSTS.iter().chain(&TRUST_LIST_HOSTS).map(|h| h.to_string()));
    names.extend(w.backends.iter().map(|b| b.name.clone()));
    names.extend([PROXY_HOST.to_string(), INSPECTOR_HOST.to_string()]);
    let addresses = Rc::new(RefCell::new(AddressPlan::new(names)));
    let dns = Rc::new(RefCell::new(w.dns.clone()));
    let world_net = SimNet {
        firewall: firewall.clone(),
        plan: addresses.clone(),
        dns: dns.clone(),
        aliases: aliases.clone(),
        ..SimNet::default()
    };
    let interception = w
        .inspection
        .as_ref()
        .map(|i| Rc::new(Interception { inspector: INSPECTOR_HOST.to_string(), suffixes: i.hosts.clone() }));
    let proxy_egress =
        Rc::new(RefCell::new(Firewall { rules: w.proxy.as_ref().map(|p| p.egress.clone()).unwrap_or_default() }));
    let network = NetworkEdits {
        perimeter: FirewallEdits::new(firewall.clone()),
        proxy_egress: FirewallEdits::new(proxy_egress.clone()),
        dns: dns.clone(),
    };

    let tick = w.tick.map(|t| t.0).unwrap_or(DEFAULT_TICK).max(Duration::from_millis(1));
    let mut sim = new_sim(seed, scenario.duration.0, tick);

    // The cloud's hosts.
    let c = cloud.config.clone();
    macro_rules! tls_host {
        ($host:expr, $serve:expr) => {{
            let cloud = cloud.clone();
            sim.host($host.as_str(), move || {
                let cloud = cloud.clone();
                async move {
                    let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 443)).await?;
                    $serve(cloud, l).await?;
                    HostResult::Ok(())
                }
            });
        }};
    }
    tls_host!(c.login_host, services::login::serve);
    tls_host!(c.other_cloud_login_host, services::login::serve_other_cloud);
    tls_host!(c.registration_host, services::registration::serve);
    tls_host!(c.bootstrap_host, services::bootstrap::serve);
    tls_host!(c.renewtrust_host, services::renewtrust::serve);
    for host in [REVOCATION_HOST, TRUST_LIST_HOST] {
        let cloud = cloud.clone();
        sim.host(host, move || {
            let cloud = cloud.clone();
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 80)).await?;
                services::revocation::serve(cloud, l).await;
                HostResult::Ok(())
            }
        });
    }
    {
        // Cloud-internal: the portal's connector status (active, inactive, removed).
        let cloud = cloud.clone();
        sim.host(PORTAL_HOST, move || {
            let cloud = cloud.clone();
            async move {
                services::portal::run(cloud).await;
                HostResult::Ok(())
            }
        });
    }
    if let Some(spec) = &w.inspection {
        let (cloud, mode) = (cloud.clone(), spec.mode);
        let upstream = SimNet { firewall: Rc::default(), ..world_net.clone() };
        sim.host(INSPECTOR_HOST, move || {
            let (cloud, upstream) = (cloud.clone(), upstream.clone());
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 443)).await?;
                relay_sim::inspector::serve(cloud, l, mode, Rc::new(upstream)).await;
                HostResult::Ok(())
            }
        });
    }
    for ep in &c.relay_endpoints {
        let host = ep.host.clone();
        let cloud = cloud.clone();
        sim.host(ep.host.as_str(), move || {
            let (cloud, host) = (cloud.clone(), host.clone());
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 443)).await?;
                services::relay::serve(cloud, host, l).await?;
                HostResult::Ok(())
            }
        });
    }
    {
        let cloud = cloud.clone();
        sim.host(c.ingress_host.as_str(), move || {
            let cloud = cloud.clone();
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, INGRESS_PORT)).await?;
                services::ingress::serve(cloud, l).await;
                HostResult::Ok(())
            }
        });
    }

    if let Some(spec) = &w.proxy {
        let policy = Rc::new(ProxyPolicy { require_auth: spec.auth, allow: Firewall { rules: spec.allow.clone() } });
        // The proxy is the host the perimeter lets out: its egress has a
        // firewall of its own, the world's DNS and any inspection box.
        let upstream = SimNet {
            firewall: proxy_egress.clone(),
            interception: interception.clone(),
            account: "proxy".into(),
            ..world_net.clone()
        };
        let (cloud, port) = (cloud.clone(), spec.port);
        sim.host(PROXY_HOST, move || {
            let (cloud, policy, upstream) = (cloud.clone(), policy.clone(), upstream.clone());
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).await?;
                relay_sim::proxy::serve(cloud, l, policy, Rc::new(upstream)).await;
                HostResult::Ok(())
            }
        });
    }

    // Backends. A stopped backend's host stays up with its port closed,
    // so connections are refused (a stopped service, not a dead machine).
    let mut backend_switches: BTreeMap<String, tokio::sync::watch::Sender<bool>> = BTreeMap::new();
    for b in &w.backends {
        let (switch, _) = tokio::sync::watch::channel(!b.down);
        backend_switches.insert(b.name.clone(), switch.clone());
        let (name, behaviour, log, port) = (b.name.clone(), b.behaviour.clone(), logs.clone(), b.port);
        sim.host(b.name.as_str(), move || {
            let (name, behaviour, log) = (name.clone(), behaviour.clone(), log.clone());
            let mut up = switch.subscribe();
            async move {
                loop {
                    up.wait_for(|on| *on).await?;
                    let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).await?;
                    tokio::select! {
                        biased;
                        res = up.wait_for(|on| !*on) => { res?; }
                        () = relay_sim::backend::serve(name.clone(), behaviour.clone(), log.clone(), l) => {}
                    }
                }
            }
        });
    }

    // Connector hosts.
    let mut install_dirs = BTreeMap::new();
    let mut updater_switches = BTreeMap::new();
    // What the next install on a host puts in (a manual upgrade's "latest").
    let mut reinstall_versions: BTreeMap<String, Rc<RefCell<Option<String>>>> = BTreeMap::new();
    for spec in &w.connectors {
        let dir = tempfile::Builder::new()
            .prefix("connsim-install-")
            .tempdir()
            .map_err(|e| format!("install folder for {}: {e}", spec.name))?;
        let mut cfg = AgentConfig::new(&w.tenant, &spec.name, dir.path().to_path_buf());
        install_dirs.insert(spec.name.clone(), dir);
        let (updater, switch) = ServiceSwitch::new(ServiceState::Running);
        updater_switches.insert(spec.name.clone(), updater);
        cfg.updater_service = switch;
        let reinstall: Rc<RefCell<Option<String>>> = Rc::default();
        reinstall_versions.insert(spec.name.clone(), reinstall.clone());
        cfg.credentials = Some(Credentials {
            username: w.admin.user.clone(),
            password: w.admin.signs_in_with.clone().unwrap_or_else(|| w.admin.password.clone()),
            directory: w.admin.signs_in_to.clone(),
        });
        cfg.trusted_roots = spec
            .roots
            .iter()
            .map(|r| match r {
                RootName::Baltimore => cloud.root_der(Generation::Baltimore),
                RootName::DigicertG2 => cloud.root_der(Generation::DigicertG2),
                RootName::Enterprise => cloud.enterprise_root_der(),
            })
            .collect();
        // The product ships the service's roots; the host must trust them too.
        cfg.service_roots = cloud.service_roots();
        cfg.revocation = spec.revocation;
        cfg.host = spec.host.clone();
        if let Some(v) = &spec.version {
            cfg.version = v.clone();
        }
        // Checked when the scenario was loaded.
        cfg.cloud = Environment::from_environment_name(spec.environment_name.as_ref().map(|e| e.get_ref().as_str()))
            .unwrap_or_default();
        let skew_s = spec.clock_skew.map(|s| s.ahead_s).unwrap_or(0);
        let boots = Rc::new(Cell::new(0u32));
        let (name, trace) = (spec.name.clone(), trace.clone());
        let diagnose_at = spec.diagnose_at.map(|d| d.0);
        let relays = cloud.config.relay_endpoints.clone();
        let net = SimNet {
            host_firewall: Rc::new(RefCell::new(Firewall { rules: spec.host_firewall.clone() })),
            interception: interception.clone(),
            account: spec.account.clone().unwrap_or_else(|| NETWORK_SERVICE.to_string()),
            ..world_net.clone()
        };
        if spec.use_proxy {
            cfg.proxy = w.proxy.as_ref().map(|p| (PROXY_HOST.to_string(), p.port));
        }
        let outside_ms = outside_ms.clone();
        sim.host(spec.name.as_str(), move || {
            let boot = boots.get();
            boots.set(boot + 1);
            let env = Env {
                net: Rc::new(net.clone()),
                clock: Arc::new(SimClock::new(epoch(), skew_s, outside_ms.clone())),
                entropy: Arc::new(SeededEntropy::new(seed, &format!("connector/{name}/{boot}"))),
                events: Rc::new(AgentSink { trace: trace.clone(), host: name.clone() }),
                evidence: Rc::default(),
            };
            let mut cfg = cfg.clone();
            if let Some(v) = reinstall.borrow().clone() {
                cfg.version = v;
            }
            let relays = relays.clone();
            async move {
                if let Some(at) = diagnose_at {
                    let dcfg = DiagnoseConfig {
                        tenant_id: cfg.tenant_id.clone(),
                        trusted_roots: cfg.trusted_roots.clone(),
                        service_roots: cfg.service_roots.clone(),
                        relays: relays.clone(),
                        timeout: Duration::from_secs(10),
                        cloud: cfg.cloud,
                    };
                    // Its own memory: what diagnose learns must not steer the agent.
                    let denv = Env { evidence: Rc::default(), ..env.clone() };
                    tokio::task::spawn_local(async move {
                        let now = turmoil::sim_elapsed().unwrap_or_default();
                        connector::time::sleep(at.saturating_sub(now)).await;
                        let report = connector::diagnose::run(&denv, &dcfg).await;
                        denv.emit(AgentEvent::Diagnosed { checks: report.checks.len(), failed: report.failed() });
                        for d in report.findings {
                            denv.emit(AgentEvent::Diagnostic(d));
                        }
                    });
                }
                // A connector that stops (e.g. registration failed) leaves
                // its host idle; the trace says why.
                let _ = Agent::new(env, cfg).run().await;
                HostResult::Ok(())
            }
        });
    }

    // Users.
    let plan = user_plan(scenario);
    if !plan.is_empty() {
        let (trace, ingress) = (trace.clone(), c.ingress_host.clone());
        sim.client("users", async move {
            users(plan, ingress, trace).await;
            HostResult::Ok(())
        });
    }

    // Connectors far from the tenant's region get long links to the cloud.
    for spec in &w.connectors {
        let Some(region) = spec.region.as_ref().map(|r| r.get_ref()) else { continue };
        if let Some(latency) = crate::scenario::region_latency(region, &w.region).filter(|_| region != &w.region) {
            for host in c.service_hosts() {
                sim.set_link_latency(spec.name.as_str(), host.as_str(), latency);
            }
        }
    }

    // Drive the simulation, applying the timeline as its times come.
    let mut timeline: Vec<(Duration, TimelineEvent)> =
        scenario.timeline.iter().map(|e| (e.at.0, e.event.get_ref().clone())).collect();
    timeline.sort_by_key(|(at, _)| *at);
    let mut next = 0;
    let relay_hosts: Vec<String> = c.relay_endpoints.iter().map(|e| e.host.clone()).collect();
    let mut stepper = Stepper::attach(&mut sim, tick, stepping == Stepping::SkipIdle);
    while sim.elapsed() < scenario.duration.0 {
        while next < timeline.len() && timeline[next].0 <= sim.elapsed() {
            let event = &timeline[next].1;
            next += 1;
            trace.record_at(
                sim.elapsed().as_millis() as u64,
                "world",
                What::World(WorldEvent::Applied { what: event.to_string() }),
            );
            match event {
                TimelineEvent::RestartRelay => relay_hosts.iter().for_each(|h| sim.bounce(h.as_str())),
                TimelineEvent::CrashRelay => relay_hosts.iter().for_each(|h| sim.crash(h.as_str())),
                TimelineEvent::StartRelay => relay_hosts.iter().for_each(|h| sim.bounce(h.as_str())),
                TimelineEvent::BlockPort(_)
                | TimelineEvent::RejectPort(_)
                | TimelineEvent::UnblockPort(_)
                | TimelineEvent::BlockHost(_)
                | TimelineEvent::RejectHost(_)
                | TimelineEvent::UnblockHost(_)
                | TimelineEvent::AtProxy(_)
                | TimelineEvent::DnsFail(_)
                | TimelineEvent::DnsSinkhole(_)
                | TimelineEvent::DnsRestore(_) => network.apply(event),
                TimelineEvent::StopBackend(n) | TimelineEvent::StartBackend(n) => {
                    if let Some(switch) = backend_switches.get(n) {
                        switch.send_replace(matches!(event, TimelineEvent::StartBackend(_)));
                    }
                }
                TimelineEvent::RestartConnector(n) | TimelineEvent::StartConnector(n) => sim.bounce(n.as_str()),
                TimelineEvent::StopConnector(n) => sim.crash(n.as_str()),
                TimelineEvent::RotateRoot => cloud.rotate_root(Generation::DigicertG2),
                TimelineEvent::RevokeRelayCertificate => {
                    let now = cloud.now();
                    for h in &relay_hosts {
                        if cloud.with_pki(|p| p.revoke_server(h, now)) {
                            cloud.emit(relay_sim::event::CloudEvent::ServerRevoked { host: h.clone() });
                        }
                    }
                }
                TimelineEvent::RevokeConnector(n) => {
                    for rec in cloud.connectors().into_iter().filter(|r| &r.machine == n) {
                        cloud.revoke_connector(&rec.id);
                    }
                }
                TimelineEvent::StopProxy => sim.crash(PROXY_HOST),
                TimelineEvent::StartProxy => sim.bounce(PROXY_HOST),
                TimelineEvent::StopRevocationServers => sim.crash(REVOCATION_HOST),
                TimelineEvent::StartRevocationServers => sim.bounce(REVOCATION_HOST),
                TimelineEvent::AdvanceIpWeek => addresses.borrow_mut().week += 1,
                TimelineEvent::StopUpdater(n) | TimelineEvent::StartUpdater(n) => {
                    if let Some(switch) = updater_switches.get(n) {
                        let start = matches!(event, TimelineEvent::StartUpdater(_));
                        switch.send_replace(if start { ServiceState::Running } else { ServiceState::Stopped });
                    }
                }
                TimelineEvent::UpgradeConnector(n) | TimelineEvent::UpgradeConnectorKeepingFolders(n) => {
                    let (Some(dir), Some(next)) = (install_dirs.get(n), reinstall_versions.get(n)) else { continue };
                    sim.crash(n.as_str());
                    let installation = Installation::at(dir.path());
                    let uninstalled = installation.uninstall().and_then(|()| {
                        if matches!(event, TimelineEvent::UpgradeConnector(_)) {
                            installation.delete_folders()
                        } else {
                            Ok(())
                        }
                    });
                    uninstalled.map_err(|e| format!("{event}: {e}"))?;
                    *next.borrow_mut() = Some(connector::agent::DEFAULT_VERSION.to_string());
                    sim.bounce(n.as_str());
                }
            }
        }
        let limit = timeline.get(next).map_or(scenario.duration.0, |(at, _)| *at).min(scenario.duration.0);
        stepper.step(&mut sim, limit).map_err(|e| e.to_string())?;
        outside_ms.store(sim.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let host_runs = sim.host_runs();
    drop(sim);
    drop(install_dirs);
    Ok(Steps { steps: stepper.steps, skips: stepper.skips, host_runs })
}

/// The perimeter: the scenario's rules, then its allow-list (the spec's
/// table minus the listed groups, by name or by a week's IP ranges), then
/// everything else on 80 and 443 dropped (or rejected).
fn perimeter_rules(w: &crate::scenario::World) -> Vec<Rule> {
    let mut rules = w.firewall.clone();
    if let Some(list) = &w.allow_list {
        let kept: Vec<Group> = Group::ALL.iter().copied().filter(|g| !list.minus.contains(g)).collect();
        match list.by {
            AllowBy::Names => rules.extend(Firewall::allow_groups(w.cloud, &kept)),
            AllowBy::Ranges => {
                // Ranges exist for the cloud's 443 services; port-80 hosts
                // (CDNs) are allowed by name, as admins do.
                if kept.contains(&Group::Service443) || kept.contains(&Group::Registration443) {
                    rules.extend(AddressPlan::range_rules(list.week));
                }
                let by_name: Vec<Group> = kept.into_iter().filter(|g| g.port() == 80).collect();
                rules.extend(Firewall::allow_groups(w.cloud, &by_name));
            }
        }
        rules.push(Rule::port(list.otherwise, 443));
        rules.push(Rule::port(list.otherwise, 80));
    }
    rules
}

/// One planned user request.
struct Planned {
    at: Duration,
    host: String,
    path: String,
    mark: String,
    upload_bytes: usize,
    header_bytes: usize,
    /// The app's backend echoes what it received (its SHA-256): a success
    /// without that header did not come from it whole.
    echoes: bool,
    /// The load's `expect_status`.
    expect_status: Option<u16>,
}

fn user_plan(s: &Scenario) -> Vec<Planned> {
    let mut plan = Vec::new();
    for (li, load) in s.load.iter().enumerate() {
        let app = load.app.get_ref();
        let backend = s.world.apps.iter().find(|a| &a.name == app).map(|a| a.backend.get_ref().as_str());
        let echoes = s.world.backends.iter().find(|b| Some(b.name.as_str()) == backend).is_some_and(|b| {
            matches!(b.behaviour, relay_sim::backend::Behaviour::Echo | relay_sim::backend::Behaviour::Slow { .. })
        });
        for i in 0..load.requests {
            plan.push(Planned {
                at: load.start.0 + load.interval.0 * i,
                host: format!("{app}-{}.msappproxy.net", s.world.tenant),
                path: load.path.clone(),
                mark: format!("{app}-{li}-{i}"),
                upload_bytes: load.upload_bytes,
                header_bytes: load.header_bytes,
                echoes,
                expect_status: load.expect_status.as_ref().map(|c| *c.get_ref()),
            });
        }
    }
    plan.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.mark.cmp(&b.mark)));
    plan
}

async fn users(plan: Vec<Planned>, ingress: String, trace: Trace) {
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for p in plan {
        connector::time::sleep_until(start + p.at).await;
        trace.record("users", What::User(UserEvent::Sent { mark: p.mark.clone() }));
        let (ingress, trace) = (ingress.clone(), trace.clone());
        handles.push(tokio::task::spawn_local(async move {
            let what = match connector::time::timeout(USER_TIMEOUT, user_request(&ingress, &p)).await {
                Ok(Ok(answer)) => answer.judge(p.mark, p.expect_status),
                Ok(Err(error)) => UserEvent::Failed { mark: p.mark, error },
                Err(_) => UserEvent::Failed { mark: p.mark, error: "no answer within 120s".into() },
            };
            trace.record("users", What::User(what));
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}

/// What a user got.
struct Answer {
    status: u16,
    relay_error: Option<String>,
    /// For a success: how its body differs from what was sent or announced.
    wrong: Option<String>,
}

impl Answer {
    /// What the trace records of it, against the status expected if any.
    fn judge(self, mark: String, expected: Option<u16>) -> UserEvent {
        let Answer { status, relay_error, wrong } = self;
        match (wrong, expected) {
            (Some(what), _) => UserEvent::Corrupted { mark, status, what },
            (None, Some(e)) if e == status => UserEvent::Expected { mark, status, relay_error },
            (None, Some(expected)) => UserEvent::Unexpected { mark, status, expected },
            (None, None) => UserEvent::Answered { mark, status, relay_error },
        }
    }
}

async fn user_request(ingress: &str, p: &Planned) -> Result<Answer, String> {
    let stream =
        turmoil::net::TcpStream::connect((ingress, INGRESS_PORT)).await.map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let upload = relay_sim::backend::pattern(p.upload_bytes);
    let mut req = http::Request::builder()
        .method(if p.upload_bytes > 0 { http::Method::POST } else { http::Method::GET })
        .uri(p.path.as_str())
        .header(http::header::HOST, p.host.as_str())
        .header(REQUEST_MARK, p.mark.as_str());
    if p.header_bytes > 0 {
        req = req.header(http::header::COOKIE, format!("big={}", "c".repeat(p.header_bytes)));
    }
    let req = req.body(Full::new(upload.clone())).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let relay_error = header("x-relay-error");
    let (sent_digest, announced) = (header("x-body-sha256"), header("x-response-sha256"));
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    let mut wrong = None;
    if (200..300).contains(&status) {
        match sent_digest {
            Some(d) if d != relay_sim::backend::sha256_hex(&upload) => {
                wrong = Some(format!("the backend received other bytes than the {} sent", upload.len()));
            }
            None if p.echoes => wrong = Some("the answer lacks the echo backend's x-body-sha256".into()),
            _ => {}
        }
        if announced.is_some_and(|d| d != relay_sim::backend::sha256_hex(&body)) {
            wrong = Some(format!("the response body ({} bytes) is not the one the backend sent", body.len()));
        }
    }
    Ok(Answer { status, relay_error, wrong })
}

/// What the timeline changes in the network while a run goes: rules it
/// adds to and removes from the perimeter and the proxy's egress (only its
/// own: the world file's rules stay), and the world's DNS faults (`dns
/// restore` clears a suffix's faults, the world file's included).
struct NetworkEdits {
    perimeter: FirewallEdits,
    proxy_egress: FirewallEdits,
    dns: Rc<RefCell<Dns>>,
}

impl NetworkEdits {
    fn apply(&self, event: &TimelineEvent) {
        match event {
            TimelineEvent::AtProxy(inner) => self.proxy_egress.apply(inner),
            TimelineEvent::DnsFail(h) => self.dns.borrow_mut().fail.push(h.clone()),
            TimelineEvent::DnsSinkhole(h) => self.dns.borrow_mut().sinkhole.push(h.clone()),
            TimelineEvent::DnsRestore(h) => {
                let mut d = self.dns.borrow_mut();
                d.fail.retain(|s| s != h);
                d.sinkhole.retain(|s| s != h);
            }
            other => self.perimeter.apply(other),
        }
    }
}

/// One firewall the timeline edits, and the rules it added there.
struct FirewallEdits {
    firewall: Rc<RefCell<Firewall>>,
    /// Rules the timeline added, so that "unblock" removes only those.
    added: RefCell<Vec<Rule>>,
}

impl FirewallEdits {
    fn new(firewall: Rc<RefCell<Firewall>>) -> Self {
        FirewallEdits { firewall, added: RefCell::default() }
    }

    fn apply(&self, event: &TimelineEvent) {
        match event {
            TimelineEvent::BlockPort(p) => self.add(Rule::port(Action::Drop, *p)),
            TimelineEvent::RejectPort(p) => self.add(Rule::port(Action::Reject, *p)),
            TimelineEvent::BlockHost(h) => self.add(Rule::host(Action::Drop, h.clone())),
            TimelineEvent::RejectHost(h) => self.add(Rule::host(Action::Reject, h.clone())),
            TimelineEvent::UnblockPort(p) => self.remove(|r| r.port == Some(*p)),
            TimelineEvent::UnblockHost(h) => self.remove(|r| r.host_suffix.as_ref() == Some(h)),
            _ => {}
        }
    }

    fn add(&self, rule: Rule) {
        self.added.borrow_mut().push(rule.clone());
        self.firewall.borrow_mut().rules.insert(0, rule);
    }

    fn remove(&self, which: impl Fn(&Rule) -> bool) {
        let added = self.added.borrow();
        self.firewall.borrow_mut().rules.retain(|r| !(which(r) && added.contains(r)));
    }
}
