//! The simulated cloud's shared state: directory, tokens, connector
//! registry, live tunnels, and the PKI. One `Cloud` serves every service
//! host of a world (login, registration, bootstrap, relays, ingress) the way
//! a real cloud shares a database; in a simulation it survives a host crash,
//! as a database would.
//!
//! Single-threaded by design (`Rc`/`RefCell`): all hosts of a simulation run
//! on one thread, and real mode runs on a `LocalSet`. No borrow is held
//! across an `.await`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use connector::api::RelayEndpoint;
use connector::env::{Clock, Entropy};
use connector::pace::Pace;
use connector::proto::RequestHead;
use connector::tls::TlsContext;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use smallvec::SmallVec;
use tokio::sync::mpsc;

use connector::allowlist::Environment;

use crate::directory::{ConnectorRecord, Role, Status, Tenant};
use crate::event::{CloudEvent, CloudSink};
use crate::pki::{Generation, Pki, PkiError, PkiTimers};
use crate::placement::{Instances, Placement, PIN_DELAY};
use crate::sessions::Sessions;

/// Largest upload the ingress relays by default: 1 GiB.
pub const UPLOAD_BYTES_MAX: u64 = 1 << 30;

/// Requests a connector may serve at once, as the real service's bootstrap
/// says (an unofficial capture: 200).
pub const CONNECTION_LIMIT: u32 = 200;

/// How the cloud is laid out and timed.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub tenant: Tenant,
    /// Which cloud the tenant lives in (REG-GOV).
    pub cloud: Environment,
    pub login_host: String,
    /// The other cloud's sign-in host, which does not know the tenant.
    pub other_cloud_login_host: String,
    pub registration_host: String,
    pub bootstrap_host: String,
    pub renewtrust_host: String,
    pub ingress_host: String,
    /// The cloud instances and their relay namespaces (OPS-GEO).
    pub instances: Instances,
    /// The home-region instance that serves the tenant at the start.
    pub instance: u32,
    /// Groups pinned to another region from the start (application
    /// proxy's multi-geo): group → region.
    pub pins: BTreeMap<String, String>,
    pub bootstrap_interval_s: u64,
    pub keepalive_s: u64,
    pub connection_limit: u32,
    /// How often connectors check whether to renew their certificate.
    pub trust_renewal_interval_min: u64,
    /// How often connectors' updaters check the release feed.
    pub update_check_interval_min: u64,
    /// The release feed.
    pub releases: Vec<connector::api::Release>,
    /// What the feed offers at the start (see [`crate::feed::Feed`]).
    pub feed: crate::feed::Feed,
    /// The service's TLS front ends offer TLS 1.2 only (no 1.3).
    pub tls12_only: bool,
    /// Releases the service refuses at bootstrap (shipped, then pulled).
    pub pulled_releases: Vec<String>,
    /// The tenant uses Private Access (VER-PA-MIN applies).
    pub private_access: bool,
    /// How long the ingress waits for a connector's answer (85 s backend
    /// timeout plus margin).
    pub dispatch_timeout: Duration,
    /// Largest request body the ingress relays (413 past it). Uploads
    /// stream, so this is a policy, not a memory bound.
    pub upload_bytes_max: u64,
    pub token_lifetime: Duration,
    pub pki: PkiTimers,
    /// Name of the enterprise CA an inspection box re-signs with.
    pub enterprise_ca: String,
}

impl CloudConfig {
    /// The public cloud's names for `tenant`, with `relays` relay
    /// namespaces in its region.
    pub fn public(tenant: Tenant, relays: usize) -> Self {
        Self::in_cloud(Environment::Public, tenant, relays)
    }

