//! The cloud's PKI, generated per world from its entropy: a service root →
//! an issuing intermediate → one server certificate per service host name,
//! and a separate connector-registration CA that signs connectors' CSRs.
//! All keys are Ed25519 (deterministic signatures; see `connector::identity`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use connector::env::Entropy;
use connector::identity::generate_key;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("CSR refused: {0}")]
    BadCsr(String),
    #[error("connector key: {0}")]
    Key(String),
}

/// A certificate chain (leaf first, root excluded) and its key.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl ServerIdentity {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn dn(cn: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

fn validity(params: &mut CertificateParams, from: SystemTime, lifetime: Duration) {
    params.not_before = time::OffsetDateTime::from(from);
    params.not_after = time::OffsetDateTime::from(from + lifetime);
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
    validity(&mut p, now - Duration::from_secs(365 * 86_400), Duration::from_secs(20 * 365 * 86_400));
    p
}

/// The whole PKI of one simulated cloud.
pub struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    connector_ca: CertifiedIssuer<'static, KeyPair>,
    servers: BTreeMap<String, ServerIdentity>,
    next_serial: u64,
    /// Lifetime of connector client certificates.
    pub client_cert_lifetime: Duration,
}

impl Pki {
    /// Generates the CAs, and a server certificate for each of `hosts`.
    pub fn generate(entropy: &dyn Entropy, now: SystemTime, hosts: &[String]) -> Result<Pki, PkiError> {
        let key = |e: &dyn Entropy| generate_key(e).map_err(|e| PkiError::Key(e.to_string()));
        let root = CertifiedIssuer::self_signed(
            ca_params("DigiCert Global Root G2", "DigiCert Inc", now, None),
            key(entropy)?,
        )?;
        let intermediate = CertifiedIssuer::signed_by(
            ca_params("Microsoft Azure TLS Issuing CA 01", "Microsoft Corporation", now, Some(0)),
            key(entropy)?,
            &root,
        )?;
        let connector_ca = CertifiedIssuer::self_signed(
            ca_params("Microsoft AAD AppProxy Connector CA", "Microsoft Corporation", now, Some(0)),
            key(entropy)?,
        )?;
        let mut pki = Pki {
            root,
            intermediate,
            connector_ca,
            servers: BTreeMap::new(),
            next_serial: 0x1000,
            client_cert_lifetime: Duration::from_secs(180 * 86_400),
        };
        for host in hosts {
            let id = pki.issue_server(entropy, now, host)?;
            pki.servers.insert(host.clone(), id);
        }
        Ok(pki)
    }

    fn serial(&mut self) -> SerialNumber {
        self.next_serial += 1;
        SerialNumber::from(self.next_serial)
    }

    fn issue_server(&mut self, entropy: &dyn Entropy, now: SystemTime, host: &str) -> Result<ServerIdentity, PkiError> {
        let key = generate_key(entropy).map_err(|e| PkiError::Key(e.to_string()))?;
        let mut p = CertificateParams::new(vec![host.to_string()])?;
        p.distinguished_name = dn(host, "Microsoft Corporation");
        p.serial_number = Some(self.serial());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        validity(&mut p, now - Duration::from_secs(30 * 86_400), Duration::from_secs(395 * 86_400));
        let cert = p.signed_by(&key, &self.intermediate)?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone(), self.intermediate.der().clone()],
            key_der: key.serialize_der(),
        })
    }

    /// The server identity for `host`, if the cloud serves that name.
    pub fn server(&self, host: &str) -> Option<&ServerIdentity> {
        self.servers.get(host)
    }

    /// The service root a connector host must trust.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.der().clone()
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// The CA relay and bootstrap check client certificates against.
    pub fn connector_ca_der(&self) -> CertificateDer<'static> {
        self.connector_ca.der().clone()
    }

    /// Signs a connector's CSR: the subject becomes the connector id, the
    /// certificate is for client authentication only, valid from `now` for
    /// [`Pki::client_cert_lifetime`]. Whatever the CSR asked for (CA flags,
    /// key usages, validity) is overwritten.
    pub fn sign_connector_csr(
        &mut self,
        csr_pem: &str,
        connector_id: &str,
        now: SystemTime,
    ) -> Result<String, PkiError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::BadCsr(e.to_string()))?;
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
        self.next_serial += 1;
        p.serial_number = Some(SerialNumber::from(self.next_serial));
        validity(p, now - Duration::from_secs(3600), self.client_cert_lifetime);
        let cert = csr.signed_by(&self.connector_ca)?;
        Ok(cert.pem())
    }
}

/// The subject common name of a DER certificate (the connector id of a
/// client certificate).
pub fn subject_cn(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
