//! The floor's TLS: what a connector's keepalives and bootstraps cost once
//! they are TLS 1.3, as the spec has them, with nothing else of a
//! connector.
//!
//! One self-signed relay certificate (Ed25519, its key from the seed) for
//! every relay name, trusted as the anchor; no client certificate (the
//! connector's mTLS adds a signature and its check to each full
//! handshake, so leaving it out keeps this a floor). The relays remember
//! sessions as the cloud's do ([`relay_sim::sessions::Sessions`]) and the
//! connector host shares one client configuration, so after each name's
//! first handshake every connection resumes, as the real connector's do:
//! a resumed TLS 1.3 handshake still makes two X25519 exchanges (PSK with
//! (EC)DHE, the only mode rustls and SChannel offer).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use connector::env::{Clock, SeededEntropy};
use connector::tls::TlsContext;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The simulated wall clock's start: 2026-01-01, inside the certificate's
/// validity (rcgen's default spans centuries).
fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// A floor relay's configuration, in the simulation and on real sockets
/// ([`crate::realfloor`]): TLS 1.3 only, one certificate, no client
/// certificate.
pub(crate) fn relay_config(
    ctx: &TlsContext,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    ServerConfig::builder_with_details(ctx.provider.clone(), ctx.time.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
}

/// A floor connector's configuration, in both worlds: the connector's
/// own ([`TlsContext::client_config`]), trusting `anchor` alone.
pub(crate) fn connector_config(ctx: &TlsContext, anchor: CertificateDer<'static>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.add(anchor).map_err(|e| format!("anchor: {e}"))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ctx.provider.clone())
        .build()
        .map_err(|e| format!("verifier: {e}"))?;
    ctx.client_config(verifier, None).map_err(|e| e.to_string())
}

/// Both ends' TLS configurations for one floor world.
#[derive(Clone)]
pub(super) struct Tls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl Tls {
    /// Configurations for relays named `names`, every key and random byte
    /// drawn from `seed`, certificate time from the simulated clock.
    pub(super) fn new(seed: u64, names: &[String]) -> Result<Self, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("floor world's TLS: {what}: {e}");
        let clock: Arc<dyn Clock> = Arc::new(relay_sim::world::SimClock::new(epoch(), 0, Arc::new(AtomicU64::new(0))));
        let key = connector::identity::generate_key(&SeededEntropy::new(seed, "floor-relay-key"))
            .map_err(|e| fail("relay key", &e))?;
        let cert = rcgen::CertificateParams::new(names.to_vec())
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| fail("relay certificate", &e))?;
        let server_tls = TlsContext::new(Arc::new(SeededEntropy::new(seed, "floor-relay")), clock.clone());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut server = relay_config(&server_tls, cert.der().clone(), key).map_err(|e| fail("server", &e))?;
        server.session_storage = Arc::new(relay_sim::sessions::Sessions::default());
        let client_tls = TlsContext::new(Arc::new(SeededEntropy::new(seed, "floor-connector")), clock);
        let client = connector_config(&client_tls, cert.der().clone()).map_err(|e| fail("client", &e))?;
        Ok(Tls { server: Arc::new(server), client: Arc::new(client) })
    }

    /// A TLS stream to `relay` on `tcp`, resumed when a session is left.
    pub(super) async fn connect(
        &self,
        relay: &str,
        tcp: turmoil::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<turmoil::net::TcpStream>> {
        let name = ServerName::try_from(relay.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio_rustls::TlsConnector::from(self.client.clone()).connect(name, tcp).await
    }
}
