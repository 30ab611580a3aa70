//! What the connector reads from a certificate: names for diagnostics,
//! validity, and where its revocation status is published (CRL distribution
//! points, the OCSP responder of its Authority Information Access).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// A certificate that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate {what}: {reason}")]
pub struct CertError {
    /// Which certificate (`leaf`, `issuer #1`, ...).
    pub what: String,
    pub reason: String,
}

/// The facts of one certificate the connector uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject common name (or the whole DN when there is none).
    pub subject: String,
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// `http://` CRL distribution points, in certificate order.
    pub crl_urls: Vec<String>,
    /// `http://` OCSP responders, in certificate order.
    pub ocsp_urls: Vec<String>,
}

/// The common name of `name`, else its whole text.
pub fn display_name(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| name.to_string())
}

fn time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

impl CertInfo {
    /// Parses a DER certificate; `what` names it in errors.
    pub fn parse(der: &[u8], what: &str) -> Result<CertInfo, CertError> {
        let err = |reason: String| CertError { what: what.to_string(), reason };
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| err(format!("not a valid X.509 DER: {e}")))?;
        if !rest.is_empty() {
            return Err(err(format!("{} bytes of trailing data", rest.len())));
        }
        let mut crl_urls = Vec::new();
        let mut ocsp_urls = Vec::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(points) => {
                    for point in &points.points {
                        if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                            for name in names {
                                if let GeneralName::URI(uri) = name {
                                    if uri.starts_with("http://") {
                                        crl_urls.push(uri.to_string());
                                    }
                                }
                            }
                        }
                    }
                }
                ParsedExtension::AuthorityInfoAccess(aia) => {
                    for desc in &aia.accessdescs {
                        if desc.access_method == OID_PKIX_ACCESS_DESCRIPTOR_OCSP {
                            if let GeneralName::URI(uri) = &desc.access_location {
                                if uri.starts_with("http://") {
                                    ocsp_urls.push(uri.to_string());
                                }
                            }
                        }
                    }
                }
                ParsedExtension::ParseError { error } => {
                    return Err(err(format!("extension {}: {error}", ext.oid)));
                }
                _ => {}
            }
        }
        Ok(CertInfo {
            subject: display_name(cert.subject()),
            issuer: display_name(cert.issuer()),
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            crl_urls,
            ocsp_urls,
        })
    }
}

/// Lower-case hex SHA-256 of `data` (certificate fingerprints).
pub fn sha256_hex(data: &[u8]) -> String {
    crate::package::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_typed_error() {
        let e = CertInfo::parse(b"\x30\x03\x02\x01", "leaf").unwrap_err();
        assert_eq!(e.what, "leaf");
    }
}