    /// `cloud`'s names for `tenant` (the same ones the connector derives,
    /// see [`connector::ServiceNames`]).
    pub fn in_cloud(cloud: Environment, tenant: Tenant, relays: usize) -> Self {
        let region = tenant.region.clone();
        let names = connector::ServiceNames::in_cloud(cloud, &tenant.id);
        let (other, apps) = match cloud {
            Environment::Public => (Environment::UsGov, "msappproxy.net"),
            Environment::UsGov => (Environment::Public, "msappproxy.us"),
        };
        let instances = Instances::single(cloud, &region, relays);
        CloudConfig {
            cloud,
            login_host: names.login,
            other_cloud_login_host: connector::ServiceNames::in_cloud(other, &tenant.id).login,
            registration_host: names.registration,
            bootstrap_host: names.bootstrap,
            renewtrust_host: names.renewtrust,
            ingress_host: format!("{}.ingress.{apps}", tenant.id),
            tenant,
            instances,
            instance: 1,
            pins: BTreeMap::new(),
            bootstrap_interval_s: 600,
            keepalive_s: 10,
            connection_limit: CONNECTION_LIMIT,
            trust_renewal_interval_min: 360,
            update_check_interval_min: 60,
            releases: crate::releases::history(),
            feed: crate::feed::Feed::default(),
            tls12_only: false,
            pulled_releases: Vec::new(),
            private_access: false,
            dispatch_timeout: Duration::from_secs(90),
            upload_bytes_max: UPLOAD_BYTES_MAX,
            token_lifetime: Duration::from_secs(3600),
            pki: PkiTimers::default(),
            enterprise_ca: "Contoso Outbound Inspection CA".into(),
        }
    }

