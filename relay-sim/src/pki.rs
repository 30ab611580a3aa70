//! The cloud's PKI, generated per world from its entropy.
//!
//! Two root generations, as when the service moved roots (TLS-ROOTS): the
//! old "Baltimore CyberTrust Root" and the new "DigiCert Global Root G2",
//! each with an issuing intermediate and one server certificate per service
//! host name. Every certificate names where its revocation status is
//! published — a CRL distribution point and an OCSP responder on port 80
//! at the spec's host names (NET-CRL) — and this module answers for them:
//! CRLs (rcgen) and OCSP responses (x509-ocsp), signed by the issuing CA.
//! A separate connector-registration CA signs connectors' CSRs and keeps
//! its own revocation list, checked by the relay and bootstrap services.
//! An enterprise CA stands for a TLS inspection box's re-signing CA.
//!
//! All keys are Ed25519: deterministic signatures (see `connector::identity`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use connector::allowlist::Environment;
use connector::env::Entropy;
use connector::identity::generate_key;
use der::asn1::{GeneralizedTime, Ia5String, OctetString};
use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    CertifiedIssuer, CrlDistributionPoint, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, SigningKey,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, OcspResponseStatus,
    ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse, Version,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("CSR refused: {0}")]
    BadCsr(String),
    #[error("connector key: {0}")]
    Key(String),
    #[error("encoding: {0}")]
    Der(String),
}

impl From<der::Error> for PkiError {
    fn from(e: der::Error) -> Self {
        PkiError::Der(e.to_string())
    }
}

/// A root generation of the service's certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Generation {
    /// Baltimore CyberTrust Root (the service's old root).
    Baltimore,
    /// DigiCert Global Root G2 (the root the service moved to).
    DigicertG2,
}

/// Deliberate faults of the revocation servers, for bad-input scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationFault {
    /// CRLs are random bytes.
    GarbageCrl,
    /// CRLs are cut in half.
    TruncatedCrl,
    /// CRLs are padded past any sane size (2 MiB).
    OversizedCrl,
    /// OCSP answers are signed with another CA's key.
    OcspWrongKey,
    /// OCSP answers speak about another serial.
    OcspWrongSerial,
}

/// A certificate chain (leaf first, root excluded) and its key.
#[derive(Clone)]
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
    serial: u64,
}

impl ServerIdentity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// A certificate authority: its certificate and key, where it publishes
/// revocation data, and what it issued and revoked.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    key_der: Vec<u8>,
    /// CRL of the certificates this CA issues.
    crl_url: Option<String>,
    /// OCSP responder for the certificates this CA issues.
    ocsp_url: Option<String>,
    issued: BTreeSet<u64>,
    revoked: BTreeMap<u64, SystemTime>,
}

impl Ca {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(self.key_der.clone()),
            &rcgen::PKCS_ED25519,
        )?;
        Ok(key.sign(msg)?)
    }

    /// SHA-1 of the subject name and of the key, as OCSP CertIDs carry them.
    fn id_hashes(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        connector::pki::ocsp::issuer_hashes(self.issuer.der()).ok()
    }
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

/// How far back the CA dates what it signs: certificates' `notBefore`,
/// CRLs' `thisUpdate`, OCSP answers' `thisUpdate`. A Microsoft CA backdates
/// certificates and CRLs by its `ClockSkewMinutes` setting, 10 minutes by
/// default (TechNet wiki "How ThisUpdate, NextUpdate and NextCRLPublish are
/// calculated"; "The case about actual certificate signing time"), so that a
/// host whose clock is a few minutes behind can use them at once. OCSP
/// answers get the same margin here. Validity ends are not moved.
pub const BACKDATE: Duration = Duration::from_secs(600);

fn validity(params: &mut CertificateParams, from: SystemTime, lifetime: Duration) {
    params.not_before = time::OffsetDateTime::from(from - BACKDATE);
    params.not_after = time::OffsetDateTime::from(from + lifetime);
}

