//! rustls configuration built from the environment: randomness and key
//! exchange draw from [`Entropy`], certificate time comes from [`Clock`]. This
//! is what makes a simulated TLS handshake byte-identical for equal seeds,
//! and it is the same code in real mode (where the entropy is the OS RNG).
//!
//! Key exchange is X25519 only, computed with x25519-dalek from our entropy:
//! ring's own key exchange draws from the OS and cannot be seeded.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret, SupportedKxGroup,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, NamedGroup};

use crate::env::{Clock, Entropy};

/// Adapts [`Entropy`] to rustls' `SecureRandom`.
#[derive(Debug)]
struct EntropyRandom(Arc<dyn Entropy>);

impl SecureRandom for EntropyRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        self.0.fill(buf);
        Ok(())
    }
}

/// X25519 whose private keys come from [`Entropy`].
#[derive(Debug)]
struct EntropyX25519(Arc<dyn Entropy>);

struct ActiveX25519 {
    secret: x25519_dalek::StaticSecret,
    public: [u8; 32],
}

impl SupportedKxGroup for EntropyX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut seed = [0u8; 32];
        self.0.fill(&mut seed);
        let secret = x25519_dalek::StaticSecret::from(seed);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Ok(Box::new(ActiveX25519 { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for ActiveX25519 {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] =
            peer_pub_key.try_into().map_err(|_| rustls::Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// Adapts [`Clock`] to rustls' `TimeProvider`.
#[derive(Debug)]
pub struct ClockTime(pub Arc<dyn Clock>);

impl TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        let since = self.0.now().duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(UnixTime::since_unix_epoch(since))
    }
}

/// The TLS context of one world: a crypto provider over the world's entropy
/// and a time provider over its clock.
///
/// rustls wants `&'static` randomness and key-exchange objects; each
/// `TlsContext` therefore leaks two small boxes. Build one per process in real
/// mode and one per host per simulation run, not one per connection.
#[derive(Clone, Debug)]
pub struct TlsContext {
    pub provider: Arc<CryptoProvider>,
    pub time: Arc<dyn TimeProvider>,
}

impl TlsContext {
    pub fn new(entropy: Arc<dyn Entropy>, clock: Arc<dyn Clock>) -> Self {
        let random: &'static EntropyRandom = Box::leak(Box::new(EntropyRandom(entropy.clone())));
        let kx: &'static EntropyX25519 = Box::leak(Box::new(EntropyX25519(entropy)));
        let provider = CryptoProvider {
            kx_groups: vec![kx],
            secure_random: random,
            signature_verification_algorithms: crate::signatures::algorithms(),
            ..rustls::crypto::ring::default_provider()
        };
        TlsContext { provider: Arc::new(provider), time: Arc::new(ClockTime(clock)) }
    }

    /// A client configuration offering TLS 1.3 and 1.2 only (TLS-MIN12),
    /// verifying the server with `verifier`, with an optional client
    /// certificate for mTLS.
    pub fn client_config(
        &self,
        verifier: Arc<dyn ServerCertVerifier>,
        client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<ClientConfig, rustls::Error> {
        let builder = ClientConfig::builder_with_details(self.provider.clone(), self.time.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match client_auth {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}
