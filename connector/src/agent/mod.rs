//! The connector's lifecycle: identity (load or register) → periodic
//! bootstrap (configuration pull that doubles as heartbeat) → one tunnel per
//! relay endpoint bootstrap returns → serve. After one successful bootstrap
//! the agent keeps serving from the cached configuration when later
//! bootstraps fail, as the real connector does.
//!
//! One file a part: [`names`] (the services' names per cloud), [`register`]
//! (identity: registration, expiry, renewal), [`bootstrap`] (the connector
//! service's loop), [`tunnels`] (one tunnel per relay endpoint) and
//! [`updater`] (the updater service); this file holds the lifecycle.

mod bootstrap;
mod names;
mod register;
mod tunnels;
mod updater;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::allowlist::Environment;
use crate::code::{self, EventId};
use crate::diag::Diagnostic;
use crate::env::Env;
use crate::event::AgentEvent;
use crate::host::{preflight, LiveHost};
use crate::https::ServiceCall;
use crate::identity::{self, Identity};
use crate::install::{InstallError, Installation};
use crate::net::Account;
use crate::pki::{RevocationPolicy, ServiceTls, Trust};
use crate::proxy::ProxyNet;
use crate::service::ServiceSwitch;
use crate::tls::TlsContext;

pub use names::ServiceNames;

/// The version this build of the connector is (the newest release).
pub const DEFAULT_VERSION: &str = "1.5.4522.0";

/// Requests served at once unless told otherwise: the real product's
/// connection limit.
pub const MAX_INFLIGHT: usize = 200;

/// The fraction of its lifetime after which the client certificate is
/// renewed by default ([`AgentConfig::renew_after_fraction`]).
pub const RENEW_AFTER_FRACTION: f64 = 0.5;

/// Where registration reads the certificate trust list (port 80), in the
/// public cloud; see [`ServiceNames::trust_list`].
pub const TRUST_LIST_HOST: &str = "ctldl.windowsupdate.com";
pub const TRUST_LIST_PATH: &str = "/msdownload/update/v3/static/trustedr/en/authrootstl.cab";

/// An administrator's sign-in, used once to register.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The directory to sign in to (the account's home directory when it
    /// belongs to several); default: the tenant being registered.
    pub directory: Option<String>,
    /// The administrator signs in interactively (the installer's sign-in
    /// window), so a multi-factor prompt can be answered; otherwise the
    /// sign-in is a user name and password only.
    pub interactive: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Everything that configures an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub tenant_id: String,
    pub machine_name: String,
    /// Four-part product version, e.g. `1.5.3437.0`.
    pub version: String,
    pub install_dir: PathBuf,
    pub credentials: Option<Credentials>,
    /// The host's trusted root store.
    pub trusted_roots: Vec<CertificateDer<'static>>,
    /// The roots the service uses (shipped with the product); service
    /// chains must end in one of these that the host also trusts. Empty:
    /// accept any root the host trusts.
    pub service_roots: Vec<CertificateDer<'static>>,
    /// What to do when a revocation status cannot be learned.
    pub revocation: RevocationPolicy,
    /// Renew the client certificate once this fraction of its lifetime has
    /// passed (checked every trust-renewal interval).
    pub renew_after_fraction: f64,
    /// Overrides the bootstrap interval the service hands out.
    pub bootstrap_interval: Option<Duration>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backend_timeout: Duration,
    pub registration_attempts: u32,
    pub max_inflight: usize,
    pub service_port: u16,
    /// An explicit outbound proxy (`host`, `port`), used with CONNECT for
    /// every connection; no proxy authentication.
    pub proxy: Option<(String, u16)>,
    /// The server: the installer's preflight before registration, and the
    /// checks of the running services (it may change while they run).
    pub host: Option<LiveHost>,
    /// The cloud the installer was pointed at (`ENVIRONMENTNAME`).
    pub cloud: Environment,
    /// The updater service's start/stop control (OPS-SERVICES).
    pub updater_service: ServiceSwitch,
    /// The Windows account of the administrator who runs setup:
    /// registration's connections go out as it, the services' as Network
    /// Service (NET-USER). `None`: as the process's own account.
    pub installer_account: Option<String>,
}

