//! Signature checks remembered: the certificate-signature algorithms every
//! TLS configuration and revocation check of this crate verifies with.
//!
//! A signature's validity is a function of the algorithm, the public key,
//! the signed message and the signature, nothing else. Yet the same
//! signatures are checked again and again: every handshake re-verifies the
//! relay's certificate under its issuing CA, the relay re-verifies each
//! connector's client certificate at each tunnel, and each revocation check
//! verifies the chain once more. Ed25519 verification costs about 50 µs;
//! in the simulator's 400-connector world cryptography was a third of the
//! time, and verification the largest part of it. Each
//! thread therefore remembers the inputs it found valid, whole (compared
//! byte for byte, never by a digest alone), so the answer is exactly the
//! one the algorithm would give. Windows' chain engine keeps a cache for
//! the same reason.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::OnceLock;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm};
use rustls::SignatureScheme;

/// Bytes of inputs a thread keeps; past this it forgets them all and
/// starts again (the signatures that recur are back after one check each).
const REMEMBERED_BYTES_MAX: usize = 4 << 20;
/// Longer messages are checked every time: the ones that recur (a
/// certificate's to-be-signed part, a CRL of a few entries) are far
/// shorter, and a peer sending large signed blobs must not fill memory.
const MESSAGE_BYTES_MAX: usize = 16 << 10;

/// Inputs whose signature was valid, each (algorithm, key, message,
/// signature) length-prefixed, and their bytes in all. Only valid ones are
/// kept: a forged signature is rare and proves nothing once seen. (A
/// lookup compares keys from their first byte, where the algorithm, the
/// key's length and the key itself soon tell them apart.)
#[derive(Default)]
struct Valid {
    inputs: BTreeSet<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    static VALID: RefCell<Valid> = RefCell::new(Valid::default());
}

/// One of ring's algorithms, remembering its verdicts.
#[derive(Debug)]
struct Remembering {
    inner: &'static dyn SignatureVerificationAlgorithm,
    /// This algorithm's place in the provider's list: part of every key.
    index: u8,
}

impl SignatureVerificationAlgorithm for Remembering {
    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        if message.len() > MESSAGE_BYTES_MAX {
            return self.inner.verify_signature(public_key, message, signature);
        }
        let mut key = Vec::with_capacity(1 + 24 + public_key.len() + message.len() + signature.len());
        key.push(self.index);
        for part in [public_key, message, signature] {
            key.extend_from_slice(&(part.len() as u64).to_le_bytes());
            key.extend_from_slice(part);
        }
        if VALID.with(|v| v.borrow().inputs.contains(&key)) {
            return Ok(());
        }
        self.inner.verify_signature(public_key, message, signature)?;
        VALID.with(|v| {
            let mut v = v.borrow_mut();
            if v.bytes + key.len() > REMEMBERED_BYTES_MAX {
                *v = Valid::default();
            }
            v.bytes += key.len();
            v.inputs.insert(key);
        });
        Ok(())
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        self.inner.public_key_alg_id()
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.inner.signature_alg_id()
    }

    fn fips(&self) -> bool {
        self.inner.fips()
    }
}