const DAY: Duration = Duration::from_secs(86_400);
const OID_AUTHORITY_INFO_ACCESS: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 1, 1];

/// The AIA extension naming an OCSP responder.
fn aia_extension(ocsp_url: &str) -> Result<CustomExtension, PkiError> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: const_oid::db::rfc5280::ID_AD_OCSP,
        access_location: GeneralName::UniformResourceIdentifier(Ia5String::new(ocsp_url)?),
    }]);
    Ok(CustomExtension::from_oid_content(&OID_AUTHORITY_INFO_ACCESS, aia.to_der()?))
}

/// Points a certificate at its issuer's revocation data.
fn publish_revocation(p: &mut CertificateParams, issuer: &Ca) -> Result<(), PkiError> {
    if let Some(url) = &issuer.crl_url {
        p.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![url.clone()] }];
    }
    if let Some(url) = &issuer.ocsp_url {
        p.custom_extensions.push(aia_extension(url)?);
    }
    Ok(())
}

fn ca_params(cn: &str, org: &str, now: SystemTime, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn, org);
    p.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, now - 365 * DAY, 20 * 365 * DAY);
    p
}

/// One root generation: root → issuing intermediate → server certificates.
struct Hierarchy {
    root: Ca,
    intermediate: Ca,
    servers: BTreeMap<String, ServerIdentity>,
}

/// Names and publication points of a generation.
struct Layout {
    root: (&'static str, &'static str),
    root_crl: &'static str,
    root_ocsp: &'static str,
    intermediate: (&'static str, &'static str),
    intermediate_crl: &'static str,
    intermediate_ocsp: &'static str,
}

fn layout(g: Generation) -> Layout {
    match g {
        Generation::Baltimore => Layout {
            root: ("Baltimore CyberTrust Root", "Baltimore"),
            root_crl: "http://crl3.digicert.com/Omniroot2025.crl",
            root_ocsp: "http://ocsp.digicert.com",
            intermediate: ("Microsoft RSA TLS CA 01", "Microsoft Corporation"),
            intermediate_crl: "http://crl.microsoft.com/pki/mscorp/crl/msrsatlsca01.crl",
            intermediate_ocsp: "http://ocsp.msocsp.com",
        },
        Generation::DigicertG2 => Layout {
            root: ("DigiCert Global Root G2", "DigiCert Inc"),
            root_crl: "http://crl4.digicert.com/DigiCertGlobalRootG2.crl",
            root_ocsp: "http://ocsp.digicert.com",
            intermediate: ("Microsoft Azure RSA TLS Issuing CA 03", "Microsoft Corporation"),
            intermediate_crl: "http://crl.microsoft.com/pkiops/crl/azurersatlsca03.crl",
            intermediate_ocsp: "http://oneocsp.microsoft.com/ocsp",
        },
    }
}

/// Every host name that serves revocation data (port 80), both clouds, sorted.
pub const REVOCATION_HOSTS: [&str; 9] = [
    "crl.microsoft.com",
    "crl.microsoft.us",
    "crl3.digicert.com",
    "crl4.digicert.com",
    "mscrl.microsoft.us",
    "ocsp.digicert.com",
    "ocsp.msocsp.com",
    "ocsp.msocsp.us",
    "oneocsp.microsoft.com",
];

/// Where `url` is published in `cloud`: the government cloud's allow-list
/// names its own CRL and OCSP hosts, so its certificates point there.
fn published_in(cloud: Environment, url: &str) -> String {
    if cloud == Environment::Public {
        return url.to_string();
    }
    let gov_host = |host: &str| match host {
        "crl3.digicert.com" | "crl4.digicert.com" => "crl.microsoft.us",
        "crl.microsoft.com" => "mscrl.microsoft.us",
        _ => "ocsp.msocsp.us",
    };
    match url.strip_prefix("http://").and_then(|rest| rest.split_once('/').or(Some((rest, "")))) {
        Some((host, "")) => format!("http://{}", gov_host(host)),
        Some((host, path)) => format!("http://{}/{path}", gov_host(host)),
        None => url.to_string(),
    }
}