impl AgentConfig {
    /// Defaults from the real product: 85 s backend timeout, 200 requests
    /// in flight, 3 registration attempts, 20 s connect timeout (about what
    /// Windows' TCP SYN retries take).
    pub fn new(tenant_id: &str, machine_name: &str, install_dir: PathBuf) -> Self {
        AgentConfig {
            tenant_id: tenant_id.into(),
            machine_name: machine_name.into(),
            version: DEFAULT_VERSION.into(),
            install_dir,
            credentials: None,
            trusted_roots: Vec::new(),
            service_roots: Vec::new(),
            revocation: RevocationPolicy::HardFail,
            renew_after_fraction: RENEW_AFTER_FRACTION,
            bootstrap_interval: None,
            connect_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            backend_timeout: Duration::from_secs(85),
            registration_attempts: 3,
            max_inflight: MAX_INFLIGHT,
            service_port: 443,
            proxy: None,
            host: None,
            cloud: Environment::Public,
            updater_service: ServiceSwitch::always_running(),
            installer_account: None,
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("registration failed: {0}")]
    Registration(Diagnostic),
    #[error("not registered and no credentials given: run with an administrator's sign-in to register")]
    NoCredentials,
    #[error("identity: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{0}")]
    Trust(Diagnostic),
    #[error("client certificate expired: {0}")]
    CertificateExpired(Diagnostic),
    #[error("preflight failed: {}", .0.iter().map(|d| d.code.as_str()).collect::<Vec<_>>().join(", "))]
    Preflight(Vec<Diagnostic>),
    #[error("{0}")]
    Install(Diagnostic),
    /// The server keeps the connector from working (TLS 1.2 disabled).
    #[error("{0}")]
    Host(Diagnostic),
    /// The service does not know the connector any more (removed or
    /// deleted): retrying cannot help, only a new registration.
    #[error("no longer registered: {0}")]
    NotRegistered(Diagnostic),
}

/// The connector agent.
pub struct Agent {
    env: Env,
    /// `env` as setup's account sees the network: registration runs there.
    installer: Env,
    config: AgentConfig,
    names: ServiceNames,
    tls: TlsContext,
    /// The version running now (the updater changes it).
    version: RefCell<String>,
    /// Releases the updater refused to install or rolled back (reported
    /// once each, not tried again).
    refused: RefCell<std::collections::BTreeSet<String>>,
    /// Findings about a release already reported (`code version`): a
    /// release that needs a newer .NET, or whose download failed, is tried
    /// again at later checks but reported once.
    reported: RefCell<std::collections::BTreeSet<String>>,
    /// The host findings reported and still true (each said once).
    host_notes: RefCell<std::collections::BTreeSet<String>>,
    installation: Installation,
}

impl Agent {
    pub fn new(mut env: Env, config: AgentConfig) -> Self {
        if let Some((host, port)) = &config.proxy {
            env.net = Rc::new(ProxyNet { inner: env.net.clone(), host: host.clone(), port: *port });
        }
        let as_installer =
            config.installer_account.as_ref().and_then(|u| env.net.as_account(&Account::User(u.clone())));
        let installer = match as_installer {
            Some(net) => Env { net, ..env.clone() },
            None => env.clone(),
        };
        let tls = TlsContext::new(env.entropy.clone(), env.clock.clone());
        let names = ServiceNames::in_cloud(config.cloud, &config.tenant_id);
        let version = RefCell::new(config.version.clone());
        let installation = Installation::at(&config.install_dir);
        Agent {
            env,
            installer,
            config,
            names,
            tls,
            version,
            refused: RefCell::default(),
            reported: RefCell::default(),
            host_notes: RefCell::default(),
            installation,
        }
    }

    fn trust(&self) -> Result<Rc<Trust>, AgentError> {
        Trust::new(
            self.config.trusted_roots.clone(),
            self.config.service_roots.clone(),
            self.config.revocation,
            self.tls.provider.clone(),
        )
        .map(Rc::new)
        .map_err(|e| {
            AgentError::Trust(Diagnostic::new(
                code::TLS_ROOTS_NO_COMMON_ROOT,
                Some(EventId::Certificate),
                e.to_string(),
                "install the service's root CAs in the host's trusted root store",
            ))
        })
    }

