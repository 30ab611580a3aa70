//! The release feed as the service runs it (VER-UPDATER, VER-HISTORY):
//! which of the published releases are offered now and to which connector
//! groups (a staged rollout), and the packages the updater downloads,
//! signed by the publisher. A package can be made to break off mid-way or
//! to arrive altered, as a CDN or a meddling proxy would deliver it.

use std::collections::{BTreeMap, BTreeSet};

use connector::api::Release;
use connector::package;
use ring::signature::Ed25519KeyPair;
use serde::Deserialize;

/// How a release's download goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DownloadFault {
    /// The download breaks off half-way.
    Broken,
    /// The bytes arrive altered (their digest no longer matches).
    Tampered,
    /// The feed announces the package signed by someone else's key (the
    /// bytes are intact; the signature does not verify).
    Forged,
}

/// What the feed offers now.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Feed {
    /// Releases of the history not offered (not yet published, or withdrawn).
    pub withheld: BTreeSet<String>,
    /// A staged rollout: a release listed here is offered only to these
    /// connector groups.
    pub rollout: BTreeMap<String, BTreeSet<String>>,
    /// Downloads that go wrong, by release.
    pub faults: BTreeMap<String, DownloadFault>,
}

impl Feed {
    /// Whether `release` is offered to a connector of `group`.
    pub fn offers(&self, release: &str, group: &str) -> bool {
        !self.withheld.contains(release) && self.rollout.get(release).is_none_or(|groups| groups.contains(group))
    }
}

/// The publisher's signing key. Its seed is the mock publisher's own (the
/// connector ships only the public half, [`package::PUBLISHER_KEY`]).
pub fn publisher() -> Result<Ed25519KeyPair, String> {
    Ed25519KeyPair::from_seed_unchecked(&PUBLISHER_SEED).map_err(|e| format!("publisher key: {e}"))
}

const PUBLISHER_SEED: [u8; 32] = *b"connsim mock release publisher!!";

/// `release` as the feed announces it: its package's SHA-256, signed (by
/// an impostor's key when the release's fault is [`DownloadFault::Forged`]).
pub fn announce(release: &Release, key: &Ed25519KeyPair, fault: Option<DownloadFault>) -> Result<Release, String> {
    let bytes = package::contents(&release.version);
    let digest = package::sha256(&bytes);
    let signature = match fault {
        Some(DownloadFault::Forged) => {
            Ed25519KeyPair::from_seed_unchecked(&IMPOSTOR_SEED).map_err(|e| format!("impostor key: {e}"))?.sign(&digest)
        }
        _ => key.sign(&digest),
    };
    Ok(Release { sha256: package::hex(&digest), signature: package::hex(signature.as_ref()), ..release.clone() })
}

const IMPOSTOR_SEED: [u8; 32] = *b"connsim: not the release signer!";

/// The package of `version` as the download delivers it.
pub fn download(version: &str, fault: Option<DownloadFault>) -> Vec<u8> {
    let mut bytes = package::contents(version);
    match fault {
        None => {}
        Some(DownloadFault::Forged) => {}
        Some(DownloadFault::Broken) => bytes.truncate(bytes.len() / 2),
        Some(DownloadFault::Tampered) => {
            let at = bytes.len() / 3;
            bytes[at] ^= 0x5a;
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    #[test]
    fn the_connector_ships_this_publishers_public_key() {
        let key = publisher().unwrap();
        assert_eq!(key.public_key().as_ref(), package::PUBLISHER_KEY.as_slice());
    }

    #[test]
    fn announced_packages_verify_and_faulty_ones_do_not() {
        let key = publisher().unwrap();
        let release = announce(&crate::releases::history()[4], &key, None).unwrap();
        let v = &release.version;
        assert_eq!(package::verify(&release, &download(v, None), &package::PUBLISHER_KEY), Ok(()));
        for fault in [DownloadFault::Broken, DownloadFault::Tampered] {
            assert!(package::verify(&release, &download(v, Some(fault)), &package::PUBLISHER_KEY).is_err());
        }
        let forged = announce(&crate::releases::history()[4], &key, Some(DownloadFault::Forged)).unwrap();
        let bytes = download(v, Some(DownloadFault::Forged));
        assert_eq!(package::verify(&forged, &bytes, &package::PUBLISHER_KEY), Err(package::PackageError::Signature));
        let forged = Release { signature: "00".repeat(64), ..release.clone() };
        assert_eq!(
            package::verify(&forged, &download(v, None), &package::PUBLISHER_KEY),
            Err(package::PackageError::Signature)
        );
    }

    #[test]
    fn a_rollout_offers_a_release_to_its_groups_only() {
        let mut feed = Feed::default();
        assert!(feed.offers("1.5.4522.0", "Default"));
        feed.rollout.insert("1.5.4522.0".into(), ["Pilot".to_string()].into());
        assert!(feed.offers("1.5.4522.0", "Pilot") && !feed.offers("1.5.4522.0", "Default"));
        feed.withheld.insert("1.5.4522.0".into());
        assert!(!feed.offers("1.5.4522.0", "Pilot"));
    }
}