    /// Every host name the cloud serves, sorted.
    pub fn service_hosts(&self) -> Vec<String> {
        let mut hosts = vec![
            self.login_host.clone(),
            self.other_cloud_login_host.clone(),
            self.registration_host.clone(),
            self.bootstrap_host.clone(),
            self.renewtrust_host.clone(),
            self.ingress_host.clone(),
        ];
        hosts.extend(self.instances.all_relays().into_iter().map(|e| e.host));
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// A token issued by login.
#[derive(Debug, Clone)]
pub struct Token {
    /// `None`: a bearer token for the service's APIs (registration);
    /// `Some(app)`: a pre-authenticated browser session for that app only.
    pub session_for: Option<String>,
    pub upn: String,
    pub role: Role,
    /// The directory the user signed in to.
    pub directory: String,
    pub expires: SystemTime,
}

/// A request handed to a tunnel.
#[derive(Debug)]
pub struct Dispatch {
    pub id: u64,
    /// Shared with the ingress, which keeps it to offer the request again
    /// if this tunnel does not take it.
    pub head: Rc<RequestHead>,
    /// The body, or its start when `upload` says more follows.
    pub body: Bytes,
    /// An upload too long to hold: the rest follows as [`ToTunnel::Body`],
    /// paced by how much of it still waits in the tunnel.
    pub upload: Option<Rc<Pace>>,
    pub reply: crate::body::Reply,
}

/// What the ingress tells a tunnel.
#[derive(Debug)]
pub enum ToTunnel {
    /// A new request.
    Dispatch(Dispatch),
    /// More of a dispatched upload.
    Body { id: u64, data: Bytes, fin: bool },
    /// The request is given up (the user's upload broke off, or the user
    /// has the whole answer before the upload ended): its stream is
    /// cancelled, so that the backend sees a cut request, never a short one.
    Abandon { id: u64 },
}

/// A live tunnel as the cloud's routing table holds it.
#[derive(Debug, Clone)]
pub struct TunnelHandle {
    /// Shared, not copied: a handle is cloned for every request
    /// dispatched ([`Cloud::pick_tunnel`]).
    pub connector_id: Rc<str>,
    /// The connector process's incarnation (from its `Hello`).
    pub incarnation: u64,
    pub endpoint: Rc<str>,
    pub tx: mpsc::UnboundedSender<ToTunnel>,
    /// Requests open on the tunnel's session, as its relay last counted.
    pub open: Rc<std::cell::Cell<usize>>,
}

/// Requests a tunnel takes before the next tunnel of the same connector
/// gets any: see [`Cloud::pick_tunnel`].
pub const TUNNEL_FILL: usize = 16;

#[derive(Default)]
struct State {
    /// Server configurations by (host, mTLS), dropped on any PKI change.
    configs: BTreeMap<(String, bool), Arc<ServerConfig>>,
    revoked_connectors: std::collections::BTreeSet<String>,
    /// Group → (connector upgrading now, until when the slot is held).
    update_slots: BTreeMap<String, (String, SystemTime)>,
    tokens: BTreeMap<String, Token>,
    connectors: BTreeMap<String, ConnectorRecord>,
    tunnels: BTreeMap<u64, TunnelHandle>,
    /// The release feed as it runs (timeline events change it).
    feed: crate::feed::Feed,
    /// Which instance serves the tenant and its groups.
    placement: Placement,
    next_tunnel: u64,
    next_request: u64,
    round_robin: u64,
}

/// The cloud.
pub struct Cloud {
    pub config: CloudConfig,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub tls: TlsContext,
    pki: RefCell<Pki>,
    events: Rc<dyn CloudSink>,
    state: RefCell<State>,
    /// Bumped when a connector is revoked (its live tunnels end) or the
    /// placement changes (relays that no longer serve a tunnel's connector
    /// send it away); `routing_wake` wakes the tunnels to look. A `Notify`
    /// wakes its waiters in the order they wait, where a `watch` channel
    /// would pick among its waiter lists at random (unseeded): the trace
    /// would change order from run to run.
    routing: std::cell::Cell<u64>,
    routing_wake: tokio::sync::Notify,
    /// Signs the packages the feed announces.
    publisher: ring::signature::Ed25519KeyPair,
}

/// A service host's TLS configuration as the cloud holds it now (it
/// changes with root rotation and revocations).
pub struct CloudTls {
    cloud: Rc<Cloud>,
    host: String,
    mtls: bool,
}

impl crate::server::TlsSource for CloudTls {
    fn config(&self) -> Option<Arc<ServerConfig>> {
        match self.cloud.server_config(&self.host, self.mtls) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    fn refused(&self, reason: String) {
        self.cloud.emit(CloudEvent::TlsRefused { host: self.host.clone(), reason });
    }
}

/// Why the cloud could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("PKI: {0}")]
    Pki(#[from] PkiError),
    #[error("TLS configuration for {host}: {error}")]
    Tls { host: String, error: String },
    #[error("{0}")]
    Publisher(String),
}

impl Cloud {
    pub fn new(
        config: CloudConfig,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        events: Rc<dyn CloudSink>,
    ) -> Result<Rc<Cloud>, CloudError> {
        let pki = Pki::generate(
            entropy.clone(),
            clock.now(),
            &config.service_hosts(),
            &config.enterprise_ca,
            config.pki,
            config.cloud,
        )?;
        let tls = TlsContext::new(entropy.clone(), clock.clone());
        let publisher = crate::feed::publisher().map_err(CloudError::Publisher)?;
        let placement = Placement {
            instance: config.instance,
            // In effect from the start: set long before the run.
            pins: config.pins.iter().map(|(g, r)| (g.clone(), vec![(r.clone(), SystemTime::UNIX_EPOCH)])).collect(),
        };
        let state = State { feed: config.feed.clone(), placement, ..State::default() };
        Ok(Rc::new(Cloud {
            config,
            clock,
            entropy,
            tls,
            pki: RefCell::new(pki),
            events,
            state: RefCell::new(state),
            routing: std::cell::Cell::new(0),
            routing_wake: tokio::sync::Notify::new(),
            publisher,
        }))
    }

    pub fn emit(&self, event: CloudEvent) {
        self.events.emit(event);
    }

    /// See [`CloudSink::wants_request_events`].
    pub fn wants_request_events(&self) -> bool {
        self.events.wants_request_events()
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The service's root of generation `g` (DER).
    pub fn root_der(&self, g: Generation) -> CertificateDer<'static> {
        self.pki.borrow().root_der(g)
    }

    pub fn root_pem(&self, g: Generation) -> String {
        self.pki.borrow().root_pem(g)
    }

    /// The roots the service uses, all generations (what the connector
    /// product ships as its service roots).
    pub fn service_roots(&self) -> Vec<CertificateDer<'static>> {
        self.pki.borrow().service_roots()
    }

    /// The enterprise (inspection) CA's certificate.
    pub fn enterprise_root_der(&self) -> CertificateDer<'static> {
        self.pki.borrow().enterprise_root_der()
    }

    /// Changes the PKI (rotation, revocation, faults); cached server
    /// configurations are rebuilt on next use.
    pub fn with_pki<T>(&self, f: impl FnOnce(&mut Pki) -> T) -> T {
        let out = f(&mut self.pki.borrow_mut());
        self.state.borrow_mut().configs.clear();
        out
    }

    /// Reads the PKI.
    pub fn pki(&self) -> std::cell::Ref<'_, Pki> {
        self.pki.borrow()
    }

