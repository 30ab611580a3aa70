//! The connector's lifecycle: identity (load or register) → periodic
//! bootstrap (configuration pull that doubles as heartbeat) → one tunnel per
//! relay endpoint bootstrap returns → serve. After one successful bootstrap
//! the agent keeps serving from the cached configuration when later
//! bootstraps fail, as the real connector does.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::task::JoinHandle;

use crate::allowlist::{Environment, Group};
use crate::api::{
    BootstrapRequest, BootstrapResponse, LoginRequest, LoginResponse, PackageRequest, PackageResponse, RegisterRequest,
    RegisterResponse, RelayEndpoint, Release, RenewRequest, RenewResponse, UpdatePhase, UpdateRequest, UpdateResponse,
};
use crate::backoff::Backoff;
use crate::diag::{self, Diagnostic};
use crate::env::Env;
use crate::event::AgentEvent;
use crate::health::Health;
use crate::host::{preflight, LiveHost};
use crate::http::CallError;
use crate::http::HttpUrl;
use crate::https::ServiceCall;
use crate::identity::{self, Identity};
use crate::net::Account;
use crate::package::PackageError;
use crate::pki::cert::sha256_hex;
use crate::pki::{RevocationPolicy, ServiceTls, Trust};
use crate::proxy::ProxyNet;

/// The version this build of the connector is (the newest release).
pub const DEFAULT_VERSION: &str = "1.5.4522.0";

/// Where registration reads the certificate trust list (port 80), in the
/// public cloud; see [`ServiceNames::trust_list`].
pub const TRUST_LIST_HOST: &str = "ctldl.windowsupdate.com";
pub const TRUST_LIST_PATH: &str = "/msdownload/update/v3/static/trustedr/en/authrootstl.cab";

use crate::install::{InstallError, Installation};
use crate::service::{ServiceState, ServiceSwitch};
use crate::tls::TlsContext;
use crate::tunnel::{self, SeenIds, Shared, TunnelConfig};

/// The service's host names for a tenant in one cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    pub cloud: Environment,
    pub login: String,
    pub registration: String,
    pub bootstrap: String,
    pub renewtrust: String,
    /// The certificate trust list's host (port 80).
    pub trust_list: String,
    /// A CRL host of the cloud's allow-list (port 80), probed as a reference.
    pub crl_reference: String,
}

impl ServiceNames {
    /// Hosts under different allow-list entries, probed to tell "port
    /// blocked" from "name blocked" (see [`crate::reach`]), and the other
    /// cloud's sign-in, CRL and trust-list hosts, to tell a network that
    /// lets the other cloud out (REG-GOV) from a closed port.
    pub fn reference_hosts(&self, service_port: u16) -> Vec<(String, u16)> {
        let other = ServiceNames::in_cloud(self.cloud.other(), "tenant");
        vec![
            (self.bootstrap.clone(), service_port),
            (self.login.clone(), service_port),
            (self.registration.clone(), service_port),
            (self.crl_reference.clone(), 80),
            (self.trust_list.clone(), 80),
            (other.login, service_port),
            (other.crl_reference, 80),
            (other.trust_list, 80),
        ]
    }

    pub fn public(tenant_id: &str) -> Self {
        Self::in_cloud(Environment::Public, tenant_id)
    }

    /// `tenant_id`'s names in `cloud` (REG-GOV: the government cloud's
    /// names end in `.us`).
    pub fn in_cloud(cloud: Environment, tenant_id: &str) -> Self {
        let (login, apps, trust_list, crl) = match cloud {
            Environment::Public => {
                ("login.microsoftonline.com", "msappproxy.net", TRUST_LIST_HOST, "crl.microsoft.com")
            }
            Environment::UsGov => {
                ("login.microsoftonline.us", "msappproxy.us", "ctldl.windowsupdate.us", "crl.microsoft.us")
            }
        };
        ServiceNames {
            cloud,
            login: login.into(),
            registration: format!("{tenant_id}.registration.{apps}"),
            bootstrap: format!("{tenant_id}.bootstrap.{apps}"),
            renewtrust: format!("{tenant_id}.renewtrust.{apps}"),
            trust_list: trust_list.into(),
            crl_reference: crl.into(),
        }
    }
}

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
            renew_after_fraction: 0.5,
            bootstrap_interval: None,
            connect_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(30),
            backend_timeout: Duration::from_secs(85),
            registration_attempts: 3,
            max_inflight: 200,
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

