//! JSON messages between the connector and the cloud's HTTPS services
//! (login, registration, bootstrap). Shared with `relay-sim`, which serves
//! them, so both sides agree by construction.

use serde::{Deserialize, Serialize};

/// `POST https://login.microsoftonline.com/{tenant}/oauth2/token`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// A bearer token for the registration service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub access_token: String,
    pub tenant_id: String,
    pub expires_in_s: u64,
}

/// An error body of any service: a stable `error` code and the text a user
/// would see (the real product's wording where known).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_description: String,
}

/// `POST https://{tenant}.registration.msappproxy.net/register`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub csr_pem: String,
    pub machine_name: String,
    pub version: String,
}

/// The signed client certificate and the connector's identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub connector_id: String,
    pub certificate_pem: String,
}

/// `POST https://{tenant}.bootstrap.msappproxy.net/bootstrap` (mTLS).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapRequest {
    pub connector_id: String,
    pub version: String,
    pub machine_name: String,
}

/// A relay listener endpoint the connector keeps a tunnel to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelayEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for RelayEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Configuration and timers handed out by bootstrap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapResponse {
    pub relay_endpoints: Vec<RelayEndpoint>,
    pub bootstrap_interval_s: u64,
    pub keepalive_s: u64,
    pub connection_limit: u32,
    pub trust_renewal_interval_min: u64,
}

/// `POST https://{tenant}.renewtrust.msappproxy.net/renew` (mTLS with the
/// current certificate): a new key's CSR for a new client certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    pub connector_id: String,
    pub csr_pem: String,
}

/// The renewed client certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewResponse {
    pub certificate_pem: String,
}
