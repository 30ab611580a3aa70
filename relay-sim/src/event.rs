//! What the simulated cloud reports: typed, serializable, no timestamps
//! (the sink stamps them).

use serde::Serialize;

/// One thing the cloud did or saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CloudEvent {
    LoginOk {
        user: String,
    },
    LoginDenied {
        user: String,
        error: String,
    },
    ConnectorRegistered {
        connector_id: String,
        machine: String,
        group: String,
    },
    RegistrationDenied {
        error: String,
    },
    BootstrapServed {
        connector_id: String,
    },
    TunnelOpened {
        connector_id: String,
        endpoint: String,
    },
    TunnelClosed {
        connector_id: String,
        endpoint: String,
        reason: String,
    },
    /// A user request was sent down a tunnel (`attempt` > 0: redelivery).
    RequestDispatched {
        id: u64,
        app: String,
        connector_id: String,
        endpoint: String,
        attempt: u32,
    },
    /// A TLS handshake on a service host was refused (e.g. no or a
    /// revoked client certificate).
    TlsRefused {
        host: String,
        reason: String,
    },
    /// The outbound proxy answered a CONNECT.
    ProxyConnect {
        host: String,
        port: u16,
        status: u16,
    },
    /// The trust list (authroot CTL) was served.
    TrustListServed {
        host: String,
    },
    /// An inspection box intercepted a connection to `host`.
    Intercepted {
        host: String,
    },
    /// The service's chains moved to another root generation.
    RootRotated {
        to: String,
    },
    ConnectorRevoked {
        connector_id: String,
        certificates: usize,
    },
    /// The service moved the tenant to another instance of its region.
    TenantMoved {
        instance: u32,
    },
    /// A connector group was pinned to a region (in effect after
    /// `effective_in_min` minutes).
    GroupPinned {
        group: String,
        region: String,
        effective_in_min: u64,
    },
    /// A relay told a connector it does not serve it (GoAway `Moved`).
    TunnelMovedAway {
        connector_id: String,
        endpoint: String,
    },
    /// A connector was moved to another connector group.
    ConnectorMoved {
        connector_id: String,
        group: String,
    },
    /// A server certificate was revoked.
    ServerRevoked {
        host: String,
    },
    /// A revocation list was served (port 80).
    CrlServed {
        url: String,
    },
    /// An OCSP request was answered.
    OcspServed {
        status: String,
    },
    /// The portal shows the connector inactive (no bootstrap for an hour).
    ConnectorInactive {
        connector_id: String,
        machine: String,
    },
    /// The portal shows it active again.
    ConnectorActive {
        connector_id: String,
        machine: String,
    },
    /// Inactive for 10 days: removed from the tenant.
    ConnectorRemoved {
        connector_id: String,
        machine: String,
    },
    /// A connector got its group's upgrade slot.
    UpdateSlotGranted {
        connector_id: String,
        group: String,
    },
    /// Another connector of the group is upgrading: wait.
    UpdateSlotBusy {
        connector_id: String,
        group: String,
    },
    /// An updater downloaded a release's package.
    PackageServed {
        connector_id: String,
        version: String,
    },
    /// A connector's client certificate was renewed.
    CertificateRenewed {
        connector_id: String,
    },
    /// A user of the tenant signed in for a pre-authenticated app.
    UserSignedIn {
        user: String,
    },
    /// A user's sign-in was refused (`error`: the AADSTS code).
    UserSignInDenied {
        user: String,
        error: String,
    },
    /// Pre-authentication stopped a request before any connector
    /// (`detail`: the `x-relay-error` code).
    PreAuthRefused {
        app: String,
        detail: String,
    },
    /// The ingress answered the user.
    UserAnswered {
        id: u64,
        app: String,
        status: u16,
        detail: String,
    },
    /// A streamed answer (`UserAnswered` with detail "streaming") was cut
    /// short after its head: the user's connection was closed before the
    /// answer's end.
    UserAnswerCut {
        id: u64,
        app: String,
        reason: String,
    },
}

/// Where the cloud reports events.
pub trait CloudSink {
    fn emit(&self, event: CloudEvent);

    /// Whether events of single requests (`RequestDispatched`,
    /// `UserAnswered`, `UserAnswerCut`) are kept. The ingress builds them
    /// only if so: each copies a few strings, on every request.
    fn wants_request_events(&self) -> bool {
        true
    }
}

/// Logs events through `tracing` (real mode).
#[derive(Debug, Default)]
pub struct LogSink;

/// Events of single requests log at debug level, the rest at info (see the
/// connector's `LogSink`).
impl CloudSink for LogSink {
    fn emit(&self, event: CloudEvent) {
        let per_request = matches!(
            event,
            CloudEvent::RequestDispatched { .. } | CloudEvent::UserAnswered { .. } | CloudEvent::UserAnswerCut { .. }
        );
        if per_request && !self.wants_request_events() {
            return;
        }
        match serde_json::to_string(&event) {
            Ok(line) if per_request => tracing::debug!(target: "relay_sim::event", "{line}"),
            Ok(line) => tracing::info!(target: "relay_sim::event", "{line}"),
            Err(e) => tracing::warn!("unserializable event: {e}"),
        }
    }

    fn wants_request_events(&self) -> bool {
        tracing::enabled!(target: "relay_sim::event", tracing::Level::DEBUG)
    }
}