/// Why a renewal failed: the call (with the finding that explains it, as
/// on every other path), or something on this host.
enum RenewFailure {
    Service(Diagnostic),
    Local(String),
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
                "TLS-ROOTS",
                "no-common-root",
                Some(12019),
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

    /// The updater's look at the server before each check: whether
    /// Password Protection Proxy's updater has replaced ours (HOST-PPP),
    /// which keeps the connector from being updated.
    fn updater_blocked_by_host(&self) -> bool {
        let Some(host) = &self.config.host else { return false };
        let found = crate::host::in_service(&host.now());
        let blocked = found.notes.iter().any(|d| d.requirement == "HOST-PPP");
        self.report_host_notes(found.notes);
        blocked
    }

    /// Downloads `release`'s package and checks it against the feed's
    /// announcement before anything changes ([`crate::package::verify`]).
    async fn fetch_package(&self, connector_id: &str, tls: &ServiceTls, release: &Release) -> Result<(), Diagnostic> {
        let v = &release.version;
        let finding = |code: &str, what: String, remedy: &str| {
            let message = format!("the updater did not install {v}: {what}; nothing was changed");
            Diagnostic::new("VER-UPDATER", code, None, message, remedy)
        };
        const RETRY: &str = "nothing to do if it passes: the updater tries again at its next check; if it lasts, look for a proxy or inspection box altering downloads from the service";
        let ask = PackageRequest { connector_id: connector_id.to_string(), version: v.clone() };
        let resp: PackageResponse = self
            .call(&self.names.bootstrap, tls)
            .post_json("/package", &ask, None)
            .await
            .map_err(|e| finding("download-failed", format!("its download failed ({e})"), RETRY))?;
        let bytes = crate::package::unhex(&resp.package_hex)
            .ok_or_else(|| finding("download-failed", "the download is not a package".into(), RETRY))?;
        crate::package::verify(release, &bytes, &crate::package::PUBLISHER_KEY).map_err(|e| match e {
            PackageError::Digest { .. } => finding("package-corrupt", format!("the package arrived damaged: {e}"), RETRY),
            PackageError::Unannounced | PackageError::Signature => finding(
                "package-untrusted",
                format!("the package is not the publisher's: {e}"),
                "do not install it by hand; report it: the release feed or something between it and this server serves packages the publisher did not sign",
            ),
        })
    }

    /// Stops the agent when its client certificate has expired: the service
    /// will not take it, and only a new registration helps.
    fn check_not_expired(&self, identity: &Identity) -> Result<(), AgentError> {
        let cert = identity.certificate().map_err(AgentError::Tls)?;
        let now = self.env.clock.now();
        if now >= cert.not_after {
            let ago = crate::diag::human_duration(now.duration_since(cert.not_after).unwrap_or_default());
            return Err(AgentError::CertificateExpired(Diagnostic::new(
                "TLS-CLIENT",
                "expired",
                Some(1000),
                format!(
                    "re-registration failed: trust certificate expired on {} ({ago} ago): it was not renewed in time (the connector was offline past its lifetime, or its renewals failed) and the connector stops",
                    httpdate::fmt_http_date(cert.not_after)
                ),
                "register the connector again (run the registration with a Global Administrator's sign-in)",
            )));
        }
        Ok(())
    }

