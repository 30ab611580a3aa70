//! A TLS failure as rustls reported it, kept as a value (the error, the
//! alert, the certificate error) all the way to the code that explains it:
//! findings are decided by matching variants, never by searching the text
//! of a `Debug` rendering.

use std::io;

use rustls::{AlertDescription, CertificateError, PeerIncompatible};

/// Why a TLS handshake or exchange failed.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsFailure {
    /// rustls refused, or was refused by the peer.
    Tls(rustls::Error),
    /// The transport failed under TLS (reset, closed, timed out).
    Io { kind: io::ErrorKind, text: String },
    /// The connection could not even be set up (e.g. an invalid name).
    Setup(String),
}

impl TlsFailure {
    /// The failure inside an I/O error of a TLS stream (tokio-rustls wraps
    /// rustls errors in `io::Error`).
    pub fn from_io(e: &io::Error) -> Self {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => TlsFailure::Tls(tls.clone()),
            None => TlsFailure::Io { kind: e.kind(), text: e.to_string() },
        }
    }

    /// The TLS failure under a hyper error, if one caused it (a refused
    /// client certificate arrives as an alert on the first read).
    pub fn from_hyper(e: &hyper::Error) -> Option<Self> {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                return Some(TlsFailure::from_io(io));
            }
            source = s.source();
        }
        None
    }

    /// The alert the peer sent, if that is what ended it.
    pub fn alert(&self) -> Option<AlertDescription> {
        match self {
            TlsFailure::Tls(rustls::Error::AlertReceived(a)) => Some(*a),
            _ => None,
        }
    }

    /// Why our verifier refused the peer's certificate, if it did.
    pub fn certificate(&self) -> Option<&CertificateError> {
        match self {
            TlsFailure::Tls(rustls::Error::InvalidCertificate(c)) => Some(c),
            _ => None,
        }
    }

    /// The peer's certificate is not valid at our clock's time.
    pub fn is_validity(&self) -> bool {
        matches!(
            self.certificate(),
            Some(
                CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. }
            )
        )
    }

    /// The peer's chain ends in no root we accept.
    pub fn is_unknown_issuer(&self) -> bool {
        matches!(self.certificate(), Some(CertificateError::UnknownIssuer))
    }

    /// The peer speaks no TLS version we offer (1.2 and 1.3): it answered
    /// with a protocol_version alert, or offered only older versions.
    pub fn is_old_peer(&self) -> bool {
        match self {
            TlsFailure::Tls(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)) => true,
            TlsFailure::Tls(rustls::Error::PeerIncompatible(p)) => matches!(
                p,
                PeerIncompatible::ServerDoesNotSupportTls12Or13
                    | PeerIncompatible::Tls12NotOffered
                    | PeerIncompatible::Tls12NotOfferedOrEnabled
                    | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
                    | PeerIncompatible::SupportedVersionsExtensionRequired
            ),
            _ => false,
        }
    }
}

/// rustls's own spelling of the error (`AlertReceived(CertificateRevoked)`),
/// which is what administrators search for; the transport's message else.
impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::Tls(e) => write!(f, "{e:?}"),
            TlsFailure::Io { text, .. } | TlsFailure::Setup(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_the_rustls_value() {
        let wrapped = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
        );
        let f = TlsFailure::from_io(&wrapped);
        assert_eq!(f.alert(), Some(AlertDescription::CertificateRevoked));
        assert_eq!(f.to_string(), "AlertReceived(CertificateRevoked)");
        let reset = TlsFailure::from_io(&io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(reset.alert(), None);
        assert!(matches!(reset, TlsFailure::Io { kind: io::ErrorKind::ConnectionReset, .. }));
    }

    #[test]
    fn kinds_are_told_by_variant() {
        let cert = |c| TlsFailure::Tls(rustls::Error::InvalidCertificate(c));
        assert!(cert(CertificateError::Expired).is_validity());
        assert!(cert(CertificateError::NotValidYet).is_validity());
        assert!(!cert(CertificateError::UnknownIssuer).is_validity());
        assert!(cert(CertificateError::UnknownIssuer).is_unknown_issuer());
        assert!(TlsFailure::Tls(rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)).is_old_peer());
        assert!(
            !TlsFailure::Tls(rustls::Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon)).is_old_peer()
        );
        // Text that merely mentions a kind is not that kind.
        assert!(!TlsFailure::Setup("Expired UnknownIssuer ProtocolVersion".into()).is_validity());
    }
}
