//! The service side of mTLS, in memory: relay-sim's bootstrap host takes a
//! connector certificate it issued, and refuses one that has expired or
//! been revoked, with the alert the connector then reports.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use connector::env::{Clock, SeededEntropy};
use connector::identity::{csr_pem, generate_key, parse_pem_certs};
use connector::tls::TlsContext;
use connector::tls_failure::TlsFailure;
use relay_sim::cloud::{Cloud, CloudConfig};
use relay_sim::directory::Tenant;
use relay_sim::event::{CloudEvent, CloudSink};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, Connection, HandshakeKind, RootCertStore, ServerConfig,
    ServerConnection,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct ManualClock(Mutex<SystemTime>);

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

struct Quiet;
impl CloudSink for Quiet {
    fn emit(&self, _: CloudEvent) {}
}

/// A cloud on a clock the test moves, and one connector registered with
/// it: its id, certificate (PEM) and key (PKCS#8 DER).
fn cloud_with_connector() -> (Rc<Cloud>, Arc<ManualClock>, String, String, Vec<u8>) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let clock = Arc::new(ManualClock(Mutex::new(t0)));
    let tenant = Tenant {
        id: "contoso".into(),
        domains: vec!["contoso.com".into()],
        region: "weu".into(),
        users: vec![],
        apps: vec![],
        group_of_machine: Default::default(),
        app_proxy_enabled: true,
    };
    let mut config = CloudConfig::public(tenant, 1);
    config.pki.client_cert_lifetime = Duration::from_secs(7200);
    let entropy = Arc::new(SeededEntropy::new(9, "cloud"));
    let cloud = Cloud::new(config, clock.clone(), entropy, Rc::new(Quiet)).unwrap();
    let client_entropy = SeededEntropy::new(9, "client");
    let key = generate_key(&client_entropy).unwrap();
    let (id, pem) = cloud.register_connector(&csr_pem(&key, "m1").unwrap(), "m1", "1.5.3437.0").unwrap();
    (cloud, clock, id, pem, key.serialize_der())
}

/// A connector's TLS client configuration (its own resumption store, as
/// each connector has; randomness labelled `tls`), presenting its
/// certificate to the cloud.
fn connector_client(cloud: &Cloud, clock: &Arc<ManualClock>, tls: &str, pem: &str, key: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for r in cloud.service_roots() {
        roots.add(r).unwrap();
    }
    let tls = TlsContext::new(Arc::new(SeededEntropy::new(9, tls)), clock.clone());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls.provider.clone())
        .build()
        .unwrap();
    let chain = parse_pem_certs(pem).unwrap();
    let client_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    Arc::new(tls.client_config(verifier, Some((chain, client_key))).unwrap())
}

/// Registers a connector, then runs one handshake with its certificate
/// after `before` ran on the cloud; returns what the client read.
fn handshake_after(before: impl FnOnce(&Cloud, &ManualClock, &str)) -> Result<String, TlsFailure> {
    let (cloud, clock, id, pem, key) = cloud_with_connector();
    before(&cloud, &clock, &id);
    let host = cloud.config.bootstrap_host.clone();
    let server = cloud.server_config(&host, true).unwrap();
    let client = connector_client(&cloud, &clock, "tls", &pem, &key);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server_side = async move {
            if let Ok(mut s) = tokio_rustls::TlsAcceptor::from(server).accept(b).await {
                let _ = s.write_all(b"welcome").await;
                let _ = s.shutdown().await;
            }
        };
        let client_side = async move {
            let name = ServerName::try_from(host).unwrap();
            match tokio_rustls::TlsConnector::from(client).connect(name, a).await {
                Ok(mut s) => {
                    let mut buf = Vec::new();
                    match s.read_to_end(&mut buf).await {
                        Ok(_) => Ok(String::from_utf8_lossy(&buf).into_owned()),
                        Err(e) => Err(TlsFailure::from_io(&e)),
                    }
                }
                Err(e) => Err(TlsFailure::from_io(&e)),
            }
        };
        tokio::join!(server_side, client_side).1
    })
}

#[test]
fn a_valid_client_certificate_is_accepted() {
    assert_eq!(handshake_after(|_, _, _| {}), Ok("welcome".to_string()));
}

#[test]
fn an_expired_client_certificate_is_refused_with_its_reason() {
    let got = handshake_after(|_, clock, _| {
        *clock.0.lock().unwrap() += Duration::from_secs(3 * 3600);
    });
    let got = got.expect_err("refused");
    assert_eq!(got.alert(), Some(AlertDescription::CertificateExpired), "{got}");
    let d = connector::diag::client_cert_alert("bootstrap", 443, &got).expect("a client-certificate diagnostic");
    assert_eq!(d.code, "TLS-CLIENT.expired");
}

#[test]
fn a_revoked_client_certificate_is_refused_with_its_reason() {
    let got = handshake_after(|cloud, _, id| cloud.revoke_connector(id));
    let got = got.expect_err("refused");
    assert_eq!(got.alert(), Some(AlertDescription::CertificateRevoked), "{got}");
    let d = connector::diag::client_cert_alert("bootstrap", 443, &got).expect("a client-certificate diagnostic");
    assert_eq!(d.code, "TLS-CLIENT.revoked");
}

/// One handshake in memory, run until the client has read the server's
/// session tickets too; whether it was full or resumed.
fn handshake_kind(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>, host: &str) -> HandshakeKind {
    let name = ServerName::try_from(host.to_string()).unwrap();
    let mut c = Connection::Client(ClientConnection::new(client.clone(), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(server.clone()).unwrap());
    // Hello, the server's flight, the client's Finished, the tickets.
    for _ in 0..4 {
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
    }
    assert!(!c.is_handshaking() && !s.is_handshaking());
    c.handshake_kind().unwrap()
}

/// Everything `from` has to send, read and processed by `to`.
fn pump(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets().unwrap();
    }
}

/// Every client of a fleet resumes its next handshake with the cloud, as
/// the service's front ends let them: with rustls' own store of 256
/// sessions, the first clients' sessions were pushed out by the others'
/// (each handshake leaves two tickets) and their next bootstrap was a full
/// handshake again. 400 clients, each with its own session cache and
/// randomness as each connector has (one registered certificate serves
/// them all: the cloud's store keys sessions by ticket, not by client).
#[test]
fn a_fleet_of_clients_all_resume_with_the_cloud() {
    let (cloud, clock, _, pem, key) = cloud_with_connector();
    let host = cloud.config.bootstrap_host.clone();
    let server = cloud.server_config(&host, true).unwrap();
    let fleet: Vec<Arc<ClientConfig>> =
        (0..400).map(|i| connector_client(&cloud, &clock, &format!("tls-{i}"), &pem, &key)).collect();
    for client in &fleet {
        assert_eq!(handshake_kind(client, &server, &host), HandshakeKind::Full);
    }
    let resumed = fleet.iter().filter(|c| handshake_kind(c, &server, &host) == HandshakeKind::Resumed).count();
    assert_eq!(resumed, fleet.len());
}
