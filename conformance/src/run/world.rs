//! The world a scenario describes, built on a turmoil simulation: the
//! cloud's hosts, the network between (perimeter and proxy firewalls, DNS,
//! address plan, inspection box, explicit proxy), the backends and the
//! connector hosts. [`World`] keeps the handles the timeline acts on.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use connector::allowlist::{Environment, Group};
use connector::diagnose::DiagnoseConfig;
use connector::env::{Env, SeededEntropy};
use connector::event::AgentEvent;
use connector::host::LiveHost;
use connector::service::{ServiceState, ServiceSwitch};
use connector::{Agent, AgentConfig, Credentials};
use relay_sim::backend::ServedLog;
use relay_sim::cloud::{Cloud, CloudConfig};
use relay_sim::directory::{App, Role, Tenant, User, UserSource};
use relay_sim::network::NETWORK_SERVICE;
use relay_sim::pki::{Generation, REVOCATION_HOSTS};
use relay_sim::proxy::ProxyPolicy;
use relay_sim::services;
use relay_sim::services::revocation::TRUST_LIST_HOSTS;
use relay_sim::world::{AddressPlan, Dns, Firewall, Interception, Rule, SimClock, SimNet};

use super::edits::{FirewallEdits, NetworkEdits};
use super::{
    epoch, HostResult, INGRESS_PORT, INSPECTOR_HOST, PORTAL_HOST, PROXY_HOST, REVOCATION_HOST, TRUST_LIST_HOST,
};
use crate::scenario::{AllowBy, ConnectorSpec, RootName, Scenario};
use crate::trace::{AgentSink, CloudTraceSink, Trace};

/// What the timeline and the driver need of a built world.
pub(super) struct World {
    pub(super) cloud: Rc<Cloud>,
    pub(super) network: NetworkEdits,
    pub(super) addresses: Rc<RefCell<AddressPlan>>,
    pub(super) relay_hosts: Vec<String>,
    /// Each backend's switch: on (serving) or off (port closed).
    pub(super) backend_switches: BTreeMap<String, tokio::sync::watch::Sender<bool>>,
    /// Each connector host's updater service.
    pub(super) updater_switches: BTreeMap<String, tokio::sync::watch::Sender<ServiceState>>,
    /// Each connector host's install folder (removed with the world).
    pub(super) install_dirs: BTreeMap<String, tempfile::TempDir>,
    /// What the next install on a host puts in (a manual upgrade's "latest").
    pub(super) reinstall_versions: BTreeMap<String, Rc<RefCell<Option<String>>>>,
    /// The simulated time, for clocks outside any host (the cloud's).
    pub(super) outside_ms: Arc<AtomicU64>,
    /// Each connector host's server as it is now (products, registry,
    /// .NET), which timeline events change.
    pub(super) servers: BTreeMap<String, LiveHost>,
    /// Each connector host's clock offset in seconds (`set clock`).
    pub(super) clock_skews: BTreeMap<String, Arc<AtomicI64>>,
    /// Each connector host's own firewall (`block port N on NAME`).
    pub(super) host_firewalls: BTreeMap<String, FirewallEdits>,
    /// Each connector host's own resolver (`dns fail SUFFIX on NAME`).
    pub(super) host_dns: BTreeMap<String, Rc<RefCell<Dns>>>,
    /// What connector hosts talk to, for cutting what a host firewall
    /// rule added mid-run blocks.
    pub(super) peers: Vec<Peer>,
    /// Names whose server is down (`stop revocation server NAME`).
    pub(super) down_names: Rc<RefCell<std::collections::BTreeSet<String>>>,
}

/// The network every host shares: the handles the timeline edits, and
/// the connection view (`SimNet`) hosts start from.
struct Network {
    edits: NetworkEdits,
    addresses: Rc<RefCell<AddressPlan>>,
    world_net: SimNet,
    interception: Option<Rc<Interception>>,
    proxy_egress: Rc<RefCell<Firewall>>,
    /// The proxy's own resolver.
    proxy_dns: Rc<RefCell<Dns>>,
    peers: Vec<Peer>,
}

