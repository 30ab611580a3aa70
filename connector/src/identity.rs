//! The connector's identity: an Ed25519 key generated from the environment's
//! entropy, a CSR, and the client certificate the registration service
//! returns. Kept in the install folder (`<install>/identity/`) so a restarted
//! connector does not register again.
//!
//! Ed25519 because its signatures are deterministic: with a seeded entropy a
//! simulated run produces byte-identical certificates and handshakes.

use std::path::{Path, PathBuf};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::env::Entropy;

/// PKCS#8 v1 prefix of an Ed25519 private key; the 32 seed bytes follow.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A fresh Ed25519 key (PKCS#8 DER) drawn from `entropy`.
pub fn generate_key(entropy: &dyn Entropy) -> Result<rcgen::KeyPair, IdentityError> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    let mut seed = [0u8; 32];
    entropy.fill(&mut seed);
    der.extend_from_slice(&seed);
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &rcgen::PKCS_ED25519)
        .map_err(|e| IdentityError::Key(e.to_string()))
}

/// A CSR (PEM) for a connector on `machine_name`.
pub fn csr_pem(key: &rcgen::KeyPair, machine_name: &str) -> Result<String, IdentityError> {
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| IdentityError::Key(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, machine_name);
    params.serialize_request(key).and_then(|csr| csr.pem()).map_err(|e| IdentityError::Key(e.to_string()))
}

/// What is persisted about a registered connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    connector_id: String,
    tenant_id: String,
}

/// A registered connector's key and certificate.
#[derive(Clone)]
pub struct Identity {
    pub connector_id: String,
    pub tenant_id: String,
    key_pem: String,
    cert_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("connector_id", &self.connector_id)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// Why an identity could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key or CSR generation failed: {0}")]
    Key(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl Identity {
    pub fn new(connector_id: String, tenant_id: String, key: &rcgen::KeyPair, cert_pem: String) -> Self {
        Identity { connector_id, tenant_id, key_pem: key.serialize_pem(), cert_pem }
    }

    fn dir(install_dir: &Path) -> PathBuf {
        install_dir.join("identity")
    }

    /// Reads the identity from the install folder; `Ok(None)` if the
    /// connector was never registered there.
    pub fn load(install_dir: &Path) -> Result<Option<Identity>, IdentityError> {
        let dir = Self::dir(install_dir);
        let meta_path = dir.join("connector.json");
        if !meta_path.exists() {
            return Ok(None);
        }
        let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|source| IdentityError::Io { path: p, source });
        let meta: Meta = serde_json::from_str(&read(meta_path.clone())?)
            .map_err(|e| IdentityError::Corrupt { path: meta_path, reason: e.to_string() })?;
        let identity = Identity {
            connector_id: meta.connector_id,
            tenant_id: meta.tenant_id,
            key_pem: read(dir.join("key.pem"))?,
            cert_pem: read(dir.join("cert.pem"))?,
        };
        // Validate now, so a damaged file is reported with its path rather
        // than as a TLS error later.
        identity.client_auth().map_err(|reason| IdentityError::Corrupt { path: dir, reason })?;
        Ok(Some(identity))
    }

    /// Writes the identity into the install folder.
    pub fn save(&self, install_dir: &Path) -> Result<(), IdentityError> {
        let dir = Self::dir(install_dir);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let meta = Meta { connector_id: self.connector_id.clone(), tenant_id: self.tenant_id.clone() };
        let meta_json = serde_json::to_string_pretty(&meta)
            .map_err(|e| IdentityError::Corrupt { path: dir.clone(), reason: e.to_string() })?;
        for (name, content) in
            [("key.pem", &self.key_pem), ("cert.pem", &self.cert_pem), ("connector.json", &meta_json)]
        {
            let p = dir.join(name);
            std::fs::write(&p, content).map_err(io(&p))?;
        }
        Ok(())
    }

    /// The client certificate's facts (validity, serial).
    pub fn certificate(&self) -> Result<crate::pki::cert::CertInfo, String> {
        let certs = parse_pem_certs(&self.cert_pem)?;
        let first = certs.first().ok_or_else(|| "cert.pem holds no certificate".to_string())?;
        crate::pki::cert::CertInfo::parse(first, "client certificate").map_err(|e| e.to_string())
    }

    /// The same connector with a new key and certificate (renewal).
    pub fn renewed(&self, key: &rcgen::KeyPair, cert_pem: String) -> Identity {
        Identity::new(self.connector_id.clone(), self.tenant_id.clone(), key, cert_pem)
    }

    /// The certificate chain and key for mTLS.
    pub fn client_auth(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let certs = parse_pem_certs(&self.cert_pem)?;
        if certs.is_empty() {
            return Err("cert.pem holds no certificate".into());
        }
        let key = rcgen::KeyPair::from_pem(&self.key_pem).map_err(|e| format!("key.pem: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((certs, key))
    }
}

/// Parses every `CERTIFICATE` block of a PEM text.
pub fn parse_pem_certs(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SeededEntropy;

    #[test]
    fn equal_seeds_give_equal_keys_and_csrs() {
        let a = generate_key(&SeededEntropy::new(1, "k")).unwrap();
        let b = generate_key(&SeededEntropy::new(1, "k")).unwrap();
        assert_eq!(a.serialize_der(), b.serialize_der());
        assert_eq!(csr_pem(&a, "m").unwrap(), csr_pem(&b, "m").unwrap());
    }

    #[test]
    fn missing_identity_is_none_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Identity::load(dir.path()).unwrap().is_none());
        std::fs::create_dir_all(dir.path().join("identity")).unwrap();
        std::fs::write(dir.path().join("identity/connector.json"), "{not json").unwrap();
        let err = Identity::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("connector.json"), "{err}");
    }
}