    /// A TLS client for the service, with the identity's certificate when given.
    fn service_tls(&self, trust: &Rc<Trust>, identity: Option<&Identity>) -> Result<ServiceTls, AgentError> {
        let client_auth = identity.map(|id| id.client_auth().map_err(AgentError::Tls)).transpose()?;
        let config =
            self.tls.client_config(trust.verifier(), client_auth).map_err(|e| AgentError::Tls(e.to_string()))?;
        Ok(ServiceTls { config: Arc::new(config), trust: trust.clone() })
    }

    fn call<'a>(&'a self, host: &'a str, tls: &'a ServiceTls) -> ServiceCall<'a> {
        self.call_from(&self.env, host, tls)
    }

    /// A call from `env` (the services' or setup's).
    fn call_from<'a>(&'a self, env: &'a Env, host: &'a str, tls: &'a ServiceTls) -> ServiceCall<'a> {
        ServiceCall { env, tls, host, port: self.config.service_port, timeout: self.config.request_timeout }
    }

    /// Runs until registration fails or the task is dropped.
    pub async fn run(self) -> Result<(), AgentError> {
        let result = self.run_inner().await;
        if let Err(e) = &result {
            if let AgentError::Registration(d)
            | AgentError::Trust(d)
            | AgentError::CertificateExpired(d)
            | AgentError::NotRegistered(d)
            | AgentError::Install(d)
            | AgentError::Host(d) = e
            {
                self.env.emit(AgentEvent::Diagnostic(d.clone()));
            }
            if let AgentError::Preflight(ds) = e {
                for d in ds {
                    self.env.emit(AgentEvent::Diagnostic(d.clone()));
                }
            }
            self.env.emit(AgentEvent::Stopped { reason: e.to_string() });
        }
        result
    }

    async fn run_inner(&self) -> Result<(), AgentError> {
        self.env.evidence.set_references(self.names.cloud, self.names.reference_hosts(self.config.service_port));
        self.ensure_installed()?;
        self.check_host()?;
        let trust = self.trust()?;
        let identity = match Identity::load(&self.config.install_dir)? {
            Some(id) => {
                self.env.emit(AgentEvent::IdentityLoaded { connector_id: id.connector_id.clone() });
                id
            }
            None => self.register_with_retries(&trust).await?,
        };
        self.check_not_expired(&identity)?;
        let mtls = self.service_tls(&trust, Some(&identity))?;
        self.serve(identity, trust, mtls).await
    }

    /// The installer's part: an empty folder gets the configured version
    /// (after the preflight checks, which come before anything is
    /// changed); an installed one runs the version on disk, which the
    /// updater may have changed. Folders left by an earlier installation
    /// stop the install (VER-UPGRADE).
    fn ensure_installed(&self) -> Result<(), AgentError> {
        let install_err = |e: InstallError| AgentError::Install(e.diagnostic());
        let version = match self.installation.installed_version().map_err(install_err)? {
            Some(v) => v,
            None => {
                if let Some(host) = &self.config.host {
                    let failed: Vec<Diagnostic> =
                        preflight(&host.now(), &self.config.version).into_iter().filter_map(|c| c.diagnostic).collect();
                    if !failed.is_empty() {
                        return Err(AgentError::Preflight(failed));
                    }
                }
                self.installation.install(&self.config.version).map_err(install_err)?;
                self.env.emit(AgentEvent::Installed { version: self.config.version.clone() });
                self.config.version.clone()
            }
        };
        *self.version.borrow_mut() = version;
        Ok(())
    }

    /// The server as the service finds it when it starts: what stops it
    /// (TLS 1.2 disabled since the last restart) ends the run; other
    /// findings are reported.
    fn check_host(&self) -> Result<(), AgentError> {
        let Some(host) = &self.config.host else { return Ok(()) };
        let found = crate::host::in_service(&host.now());
        if let Some(fatal) = found.fatal {
            return Err(AgentError::Host(fatal));
        }
        self.report_host_notes(found.notes);
        Ok(())
    }

    /// Reports each host finding once while it holds; one that went away
    /// is reported again if it comes back.
    fn report_host_notes(&self, notes: Vec<Diagnostic>) {
        let mut said = self.host_notes.borrow_mut();
        said.retain(|code| notes.iter().any(|d| &d.code == code));
        for d in notes {
            if said.insert(d.code.clone()) {
                self.env.emit(AgentEvent::Diagnostic(d));
            }
        }
    }
}