impl World {
    /// Builds the scenario's world on `sim`; `trace` gets every event,
    /// `logs` what the backends served.
    pub(super) fn build(
        scenario: &Scenario,
        seed: u64,
        sim: &mut turmoil::Sim<'_>,
        trace: &Trace,
        logs: &ServedLog,
    ) -> Result<World, String> {
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
        let net = network(scenario, &cloud);
        cloud_hosts(sim, &cloud, scenario, &net);
        let backend_switches = backends(sim, scenario, logs);
        let mut world = World {
            relay_hosts: cloud.config.instances.all_relays().into_iter().map(|e| e.host).collect(),
            cloud,
            network: net.edits,
            addresses: net.addresses,
            backend_switches,
            updater_switches: BTreeMap::new(),
            install_dirs: BTreeMap::new(),
            reinstall_versions: BTreeMap::new(),
            outside_ms,
            servers: BTreeMap::new(),
            clock_skews: BTreeMap::new(),
            host_firewalls: BTreeMap::new(),
            host_dns: BTreeMap::new(),
            peers: net.peers,
            down_names: net.world_net.down.clone(),
        };
        let base = ConnectorBase { seed, trace, world_net: &net.world_net, interception: &net.interception };
        for spec in &w.connectors {
            world.connector_host(sim, scenario, spec, &base)?;
        }
        Ok(world)
    }
}

/// The network of a scenario's world.
fn network(scenario: &Scenario, cloud: &Cloud) -> Network {
    let w = &scenario.world;
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
    let mut peers: Vec<Peer> = cloud.config.service_hosts().into_iter().map(|n| Peer::at(&n, &n, 443)).collect();
    peers.extend(REVOCATION_HOSTS.iter().map(|n| Peer::at(n, REVOCATION_HOST, 80)));
    peers.extend(TRUST_LIST_HOSTS.iter().map(|n| Peer::at(n, TRUST_LIST_HOST, 80)));
    peers.extend(w.backends.iter().map(|b| Peer::at(&b.name, &b.name, b.port)));
    let mut names: Vec<String> = cloud.config.service_hosts();
    names.extend(REVOCATION_HOSTS.iter().chain(&TRUST_LIST_HOSTS).map(|h| h.to_string()));
    names.extend(w.backends.iter().map(|b| b.name.clone()));
    names.extend([PROXY_HOST.to_string(), INSPECTOR_HOST.to_string()]);
    let addresses = Rc::new(RefCell::new(AddressPlan::new(names)));
    let dns: Rc<RefCell<Dns>> = Rc::new(RefCell::new(w.dns.clone()));
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
    let proxy_dns = Rc::new(RefCell::new(w.proxy.as_ref().map(|p| p.dns.clone()).unwrap_or_default()));
    let edits = NetworkEdits {
        perimeter: FirewallEdits::new(firewall.clone()),
        proxy_egress: FirewallEdits::new(proxy_egress.clone()),
        dns,
        proxy_dns: proxy_dns.clone(),
    };
    Network { edits, addresses, world_net, interception, proxy_egress, proxy_dns, peers }
}

/// A destination a connector host talks to: the name it asks for, the
/// simulation host that answers (CDN names share one), and the port.
pub(super) struct Peer {
    pub(super) name: String,
    pub(super) host: String,
    pub(super) port: u16,
}

impl Peer {
    fn at(name: &str, host: &str, port: u16) -> Peer {
        Peer { name: name.to_string(), host: host.to_string(), port }
    }
}

/// A host `$host` serving `$serve(cloud, listener)` over TLS on 443; a
/// service error fails the host (and the run).
macro_rules! tls_host {
    ($sim:expr, $cloud:expr, $host:expr, $serve:expr) => {{
        let cloud = $cloud.clone();
        $sim.host($host.as_str(), move || {
            let cloud = cloud.clone();
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 443)).await?;
                $serve(cloud, l).await?;
                HostResult::Ok(())
            }
        });
    }};
}

