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
use connector::proto::{CancelReason, Headers, RequestHead};
use connector::tls::TlsContext;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::mpsc;

use crate::directory::{ConnectorRecord, Role, Tenant};
use crate::event::{CloudEvent, CloudSink};
use crate::pki::{Pki, PkiError};

/// How the cloud is laid out and timed.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub tenant: Tenant,
    pub login_host: String,
    pub registration_host: String,
    pub bootstrap_host: String,
    pub ingress_host: String,
    pub relay_endpoints: Vec<RelayEndpoint>,
    pub bootstrap_interval_s: u64,
    pub keepalive_s: u64,
    pub connection_limit: u32,
    /// How long the ingress waits for a connector's answer (85 s backend
    /// timeout plus margin).
    pub dispatch_timeout: Duration,
    pub token_lifetime: Duration,
}

impl CloudConfig {
    /// The public cloud's names for `tenant`, with `relays` relay
    /// namespaces in its region.
    pub fn public(tenant: Tenant, relays: usize) -> Self {
        let region = tenant.region.clone();
        let relay_endpoints = (1..=relays)
            .map(|i| RelayEndpoint { host: format!("cwap-{region}-{i}.servicebus.windows.net"), port: 443 })
            .collect();
        CloudConfig {
            login_host: "login.microsoftonline.com".into(),
            registration_host: format!("{}.registration.msappproxy.net", tenant.id),
            bootstrap_host: format!("{}.bootstrap.msappproxy.net", tenant.id),
            ingress_host: format!("{}.ingress.msappproxy.net", tenant.id),
            tenant,
            relay_endpoints,
            bootstrap_interval_s: 600,
            keepalive_s: 10,
            connection_limit: 200,
            dispatch_timeout: Duration::from_secs(90),
            token_lifetime: Duration::from_secs(3600),
        }
    }

    /// Every host name the cloud serves, sorted.
    pub fn service_hosts(&self) -> Vec<String> {
        let mut hosts = vec![
            self.login_host.clone(),
            self.registration_host.clone(),
            self.bootstrap_host.clone(),
            self.ingress_host.clone(),
        ];
        hosts.extend(self.relay_endpoints.iter().map(|e| e.host.clone()));
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// A token issued by login.
#[derive(Debug, Clone)]
pub struct Token {
    pub upn: String,
    pub role: Role,
    pub expires: SystemTime,
}

/// A request handed to a tunnel.
#[derive(Debug)]
pub struct Dispatch {
    pub id: u64,
    pub head: RequestHead,
    pub body: Bytes,
    pub reply: mpsc::UnboundedSender<Delivery>,
}

/// What the tunnel reports back about a dispatched request.
#[derive(Debug)]
pub enum Delivery {
    /// The connector accepted it: it must not be sent anywhere else.
    Acked,
    Head {
        status: u16,
        headers: Headers,
    },
    Body {
        data: Bytes,
        fin: bool,
    },
    Cancelled(CancelReason),
    /// The tunnel ended before the answer was complete.
    Lost {
        acked: bool,
        reason: String,
    },
}

/// A live tunnel as the cloud's routing table holds it.
#[derive(Debug, Clone)]
pub struct TunnelHandle {
    pub connector_id: String,
    pub endpoint: String,
    pub tx: mpsc::UnboundedSender<Dispatch>,
}

#[derive(Default)]
struct State {
    tokens: BTreeMap<String, Token>,
    connectors: BTreeMap<String, ConnectorRecord>,
    tunnels: BTreeMap<u64, TunnelHandle>,
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
}

/// Why the cloud could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("PKI: {0}")]
    Pki(#[from] PkiError),
    #[error("TLS configuration for {host}: {error}")]
    Tls { host: String, error: String },
}

impl Cloud {
    pub fn new(
        config: CloudConfig,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        events: Rc<dyn CloudSink>,
    ) -> Result<Rc<Cloud>, CloudError> {
        let pki = Pki::generate(entropy.as_ref(), clock.now(), &config.service_hosts())?;
        let tls = TlsContext::new(entropy.clone(), clock.clone());
        Ok(Rc::new(Cloud {
            config,
            clock,
            entropy,
            tls,
            pki: RefCell::new(pki),
            events,
            state: RefCell::new(State::default()),
        }))
    }

    pub fn emit(&self, event: CloudEvent) {
        self.events.emit(event);
    }

    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The service root in DER (what connector hosts trust).
    pub fn root_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.pki.borrow().root_der()
    }

    pub fn root_pem(&self) -> String {
        self.pki.borrow().root_pem()
    }

    /// TLS server configuration for `host`; with `mtls`, a client
    /// certificate from the connector CA is required.
    pub fn server_config(&self, host: &str, mtls: bool) -> Result<Arc<ServerConfig>, CloudError> {
        let err = |e: String| CloudError::Tls { host: host.to_string(), error: e };
        let pki = self.pki.borrow();
        let id = pki.server(host).ok_or_else(|| err("no certificate for this host name".into()))?;
        let builder = ServerConfig::builder_with_details(self.tls.provider.clone(), self.tls.time.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| err(e.to_string()))?;
        let builder = if mtls {
            let mut roots = RootCertStore::empty();
            roots.add(pki.connector_ca_der()).map_err(|e| err(e.to_string()))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.tls.provider.clone())
                .build()
                .map_err(|e| err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let cfg = builder.with_single_cert(id.chain.clone(), id.key()).map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(cfg))
    }

    /// Random hex of `bytes` bytes from the cloud's entropy.
    pub fn random_hex(&self, bytes: usize) -> String {
        let mut b = vec![0u8; bytes];
        self.entropy.fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    pub fn store_token(&self, token: String, t: Token) {
        self.state.borrow_mut().tokens.insert(token, t);
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
            },
        );
        self.emit(crate::event::CloudEvent::ConnectorRegistered {
            connector_id: id.clone(),
            machine: machine.to_string(),
            group,
        });
        Ok((id, pem))
    }

