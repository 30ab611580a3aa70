//! Diagnostics: what went wrong, which requirement it concerns, and what to
//! do. Each finding has a stable `code` (`NET-443.unreachable`,
//! `TLS-ROOTS.untrusted-issuer`, ...) that scenario expectations and snapshots
//! match on, and where the real product logs one, its Windows event ID.

use rustls::AlertDescription;
use serde::{Deserialize, Serialize};

use crate::code::{self, Code, EventId};
use crate::net::ConnectFailure;
use crate::tls_failure::TlsFailure;

/// One diagnostic finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Stable code: `<REQUIREMENT-ID>.<finding>`.
    pub code: String,
    /// The requirement of the catalogue this finding is about.
    pub requirement: String,
    /// The real connector's event ID for this kind of failure, if any
    /// (12015 cannot connect, 12019 certificate, 12020 networking).
    pub event_id: Option<u32>,
    /// What was observed, with host, port and error.
    pub message: String,
    /// What an administrator should do.
    pub remedy: String,
}

impl Diagnostic {
    /// A finding of kind `code` (see [`crate::code`]), with the real
    /// connector's event ID where it logs one.
    pub fn new(code: Code, event_id: Option<EventId>, message: impl Into<String>, remedy: impl Into<String>) -> Self {
        Diagnostic {
            code: code.to_string(),
            requirement: code.requirement.to_string(),
            event_id: event_id.map(u32::from),
            message: message.into(),
            remedy: remedy.into(),
        }
    }

    /// A refusal the service names with a code of its own
    /// (`SVC.<its code>`): the one finding not in the code table.
    pub fn service_refusal(service_code: &str, message: impl Into<String>, remedy: impl Into<String>) -> Self {
        Diagnostic {
            code: format!("{}.{service_code}", code::SERVICE_REQUIREMENT),
            requirement: code::SERVICE_REQUIREMENT.to_string(),
            event_id: Some(EventId::CannotConnect.number()),
            message: message.into(),
            remedy: remedy.into(),
        }
    }

    /// This revocation failure as the soft-fail policy reports it: the
    /// same requirement, finding `soft-fail`, and a remedy that says the
    /// connection was allowed.
    pub fn soft_failed(self) -> Self {
        Diagnostic {
            code: code::soft_fail(&self.requirement),
            remedy: format!("allowed by the soft-fail revocation policy; {}", self.remedy),
            ..self
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]", self.code)?;
        if let Some(id) = self.event_id {
            write!(f, " (event {id})")?;
        }
        write!(f, " {} — {}", self.message, self.remedy)
    }
}

/// A duration for people: "2.0 days", "3.5 hours", "12 minutes".
pub fn human_duration(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s >= 86_400 => format!("{:.1} days", s as f64 / 86_400.0),
        s if s >= 3600 => format!("{:.1} hours", s as f64 / 3600.0),
        s if s >= 60 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The diagnostic for an outbound connection to the service that failed.
/// Port 80 is the CRL/OCSP port (NET-80); anything else is the service port.
pub fn unreachable(host: &str, port: u16, failure: &ConnectFailure) -> Diagnostic {
    match (failure, port) {
        (ConnectFailure::Unresolved, _) => Diagnostic::new(code::NET_DNS_UNRESOLVED, Some(EventId::Networking),
            format!("{host} did not resolve"),
            "check the connector host's DNS servers and that the name is not sinkholed",
        ),
        (_, 80) => Diagnostic::new(code::NET_80_UNREACHABLE, Some(EventId::Networking),
            format!("cannot reach {host}:80 ({failure})"),
            "allow outbound TCP 80 to the certificate revocation hosts",
        ),
        _ => Diagnostic::new(code::NET_443_UNREACHABLE, Some(EventId::Networking),
            format!("cannot reach {host}:{port} ({failure})"),
            format!(
                "allow outbound TCP {port} to {host} (and its domain suffix) on every firewall and proxy between the connector and the service"
            ),
        ),
    }
}

/// The diagnostic for a TLS failure against a service host.
/// [`crate::pki::Trust::explain`] refines certificate failures with the
/// chain that was seen.
pub fn tls_failure(host: &str, port: u16, error: &TlsFailure) -> Diagnostic {
    if let Some(d) = client_cert_alert(host, port, error) {
        return d;
    }
    if error.is_old_peer() {
        Diagnostic::new(code::TLS_MIN12_PEER_TOO_OLD, Some(EventId::CannotConnect),
            format!("{host}:{port} does not speak TLS 1.2 or 1.3, the only versions the connector offers ({error})"),
            "TLS 1.2 is the minimum: if a proxy or firewall terminates TLS with an older version, exempt the service or upgrade it",
        )
    } else if error.is_unknown_issuer() {
        Diagnostic::new(code::TLS_ROOTS_UNTRUSTED_ISSUER, Some(EventId::Certificate),
            format!("the certificate of {host}:{port} chains to an issuer this host does not trust ({error})"),
            "install the service's current root CAs on the connector host; if a proxy re-signs TLS, exempt the service from inspection",
        )
    } else if error.is_validity() {
        Diagnostic::new(
            code::TLS_TIME_VALIDITY,
            Some(EventId::Certificate),
            format!("certificate of {host}:{port} is not valid at the host's current time ({error})"),
            "check the connector host's clock",
        )
    } else {
        Diagnostic::new(
            code::TLS_MIN12_HANDSHAKE_FAILED,
            Some(EventId::CannotConnect),
            format!("TLS handshake with {host}:{port} failed: {error}"),
            "make sure TLS 1.2 or later is enabled and nothing between connector and service terminates TLS",
        )
    }
}

/// The service refused the connector's client certificate: the alert it
/// sent, as a diagnostic. Under TLS 1.3 this arrives on the first read.
pub fn client_cert_alert(host: &str, port: u16, error: &TlsFailure) -> Option<Diagnostic> {
    let (finding, what, remedy) = match error.alert()? {
        AlertDescription::CertificateRevoked => (
            code::TLS_CLIENT_REVOKED,
            "is revoked",
            "the connector was deleted or its certificate revoked: register it again",
        ),
        AlertDescription::CertificateExpired => (
            code::TLS_CLIENT_EXPIRED,
            "has expired",
            "re-registration failed: trust certificate expired; register the connector again",
        ),
        AlertDescription::CertificateRequired | AlertDescription::BadCertificate | AlertDescription::UnknownCA => (
            code::TLS_CLIENT_REFUSED,
            "was not accepted",
            "if a proxy inspects TLS it cannot forward the certificate: exempt the service; else register again",
        ),
        _ => return None,
    };
    Some(Diagnostic::new(
        finding,
        Some(EventId::Certificate),
        format!("{host}:{port} refused the connector's client certificate: it {what} ({error})"),
        remedy,
    ))
}