/// A host `$host` running `$run` (which never fails) with the cloud, after
/// binding `$port` when one is given.
macro_rules! plain_host {
    ($sim:expr, $cloud:expr, $host:expr, $port:expr, $run:expr) => {{
        let cloud = $cloud.clone();
        $sim.host($host, move || {
            let cloud = cloud.clone();
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, $port)).await?;
                $run(cloud, l).await;
                HostResult::Ok(())
            }
        });
    }};
}

/// The cloud's hosts (sign-in, registration, bootstrap, renewal,
/// revocation, portal, relays, ingress), and the corporate network's
/// inspection box and explicit proxy.
fn cloud_hosts(sim: &mut turmoil::Sim<'_>, cloud: &Rc<Cloud>, scenario: &Scenario, net: &Network) {
    let c = cloud.config.clone();
    tls_host!(sim, cloud, c.login_host, services::login::serve);
    tls_host!(sim, cloud, c.other_cloud_login_host, services::login::serve_other_cloud);
    tls_host!(sim, cloud, c.registration_host, services::registration::serve);
    tls_host!(sim, cloud, c.bootstrap_host, services::bootstrap::serve);
    tls_host!(sim, cloud, c.renewtrust_host, services::renewtrust::serve);
    for host in [REVOCATION_HOST, TRUST_LIST_HOST] {
        plain_host!(sim, cloud, host, 80, services::revocation::serve);
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
    let w = &scenario.world;
    if let Some(spec) = &w.inspection {
        let (cloud, mode) = (cloud.clone(), spec.mode);
        let upstream = SimNet { firewall: Rc::default(), ..net.world_net.clone() };
        sim.host(INSPECTOR_HOST, move || {
            let (cloud, upstream) = (cloud.clone(), upstream.clone());
            async move {
                let l = turmoil::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, 443)).await?;
                relay_sim::inspector::serve(cloud, l, mode, Rc::new(upstream)).await;
                HostResult::Ok(())
            }
        });
    }
    for ep in &c.instances.all_relays() {
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
    plain_host!(sim, cloud, c.ingress_host.as_str(), INGRESS_PORT, services::ingress::serve);
    if let Some(spec) = &w.proxy {
        proxy_host(sim, cloud, spec, net);
    }
}

/// The explicit proxy: the host the perimeter lets out. Its egress has a
/// firewall of its own, the world's DNS and any inspection box.
fn proxy_host(sim: &mut turmoil::Sim<'_>, cloud: &Rc<Cloud>, spec: &crate::scenario::ProxySpec, net: &Network) {
    let policy = Rc::new(ProxyPolicy { require_auth: spec.auth, allow: Firewall { rules: spec.allow.clone() } });
    let upstream = SimNet {
        firewall: net.proxy_egress.clone(),
        host_dns: net.proxy_dns.clone(),
        interception: net.interception.clone(),
        account: "proxy".into(),
        ..net.world_net.clone()
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

/// The backends, each with its switch. A stopped backend's host stays up
/// with its port closed, so connections are refused (a stopped service,
/// not a dead machine).
fn backends(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    logs: &ServedLog,
) -> BTreeMap<String, tokio::sync::watch::Sender<bool>> {
    let mut switches = BTreeMap::new();
    for b in &scenario.world.backends {
        let (switch, _) = tokio::sync::watch::channel(!b.down);
        switches.insert(b.name.clone(), switch.clone());
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
    switches
}

/// What every connector host shares.
struct ConnectorBase<'a> {
    seed: u64,
    trace: &'a Trace,
    world_net: &'a SimNet,
    interception: &'a Option<Rc<Interception>>,
}

/// A simulated connector's install folder: real files, as the agent
/// writes them, in memory where the system offers a memory file system
/// with room to spare. On a disk, creating and removing a thousand
/// folders a world took a tenth of a 1,000-connector run (ext4's inode
/// search), and none of it is the simulation's. A folder takes about
/// 20 KiB; a small `/dev/shm` (a container's default is 64 MiB) is left
/// alone, since running out of room mid-run would fail the agent's writes.
/// `TMPDIR`, when set, is obeyed.
fn install_folder() -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("connsim-install-");
    let shm = std::path::Path::new("/dev/shm");
    let roomy = || free_bytes(shm).is_some_and(|free| free >= SHM_FREE_MIN);
    if std::env::var_os("TMPDIR").is_none() && shm.is_dir() && roomy() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder.tempdir()
}

/// Free room `/dev/shm` must have to take install folders: fifty worlds
/// of a thousand connectors at once.
const SHM_FREE_MIN: u64 = 1 << 30;

/// Bytes free to unprivileged users on the file system holding `path`.
#[cfg(target_os = "linux")]
#[allow(clippy::unnecessary_cast)] // the field types differ between targets
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and `stat` is a buffer of the
    // type statvfs fills; it is read only when the call succeeded.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    (stat.f_bavail as u64).checked_mul(stat.f_frsize as u64)
}

