//! OCSP (RFC 6960) with the RustCrypto `x509-ocsp` types: the request the
//! connector sends, and the checks on the answer — response status, signer
//! (the issuing CA, or a responder it delegated with the OCSP-signing EKU),
//! signature, that the answer is about the certificate asked for, and its
//! validity window. Every failure is a typed [`OcspError`].

use std::time::{Duration, SystemTime};

use const_oid::db::rfc5280::ID_KP_OCSP_SIGNING;
use const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC;
use der::asn1::{Null, OctetString};
use der::{Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request, TbsRequest,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// SHA-1, the hash of CertIDs (what every responder understands).
const SHA1_OID: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

/// How far an answer's `thisUpdate` may be ahead of our clock before it is
/// "not yet valid": 5 minutes, the default of OpenSSL's `OCSP_check_validity`
/// callers (`MAX_VALIDITY_PERIOD`) and of Apache's `SSLOCSPResponseTimeSkew`.
/// Responders also backdate `thisUpdate` (a Microsoft CA by its
/// `ClockSkewMinutes`, 10 minutes by default), so a host clock up to about
/// 15 minutes behind still accepts a fresh answer.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(300);

/// What an OCSP answer says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspStatus {
    Good,
    Revoked { at: SystemTime, reason: Option<String> },
    Unknown,
}

/// A verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspAnswer {
    pub status: OcspStatus,
    pub this_update: SystemTime,
    pub next_update: Option<SystemTime>,
}

/// Why an OCSP answer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    #[error("not a DER OCSP response: {0}")]
    Malformed(String),
    #[error("responder answered {0:?}")]
    Status(String),
    #[error("response type is not id-pkix-ocsp-basic")]
    NotBasic,
    #[error("response signature does not verify with the issuer's or a delegated responder's key")]
    BadSignature,
    #[error("answer is about serial {got}, not {wanted}")]
    WrongCertificate { wanted: String, got: String },
    #[error("answer not valid yet (thisUpdate {this_update_s}s after our clock)")]
    NotYetValid { this_update_s: u64 },
    #[error("answer expired (nextUpdate passed {ago_s}s ago)")]
    Expired { ago_s: u64 },
    #[error("cannot build the request: {0}")]
    Request(String),
}

fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data).as_ref().to_vec()
}

/// The SHA-1 hashes of an issuer's subject name and key that CertIDs
/// carry (what a responder matches requests on).
pub fn issuer_hashes(issuer_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), OcspError> {
    let issuer = Certificate::from_der(issuer_der).map_err(|e| OcspError::Request(format!("issuer: {e}")))?;
    let name = issuer.tbs_certificate.subject.to_der().map_err(|e| OcspError::Request(e.to_string()))?;
    let key = issuer.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    Ok((sha1(&name), sha1(key)))
}

/// The CertID of `cert` issued by `issuer` (both DER).
pub fn cert_id(cert_der: &[u8], issuer_der: &[u8]) -> Result<CertId, OcspError> {
    let cert = Certificate::from_der(cert_der).map_err(|e| OcspError::Request(format!("certificate: {e}")))?;
    let (name_hash, key_hash) = issuer_hashes(issuer_der)?;
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned { oid: SHA1_OID, parameters: Some(Null.into()) },
        issuer_name_hash: OctetString::new(name_hash).map_err(|e| OcspError::Request(e.to_string()))?,
        issuer_key_hash: OctetString::new(key_hash).map_err(|e| OcspError::Request(e.to_string()))?,
        serial_number: cert.tbs_certificate.serial_number,
    })
}

/// Hex serial of a CertID.
pub fn serial_hex(id: &CertId) -> String {
    crate::package::hex(id.serial_number.as_bytes())
}

/// A DER OCSP request for one certificate.
pub fn request_der(id: &CertId) -> Result<Vec<u8>, OcspError> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Default::default(),
            requestor_name: None,
            request_list: vec![Request { req_cert: id.clone(), single_request_extensions: None }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| OcspError::Request(e.to_string()))
}

fn to_system(t: &x509_ocsp::OcspGeneralizedTime) -> SystemTime {
    t.0.to_system_time()
}

