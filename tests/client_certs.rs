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
use rustls::{AlertDescription, RootCertStore};
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

/// Registers a connector, then runs one handshake with its certificate
/// after `before` ran on the cloud; returns what the client read.
fn handshake_after(before: impl FnOnce(&Cloud, &ManualClock, &str)) -> Result<String, TlsFailure> {
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
    before(&cloud, &clock, &id);

    let host = cloud.config.bootstrap_host.clone();
    let server = cloud.server_config(&host, true).unwrap();
    let mut roots = RootCertStore::empty();
    for r in cloud.service_roots() {
        roots.add(r).unwrap();
    }
    let tls = TlsContext::new(Arc::new(SeededEntropy::new(9, "tls")), clock.clone());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls.provider.clone())
        .build()
        .unwrap();
    let chain = parse_pem_certs(&pem).unwrap();
    let client_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let client = Arc::new(tls.client_config(verifier, Some((chain, client_key))).unwrap());

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