#[cfg(not(target_os = "linux"))]
fn free_bytes(_: &std::path::Path) -> Option<u64> {
    None
}

impl World {
    /// A connector host: its install folder, configuration, network view
    /// (host firewall, account, proxy) and clock; the agent runs on each
    /// boot with entropy of its own.
    fn connector_host(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        scenario: &Scenario,
        spec: &ConnectorSpec,
        base: &ConnectorBase<'_>,
    ) -> Result<(), String> {
        let w = &scenario.world;
        let dir = install_folder().map_err(|e| format!("install folder for {}: {e}", spec.name))?;
        let mut cfg = AgentConfig::new(&w.tenant, &spec.name, dir.path().to_path_buf());
        self.install_dirs.insert(spec.name.clone(), dir);
        let (updater, switch) = ServiceSwitch::new(ServiceState::Running);
        self.updater_switches.insert(spec.name.clone(), updater);
        cfg.updater_service = switch;
        let reinstall: Rc<RefCell<Option<String>>> = Rc::default();
        self.reinstall_versions.insert(spec.name.clone(), reinstall.clone());
        configure(&mut cfg, &self.cloud, scenario, spec);
        let server = LiveHost::new(spec.host.clone().unwrap_or_default());
        self.servers.insert(spec.name.clone(), server.clone());
        cfg.host = Some(server);
        let skew_s = Arc::new(AtomicI64::new(spec.clock_skew.map(|s| s.ahead_s).unwrap_or(0)));
        self.clock_skews.insert(spec.name.clone(), skew_s.clone());
        let boots = Rc::new(Cell::new(0u32));
        let (name, trace, seed) = (spec.name.clone(), base.trace.clone(), base.seed);
        let diagnose_at = spec.diagnose_at.map(|d| d.0);
        let relays = self.cloud.relays_for_group(&spec.group);
        let host_firewall = Rc::new(RefCell::new(Firewall { rules: spec.host_firewall.clone() }));
        self.host_firewalls.insert(spec.name.clone(), FirewallEdits::new(host_firewall.clone()));
        let host_dns = Rc::new(RefCell::new(spec.dns.clone()));
        self.host_dns.insert(spec.name.clone(), host_dns.clone());
        let net = SimNet {
            host_firewall,
            host_dns,
            interception: base.interception.clone(),
            account: spec.account.clone().unwrap_or_else(|| NETWORK_SERVICE.to_string()),
            ..base.world_net.clone()
        };
        let outside_ms = self.outside_ms.clone();
        sim.host(spec.name.as_str(), move || {
            let boot = boots.get();
            boots.set(boot + 1);
            let env = Env {
                net: Rc::new(net.clone()),
                clock: Arc::new(SimClock::shared(epoch(), skew_s.clone(), outside_ms.clone())),
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
                    spawn_diagnose(&env, &cfg, relays, at);
                }
                // A connector that stops (e.g. registration failed) leaves
                // its host idle; the trace says why.
                let _ = Agent::new(env, cfg).run().await;
                HostResult::Ok(())
            }
        });
        Ok(())
    }
}