/// Timers of the PKI.
#[derive(Debug, Clone, Copy)]
pub struct PkiTimers {
    /// Lifetime of connector client certificates.
    pub client_cert_lifetime: Duration,
    /// `nextUpdate - thisUpdate` of every CRL.
    pub crl_validity: Duration,
    /// `nextUpdate - thisUpdate` of every OCSP answer.
    pub ocsp_validity: Duration,
}

impl Default for PkiTimers {
    fn default() -> Self {
        PkiTimers { client_cert_lifetime: 180 * DAY, crl_validity: 7 * DAY, ocsp_validity: 4 * DAY }
    }
}

/// The whole PKI of one simulated cloud.
pub struct Pki {
    entropy: Arc<dyn Entropy>,
    hierarchies: BTreeMap<Generation, Hierarchy>,
    current: Generation,
    connector_ca: Ca,
    connector_serials: BTreeMap<String, Vec<u64>>,
    enterprise: Ca,
    forged: BTreeMap<String, ServerIdentity>,
    next_serial: u64,
    pub timers: PkiTimers,
    pub faults: BTreeSet<RevocationFault>,
}

impl Pki {
    /// Generates both root generations with a server certificate for each
    /// of `hosts`, the connector CA, and an enterprise CA named
    /// `enterprise_ca` (what an inspection box re-signs with).
    pub fn generate(
        entropy: Arc<dyn Entropy>,
        now: SystemTime,
        hosts: &[String],
        enterprise_ca: &str,
        timers: PkiTimers,
        cloud: Environment,
    ) -> Result<Pki, PkiError> {
        let key = |e: &dyn Entropy| generate_key(e).map_err(|e| PkiError::Key(e.to_string()));
        let ca = |issuer, key_der, crl_url: Option<&str>, ocsp_url: Option<&str>| Ca {
            issuer,
            key_der,
            crl_url: crl_url.map(|u| published_in(cloud, u)),
            ocsp_url: ocsp_url.map(|u| published_in(cloud, u)),
            issued: BTreeSet::new(),
            revoked: BTreeMap::new(),
        };
        let self_signed =
            |p: CertificateParams, e: &dyn Entropy| -> Result<(CertifiedIssuer<'static, KeyPair>, Vec<u8>), PkiError> {
                let k = key(e)?;
                let der = k.serialize_der();
                Ok((CertifiedIssuer::self_signed(p, k)?, der))
            };
        let mut hierarchies = BTreeMap::new();
        let mut next_serial = 0x1000u64;
        for g in [Generation::Baltimore, Generation::DigicertG2] {
            let l = layout(g);
            let (root_issuer, root_key) = self_signed(ca_params(l.root.0, l.root.1, now, None), entropy.as_ref())?;
            let mut root = ca(root_issuer, root_key, Some(l.root_crl), Some(l.root_ocsp));
            let mut p = ca_params(l.intermediate.0, l.intermediate.1, now, Some(0));
            next_serial += 1;
            p.serial_number = Some(SerialNumber::from(next_serial));
            publish_revocation(&mut p, &root)?;
            let k = key(entropy.as_ref())?;
            let k_der = k.serialize_der();
            let intermediate_issuer = CertifiedIssuer::signed_by(p, k, &root.issuer)?;
            root.issued.insert(next_serial);
            let intermediate = ca(intermediate_issuer, k_der, Some(l.intermediate_crl), Some(l.intermediate_ocsp));
            hierarchies.insert(g, Hierarchy { root, intermediate, servers: BTreeMap::new() });
        }
        let (cc, cc_key) = self_signed(
            ca_params("Microsoft AAD AppProxy Connector CA", "Microsoft Corporation", now, Some(0)),
            entropy.as_ref(),
        )?;
        let (ent, ent_key) = self_signed(ca_params(enterprise_ca, "Contoso Ltd", now, None), entropy.as_ref())?;
        let mut pki = Pki {
            entropy,
            hierarchies,
            current: Generation::Baltimore,
            connector_ca: ca(cc, cc_key, None, None),
            connector_serials: BTreeMap::new(),
            enterprise: ca(ent, ent_key, None, None),
            forged: BTreeMap::new(),
            next_serial,
            timers,
            faults: BTreeSet::new(),
        };
        for g in [Generation::Baltimore, Generation::DigicertG2] {
            for host in hosts {
                let id = pki.issue_server(g, now, host)?;
                if let Some(h) = pki.hierarchies.get_mut(&g) {
                    h.servers.insert(host.clone(), id);
                }
            }
        }
        Ok(pki)
    }

