//! Property tests of the PKI parsers the connector owns or wraps: hostile
//! bytes for certificates, CRLs and OCSP answers give typed errors, never a
//! panic; a tampered OCSP answer is never accepted as something else; URL
//! parsing round-trips.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use connector::env::SeededEntropy;
use connector::http::HttpUrl;
use connector::pki::cert::CertInfo;
use connector::pki::ocsp;
use connector::pki::revocation::der_shortfall;
use proptest::prelude::*;
use relay_sim::pki::{Pki, PkiTimers};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

struct Fixture {
    leaf: Vec<u8>,
    issuer: Vec<u8>,
    ocsp_answer: Vec<u8>,
    crl: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pki = Pki::generate(
            Arc::new(SeededEntropy::new(5, "props")),
            now(),
            &["svc.example".to_string()],
            "Inspect CA",
            PkiTimers::default(),
            connector::allowlist::Environment::Public,
        )
        .expect("pki");
        let chain = pki.server("svc.example").expect("server").chain.clone();
        let id = ocsp::cert_id(&chain[0], &chain[1]).expect("cert id");
        let (ocsp_answer, _) = pki.ocsp_answer(&ocsp::request_der(&id).expect("request"), now()).expect("answer");
        let leaf = CertInfo::parse(&chain[0], "leaf").expect("leaf");
        let crl = pki.crl_at(&leaf.crl_urls[0], now()).expect("published").expect("signed");
        Fixture { leaf: chain[0].to_vec(), issuer: chain[1].to_vec(), ocsp_answer, crl }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn garbage_certificates_are_errors(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        // Random bytes are never a certificate: the error names which one
        // it was, and a body that does not even start a DER SEQUENCE is
        // called that by the CRL check.
        let error = CertInfo::parse(&bytes, "leaf").map(|_| ()).expect_err("random bytes parsed as a certificate");
        prop_assert!(error.to_string().starts_with("certificate leaf: "), "{}", error);
        match der_shortfall(&bytes) {
            Some(what) if bytes.first() != Some(&0x30) => prop_assert!(what.contains("not a DER"), "{}", what),
            Some(_) => {}
            None => prop_assert_eq!(bytes.first(), Some(&0x30), "a whole DER structure starts with a SEQUENCE"),
        }
    }

    #[test]
    fn garbage_ocsp_answers_are_errors(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let f = fixture();
        let id = ocsp::cert_id(&f.leaf, &f.issuer).unwrap();
        prop_assert!(ocsp::verify(&bytes, &id, &f.issuer, now()).is_err());
    }

    /// Any one-byte change of a signed OCSP answer is refused, or (if the
    /// byte is not covered by anything that matters) reads as the same answer.
    #[test]
    fn tampered_ocsp_answers_are_never_accepted_as_something_else(pos in any::<prop::sample::Index>(), x in 1u8..) {
        let f = fixture();
        let id = ocsp::cert_id(&f.leaf, &f.issuer).unwrap();
        let original = ocsp::verify(&f.ocsp_answer, &id, &f.issuer, now()).unwrap();
        let mut bytes = f.ocsp_answer.clone();
        let i = pos.index(bytes.len());
        bytes[i] ^= x;
        if let Ok(answer) = ocsp::verify(&bytes, &id, &f.issuer, now()) {
            prop_assert_eq!(answer, original);
        }
    }

    /// A truncated CRL is named as truncated, and never parses.
    #[test]
    fn truncated_crls_are_named(cut in 1usize..64) {
        let f = fixture();
        let n = f.crl.len().saturating_sub(cut);
        let short = &f.crl[..n];
        prop_assert!(webpki::OwnedCertRevocationList::from_der(short).is_err());
        let what = der_shortfall(short).unwrap_or_default();
        prop_assert!(what.contains("truncated") || what.contains("not a DER"), "{}", what);
    }

    #[test]
    fn urls_round_trip(host in "[a-z][a-z0-9-]{0,20}(\\.[a-z]{2,6}){1,3}", port in 1u16.., path in "(/[a-zA-Z0-9._-]{0,12}){0,4}") {
        let path = if path.is_empty() { "/".to_string() } else { path };
        let url = HttpUrl { host, port, path };
        let text = url.to_string();
        prop_assert_eq!(text.parse::<HttpUrl>().unwrap(), url);
    }

    #[test]
    fn arbitrary_url_text_is_refused_or_reads_back(text in "(http://)?[a-zA-Z0-9.:/_-]{0,30}\\PC{0,10}") {
        // Whatever parses is an http:// URL whose host is a plain lower-case
        // name, and it prints to text that parses to the same URL.
        if let Ok(url) = text.parse::<HttpUrl>() {
            prop_assert!(text.starts_with("http://"), "{}", text);
            prop_assert!(!url.host.is_empty() && url.host.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'), "{:?}", url);
            prop_assert!(url.path.starts_with('/'), "{:?}", url);
            prop_assert_eq!(url.to_string().parse::<HttpUrl>(), Ok(url));
        }
    }
}
