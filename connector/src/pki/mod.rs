//! The connector's side of the PKI: which roots it accepts for the service
//! ([`trust`]), revocation by CRL and OCSP over port 80 ([`revocation`],
//! [`ocsp`]), and what it reads from certificates ([`cert`]).

pub mod cert;
pub mod ocsp;
pub mod revocation;
pub mod trust;

use std::rc::Rc;
use std::sync::Arc;

use rustls::ClientConfig;

pub use revocation::{RevocationFailure, RevocationPolicy};
pub use trust::{Trust, TrustError};

/// A TLS client configuration for the service together with the trust that
/// explains its failures and checks revocation after each handshake.
#[derive(Clone)]
pub struct ServiceTls {
    pub config: Arc<ClientConfig>,
    pub trust: Rc<Trust>,
}
