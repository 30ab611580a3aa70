//! Real mode: the whole cloud on loopback ports. Each service host name gets
//! its own port; the [`Manifest`] lists the `--resolve` overrides that point
//! a real connector at them, the root certificate it must trust, and the
//! ingress address users call.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use connector::env::{OsEntropy, SystemClock};
use serde::{Deserialize, Serialize};

use crate::backend::{self, Behaviour, ServedLog};
use crate::cloud::{Cloud, CloudConfig, CloudError};
use crate::control::Control;
use crate::directory::{App, Role, Tenant, User};
use crate::event::LogSink;
use crate::gate::{Gate, GatedListener};
use crate::pki::{Generation, REVOCATION_HOSTS};
use crate::services;
use crate::services::revocation::TRUST_LIST_HOSTS;

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: IpAddr,
    pub tenant_id: String,
    pub domain: String,
    pub admin: String,
    pub password: String,
    pub relays: usize,
    /// Where `root.pem` is written.
    pub state_dir: PathBuf,
    pub bootstrap_interval_s: u64,
    /// Give every service host its own address, counting up from this one,
    /// and serve on the real ports (443, 80, the backend's) instead of one
    /// address with a port per host. The addresses must be local already
    /// (the netns world routes a whole range to the loopback device).
    pub host_base: Option<std::net::Ipv4Addr>,
    /// The backend's host name and port (default `echo.corp.local`, any
    /// port; 8080 with `host_base`).
    pub backend_host: String,
    pub backend_port: u16,
    /// Largest upload the ingress relays (413 past it).
    pub upload_bytes_max: u64,
    /// Requests a connector may serve at once, handed out in bootstrap.
    pub connection_limit: u32,
}

impl ServeOptions {
    /// Loopback, one port per host, as `relay-sim serve` without options.
    pub fn loopback(state_dir: PathBuf) -> ServeOptions {
        ServeOptions {
            bind: IpAddr::from([127, 0, 0, 1]),
            tenant_id: "contoso".into(),
            domain: "contoso.com".into(),
            admin: "admin@contoso.com".into(),
            password: "correct-horse".into(),
            relays: 2,
            state_dir,
            bootstrap_interval_s: 600,
            host_base: None,
            backend_host: "echo.corp.local".into(),
            backend_port: 8080,
            upload_bytes_max: crate::cloud::UPLOAD_BYTES_MAX,
            connection_limit: crate::cloud::CONNECTION_LIMIT,
        }
    }
}

/// Hands out listening sockets: one address and a free port per host, or
/// (with a host base) the next address and the host's real port.
struct Binder {
    bind: IpAddr,
    next: Option<u32>,
}

impl Binder {
    async fn bind(&mut self, port: u16) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
        let addr = match &mut self.next {
            None => SocketAddr::new(self.bind, 0),
            Some(n) => {
                let ip = std::net::Ipv4Addr::from(*n);
                *n += 1;
                SocketAddr::new(IpAddr::V4(ip), port)
            }
        };
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        let local = l.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
        Ok((l, local))
    }
}

/// What a connector (and a user) needs to reach the served cloud.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub tenant_id: String,
    pub admin: String,
    pub password: String,
    /// `name=addr:port` entries for the connector's `--resolve`.
    pub resolve: Vec<String>,
    pub root_pem: PathBuf,
    pub ingress: SocketAddr,
    /// External host names of the published apps (send as `Host`): the
    /// echo first, then (on loopback) the [`FAILING_BACKENDS`].
    pub apps: Vec<String>,
    pub backend: SocketAddr,
    /// The control API (loopback) and its bearer token.
    pub control: SocketAddr,
    pub control_token: String,
}

impl Manifest {
    /// The command line that runs a connector against this cloud.
    pub fn connector_command(&self, install_dir: &str) -> String {
        let mut cmd = format!(
            "connector run --tenant {} --install-dir {} --trust-root {} --user {} --password {}",
            self.tenant_id,
            install_dir,
            self.root_pem.display(),
            self.admin,
            self.password
        );
        for r in &self.resolve {
            cmd.push_str(" --resolve ");
            cmd.push_str(r);
        }
        cmd
    }
}

/// Why serving could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Cloud(#[from] CloudError),
    #[error("bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("starting the backends (their runtime, listeners or thread): {0}")]
    Backends(std::io::Error),
}