    fn serial(&mut self) -> (u64, SerialNumber) {
        self.next_serial += 1;
        (self.next_serial, SerialNumber::from(self.next_serial))
    }

    fn hierarchy(&self, g: Generation) -> &Hierarchy {
        // Both generations are made in `generate`.
        &self.hierarchies[&g]
    }

    fn issue_server(&mut self, g: Generation, now: SystemTime, host: &str) -> Result<ServerIdentity, PkiError> {
        let key = generate_key(self.entropy.as_ref()).map_err(|e| PkiError::Key(e.to_string()))?;
        let (serial, serial_number) = self.serial();
        let mut p = CertificateParams::new(vec![host.to_string()])?;
        p.distinguished_name = dn(host, "Microsoft Corporation");
        p.serial_number = Some(serial_number);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        validity(&mut p, now - 30 * DAY, 395 * DAY);
        let h = self.hierarchies.get_mut(&g).ok_or_else(|| PkiError::Key("unknown generation".into()))?;
        publish_revocation(&mut p, &h.intermediate)?;
        let cert = p.signed_by(&key, &h.intermediate.issuer)?;
        h.intermediate.issued.insert(serial);
        Ok(ServerIdentity {
            chain: vec![cert.der().clone(), h.intermediate.issuer.der().clone()],
            key_der: key.serialize_der(),
            serial,
        })
    }

    /// The generation the service's chains currently come from.
    pub fn current(&self) -> Generation {
        self.current
    }

    /// Moves every service host to `g`'s chains (TLS-ROOTS).
    pub fn rotate_to(&mut self, g: Generation) {
        self.current = g;
    }

    /// The server identity for `host` in the current generation.
    pub fn server(&self, host: &str) -> Option<&ServerIdentity> {
        self.hierarchy(self.current).servers.get(host)
    }