    async fn register_with_retries(&self, trust: &Rc<Trust>) -> Result<Identity, AgentError> {
        let creds = self.config.credentials.clone().ok_or(AgentError::NoCredentials)?;
        let tls = self.service_tls(trust, None)?;
        let backoff =
            Backoff { initial: Duration::from_secs(3), max: Duration::from_secs(60), multiplier: 2.0, jitter: 0.2 };
        let mut attempt = 0;
        loop {
            self.env.emit(AgentEvent::RegistrationStarted { tenant: self.config.tenant_id.clone() });
            match self.register_once(&creds, &tls).await {
                Ok(id) => return Ok(id),
                Err(RegisterFailure::Final(d)) => return Err(AgentError::Registration(d)),
                Err(RegisterFailure::Identity(e)) => return Err(e.into()),
                Err(RegisterFailure::Retry(d)) => {
                    attempt += 1;
                    if attempt >= self.config.registration_attempts {
                        return Err(AgentError::Registration(d));
                    }
                    crate::time::sleep(backoff.delay(attempt - 1, self.env.entropy.unit_f64())).await;
                }
            }
        }
    }

    /// Registration reads the certificate trust list over port 80 (NET-REG;
    /// Windows' root update). Unreachable: registration fails. A root it
    /// lists that the host lacks is reported ahead of any root change.
    async fn check_trust_list(&self, trust: &Trust) -> Result<(), Diagnostic> {
        let url = HttpUrl { host: self.names.trust_list.clone(), port: 80, path: TRUST_LIST_PATH.into() };
        let resp = crate::http::plain_request(&self.installer, &url, None, self.config.request_timeout, 64 * 1024)
            .await
            .map_err(|e| e.diagnostic())?;
        if resp.status != 200 {
            return Err(Diagnostic::new(
                "NET-REG",
                "trust-list",
                Some(12020),
                format!("the certificate trust list at {url} answered HTTP {}", resp.status),
                format!("allow {} on TCP 80 without a proxy answering in its place", self.names.trust_list),
            ));
        }
        let have: Vec<String> = trust.host_roots.iter().map(|r| sha256_hex(r.as_ref())).collect();
        for line in String::from_utf8_lossy(&resp.body).lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !have.iter().any(|h| h == line) {
                self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(
                    "TLS-ROOTS",
                    "missing-root",
                    None,
                    format!("the certificate trust list names a root the service uses that this host does not trust (SHA-256 {line})"),
                    "install the service's current roots before the service moves to them",
                )));
            }
        }
        Ok(())
    }

    async fn register_once(&self, creds: &Credentials, tls: &ServiceTls) -> Result<Identity, RegisterFailure> {
        self.check_trust_list(&tls.trust).await.map_err(RegisterFailure::Retry)?;
        let login: LoginResponse = self
            .call_from(&self.installer, &self.names.login, tls)
            .post_json(
                &format!("/{}/oauth2/token", creds.directory.as_deref().unwrap_or(&self.config.tenant_id)),
                &LoginRequest {
                    username: creds.username.clone(),
                    password: creds.password.clone(),
                    mfa: creds.interactive,
                },
                None,
            )
            .await
            .map_err(|e| self.in_this_cloud(RegisterFailure::from_call(e)))?;
        let key = identity::generate_key(self.env.entropy.as_ref()).map_err(RegisterFailure::Identity)?;
        let csr_pem = identity::csr_pem(&key, &self.config.machine_name).map_err(RegisterFailure::Identity)?;
        let version = self.version.borrow().clone();
        let reg: RegisterResponse = self
            .call_from(&self.installer, &self.names.registration, tls)
            .post_json(
                "/register",
                &RegisterRequest { csr_pem, machine_name: self.config.machine_name.clone(), version },
                Some(&login.access_token),
            )
            .await
            .map_err(RegisterFailure::from_call)?;
        let identity = Identity::new(reg.connector_id, login.tenant_id, &key, reg.certificate_pem);
        identity.client_auth().map_err(|e| {
            RegisterFailure::Final(Diagnostic::new(
                "REG",
                "bad-certificate",
                Some(12019),
                format!("the registration service returned an unusable certificate: {e}"),
                "retry registration; report the service response if it persists",
            ))
        })?;
        identity.save(&self.config.install_dir).map_err(RegisterFailure::Identity)?;
        // The serial as the certificate carries it (hex), as renewal reports it.
        let serial = identity.certificate().map(|c| c.serial).unwrap_or_default();
        self.env.emit(AgentEvent::Registered { connector_id: identity.connector_id.clone(), cert_serial: serial });
        Ok(identity)
    }

    /// A sign-in that does not know the tenant (REG-GOV) means the tenant
    /// lives in the other cloud. The service's wording suggests the
    /// government install parameter; installed with it already, the advice
    /// is the reverse.
    fn in_this_cloud(&self, failure: RegisterFailure) -> RegisterFailure {
        match failure {
            RegisterFailure::Final(d) if d.requirement == "REG-GOV" && self.names.cloud == Environment::UsGov => {
                RegisterFailure::Final(Diagnostic::new(
                    "REG-GOV",
                    "tenant-not-in-gov-cloud",
                    d.event_id,
                    format!("{} (installed with ENVIRONMENTNAME=\"{}\")", d.message, Environment::GOV_ENVIRONMENT_NAME),
                    "the tenant is not in the US Government cloud: install without ENVIRONMENTNAME, or check the tenant ID",
                ))
            }
            other => other,
        }
    }

    /// The connector service and the updater service, side by side; returns
    /// only when the client certificate has expired.
    async fn serve(&self, identity: Identity, trust: Rc<Trust>, mtls: ServiceTls) -> Result<(), AgentError> {
        let shared = Rc::new(Shared {
            incarnation: self.env.entropy.next_u64(),
            seen: RefCell::new(SeenIds::new(65_536)),
            slots: Rc::default(),
            tls: RefCell::new(mtls),
            up: RefCell::new(0),
            backends: Rc::default(),
            network_back: tokio::sync::Notify::new(),
            moved: RefCell::default(),
            moved_pending: std::cell::Cell::new(false),
            moved_wake: tokio::sync::Notify::new(),
            draining: std::cell::Cell::new(false),
            drain_wake: tokio::sync::Notify::new(),
        });
        let tunnels = RefCell::new(BTreeMap::new());
        let updates = Updates::default();
        if let Ok(Some(previous)) = self.installation.previous_version() {
            // Restarted in the middle of a switch: the version on disk has
            // yet to prove itself.
            *updates.pending.borrow_mut() = Some(previous);
        }
        let connector_id = identity.connector_id.clone();
        tokio::select! {
            biased;
            result = self.connector_service(identity, &trust, &shared, &tunnels, &updates) => result,
            () = self.updater_service(&connector_id, &shared, &tunnels, &updates) => Ok(()),
        }
    }

    /// Bootstrap loop, certificate renewal and tunnel supervision.
    async fn connector_service(
        &self,
        mut identity: Identity,
        trust: &Rc<Trust>,
        shared: &Rc<Shared>,
        tunnels: &RefCell<BTreeMap<RelayEndpoint, JoinHandle<()>>>,
        updates: &Updates,
    ) -> Result<(), AgentError> {
        self.env.emit(AgentEvent::ServiceState { service: "connector".into(), state: ServiceState::Running });
        let mut health = Health::default();
        let mut failures: u32 = 0;
        let mut next_renewal_check = crate::time::Instant::now();
        loop {
            self.check_not_expired(&identity)?;
            let request = BootstrapRequest {
                connector_id: identity.connector_id.clone(),
                version: self.version.borrow().clone(),
                machine_name: self.config.machine_name.clone(),
            };
            let tls = shared.tls.borrow().clone();
            let result: Result<BootstrapResponse, CallError> =
                self.call(&self.names.bootstrap, &tls).post_json("/bootstrap", &request, None).await;
            let delay = match result {
                Ok(cfg) => {
                    failures = 0;
                    shared.moved_pending.set(false);
                    self.confirm_switch(updates);
                    let interval =
                        self.config.bootstrap_interval.unwrap_or(Duration::from_secs(cfg.bootstrap_interval_s.max(1)));
                    self.env.emit(AgentEvent::BootstrapOk {
                        endpoints: cfg.relay_endpoints.len(),
                        interval_s: interval.as_secs(),
                    });
                    self.env
                        .evidence
                        .set_relays(cfg.relay_endpoints.iter().map(|e| (e.host.clone(), e.port)).collect());
                    if self.reconcile(&mut tunnels.borrow_mut(), &cfg, &identity, shared) {
                        health.tunnels_restarted();
                    }
                    let up = *shared.up.borrow();
                    for d in health.after_bootstrap(
                        &self.names.bootstrap,
                        &cfg,
                        up,
                        self.env.evidence.group_rtt(Group::Service443, crate::health::RTT_SAMPLES_MIN),
                    ) {
                        self.env.emit(AgentEvent::Diagnostic(d));
                    }
                    updates.check_every.set(Some(Duration::from_secs(cfg.update_check_interval_min.max(1) * 60)));
                    updates.configured.notify_one();
                    if crate::time::Instant::now() >= next_renewal_check {
                        next_renewal_check = crate::time::Instant::now()
                            + Duration::from_secs(cfg.trust_renewal_interval_min.max(1) * 60);
                        if let Some(renewed) = self.renew_if_due(&identity, &tls).await {
                            *shared.tls.borrow_mut() = self.service_tls(trust, Some(&renewed))?;
                            identity = renewed;
                        }
                    }
                    interval
                }
                Err(e) => {
                    let d = e.diagnostic();
                    self.env.emit(AgentEvent::BootstrapFailed { code: d.code.clone() });
                    if e.is_unknown_connector() && updates.pending.borrow().is_none() {
                        let message = format!(
                            "connector {} is no longer registered with the service, and stops: {}",
                            identity.connector_id, d.message
                        );
                        return Err(AgentError::NotRegistered(Diagnostic { message, ..d }));
                    }
                    if self.roll_back_if_refused(&e, updates) {
                        // Bootstrap again at once, as the previous version.
                        failures = 0;
                        Duration::from_secs(1)
                    } else {
                        if failures == 0 {
                            self.env.emit(AgentEvent::Diagnostic(d));
                        }
                        let delay = Backoff::BOOTSTRAP.delay(failures, self.env.entropy.unit_f64());
                        failures = failures.saturating_add(1);
                        delay
                    }
                }
            };
            tokio::select! {
                biased;
                // A switch: bootstrap at once, as the new version.
                () = updates.switched.notified() => {}
                // After failures, a tunnel that came back says the network is.
                () = shared.network_back.notified(), if failures > 0 => {}
                // A relay no longer serves this connector: learn where to go
                // now (not while bootstrap fails: its backoff keeps the pace).
                () = shared.moved_wake.notified(), if failures == 0 => {}
                // Or already said so while this loop was busy.
                () = std::future::ready(()), if failures == 0 && shared.moved_pending.get() => {}
                () = crate::time::sleep(delay) => {}
            }
        }
    }

    /// The first bootstrap of a new version keeps it.
    fn confirm_switch(&self, updates: &Updates) {
        if updates.pending.borrow_mut().take().is_some() {
            if let Err(e) = self.installation.confirm() {
                self.env.emit(AgentEvent::Diagnostic(e.diagnostic()));
            }
            self.env.emit(AgentEvent::Upgraded { version: self.version.borrow().clone() });
            updates.settled.notify_one();
        }
    }

    /// A new version the service refuses is rolled back (VER-UPDATER);
    /// network trouble is not the version's fault and changes nothing.
    /// Says whether it rolled back.
    fn roll_back_if_refused(&self, error: &CallError, updates: &Updates) -> bool {
        if !matches!(error, CallError::Status { .. }) || updates.pending.borrow().is_none() {
            return false;
        }
        updates.pending.borrow_mut().take();
        let failed = self.version.borrow().clone();
        match self.installation.rollback() {
            Ok(previous) => {
                self.refused.borrow_mut().insert(failed.clone());
                *self.version.borrow_mut() = previous.clone();
                self.env.emit(AgentEvent::RolledBack { from: failed.clone(), to: previous.clone() });
                self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(
                    "VER-UPDATER",
                    "rolled-back",
                    None,
                    format!(
                        "version {failed} failed after the update ({}); the updater put {previous} back and will not install {failed} again",
                        error.diagnostic().message
                    ),
                    "nothing to do: the connector serves on the previous version; a later release is installed when it is published",
                )));
            }
            Err(e) => self.env.emit(AgentEvent::Diagnostic(e.diagnostic())),
        }
        updates.settled.notify_one();
        true
    }

    /// The updater service (VER-UPDATER, OPS-SERVICES): every check
    /// interval (the service's, from bootstrap) asks the release feed for a
    /// newer version, unless the service is Stopped.
    async fn updater_service(
        &self,
        connector_id: &str,
        shared: &Rc<Shared>,
        tunnels: &RefCell<BTreeMap<RelayEndpoint, JoinHandle<()>>>,
        updates: &Updates,
    ) {
        let mut switch = self.config.updater_service.clone();
        let mut was = None;
        loop {
            let state = switch.state();
            if was != Some(state) {
                self.env.emit(AgentEvent::ServiceState { service: "updater".into(), state });
                if state == ServiceState::Stopped {
                    self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(
                        "OPS-SERVICES",
                        "updater-stopped",
                        None,
                        "the connector updater service is Stopped: this connector gets no new versions",
                        "start the \"Microsoft Entra private network connector updater\" service; both services must be Running",
                    )));
                }
                was = Some(state);
            }
            if state == ServiceState::Stopped {
                switch.running().await;
                continue;
            }
            let Some(every) = updates.check_every.get() else {
                // No configuration yet: the first successful bootstrap wakes us.
                updates.configured.notified().await;
                continue;
            };
            let tls = shared.tls.borrow().clone();
            if !self.updater_blocked_by_host() && self.update(connector_id, &tls, tunnels, shared, updates).await {
                continue;
            }
            crate::time::sleep(every).await;
        }
    }

    /// One check of the release feed: asks for a newer version and the
    /// group's upgrade slot (one connector of a group at a time); refuses a
    /// release the host's .NET cannot run before changing anything
    /// (VER-NET471); otherwise drains in-flight requests (up to the backend
    /// timeout), stops the tunnels and switches the program folder, then
    /// waits until the new version proved itself or was rolled back before
    /// giving the slot back. A request may fail to its user during the
    /// switch, but none is served twice. Returns whether it switched.
    async fn update(
        &self,
        connector_id: &str,
        tls: &ServiceTls,
        tunnels: &RefCell<BTreeMap<RelayEndpoint, JoinHandle<()>>>,
        shared: &Rc<Shared>,
        updates: &Updates,
    ) -> bool {
        let current = self.version.borrow().clone();
        let ask = |phase| UpdateRequest { connector_id: connector_id.to_string(), version: current.clone(), phase };
        let resp: UpdateResponse =
            match self.call(&self.names.bootstrap, tls).post_json("/update", &ask(UpdatePhase::Check), None).await {
                Ok(r) => r,
                Err(_) => return false,
            };
        let Some(release) = resp.release else { return false };
        let done = async {
            let _: Result<UpdateResponse, _> =
                self.call(&self.names.bootstrap, tls).post_json("/update", &ask(UpdatePhase::Done), None).await;
        };
        let dotnet = self.config.host.as_ref().map(|h| h.now().dotnet_release);
        let too_old_dotnet = dotnet.filter(|have| *have < release.min_dotnet_release);
        if too_old_dotnet.is_some() || self.refused.borrow().contains(&release.version) {
            if let Some(have) = too_old_dotnet {
                if self.reported.borrow_mut().insert(format!("VER-NET471 {}", release.version)) {
                    self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(
                        "VER-NET471",
                        "upgrade-refused",
                        None,
                        format!(
                            "the upgrade to {} needs .NET Framework release {} or later; this server has {}: nothing was changed, {current} keeps running",
                            release.version, release.min_dotnet_release, have
                        ),
                        "install .NET Framework 4.7.1 or later; the updater will then upgrade the connector",
                    )));
                }
            }
            if resp.granted {
                done.await;
            }
            return false;
        }
        if !resp.granted {
            self.env.emit(AgentEvent::UpgradeDeferred { to: release.version });
            return false;
        }
        if let Err(d) = self.fetch_package(connector_id, tls, &release).await {
            if self.reported.borrow_mut().insert(format!("{} {}", d.code, release.version)) {
                self.env.emit(AgentEvent::Diagnostic(d));
            }
            done.await;
            return false;
        }
        self.env.emit(AgentEvent::UpgradeStarted { from: current.clone(), to: release.version.clone() });
        // Drain: the relays stop sending (GoAway); what is in flight finishes.
        shared.drain(true);
        let deadline = crate::time::Instant::now() + self.config.backend_timeout;
        // At least one pause, so that the tunnels get their GoAway out.
        loop {
            crate::time::sleep(Duration::from_millis(100)).await;
            if shared.slots.used() == 0 || crate::time::Instant::now() >= deadline {
                break;
            }
        }
        for (_, handle) in std::mem::take(&mut *tunnels.borrow_mut()) {
            handle.abort();
        }
        shared.drain(false);
        if let Err(e) = self.installation.switch(&release.version) {
            // The old folder is still in place (or put back): keep serving.
            self.env.emit(AgentEvent::Diagnostic(e.diagnostic()));
            let _ = self.installation.rollback();
            self.refused.borrow_mut().insert(release.version);
            done.await;
            updates.switched.notify_one();
            return false;
        }
        *self.version.borrow_mut() = release.version.clone();
        *updates.pending.borrow_mut() = Some(current.clone());
        self.env.emit(AgentEvent::Switched { from: current.clone(), to: release.version });
        updates.switched.notify_one();
        while updates.pending.borrow().is_some() {
            updates.settled.notified().await;
        }
        done.await;
        true
    }

    /// Renews the client certificate over mTLS once
    /// [`AgentConfig::renew_after_fraction`] of its lifetime has passed.
    /// A failure is reported and retried at the next check: the cause
    /// (the network, TLS or service finding, as on every other path) and
    /// what is at stake (TLS-CLIENT.renewal-failed, with the expiry).
    async fn renew_if_due(&self, identity: &Identity, tls: &ServiceTls) -> Option<Identity> {
        let cert = identity.certificate().ok()?;
        let now = self.env.clock.now();
        let lifetime = cert.not_after.duration_since(cert.not_before).ok()?;
        let age = now.duration_since(cert.not_before).unwrap_or_default();
        if age.as_secs_f64() < lifetime.as_secs_f64() * self.config.renew_after_fraction {
            return None;
        }
        match self.renew(identity, tls).await {
            Ok((renewed, info)) => {
                let valid_for_h = info.not_after.duration_since(now).unwrap_or_default().as_secs() / 3600;
                self.env.emit(AgentEvent::CertificateRenewed { cert_serial: info.serial, valid_for_h });
                Some(renewed)
            }
            Err(failure) => {
                let why = match failure {
                    RenewFailure::Service(cause) => {
                        let why = format!("{}: {} (reported with it)", self.names.renewtrust, cause.code);
                        self.env.emit(AgentEvent::Diagnostic(cause));
                        why
                    }
                    RenewFailure::Local(why) => why,
                };
                let left = diag::human_duration(cert.not_after.duration_since(now).unwrap_or_default());
                self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(
                    "TLS-CLIENT",
                    "renewal-failed",
                    Some(12019),
                    format!("client certificate renewal failed: {why}; the certificate expires in {left}"),
                    "fix the cause reported with it: the connector retries at the next trust-renewal check, and must succeed before the certificate expires (or be registered again)",
                )));
                None
            }
        }
    }

    /// A new key, a CSR, the renewal call, the new identity saved.
    async fn renew(
        &self,
        identity: &Identity,
        tls: &ServiceTls,
    ) -> Result<(Identity, crate::pki::cert::CertInfo), RenewFailure> {
        let local = |e: String| RenewFailure::Local(e);
        let key = identity::generate_key(self.env.entropy.as_ref()).map_err(|e| local(e.to_string()))?;
        let csr_pem = identity::csr_pem(&key, &self.config.machine_name).map_err(|e| local(e.to_string()))?;
        let request = RenewRequest { connector_id: identity.connector_id.clone(), csr_pem };
        let resp: RenewResponse = self
            .call(&self.names.renewtrust, tls)
            .post_json("/renew", &request, None)
            .await
            .map_err(|e| RenewFailure::Service(e.diagnostic()))?;
        let renewed = identity.renewed(&key, resp.certificate_pem);
        let info = renewed.certificate().map_err(local)?;
        renewed.save(&self.config.install_dir).map_err(|e| local(e.to_string()))?;
        Ok((renewed, info))
    }

    /// Starts a tunnel for every new endpoint and stops those no longer
    /// listed; says whether it started any. Endpoints are kept in a
    /// `BTreeMap`: start order is stable.
    fn reconcile(
        &self,
        tunnels: &mut BTreeMap<RelayEndpoint, JoinHandle<()>>,
        cfg: &BootstrapResponse,
        identity: &Identity,
        shared: &Rc<Shared>,
    ) -> bool {
        let mut started = false;
        let wanted: std::collections::BTreeSet<&RelayEndpoint> = cfg.relay_endpoints.iter().collect();
        tunnels.retain(|ep, handle| {
            let keep = wanted.contains(ep) && !handle.is_finished();
            // A tunnel sent away finishes its requests and ends by itself.
            if !keep && !shared.is_moving(&ep.to_string()) {
                handle.abort();
            }
            keep
        });
        for ep in wanted {
            if tunnels.contains_key(ep) {
                continue;
            }
            let tcfg = TunnelConfig {
                connector_id: identity.connector_id.clone(),
                connect_timeout: self.config.connect_timeout,
                keepalive: Duration::from_secs(cfg.keepalive_s.max(1)),
                backend_timeout: self.config.backend_timeout,
                max_inflight: self.config.max_inflight.min(cfg.connection_limit.max(1) as usize),
                backoff: Backoff::TUNNEL,
                request_body_hold_bytes: 1 << 20,
            };
            let handle = tokio::task::spawn_local(tunnel::run(self.env.clone(), tcfg, shared.clone(), ep.clone()));
            tunnels.insert(ep.clone(), handle);
            started = true;
        }
        started
    }
}

/// What the connector and updater services share about updates.
#[derive(Default)]
struct Updates {
    /// How often to check the feed (from the last bootstrap).
    check_every: std::cell::Cell<Option<Duration>>,
    /// A bootstrap succeeded (the updater waits for the first).
    configured: tokio::sync::Notify,
    /// The updater switched versions (or gave up switching): bootstrap now.
    switched: tokio::sync::Notify,
    /// The version to roll back to while a new one proves itself.
    pending: RefCell<Option<String>>,
    /// A pending switch was confirmed or rolled back.
    settled: tokio::sync::Notify,
}

enum RegisterFailure {
    /// Worth another attempt (network trouble).
    Retry(Diagnostic),
    /// The service said no: retrying will not help.
    Final(Diagnostic),
    Identity(identity::IdentityError),
}

impl RegisterFailure {
    fn from_call(e: CallError) -> Self {
        match &e {
            CallError::Status { .. } => RegisterFailure::Final(e.diagnostic()),
            _ => RegisterFailure::Retry(e.diagnostic()),
        }
    }
}