/// The backends besides the echo that real mode publishes on loopback, as
/// `<name>-<tenant>.msappproxy.net`: one answers uploads with 401 before
/// reading them, one dies 64 KiB into a 128 KiB answer.
pub const FAILING_BACKENDS: [(&str, Behaviour); 2] = [
    ("early", Behaviour::Early { code: 401 }),
    ("broken", Behaviour::CloseMidBody { bytes: 64 << 10, chunked: false }),
];

/// What `start` serves: the manifest to hand out, and the cloud with its
/// control API for whoever runs it in process.
pub struct Served {
    pub manifest: Manifest,
    pub cloud: Rc<Cloud>,
    pub control: Rc<Control>,
}

/// Starts every service on the current `LocalSet`, and the backends on a
/// thread of their own (see `spawn_backends`), and returns the manifest.
pub async fn start(opts: ServeOptions) -> Result<Served, ServeError> {
    let backend_host = opts.backend_host.clone();
    let app = |name: &str, host: &str| App {
        name: name.into(),
        external_host: format!("{name}-{}.msappproxy.net", opts.tenant_id),
        internal_url: format!("http://{host}:{}", opts.backend_port),
        group: crate::directory::DEFAULT_GROUP.into(),
        pre_authentication: Default::default(),
        sso: Default::default(),
    };
    let mut apps = vec![app("echo", &backend_host)];
    // On loopback, two backends that never succeed, for the data path's
    // failure stories (the netns world serves the scenario's backend only).
    let failing = if opts.host_base.is_none() { FAILING_BACKENDS.as_slice() } else { &[] };
    apps.extend(failing.iter().map(|(name, _)| app(name, &format!("{name}.corp.local"))));
    let cloud = build_cloud(&opts, apps.clone())?;
    let root_pem = write_roots(&cloud, &opts.state_dir)?;

    let mut hosts =
        Hosts { binder: Binder { bind: opts.bind, next: opts.host_base.map(u32::from) }, gates: Vec::new() };
    let c = &cloud.config;
    let (l, _) = hosts.gated(&[&c.login_host], 443).await?;
    spawn_service(services::login::serve(cloud.clone(), l));
    let (l, _) = hosts.gated(&[&c.registration_host], 443).await?;
    spawn_service(services::registration::serve(cloud.clone(), l));
    let (l, _) = hosts.gated(&[&c.bootstrap_host], 443).await?;
    spawn_service(services::bootstrap::serve(cloud.clone(), l));
    let (l, _) = hosts.gated(&[&c.renewtrust_host], 443).await?;
    spawn_service(services::renewtrust::serve(cloud.clone(), l));
    // One revocation server answers for every CRL/OCSP host name.
    let names: Vec<&str> = REVOCATION_HOSTS.iter().chain(&TRUST_LIST_HOSTS).copied().collect();
    let (l, revocation) = hosts.gated(&names, 80).await?;
    tokio::task::spawn_local(services::revocation::serve(cloud.clone(), l));
    let mut relays = Vec::new();
    for ep in &c.instances.all_relays() {
        let (l, gate) = hosts.gated(&[&ep.host], 443).await?;
        relays.push(gate);
        spawn_service(services::relay::serve(cloud.clone(), ep.host.clone(), l));
    }
    tokio::task::spawn_local(services::portal::run(cloud.clone()));
    let (l, ingress) = hosts.binder.bind(80).await?;
    tokio::task::spawn_local(services::ingress::serve(cloud.clone(), l));
    let served = ServedLog::default();
    let (l, backend) = hosts.binder.bind(opts.backend_port).await?;
    let mut resolve: Vec<String> =
        hosts.gates.iter().flat_map(|g| g.hosts.iter().map(|h| format!("{h}={}", g.addr))).collect();
    resolve.push(format!("{backend_host}={backend}"));
    let mut backends = vec![(backend_host, Behaviour::Echo, l)];
    for (name, behaviour) in failing {
        let host = format!("{name}.corp.local");
        let (l, addr) = hosts.binder.bind(opts.backend_port).await?;
        resolve.push(format!("{host}={addr}"));
        backends.push((host, behaviour.clone(), l));
    }

    // The control API: loopback only, whatever the services bind to.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let l =
        tokio::net::TcpListener::bind(loopback).await.map_err(|source| ServeError::Bind { addr: loopback, source })?;
    let control_addr = l.local_addr().map_err(|source| ServeError::Bind { addr: loopback, source })?;
    let control = Rc::new(Control {
        token: cloud.random_hex(16),
        cloud: cloud.clone(),
        gates: hosts.gates,
        relays,
        revocation,
        served,
    });
    tokio::task::spawn_local(crate::control::serve(control.clone(), l));
    // Last: nothing after it can fail and leave them serving.
    spawn_backends(backends, control.served.clone())?;

    let manifest = Manifest {
        tenant_id: opts.tenant_id,
        admin: opts.admin,
        password: opts.password,
        resolve,
        root_pem,
        ingress,
        apps: apps.into_iter().map(|a| a.external_host).collect(),
        backend,
        control: control_addr,
        control_token: control.token.clone(),
    };
    Ok(Served { manifest, cloud, control })
}