    /// A certificate for `host` re-signed by the enterprise CA, as an
    /// inspection box makes it (made on first use, then kept).
    pub fn forged(&mut self, host: &str, now: SystemTime) -> Result<ServerIdentity, PkiError> {
        if let Some(id) = self.forged.get(host) {
            return Ok(id.clone());
        }
        let key = generate_key(self.entropy.as_ref()).map_err(|e| PkiError::Key(e.to_string()))?;
        let (serial, serial_number) = self.serial();
        let mut p = CertificateParams::new(vec![host.to_string()])?;
        p.distinguished_name = dn(host, "Microsoft Corporation");
        p.serial_number = Some(serial_number);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut p, now - DAY, 30 * DAY);
        let cert = p.signed_by(&key, &self.enterprise.issuer)?;
        let id = ServerIdentity { chain: vec![cert.der().clone()], key_der: key.serialize_der(), serial };
        self.forged.insert(host.to_string(), id.clone());
        Ok(id)
    }

    /// Root certificates: the service's roots of both generations, in
    /// generation order.
    pub fn service_roots(&self) -> Vec<CertificateDer<'static>> {
        self.hierarchies.values().map(|h| h.root.issuer.der().clone()).collect()
    }

    pub fn root_der(&self, g: Generation) -> CertificateDer<'static> {
        self.hierarchy(g).root.issuer.der().clone()
    }

    pub fn root_pem(&self, g: Generation) -> String {
        self.hierarchy(g).root.issuer.pem()
    }

    /// The enterprise (inspection) CA's certificate.
    pub fn enterprise_root_der(&self) -> CertificateDer<'static> {
        self.enterprise.issuer.der().clone()
    }

    /// The CA relay and bootstrap check client certificates against.
    pub fn connector_ca_der(&self) -> CertificateDer<'static> {
        self.connector_ca.issuer.der().clone()
    }

    /// Revokes `host`'s certificate of the current generation.
    pub fn revoke_server(&mut self, host: &str, now: SystemTime) -> bool {
        let g = self.current;
        let Some(serial) = self.hierarchy(g).servers.get(host).map(|s| s.serial) else { return false };
        self.hierarchies.get_mut(&g).is_some_and(|h| h.intermediate.revoked.insert(serial, now).is_none())
    }

    /// Revokes every certificate issued to `connector_id`.
    pub fn revoke_connector(&mut self, connector_id: &str, now: SystemTime) -> usize {
        let serials = self.connector_serials.get(connector_id).cloned().unwrap_or_default();
        serials.iter().filter(|s| self.connector_ca.revoked.insert(**s, now).is_none()).count()
    }

    /// The connector CA's CRL (DER), for the services' client verifiers.
    pub fn connector_crl(&self, now: SystemTime) -> Result<Vec<u8>, PkiError> {
        crl_of(&self.connector_ca, now, self.timers.crl_validity)
    }

    /// Signs a connector's CSR: the subject becomes the connector id, the
    /// certificate is for client authentication only, valid from `now` for
    /// the client certificate lifetime. Whatever the CSR asked for (CA flags,
    /// key usages, validity) is overwritten.
    pub fn sign_connector_csr(
        &mut self,
        csr_pem: &str,
        connector_id: &str,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let (serial, serial_number) = self.serial();
        let p = &mut csr.params;
        p.distinguished_name = dn(connector_id, "AppProxy Connector");
        p.subject_alt_names = Vec::new();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.crl_distribution_points = Vec::new();
        p.custom_extensions = Vec::new();
        p.name_constraints = None;
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(serial_number);
        // Five minutes of slack for clocks behind the service's.
        let slack = Duration::from_secs(300);
        validity(p, now - slack, self.timers.client_cert_lifetime + slack);
        let cert = csr.signed_by(&self.connector_ca.issuer)?;
        self.connector_ca.issued.insert(serial);
        self.connector_serials.entry(connector_id.to_string()).or_default().push(serial);
        Ok(cert.pem())
    }

    fn cas(&self) -> impl Iterator<Item = &Ca> {
        self.hierarchies.values().flat_map(|h| [&h.root, &h.intermediate])
    }

    /// The CRL published at `url` (DER), signed now, or `None` if nothing
    /// is published there.
    pub fn crl_at(&self, url: &str, now: SystemTime) -> Option<Result<Vec<u8>, PkiError>> {
        let ca = self.cas().find(|c| c.crl_url.as_deref() == Some(url))?;
        let crl = crl_of(ca, now, self.timers.crl_validity);
        Some(crl.map(|der| self.spoil_crl(der)))
    }

    fn spoil_crl(&self, mut der: Vec<u8>) -> Vec<u8> {
        if self.faults.contains(&RevocationFault::GarbageCrl) {
            let mut junk = vec![0u8; der.len()];
            self.entropy.fill(&mut junk);
            return junk;
        }
        if self.faults.contains(&RevocationFault::TruncatedCrl) {
            der.truncate(der.len() / 2);
        }
        if self.faults.contains(&RevocationFault::OversizedCrl) {
            der.resize(2 << 20, 0);
        }
        der
    }

    /// Answers a DER OCSP request (RFC 6960) at `now`.
    pub fn ocsp_answer(&self, request_der: &[u8], now: SystemTime) -> Result<(Vec<u8>, String), PkiError> {
        let failure = |status| -> Result<(Vec<u8>, String), PkiError> {
            let resp = OcspResponse { response_status: status, response_bytes: None };
            Ok((resp.to_der()?, format!("{status:?}")))
        };
        let Ok(request) = OcspRequest::from_der(request_der) else {
            return failure(OcspResponseStatus::MalformedRequest);
        };
        let Some(single) = request.tbs_request.request_list.first() else {
            return failure(OcspResponseStatus::MalformedRequest);
        };
        let id = &single.req_cert;
        let issuer = self.cas().chain(std::iter::once(&self.connector_ca)).find(|ca| {
            ca.id_hashes().is_some_and(|(name, key)| {
                name == id.issuer_name_hash.as_bytes() && key == id.issuer_key_hash.as_bytes()
            })
        });
        let Some(ca) = issuer else {
            return failure(OcspResponseStatus::Unauthorized);
        };
        let serial = serial_u64(id.serial_number.as_bytes());
        let (status, word) = match serial.and_then(|s| ca.revoked.get(&s).map(|at| (s, *at))) {
            Some((_, at)) => (
                CertStatus::revoked(RevokedInfo {
                    revocation_time: OcspGeneralizedTime(GeneralizedTime::from_system_time(at)?),
                    revocation_reason: Some(x509_cert::ext::pkix::CrlReason::KeyCompromise),
                }),
                "revoked",
            ),
            None if serial.is_some_and(|s| ca.issued.contains(&s)) => (CertStatus::good(), "good"),
            None => (CertStatus::unknown(), "unknown"),
        };
        let mut cert_id: CertId = id.clone();
        if self.faults.contains(&RevocationFault::OcspWrongSerial) {
            let other = serial.unwrap_or(0).wrapping_add(1);
            cert_id.serial_number = x509_cert::serial_number::SerialNumber::new(&other.to_be_bytes())?;
        }
        let (_, key_hash) = ca.id_hashes().ok_or_else(|| PkiError::Der("CA certificate unreadable".into()))?;
        let data = ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(OctetString::new(key_hash)?),
            produced_at: OcspGeneralizedTime(GeneralizedTime::from_system_time(now)?),
            responses: vec![SingleResponse {
                cert_id,
                cert_status: status,
                this_update: OcspGeneralizedTime(GeneralizedTime::from_system_time(now - BACKDATE)?),
                next_update: Some(OcspGeneralizedTime(GeneralizedTime::from_system_time(
                    now + self.timers.ocsp_validity,
                )?)),
                single_extensions: None,
            }],
            response_extensions: None,
        };
        let tbs = data.to_der()?;
        let signer = if self.faults.contains(&RevocationFault::OcspWrongKey) { &self.enterprise } else { ca };
        let signature = signer.sign(&tbs)?;
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: x509_cert::spki::AlgorithmIdentifierOwned {
                oid: const_oid::db::rfc8410::ID_ED_25519,
                parameters: None,
            },
            signature: der::asn1::BitString::from_bytes(&signature)?,
            certs: None,
        };
        let resp = OcspResponse {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC,
                response: OctetString::new(basic.to_der()?)?,
            }),
        };
        Ok((resp.to_der()?, word.to_string()))
    }
}

