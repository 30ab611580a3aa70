//! JSON messages between the connector and the cloud's HTTPS services
//! (login, registration, bootstrap). Shared with `relay-sim`, which serves
//! them, so both sides agree by construction.

use serde::{Deserialize, Serialize};

/// `POST https://login.microsoftonline.com/{tenant}/oauth2/token`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    /// The user completed a multi-factor prompt (an interactive sign-in
    /// can; a sign-in with a user name and password alone cannot).
    #[serde(default)]
    pub mfa: bool,
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
    /// How often the updater checks for a new release (minutes).
    #[serde(default = "default_update_check_min")]
    pub update_check_interval_min: u64,
}

fn default_update_check_min() -> u64 {
    60
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

/// A published connector release (VER-HISTORY).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Four-part version, e.g. `1.5.3437.0`.
    pub version: String,
    pub notes: String,
    /// Least .NET Framework release number it installs on.
    pub min_dotnet_release: u32,
    /// The package's SHA-256 (hex), and the publisher's Ed25519 signature
    /// over it (hex): what the updater checks a download against.
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub signature: String,
}

/// `POST https://{tenant}.bootstrap.msappproxy.net/package` (mTLS): the
/// updater downloads a release's package.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageRequest {
    pub connector_id: String,
    pub version: String,
}

/// The package, hex-encoded (a model installer of tens of KiB).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageResponse {
    pub version: String,
    pub package_hex: String,
}

/// `POST https://{tenant}.bootstrap.msappproxy.net/update` (mTLS), sent by the
/// updater: `check` asks for a newer release and the group's upgrade slot
/// (one connector of a group upgrades at a time); `done` returns the slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateRequest {
    pub connector_id: String,
    pub version: String,
    pub phase: UpdatePhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdatePhase {
    Check,
    Done,
}

/// The answer to an update check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateResponse {
    /// The newest release, if newer than the connector's.
    pub release: Option<Release>,
    /// Whether this connector holds its group's upgrade slot now.
    pub granted: bool,
}