/// The agent's configuration from the scenario: credentials, trust,
/// revocation policy, host profile, version, cloud, proxy.
fn configure(cfg: &mut AgentConfig, cloud: &Cloud, scenario: &Scenario, spec: &ConnectorSpec) {
    let w = &scenario.world;
    cfg.credentials = Some(Credentials {
        username: w.admin.user.clone(),
        password: w.admin.signs_in_with.clone().unwrap_or_else(|| w.admin.password.clone()),
        directory: w.admin.signs_in_to.clone(),
        interactive: w.admin.signs_in_interactively,
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
    cfg.installer_account = spec.installed_by.clone();
    if let Some(v) = &spec.version {
        cfg.version = v.clone();
    }
    // Checked when the scenario was loaded.
    cfg.cloud = Environment::from_environment_name(spec.environment_name.as_ref().map(|e| e.get_ref().as_str()))
        .unwrap_or_default();
    if spec.use_proxy {
        cfg.proxy = w.proxy.as_ref().map(|p| (PROXY_HOST.to_string(), p.port));
    }
}

/// `connector diagnose` on the host at `at`, beside the agent.
fn spawn_diagnose(env: &Env, cfg: &AgentConfig, relays: Vec<connector::api::RelayEndpoint>, at: Duration) {
    let dcfg = DiagnoseConfig {
        tenant_id: cfg.tenant_id.clone(),
        trusted_roots: cfg.trusted_roots.clone(),
        service_roots: cfg.service_roots.clone(),
        relays,
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

/// Connectors far from the tenant's region get long links to the cloud.
pub(super) fn region_links(sim: &mut turmoil::Sim<'_>, scenario: &Scenario, cloud: &Cloud) {
    let w = &scenario.world;
    let instances = &cloud.config.instances;
    // The relays of the regions groups are pinned to live there; every
    // other service host lives in the tenant's region.
    let pinned_relays: BTreeMap<String, &str> = instances
        .pin_regions
        .iter()
        .flat_map(|r| instances.relays_of(r, 1).into_iter().map(move |e| (e.host, r.as_str())))
        .collect();
    for spec in &w.connectors {
        let here = spec.region.as_ref().map_or(w.region.as_str(), |r| r.get_ref().as_str());
        for host in cloud.config.service_hosts() {
            let there = pinned_relays.get(&host).copied().unwrap_or(w.region.as_str());
            if let Some(latency) = crate::scenario::region_latency(here, there).filter(|_| here != there) {
                sim.set_link_latency(spec.name.as_str(), host.as_str(), latency);
            }
        }
    }
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
                pre_authentication: a.pre_authentication,
                sso: a.sso,
            }
        })
        .collect();
    let admin = User {
        upn: w.admin.user.clone(),
        password: w.admin.password.clone(),
        role: w.admin.role,
        directories: w.admin.directories.clone(),
        source: UserSource::Cloud,
        mfa: w.admin.mfa,
    };
    let users = std::iter::once(admin).chain(w.users.iter().map(|u| User {
        upn: u.upn.clone(),
        password: u.password.clone(),
        role: Role::User,
        directories: Vec::new(),
        mfa: false,
        source: match &u.synced_from {
            Some(account) => UserSource::Synced { on_premises: account.clone() },
            None => UserSource::Cloud,
        },
    }));
    let tenant = Tenant {
        id: w.tenant.clone(),
        domains: std::iter::once(w.domain.clone()).chain(w.aliases.iter().cloned()).collect(),
        region: w.region.clone(),
        users: users.collect(),
        app_proxy_enabled: w.app_proxy_enabled,
        apps,
        group_of_machine: w.connectors.iter().map(|c| (c.name.clone(), c.group.clone())).collect(),
    };
    let mut config = CloudConfig::in_cloud(w.cloud, tenant, w.relays.max(1));
    config.instances.count = w.instances.max(1);
    config.instances.pin_regions = w.pin_regions(&s.timeline);
    config.instance = w.instance;
    config.pins = w.pinned.clone();
    if let Some(i) = w.bootstrap_interval {
        config.bootstrap_interval_s = i.0.as_secs().max(1);
    }
    config.private_access = w.private_access;
    config.pulled_releases = w.pulled_releases.clone();
    config.feed = w.feed.clone();
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
