//! What the agent reports. Typed, serializable and free of wall-clock
//! timestamps: the sink stamps them (with simulated time in a simulation), so
//! equal runs give equal traces.

use serde::Serialize;

use crate::diag::Diagnostic;

/// One thing the agent did or saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// Identity loaded from the install folder (no registration needed).
    IdentityLoaded { connector_id: String },
    /// Registration started against the tenant's registration service.
    RegistrationStarted { tenant: String },
    /// Registration finished: the client certificate is stored.
    Registered { connector_id: String, cert_serial: String },
    /// A bootstrap (configuration pull, doubles as heartbeat) succeeded.
    BootstrapOk { endpoints: usize, interval_s: u64 },
    /// A bootstrap failed; the agent keeps serving from cached configuration.
    BootstrapFailed { code: String },
    /// A tunnel to a relay endpoint is open (Hello exchanged).
    TunnelUp { endpoint: String },
    /// A tunnel closed, with why.
    TunnelDown { endpoint: String, reason: String },
    /// A relay asked the connector to drain a tunnel (`Moved`: and to ask
    /// bootstrap where to go instead).
    GoAwayReceived { endpoint: String, code: crate::proto::GoAwayCode, reason: String },
    /// The connector told a relay to send no new requests down a tunnel
    /// (it drains before an upgrade).
    GoAwaySent { endpoint: String },
    /// A request was accepted (acknowledged) for serving.
    RequestAccepted { id: u64, endpoint: String },
    /// A request id seen before was refused (at-most-once delivery).
    DuplicateRefused { id: u64, endpoint: String },
    /// A request was answered with this status.
    RequestServed { id: u64, status: u16 },
    /// A revocation list was downloaded (port 80).
    CrlFetched { url: String, revoked: usize },
    /// An OCSP responder answered for a service certificate.
    OcspChecked { url: String, status: String },
    /// The client certificate was renewed over mTLS.
    CertificateRenewed { cert_serial: String, valid_for_h: u64 },
    /// `connector diagnose` ran: destinations checked and failed (its
    /// findings follow as diagnostics).
    Diagnosed { checks: usize, failed: usize },
    /// The updater found a newer release but another connector of the
    /// group is upgrading.
    UpgradeDeferred { to: String },
    /// The updater holds the group's slot and starts switching.
    UpgradeStarted { from: String, to: String },
    /// The updater switched the program folder to a new version; it is
    /// kept once the new version bootstraps.
    Switched { from: String, to: String },
    /// The new version bootstrapped: the upgrade is kept.
    Upgraded { version: String },
    /// The new version failed; the previous one is back.
    RolledBack { from: String, to: String },
    /// The installer put a version into an empty install folder.
    Installed { version: String },
    /// A service's state as the agent observed it change (OPS-SERVICES).
    ServiceState { service: String, state: crate::service::ServiceState },
    /// A diagnostic finding.
    Diagnostic(Diagnostic),
    /// The agent stopped, with why.
    Stopped { reason: String },
}

impl AgentEvent {
    /// Events of single requests: many a second under load, so logs keep
    /// them at a lower level than the agent's lifecycle.
    pub fn is_per_request(&self) -> bool {
        matches!(self, AgentEvent::RequestAccepted { .. } | AgentEvent::RequestServed { .. })
    }
}