    /// Moves every service host to the chains of generation `g`.
    pub fn rotate_root(&self, g: Generation) {
        self.with_pki(|p| p.rotate_to(g));
        self.emit(CloudEvent::RootRotated { to: format!("{g:?}") });
    }

    /// Revokes a connector's certificates and ends its live tunnels.
    pub fn revoke_connector(&self, connector_id: &str) {
        let now = self.now();
        let n = self.with_pki(|p| p.revoke_connector(connector_id, now));
        self.state.borrow_mut().revoked_connectors.insert(connector_id.to_string());
        self.routing_changed();
        self.emit(CloudEvent::ConnectorRevoked { connector_id: connector_id.to_string(), certificates: n });
    }

    pub fn is_revoked(&self, connector_id: &str) -> bool {
        self.state.borrow().revoked_connectors.contains(connector_id)
    }

    /// How many times the routing changed (a connector revoked, the
    /// placement changed): a tunnel that saw another number looks again.
    pub fn routing_generation(&self) -> u64 {
        self.routing.get()
    }

    /// Resolves when the routing changes next (see [`Cloud::routing_generation`]).
    pub fn routing_changes(&self) -> tokio::sync::futures::Notified<'_> {
        self.routing_wake.notified()
    }

    fn routing_changed(&self) {
        self.routing.set(self.routing.get() + 1);
        self.routing_wake.notify_waiters();
    }

    /// How long until a pin set earlier takes effect, if one is pending:
    /// the routing changes then, without any call.
    pub fn until_next_pin(&self) -> Option<Duration> {
        let now = self.now();
        self.state.borrow().placement.next_start(now).and_then(|t| t.duration_since(now).ok())
    }

    /// The relay endpoints that serve `connector_id` now: its group's
    /// pinned region's instance, or the tenant's instance.
    pub fn relays_for(&self, connector_id: &str) -> Vec<RelayEndpoint> {
        let group = self.state.borrow().connectors.get(connector_id).map(|c| c.group.clone());
        self.relays_for_group(group.as_deref().unwrap_or(crate::directory::DEFAULT_GROUP))
    }

    /// The relay endpoints that serve connector group `group` now.
    pub fn relays_for_group(&self, group: &str) -> Vec<RelayEndpoint> {
        let c = &self.config;
        let (region, instance) =
            self.state.borrow().placement.serving(&c.instances, group, self.now(), c.private_access);
        c.instances.relays_of(&region, instance)
    }

    /// Whether relay `host` serves `connector_id` now.
    pub fn serves_here(&self, connector_id: &str, host: &str) -> bool {
        self.relays_for(connector_id).iter().any(|e| e.host == host)
    }

    /// Moves the tenant to `instance` of its home region: the old
    /// instance's relays send its connectors away.
    pub fn move_tenant(&self, instance: u32) {
        self.state.borrow_mut().placement.instance = instance;
        self.routing_changed();
        self.emit(CloudEvent::TenantMoved { instance });
    }

    /// Pins `group` to `region`, in effect after [`PIN_DELAY`] (for
    /// application proxy; Private Access ignores pins). A pin in effect
    /// stays until the new one starts.
    pub fn pin_group(&self, group: &str, region: &str) {
        let from = self.now() + PIN_DELAY;
        self.state.borrow_mut().placement.pin(group, region, from);
        // Nothing is routed elsewhere yet: the tunnels look again to learn
        // when to look once more.
        self.routing_changed();
        let effective_in_min = PIN_DELAY.as_secs() / 60;
        self.emit(CloudEvent::GroupPinned { group: group.into(), region: region.into(), effective_in_min });
    }

    /// TLS server configuration for `host`; with `mtls`, a client
    /// certificate from the connector CA, not revoked, is required.
    pub fn server_config(&self, host: &str, mtls: bool) -> Result<Arc<ServerConfig>, CloudError> {
        let key = (host.to_string(), mtls);
        if let Some(cfg) = self.state.borrow().configs.get(&key) {
            return Ok(cfg.clone());
        }
        let err = |e: String| CloudError::Tls { host: host.to_string(), error: e };
        let pki = self.pki.borrow();
        let id = pki.server(host).ok_or_else(|| err("no certificate for this host name".into()))?.clone();
        let cfg = if mtls {
            let crl = pki.connector_crl(self.now()).map_err(|e| err(e.to_string()))?;
            let mut roots = RootCertStore::empty();
            roots.add(pki.connector_ca_der()).map_err(|e| err(e.to_string()))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.tls.provider.clone())
                .with_crls(vec![CertificateRevocationListDer::from(crl)])
                .build()
                .map_err(|e| err(e.to_string()))?;
            self.server_builder(host)?.with_client_cert_verifier(verifier)
        } else {
            self.server_builder(host)?.with_no_client_auth()
        };
        drop(pki);
        let mut cfg = cfg.with_single_cert(id.chain.clone(), id.key()).map_err(|e| err(e.to_string()))?;
        // Resumes every connector of a fleet, as the service does (rustls'
        // own store keeps 256 sessions: see `sessions`).
        cfg.session_storage = Arc::new(Sessions::default());
        let cfg = Arc::new(cfg);
        self.state.borrow_mut().configs.insert(key, cfg.clone());
        Ok(cfg)
    }

    fn server_builder(
        &self,
        host: &str,
    ) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, CloudError> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = if self.config.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        ServerConfig::builder_with_details(self.tls.provider.clone(), self.tls.time.clone())
            .with_protocol_versions(versions)
            .map_err(|e| CloudError::Tls { host: host.to_string(), error: e.to_string() })
    }

    /// What an inspection box presents for `host`: a certificate re-signed
    /// by the enterprise CA.
    pub fn forged_config(&self, host: &str) -> Result<Arc<ServerConfig>, CloudError> {
        let err = |e: String| CloudError::Tls { host: host.to_string(), error: e };
        let now = self.now();
        let id = self.pki.borrow_mut().forged(host, now).map_err(|e| err(e.to_string()))?;
        let cfg = self.server_builder(host)?.with_no_client_auth();
        let key = id.key();
        Ok(Arc::new(cfg.with_single_cert(id.chain, key).map_err(|e| err(e.to_string()))?))
    }

    /// The TLS source of a service host, for [`crate::server::accept_tls`].
    pub fn tls_source(self: &Rc<Self>, host: &str, mtls: bool) -> CloudTls {
        CloudTls { cloud: self.clone(), host: host.to_string(), mtls }
    }

    /// Random hex of `bytes` bytes from the cloud's entropy.
    pub fn random_hex(&self, bytes: usize) -> String {
        let mut b = vec![0u8; bytes];
        self.entropy.fill(&mut b);
        connector::package::hex(&b)
    }

    /// Issues a token for `user`, signed in to `directory`, valid for the
    /// configured lifetime: a bearer token, or a session for one app
    /// (`session_for`).
    pub fn issue_token(&self, user: &crate::directory::User, directory: &str, session_for: Option<String>) -> String {
        let token = self.random_hex(24);
        let expires = self.now() + self.config.token_lifetime;
        let (upn, role, directory) = (user.upn.clone(), user.role, directory.to_ascii_lowercase());
        self.state.borrow_mut().tokens.insert(token.clone(), Token { session_for, upn, role, directory, expires });
        token
    }

    /// The token's claims if it is known and not expired.
    pub fn token(&self, token: &str) -> Option<Token> {
        let now = self.now();
        self.state.borrow().tokens.get(token).filter(|t| t.expires > now).cloned()
    }

    /// Signs a CSR and records a new connector.
    pub fn register_connector(
        &self,
        csr_pem: &str,
        machine: &str,
        version: &str,
    ) -> Result<(String, String), PkiError> {
        let id = {
            let h = self.random_hex(16);
            format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
        };
        let now = self.now();
        let pem = self.pki.borrow_mut().sign_connector_csr(csr_pem, &id, now)?;
        let group = self.config.tenant.group_for(machine);
        self.state.borrow_mut().connectors.insert(
            id.clone(),
            ConnectorRecord {
                id: id.clone(),
                machine: machine.to_string(),
                group: group.clone(),
                version: version.to_string(),
                registered_at: now,
                last_bootstrap: None,
                shown: Status::Active,
            },
        );
        self.emit(crate::event::CloudEvent::ConnectorRegistered {
            connector_id: id.clone(),
            machine: machine.to_string(),
            group,
        });
        Ok((id, pem))
    }

    /// Signs a renewal CSR for a registered, unrevoked connector.
    pub fn renew_connector(&self, connector_id: &str, csr_pem: &str) -> Result<String, PkiError> {
        if !self.is_registered(connector_id) || self.is_revoked(connector_id) {
            return Err(PkiError::BadCsr(format!("connector {connector_id} is not registered")));
        }
        let now = self.now();
        let pem = self.pki.borrow_mut().sign_connector_csr(csr_pem, connector_id, now)?;
        self.emit(CloudEvent::CertificateRenewed { connector_id: connector_id.to_string() });
        Ok(pem)
    }

    /// The newest release newer than `current` that the feed offers to the
    /// connector's group now, announced (its package's digest, signed).
    pub fn offer(&self, connector_id: &str, current: &str) -> Option<connector::api::Release> {
        let st = self.state.borrow();
        let group = st.connectors.get(connector_id).map(|c| c.group.clone())?;
        let offered: Vec<connector::api::Release> =
            self.config.releases.iter().filter(|r| st.feed.offers(&r.version, &group)).cloned().collect();
        let release = crate::releases::newer_than(&offered, current)?;
        crate::feed::announce(release, &self.publisher, st.feed.faults.get(&release.version).copied()).ok()
    }

    /// The package of `version` as a connector's download gets it, if the
    /// feed offers that release to its group.
    pub fn package(&self, connector_id: &str, version: &str) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let group = st.connectors.get(connector_id).map(|c| c.group.clone())?;
        let known = self.config.releases.iter().any(|r| r.version == version);
        (known && st.feed.offers(version, &group))
            .then(|| crate::feed::download(version, st.feed.faults.get(version).copied()))
    }

    /// Changes what the feed offers (publish, withdraw, roll out).
    pub fn with_feed<T>(&self, f: impl FnOnce(&mut crate::feed::Feed) -> T) -> T {
        f(&mut self.state.borrow_mut().feed)
    }

    /// Claims the upgrade slot of the connector's group (one upgrade at a
    /// time per group; a slot not returned within 30 minutes lapses).
    pub fn claim_update_slot(&self, connector_id: &str) -> bool {
        let now = self.now();
        let mut st = self.state.borrow_mut();
        let Some(group) = st.connectors.get(connector_id).map(|c| c.group.clone()) else { return false };
        let free = match st.update_slots.get(&group) {
            Some((holder, until)) => holder == connector_id || *until <= now,
            None => true,
        };
        if free {
            st.update_slots.insert(group.clone(), (connector_id.to_string(), now + Duration::from_secs(1800)));
        }
        drop(st);
        self.emit(if free {
            CloudEvent::UpdateSlotGranted { connector_id: connector_id.to_string(), group }
        } else {
            CloudEvent::UpdateSlotBusy { connector_id: connector_id.to_string(), group }
        });
        free
    }

    /// Returns the slot a connector holds.
    pub fn release_update_slot(&self, connector_id: &str) {
        self.state.borrow_mut().update_slots.retain(|_, (holder, _)| holder != connector_id);
    }

    /// Records a heartbeat from a connector running `version`; false if the
    /// connector is unknown.
    pub fn heartbeat(&self, connector_id: &str, version: &str) -> bool {
        let now = self.now();
        let became_active = match self.state.borrow_mut().connectors.get_mut(connector_id) {
            Some(rec) => {
                rec.last_bootstrap = Some(now);
                rec.version = version.to_string();
                let was = rec.shown;
                rec.shown = Status::Active;
                (was == Status::Inactive).then(|| rec.machine.clone())
            }
            None => return false,
        };
        if let Some(machine) = became_active {
            self.emit(CloudEvent::ConnectorActive { connector_id: connector_id.to_string(), machine });
        }
        true
    }

    /// Applies the portal's rules at `now`: connectors without a bootstrap
    /// for an hour turn inactive; inactive for 10 days, they are removed.
    /// Returns when the next change is due.
    pub fn update_status(&self) -> Option<SystemTime> {
        let now = self.now();
        let mut events = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            let mut removed = Vec::new();
            for rec in st.connectors.values_mut() {
                if rec.next_change() > now {
                    continue;
                }
                match rec.shown {
                    Status::Active => {
                        rec.shown = Status::Inactive;
                        events.push(CloudEvent::ConnectorInactive {
                            connector_id: rec.id.clone(),
                            machine: rec.machine.clone(),
                        });
                    }
                    Status::Inactive => {
                        removed.push(rec.id.clone());
                        events.push(CloudEvent::ConnectorRemoved {
                            connector_id: rec.id.clone(),
                            machine: rec.machine.clone(),
                        });
                    }
                }
            }
            for id in removed {
                st.connectors.remove(&id);
            }
        }
        for e in events {
            self.emit(e);
        }
        self.state.borrow().connectors.values().map(ConnectorRecord::next_change).min()
    }

    /// The tenant's connector list (REG-VISIBLE), in id order.
    pub fn connectors(&self) -> Vec<ConnectorRecord> {
        self.state.borrow().connectors.values().cloned().collect()
    }

    pub fn is_registered(&self, connector_id: &str) -> bool {
        self.state.borrow().connectors.contains_key(connector_id)
    }

    /// Adds a tunnel to the routing table; returns its id.
    pub fn add_tunnel(&self, mut handle: TunnelHandle) -> u64 {
        let mut st = self.state.borrow_mut();
        // A connector's tunnels share one copy of its id, so that
        // `pick_tunnel` recognises a run of them by address before it
        // compares text. (A scan of the tunnels a tunnel opened: cheap
        // beside its handshake.)
        if let Some(same) = st.tunnels.values().find(|t| t.connector_id == handle.connector_id) {
            handle.connector_id = same.connector_id.clone();
        }
        st.next_tunnel += 1;
        let id = st.next_tunnel;
        st.tunnels.insert(id, handle);
        id
    }

    /// Live tunnels as (connector id, relay endpoint), in the order they
    /// opened.
    pub fn live_tunnels(&self) -> Vec<(String, String)> {
        let st = self.state.borrow();
        st.tunnels
            .values()
            .filter(|t| !t.tx.is_closed())
            .map(|t| (t.connector_id.to_string(), t.endpoint.to_string()))
            .collect()
    }

    /// Moves a connector to another group: requests for the apps of its
    /// old group no longer go down its tunnels. False if there is no such
    /// connector.
    pub fn move_connector(&self, connector_id: &str, group: &str) -> bool {
        let moved = match self.state.borrow_mut().connectors.get_mut(connector_id) {
            Some(c) => {
                c.group = group.to_string();
                true
            }
            None => false,
        };
        if moved {
            self.emit(CloudEvent::ConnectorMoved { connector_id: connector_id.into(), group: group.into() });
        }
        moved
    }

    pub fn remove_tunnel(&self, id: u64) {
        self.state.borrow_mut().tunnels.remove(&id);
    }

    /// A fresh relay request id (monotonic: connectors rely on it).
    pub fn next_request_id(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        st.next_request += 1;
        st.next_request
    }

    /// A live tunnel of a connector in `group`, optionally only of one
    /// connector process (id and incarnation).
    ///
    /// Connectors take turns (round robin, one request each), so a group
    /// spreads its load over its connectors. Within the connector whose
    /// turn it is, the first tunnel with fewer than [`TUNNEL_FILL`] requests
    /// open takes it (else the least busy): requests in flight together
    /// share a tunnel, and so its writes and TLS records. Spread one a
    /// tunnel, 32 concurrent requests over 8 tunnels cost ~20 % more CPU
    /// per request than over 2 (measured with `wrk -c32`, BENCHMARKS.md).
    pub fn pick_tunnel(&self, group: &str, only_connector: Option<(&str, u64)>) -> Option<TunnelHandle> {
        let mut st = self.state.borrow_mut();
        let connectors = &st.connectors;
        // A connector's tunnels mostly sit side by side in the map: its
        // group is looked up once for each run of them. Kept inline: lists
        // made and freed for every request were ~740 of this call's ~2,600
        // instructions (callgrind, `wrk -c32`).
        let mut live: SmallVec<[&TunnelHandle; 16]> = SmallVec::new();
        let mut last: Option<(&str, bool)> = None;
        // Whether the live tunnels belong to more than one connector: only
        // then is there a turn to take (the usual group of one connector
        // skips sorting the ids, ~30 string comparisons a request).
        let (mut first, mut several) = (None::<&str>, false);
        for t in st.tunnels.values() {
            let other = only_connector.is_some_and(|(c, i)| c != &*t.connector_id || i != t.incarnation);
            if t.tx.is_closed() || other {
                continue;
            }
            let serves = match last {
                // The same connector's tunnels share one copy of its id
                // (`add_tunnel`): the address settles it without the text.
                Some((seen, serves)) if std::ptr::eq(seen, &*t.connector_id) || seen == &*t.connector_id => serves,
                _ => {
                    let serves = connectors.get(&*t.connector_id).is_some_and(|c| c.group == group);
                    // A run of another connector's tunnels: is it another
                    // connector than the first that serves?
                    match first {
                        Some(f) if serves => several |= f != &*t.connector_id,
                        None if serves => first = Some(&t.connector_id),
                        _ => {}
                    }
                    serves
                }
            };
            last = Some((&t.connector_id, serves));
            if serves {
                live.push(t);
            }
        }
        let chosen = if several {
            let mut ids: SmallVec<[&str; 8]> = live.iter().map(|t| &*t.connector_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let turn = *ids.get((st.round_robin % ids.len() as u64) as usize)?;
            least_busy(live.iter().copied().filter(|t| &*t.connector_id == turn))
        } else {
            least_busy(live.iter().copied())
        }?
        .clone();
        // The list borrows the state, and a `SmallVec` has a destructor, so
        // its borrow would last to the end of the scope: end it before the
        // turn moves on.
        drop(live);
        st.round_robin += 1;
        Some(chosen)
    }
}

/// The first of `tunnels` with fewer than [`TUNNEL_FILL`] requests open,
/// else the least busy (the first of those).
fn least_busy<'t>(tunnels: impl Iterator<Item = &'t TunnelHandle> + Clone) -> Option<&'t TunnelHandle> {
    tunnels.clone().find(|t| t.open.get() < TUNNEL_FILL).or_else(|| tunnels.min_by_key(|t| t.open.get()))
}
