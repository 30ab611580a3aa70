//! Which roots the connector accepts for the service, and how a refused
//! handshake is explained.
//!
//! The host's trust store may hold anything an administrator installed —
//! including the enterprise CA of a TLS inspection box. The connector
//! accepts for the service only the roots the service uses that the host
//! also trusts (`service_roots ∩ host_roots`). So an inspection box's
//! re-signed chain is refused even on a host that trusts it
//! (NET-NOINSPECT), and after the service moves to a new root a host
//! without it fails with a diagnostic naming the missing root (TLS-ROOTS).
//! The verifier records the chain each server presented, so a refusal can
//! name the issuer that was seen.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::cert::{display_name, CertInfo};
use super::revocation::{skew_diagnostic, Revocation, RevocationPolicy};
use crate::code::{self, EventId};
use crate::diag::Diagnostic;
use crate::tls_failure::TlsFailure;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a trust configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the host trusts none of the roots the service uses ({service}): install them")]
    NoCommonRoot { service: String },
    #[error("a trusted root cannot be used: {0}")]
    BadRoot(String),
}

fn subject(der: &CertificateDer<'_>) -> String {
    X509Certificate::from_der(der).map(|(_, c)| display_name(c.subject())).unwrap_or_else(|_| "(unreadable)".into())
}

/// The trust a connector applies to the service's certificates.
pub struct Trust {
    /// What the host's store trusts.
    pub host_roots: Vec<CertificateDer<'static>>,
    /// The roots the service is known to use; empty = accept the host's.
    pub service_roots: Vec<CertificateDer<'static>>,
    /// `service_roots ∩ host_roots`: the anchors of every service chain.
    pub anchors: Arc<RootCertStore>,
    pub revocation: Revocation,
    verifier: Arc<ServiceVerifier>,
}

impl Trust {
    pub fn new(
        host_roots: Vec<CertificateDer<'static>>,
        service_roots: Vec<CertificateDer<'static>>,
        policy: RevocationPolicy,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Trust, TrustError> {
        let accepted: Vec<CertificateDer<'static>> = if service_roots.is_empty() {
            host_roots.clone()
        } else {
            host_roots.iter().filter(|r| service_roots.contains(r)).cloned().collect()
        };
        let mut anchors = RootCertStore::empty();
        for root in &accepted {
            anchors.add(root.clone()).map_err(|e| TrustError::BadRoot(format!("{}: {e}", subject(root))))?;
        }
        if anchors.is_empty() {
            let names = service_roots.iter().chain(&host_roots).map(subject).collect::<Vec<_>>();
            return Err(TrustError::NoCommonRoot { service: names.join(", ") });
        }
        let anchors = Arc::new(anchors);
        let inner = WebPkiServerVerifier::builder_with_provider(anchors.clone(), provider)
            .build()
            .map_err(|e| TrustError::BadRoot(e.to_string()))?;
        Ok(Trust {
            host_roots,
            service_roots,
            anchors,
            revocation: Revocation::new(policy),
            verifier: Arc::new(ServiceVerifier { inner, seen: Mutex::default() }),
        })
    }

    /// The certificate verifier for service connections.
    pub fn verifier(&self) -> Arc<dyn ServerCertVerifier> {
        self.verifier.clone()
    }

    /// The chain `host` presented in its last handshake.
    pub fn seen_chain(&self, host: &str) -> Option<Vec<CertificateDer<'static>>> {
        self.verifier.seen.lock().unwrap_or_else(|e| e.into_inner()).get(host).cloned()
    }

    /// The diagnostic for a failed handshake with `host:port`.
    pub fn explain(&self, host: &str, port: u16, error: &TlsFailure, now: std::time::SystemTime) -> Diagnostic {
        let chain = self.seen_chain(host).unwrap_or_default();
        if error.is_unknown_issuer() {
            return self.explain_unknown_issuer(host, port, &chain, error);
        }
        if error.is_validity() {
            if let Some((ahead_s, via)) = self.revocation.observed_skew() {
                return skew_diagnostic(ahead_s, &via, host);
            }
            let window = chain
                .first()
                .and_then(|c| CertInfo::parse(c, "leaf").ok())
                .map(|i| {
                    format!(
                        "; it is valid from {} to {}, and the host clock says {}",
                        httpdate::fmt_http_date(i.not_before),
                        httpdate::fmt_http_date(i.not_after),
                        httpdate::fmt_http_date(now)
                    )
                })
                .unwrap_or_default();
            return Diagnostic::new(
                code::TLS_TIME_VALIDITY,
                Some(EventId::Certificate),
                format!("the certificate of {host}:{port} is not valid at the host's time ({error}){window}"),
                "check the connector host's clock",
            );
        }
        crate::diag::tls_failure(host, port, error)
    }

    fn explain_unknown_issuer(
        &self,
        host: &str,
        port: u16,
        chain: &[CertificateDer<'static>],
        error: &TlsFailure,
    ) -> Diagnostic {
        let issuer = chain
            .last()
            .and_then(|c| X509Certificate::from_der(c).ok().map(|(_, c)| display_name(c.issuer())))
            .unwrap_or_else(|| "(no certificate seen)".into());
        let host_trusts = self.host_roots.iter().any(|r| subject(r) == issuer);
        let service_uses = self.service_roots.iter().any(|r| subject(r) == issuer);
        if host_trusts && !service_uses && !self.service_roots.is_empty() {
            return Diagnostic::new(code::NET_NOINSPECT_INSPECTION_DETECTED, Some(EventId::Certificate),
                format!(
                    "TLS inspection detected: the certificate presented for {host}:{port} was issued by {issuer:?}, a CA this host trusts but the service never uses; the connection is refused"
                ),
                format!("exempt {host} (and the service's other names) from TLS inspection on the proxy or firewall"),
            );
        }
        if service_uses {
            return Diagnostic::new(code::TLS_ROOTS_UNTRUSTED_ISSUER, Some(EventId::Certificate),
                format!(
                    "the certificate of {host}:{port} chains to {issuer:?}, a root the service now uses that this host does not trust ({error})"
                ),
                format!("install {issuer:?} in the connector host's trusted root store"),
            );
        }
        Diagnostic::new(code::TLS_ROOTS_UNTRUSTED_ISSUER, Some(EventId::Certificate),
            format!(
                "the certificate of {host}:{port} was issued by {issuer:?}, which is neither a root of the service nor trusted by this host ({error})"
            ),
            "install the service's current roots; if a device re-signs TLS, exempt the service from inspection",
        )
    }
}

/// webpki's server verification, recording each presented chain.
#[derive(Debug)]
struct ServiceVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<BTreeMap<String, Vec<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for ServiceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<CertificateDer<'static>> =
            std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(server_name.to_str().into_owned(), chain);
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