    /// Records a heartbeat; false if the connector is unknown.
    pub fn heartbeat(&self, connector_id: &str) -> bool {
        let now = self.now();
        match self.state.borrow_mut().connectors.get_mut(connector_id) {
            Some(rec) => {
                rec.last_bootstrap = Some(now);
                true
            }
            None => false,
        }
    }

    /// The tenant's connector list (REG-VISIBLE), in id order.
    pub fn connectors(&self) -> Vec<ConnectorRecord> {
        self.state.borrow().connectors.values().cloned().collect()
    }

    pub fn is_registered(&self, connector_id: &str) -> bool {
        self.state.borrow().connectors.contains_key(connector_id)
    }

    /// Adds a tunnel to the routing table; returns its id.
    pub fn add_tunnel(&self, handle: TunnelHandle) -> u64 {
        let mut st = self.state.borrow_mut();
        st.next_tunnel += 1;
        let id = st.next_tunnel;
        st.tunnels.insert(id, handle);
        id
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

    /// Live tunnels of connectors in `group`, optionally only of one
    /// connector, in a round-robin order that rotates on each call.
    pub fn tunnels_for(&self, group: &str, only_connector: Option<&str>) -> Vec<TunnelHandle> {
        let mut st = self.state.borrow_mut();
        let connectors = &st.connectors;
        let mut list: Vec<TunnelHandle> = st
            .tunnels
            .values()
            .filter(|t| !t.tx.is_closed())
            .filter(|t| connectors.get(&t.connector_id).is_some_and(|c| c.group == group))
            .filter(|t| only_connector.is_none_or(|c| c == t.connector_id))
            .cloned()
            .collect();
        if !list.is_empty() {
            let k = (st.round_robin % list.len() as u64) as usize;
            list.rotate_left(k);
            st.round_robin += 1;
        }
        list
    }
}