/// The tenant and its cloud, on the machine's clock and randomness.
fn build_cloud(opts: &ServeOptions, apps: Vec<App>) -> Result<Rc<Cloud>, ServeError> {
    let tenant = Tenant {
        id: opts.tenant_id.clone(),
        domains: vec![opts.domain.clone()],
        region: "weu".into(),
        users: vec![User {
            upn: opts.admin.clone(),
            password: opts.password.clone(),
            role: Role::GlobalAdministrator,
            directories: Vec::new(),
            source: Default::default(),
            mfa: false,
        }],
        app_proxy_enabled: true,
        apps,
        group_of_machine: BTreeMap::new(),
    };
    let mut config = CloudConfig::public(tenant, opts.relays.max(1));
    config.bootstrap_interval_s = opts.bootstrap_interval_s;
    config.upload_bytes_max = opts.upload_bytes_max;
    config.connection_limit = opts.connection_limit;
    Ok(Cloud::new(config, Arc::new(SystemClock), Arc::new(OsEntropy), Rc::new(LogSink))?)
}

/// Writes both root generations to `state_dir/root.pem`: a host that
/// trusts the service's current roots.
fn write_roots(cloud: &Cloud, state_dir: &std::path::Path) -> Result<PathBuf, ServeError> {
    std::fs::create_dir_all(state_dir).map_err(|source| ServeError::Write { path: state_dir.to_path_buf(), source })?;
    let root_pem = state_dir.join("root.pem");
    let roots = format!("{}{}", cloud.root_pem(Generation::Baltimore), cloud.root_pem(Generation::DigicertG2));
    std::fs::write(&root_pem, roots).map_err(|source| ServeError::Write { path: root_pem.clone(), source })?;
    Ok(root_pem)
}

/// The service hosts' listeners, each behind a gate of the control API.
struct Hosts {
    binder: Binder,
    gates: Vec<Rc<Gate>>,
}

impl Hosts {
    /// Listens for the host `names` (service port `port`) behind a new gate.
    async fn gated(&mut self, names: &[&str], port: u16) -> Result<(GatedListener, Rc<Gate>), ServeError> {
        let (l, addr) = self.binder.bind(port).await?;
        let gate = Gate::new(names.iter().map(|n| n.to_string()).collect(), port, addr);
        self.gates.push(gate.clone());
        Ok((GatedListener::new(gate.clone(), l), gate))
    }
}

/// Serves the backends from a thread of their own, with a runtime of its
/// own, for as long as the process lives (also past the `LocalSet` that
/// runs the cloud). In the field they are other machines. On the cloud's
/// thread, a request through the tunnel would cross between that thread
/// and the connector four times instead of two (ingress to connector,
/// connector to backend and back, connector to relay), and each crossing
/// between cores wakes a sleeping core: see BENCHMARKS.md, round five.
fn spawn_backends(
    backends: Vec<(String, Behaviour, tokio::net::TcpListener)>,
    served: ServedLog,
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Backends)?;
    // The listeners move to the new runtime's I/O driver here, so that a
    // failure is the caller's error rather than a backend that never answers.
    let listeners = {
        let _in_backends_runtime = rt.enter();
        backends
            .into_iter()
            .map(|(host, behaviour, l)| {
                let l = tokio::net::TcpListener::from_std(l.into_std()?)?;
                Ok((host, behaviour, l))
            })
            .collect::<Result<Vec<_>, std::io::Error>>()
            .map_err(ServeError::Backends)?
    };
    let run = move || {
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            for (host, behaviour, l) in listeners {
                tokio::task::spawn_local(backend::serve(host, behaviour, served.clone(), l));
            }
            std::future::pending::<()>().await
        });
    };
    std::thread::Builder::new().name("backends".into()).spawn(run).map(drop).map_err(ServeError::Backends)
}

fn spawn_service(fut: impl std::future::Future<Output = Result<(), CloudError>> + 'static) {
    tokio::task::spawn_local(async move {
        if let Err(e) = fut.await {
            tracing::error!("service stopped: {e}");
        }
    });
}