/// ring's supported algorithms (rustls' default for its ring provider),
/// each remembering its verdicts. Built once per process: rustls wants
/// `'static` tables.
pub fn algorithms() -> WebPkiSupportedAlgorithms {
    static TABLES: OnceLock<WebPkiSupportedAlgorithms> = OnceLock::new();
    *TABLES.get_or_init(|| {
        let ring = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let wrapped: Vec<(&'static dyn SignatureVerificationAlgorithm, &'static dyn SignatureVerificationAlgorithm)> =
            ring.all
                .iter()
                .enumerate()
                .map(|(i, alg)| {
                    let index = u8::try_from(i).unwrap_or(u8::MAX);
                    let mine: &'static Remembering = Box::leak(Box::new(Remembering { inner: *alg, index }));
                    (*alg, mine as &'static dyn SignatureVerificationAlgorithm)
                })
                .collect();
        let swap = |alg: &&'static dyn SignatureVerificationAlgorithm| {
            wrapped.iter().find(|(theirs, _)| same(*theirs, *alg)).map_or(*alg, |(_, mine)| *mine)
        };
        let all: Vec<&'static dyn SignatureVerificationAlgorithm> = ring.all.iter().map(swap).collect();
        let mapping: Vec<(SignatureScheme, &'static [&'static dyn SignatureVerificationAlgorithm])> = ring
            .mapping
            .iter()
            .map(|(scheme, algs)| {
                let algs: Vec<&'static dyn SignatureVerificationAlgorithm> = algs.iter().map(swap).collect();
                (*scheme, &*Vec::leak(algs))
            })
            .collect();
        WebPkiSupportedAlgorithms { all: Vec::leak(all), mapping: Vec::leak(mapping) }
    })
}

/// Whether two algorithm objects are the same one (by address: ring's are
/// statics).
fn same(a: &'static dyn SignatureVerificationAlgorithm, b: &'static dyn SignatureVerificationAlgorithm) -> bool {
    std::ptr::addr_eq(a as *const dyn SignatureVerificationAlgorithm, b as *const dyn SignatureVerificationAlgorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ed25519 key, a message and its signature, from a fixed seed.
    fn signed(message: &[u8]) -> (Vec<u8>, Vec<u8>) {
        use ring::signature::KeyPair;
        let key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap();
        (key.public_key().as_ref().to_vec(), key.sign(message).as_ref().to_vec())
    }

    fn ed25519() -> &'static dyn SignatureVerificationAlgorithm {
        let algs = algorithms();
        let (_, list) = algs.mapping.iter().find(|(s, _)| *s == SignatureScheme::ED25519).unwrap();
        list[0]
    }

    #[test]
    fn verdicts_are_the_algorithms_own_asked_twice() {
        let alg = ed25519();
        let (pk, sig) = signed(b"to be signed");
        let mut bad = sig.clone();
        bad[5] ^= 1;
        for _ in 0..2 {
            assert!(alg.verify_signature(&pk, b"to be signed", &sig).is_ok());
            assert!(alg.verify_signature(&pk, b"to be signed", &bad).is_err());
            assert!(alg.verify_signature(&pk, b"to be signeD", &sig).is_err());
            // The same bytes cut elsewhere are another input.
            assert!(alg.verify_signature(&pk[..31], &[&pk[31..], &b"to be signed"[..]].concat(), &sig).is_err());
        }
        // Long messages are checked each time, with the same verdicts.
        let long = vec![7u8; MESSAGE_BYTES_MAX + 1];
        let (pk, sig) = signed(&long);
        for _ in 0..2 {
            assert!(alg.verify_signature(&pk, &long, &sig).is_ok());
            assert!(alg.verify_signature(&pk, &long[1..], &sig).is_err());
        }
    }

    #[test]
    fn every_algorithm_and_scheme_of_ring_is_kept() {
        let ring = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let mine = algorithms();
        assert_eq!(mine.all.len(), ring.all.len());
        let schemes = |a: &WebPkiSupportedAlgorithms| a.mapping.iter().map(|(s, l)| (*s, l.len())).collect::<Vec<_>>();
        assert_eq!(schemes(&mine), schemes(&ring));
        for (m, r) in mine.all.iter().zip(ring.all) {
            assert_eq!(m.signature_alg_id(), r.signature_alg_id());
            assert!(!same(*m, *r), "not wrapped");
        }
        for ((_, m), (_, r)) in mine.mapping.iter().zip(ring.mapping) {
            for (m, r) in m.iter().zip(r.iter()) {
                assert_eq!(m.signature_alg_id(), r.signature_alg_id());
                assert!(!same(*m, *r), "not wrapped in the mapping");
            }
        }
    }
}
