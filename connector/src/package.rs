//! Update packages: the check the updater makes before anything on disk
//! changes. The bytes must hash to the SHA-256 the feed announced, and that
//! digest must carry the publisher's Ed25519 signature: a download cut
//! short or altered on the way (a CDN, an inspecting proxy) is refused and
//! the running version stays.

use ring::signature::{UnparsedPublicKey, ED25519};

use crate::api::Release;

/// The public key releases are signed with (the mock publisher's; the real
/// product pins its publisher's code-signing chain the same way).
pub const PUBLISHER_KEY: [u8; 32] = [
    0x89, 0x71, 0x36, 0x57, 0x93, 0x6c, 0xd2, 0xdf, 0x07, 0x7c, 0x3f, 0xa9, 0xf3, 0x2c, 0xc4, 0xd2, 0x56, 0x1a, 0x8d,
    0xf2, 0x4e, 0xfe, 0xcf, 0x0c, 0xfb, 0x90, 0xa5, 0x08, 0x04, 0x4a, 0x0e, 0x5a,
];

/// Why a package was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("the feed announced no usable SHA-256 or signature for it")]
    Unannounced,
    #[error("its {got} bytes have SHA-256 {digest}, not the announced SHA-256 {announced}")]
    Digest { got: usize, digest: String, announced: String },
    #[error("its signature does not verify with the publisher's key")]
    Signature,
}

/// Checks a downloaded package against its announcement.
pub fn verify(release: &Release, bytes: &[u8], publisher_key: &[u8]) -> Result<(), PackageError> {
    let (Some(announced), Some(signature)) = (unhex(&release.sha256), unhex(&release.signature)) else {
        return Err(PackageError::Unannounced);
    };
    let digest = sha256(bytes);
    if digest.as_slice() != announced.as_slice() {
        return Err(PackageError::Digest { got: bytes.len(), digest: hex(&digest), announced: release.sha256.clone() });
    }
    UnparsedPublicKey::new(&ED25519, publisher_key).verify(&digest, &signature).map_err(|_| PackageError::Signature)
}

/// What the package of `version` holds (the installer's bytes, modelled).
pub fn contents(version: &str) -> Vec<u8> {
    format!("Microsoft Entra private network connector {version} installer\n").repeat(1024).into_bytes()
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// Lower-case hex, two digits a byte (without a format call per byte: the
/// echo backend digests every request with it).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Lower- or upper-case hex, or nothing.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        for bad in ["", "0", "zz", "é1"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_unannounced_package_is_refused() {
        let release = Release {
            version: "1.5.4522.0".into(),
            notes: String::new(),
            min_dotnet_release: 0,
            sha256: String::new(),
            signature: String::new(),
        };
        assert_eq!(verify(&release, b"x", &PUBLISHER_KEY), Err(PackageError::Unannounced));
    }
}