/// A CRL of `ca`'s revoked certificates, valid from `now` for `validity`.
fn crl_of(ca: &Ca, now: SystemTime, validity: Duration) -> Result<Vec<u8>, PkiError> {
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let params = CertificateRevocationListParams {
        this_update: time::OffsetDateTime::from(now - BACKDATE),
        next_update: time::OffsetDateTime::from(now + validity),
        crl_number: SerialNumber::from(secs),
        issuing_distribution_point: None,
        revoked_certs: ca
            .revoked
            .iter()
            .map(|(serial, at)| RevokedCertParams {
                serial_number: SerialNumber::from(*serial),
                revocation_time: time::OffsetDateTime::from(*at),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&ca.issuer)?.der().to_vec())
}

/// A DER integer's bytes as a `u64`, if it fits.
fn serial_u64(bytes: &[u8]) -> Option<u64> {
    let trimmed: &[u8] = {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        &bytes[start..]
    };
    if trimmed.len() > 8 {
        return None;
    }
    Some(trimmed.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// The subject common name of a DER certificate (the connector id of a
/// client certificate).
pub fn subject_cn(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector::env::SeededEntropy;
    use connector::pki::ocsp;

    fn pki() -> Pki {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        Pki::generate(
            Arc::new(SeededEntropy::new(1, "t")),
            now,
            &["a.example".into()],
            "Inspect CA",
            PkiTimers::default(),
            Environment::Public,
        )
        .unwrap()
    }

    #[test]
    fn ocsp_answers_verify_and_follow_revocation() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_700);
        let mut pki = pki();
        let chain = pki.server("a.example").unwrap().chain.clone();
        let id = ocsp::cert_id(&chain[0], &chain[1]).unwrap();
        let (der, word) = pki.ocsp_answer(&ocsp::request_der(&id).unwrap(), now).unwrap();
        assert_eq!(word, "good");
        let answer = ocsp::verify(&der, &id, &chain[1], now).unwrap();
        assert_eq!(answer.status, ocsp::OcspStatus::Good);
        assert!(pki.revoke_server("a.example", now));
        let (der, _) = pki.ocsp_answer(&ocsp::request_der(&id).unwrap(), now).unwrap();
        assert!(matches!(ocsp::verify(&der, &id, &chain[1], now).unwrap().status, ocsp::OcspStatus::Revoked { .. }));
    }

    #[test]
    fn faulty_ocsp_answers_are_refused_with_a_reason() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_700);
        let mut pki = pki();
        let chain = pki.server("a.example").unwrap().chain.clone();
        let id = ocsp::cert_id(&chain[0], &chain[1]).unwrap();
        pki.faults.insert(RevocationFault::OcspWrongKey);
        let (der, _) = pki.ocsp_answer(&ocsp::request_der(&id).unwrap(), now).unwrap();
        assert_eq!(ocsp::verify(&der, &id, &chain[1], now), Err(ocsp::OcspError::BadSignature));
        pki.faults = [RevocationFault::OcspWrongSerial].into();
        let (der, _) = pki.ocsp_answer(&ocsp::request_der(&id).unwrap(), now).unwrap();
        assert!(matches!(ocsp::verify(&der, &id, &chain[1], now), Err(ocsp::OcspError::WrongCertificate { .. })));
        let later = now + Duration::from_secs(30 * 86_400);
        pki.faults.clear();
        let (der, _) = pki.ocsp_answer(&ocsp::request_der(&id).unwrap(), now).unwrap();
        assert!(matches!(ocsp::verify(&der, &id, &chain[1], later), Err(ocsp::OcspError::Expired { .. })));
        assert!(ocsp::verify(b"\x30\x00", &id, &chain[1], now).is_err());
    }

    #[test]
    fn crls_are_published_where_certificates_point() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_700);
        let pki = pki();
        let leaf = connector::pki::cert::CertInfo::parse(&pki.server("a.example").unwrap().chain[0], "leaf").unwrap();
        let url = &leaf.crl_urls[0];
        assert!(url.starts_with("http://crl.microsoft.com/"), "{url}");
        assert_eq!(leaf.ocsp_urls, vec!["http://ocsp.msocsp.com".to_string()]);
        let der = pki.crl_at(url, now).unwrap().unwrap();
        assert!(webpki::OwnedCertRevocationList::from_der(&der).is_ok());
        assert!(pki.crl_at("http://nowhere.example/x.crl", now).is_none());
    }
}