/// Verifies `signature` over `data` with the key of `signer_der`.
fn signed_by(signer_der: &[u8], alg: &AlgorithmIdentifierOwned, signature: &[u8], data: &[u8]) -> bool {
    let Ok((_, signer)) = X509Certificate::from_der(signer_der) else { return false };
    let Ok(alg_der) = alg.to_der() else { return false };
    let Ok((_, alg)) = x509_parser::x509::AlgorithmIdentifier::from_der(&alg_der) else { return false };
    let sig = x509_parser::der_parser::asn1_rs::BitString::new(0, signature);
    x509_parser::verify::verify_signature(signer.public_key(), &alg, &sig, data).is_ok()
}

/// A delegated responder: issued by `issuer_der` and carrying the
/// OCSP-signing extended key usage.
fn is_delegated_responder(responder_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, responder)), Ok((_, issuer))) =
        (X509Certificate::from_der(responder_der), X509Certificate::from_der(issuer_der))
    else {
        return false;
    };
    let eku_ok = responder.extended_key_usage().ok().flatten().is_some_and(|eku| {
        eku.value.ocsp_signing || eku.value.other.iter().any(|o| o.to_id_string() == ID_KP_OCSP_SIGNING.to_string())
    });
    eku_ok && responder.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Checks a DER OCSP response for `id`, issued by `issuer_der`, at `now`.
pub fn verify(response_der: &[u8], id: &CertId, issuer_der: &[u8], now: SystemTime) -> Result<OcspAnswer, OcspError> {
    let resp = OcspResponse::from_der(response_der).map_err(|e| OcspError::Malformed(e.to_string()))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Status(format!("{:?}", resp.response_status)));
    }
    let bytes = resp.response_bytes.ok_or_else(|| OcspError::Malformed("successful but no responseBytes".into()))?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(OcspError::NotBasic);
    }
    let basic =
        BasicOcspResponse::from_der(bytes.response.as_bytes()).map_err(|e| OcspError::Malformed(e.to_string()))?;
    let tbs = basic.tbs_response_data.to_der().map_err(|e| OcspError::Malformed(e.to_string()))?;
    let signature = basic.signature.raw_bytes();
    let by_issuer = signed_by(issuer_der, &basic.signature_algorithm, signature, &tbs);
    let by_delegate = !by_issuer
        && basic.certs.iter().flatten().any(|c| {
            c.to_der().is_ok_and(|der| {
                is_delegated_responder(&der, issuer_der) && signed_by(&der, &basic.signature_algorithm, signature, &tbs)
            })
        });
    if !by_issuer && !by_delegate {
        return Err(OcspError::BadSignature);
    }
    let responses = &basic.tbs_response_data.responses;
    let single = responses
        .iter()
        .find(|r| {
            r.cert_id.serial_number == id.serial_number
                && r.cert_id.issuer_name_hash == id.issuer_name_hash
                && r.cert_id.issuer_key_hash == id.issuer_key_hash
        })
        .ok_or_else(|| OcspError::WrongCertificate {
            wanted: serial_hex(id),
            got: responses.iter().map(|r| serial_hex(&r.cert_id)).collect::<Vec<_>>().join(", "),
        })?;
    let this_update = to_system(&single.this_update);
    if let Ok(ahead) = this_update.duration_since(now) {
        if ahead > CLOCK_TOLERANCE {
            return Err(OcspError::NotYetValid { this_update_s: ahead.as_secs() });
        }
    }
    let next_update = single.next_update.as_ref().map(to_system);
    if let Some(next) = next_update {
        if let Ok(ago) = now.duration_since(next) {
            return Err(OcspError::Expired { ago_s: ago.as_secs() });
        }
    }
    let status = match &single.cert_status {
        CertStatus::Good(_) => OcspStatus::Good,
        CertStatus::Revoked(info) => OcspStatus::Revoked {
            at: to_system(&info.revocation_time),
            reason: info.revocation_reason.map(|r| format!("{r:?}")),
        },
        CertStatus::Unknown(_) => OcspStatus::Unknown,
    };
    Ok(OcspAnswer { status, this_update, next_update })
}
