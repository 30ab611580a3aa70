//! Revocation checking of the service's certificate chains (TLS-REVOKE),
//! over outbound port 80 (NET-80) to the hosts the certificates name
//! (NET-CRL).
//!
//! rustls never fetches revocation data, so the connector does it after the
//! handshake and before it sends a byte: every certificate below the root
//! must be covered by its CRL (fetched from its distribution point, cached
//! until `nextUpdate`, checked by rustls-webpki: signature, expiry, serial),
//! and the leaf's OCSP responder is asked too (cached until its
//! `nextUpdate`). OCSP is the fresher source: "revoked" there refuses the
//! connection even while a cached CRL still says good; an OCSP responder that
//! cannot be reached is a warning, since the CRL already answered; an OCSP
//! answer that does not verify is a refusal. A status that cannot be learned
//! refuses the connection under the default [`RevocationPolicy::HardFail`],
//! as the real connector's host does.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::RootCertStore;
use webpki::{CertRevocationList, OwnedCertRevocationList};
use x509_parser::prelude::FromDer;

use super::cert::{CertError, CertInfo};
use super::ocsp::{self, OcspStatus};
use crate::classify::Verdict;
use crate::code::{self, EventId};
use crate::diag::Diagnostic;
use crate::env::Env;
use crate::event::AgentEvent;
use crate::http::{self, CallError, HttpUrl};
use crate::net::ConnectFailure;

/// Largest CRL or OCSP answer accepted.
pub const REVOCATION_BODY_BYTES_MAX: usize = 1 << 20;
/// Time allowed for one CRL or OCSP fetch (Windows' default URL retrieval
/// timeout).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// A clock difference with the revocation servers beyond this is reported.
pub const SKEW_TOLERANCE: Duration = Duration::from_secs(300);

/// What to do when a revocation status cannot be learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationPolicy {
    /// Refuse the connection (the default, as on the real host).
    #[default]
    HardFail,
    /// Allow it with a warning diagnostic. Revoked certificates and answers
    /// that do not verify are refused either way.
    SoftFail,
}

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationFailure {
    /// A certificate could not be parsed.
    BadCertificate(CertError),
    /// A certificate names no CRL distribution point.
    NoDistributionPoint { subject: String },
    /// Revocation servers that could not be reached, and the classifier's
    /// verdict and finding for the first of them (port, allow-list entry,
    /// DNS, proxy).
    Unreachable { failed: Vec<(String, ConnectFailure)>, cause: Box<Cause> },
    /// A cached CRL expired and its server cannot be reached.
    Stale { url: String, expired_s_ago: u64, failure: ConnectFailure, cause: Box<Cause> },
    /// A certificate of the chain is revoked.
    Revoked { subject: String, serial: String, source: String },
    /// A CRL or OCSP answer that is malformed, wrongly signed, about another
    /// certificate, or too large.
    BadResponse { url: String, what: String },
    /// The host clock and the revocation servers' disagree.
    ClockSkew { ahead_s: i64, url: String },
}

impl RevocationFailure {
    /// The diagnostic for a connection to `host` refused for this reason.
    pub fn diagnostic(&self, host: &str) -> Diagnostic {
        match self {
            RevocationFailure::BadCertificate(e) => Diagnostic::new(code::TLS_REVOKE_BAD_CERTIFICATE, Some(EventId::Certificate),
                format!("the certificate chain of {host} cannot be read: {e}"),
                "a device between the connector and the service may be altering TLS",
            ),
            RevocationFailure::NoDistributionPoint { subject } => Diagnostic::new(code::TLS_REVOKE_NO_DISTRIBUTION_POINT, Some(EventId::Certificate),
                format!("certificate {subject:?} presented by {host} names no CRL distribution point: its revocation status cannot be learned"),
                "the service's certificates always name one: check for TLS inspection",
            ),
            RevocationFailure::Unreachable { failed, cause } => unreachable_diagnostic(host, failed, cause),
            RevocationFailure::Stale { url, expired_s_ago, failure, cause } => {
                let stale = format!(
                    "the cached revocation list {url} expired {expired_s_ago}s ago and cannot be refreshed ({failure}); {host} is refused"
                );
                match &cause.verdict {
                    // The CRL server itself (or its entry): the list is stale.
                    Some(Verdict::EntryMissing { .. } | Verdict::HostUnavailable { .. } | Verdict::Unclear { .. })
                    | None => Diagnostic::new(code::NET_CRL_STALE, Some(EventId::Networking),
                        format!("{stale}: {}", cause.diagnostic.message),
                        "make sure the CRL hosts are reachable on port 80",
                    ),
                    // The port, the name, the proxy, the ranges, the cloud.
                    Some(_) => Diagnostic {
                        message: format!("{stale}: {}", cause.diagnostic.message),
                        ..cause.diagnostic.clone()
                    },
                }
            }
            RevocationFailure::Revoked { subject, serial, source } => Diagnostic::new(code::TLS_REVOKE_REVOKED, Some(EventId::Certificate),
                format!("certificate {subject:?} (serial {serial}) presented by {host} is revoked according to {source}"),
                "the connection is refused; if the service's certificate is revoked, wait for the service to replace it",
            ),
            RevocationFailure::BadResponse { url, what } => Diagnostic::new(code::TLS_REVOKE_BAD_RESPONSE, Some(EventId::Certificate),
                format!("revocation answer from {url} for {host} is not acceptable: {what}"),
                "the connection is refused; a proxy may be answering in the revocation server's place",
            ),
            RevocationFailure::ClockSkew { ahead_s, url } => skew_diagnostic(*ahead_s, url, host),
        }
    }
}

/// Why a revocation server could not be reached: the classifier's verdict
/// (absent when the fetch timed out as a whole) and its general finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub verdict: Option<Verdict>,
    pub diagnostic: Diagnostic,
}

/// The finding for revocation servers of `host`'s chain that could not be
/// reached. A missing entry and a blocked port are said of every server
/// that failed; any other cause (DNS, proxy, moved ranges) in the
/// classifier's words.
fn unreachable_diagnostic(host: &str, failed: &[(String, ConnectFailure)], cause: &Cause) -> Diagnostic {
    let list = failed.iter().map(|(h, f)| format!("{h}:80 ({f})")).collect::<Vec<_>>().join(", ");
    let hosts = failed.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>().join(", ");
    let learned = format!("revocation status of {host}'s certificates cannot be learned");
    match &cause.verdict {
        Some(Verdict::EntryMissing { works, .. }) => Diagnostic::new(
            code::NET_CRL_UNREACHABLE,
            Some(EventId::Networking),
            format!("{learned}: {list} could not be reached while {works}:80 answered"),
            format!("add {hosts} (port 80) to the allow-list"),
        ),
        Some(Verdict::PortBlocked { others }) => Diagnostic::new(
            code::NET_80_UNREACHABLE,
            Some(EventId::Networking),
            format!(
                "{learned}: no revocation server answered on port 80: {list}; nor did anything else tried now ({})",
                if others.is_empty() { "nothing to try".to_string() } else { others.join(", ") }
            ),
            format!("allow outbound TCP 80 to the CRL/OCSP hosts ({hosts}) on every firewall and proxy"),
        ),
        _ => Diagnostic { message: format!("{learned}: {}", cause.diagnostic.message), ..cause.diagnostic.clone() },
    }
}

/// "The host clock is N ahead/behind" as a diagnostic.
pub fn skew_diagnostic(ahead_s: i64, via: &str, host: &str) -> Diagnostic {
    let amount = crate::diag::human_duration(Duration::from_secs(ahead_s.unsigned_abs()));
    let dir = if ahead_s > 0 { "ahead of" } else { "behind" };
    Diagnostic::new(code::TLS_TIME_SKEW, Some(EventId::Certificate),
        format!(
            "the host clock is {amount} {dir} the service's (Date of {via}); certificates and revocation lists of {host} look expired or not yet valid"
        ),
        "set the connector host's clock (time sync with the domain or NTP)",
    )
}

struct CachedCrl {
    crl: OwnedCertRevocationList,
    der: Vec<u8>,
    next_update: SystemTime,
}

/// A CRL as it will be used, and where it came from.
struct ChainCrl {
    url: String,
    crl: OwnedCertRevocationList,
    der: Vec<u8>,
    next_update: SystemTime,
}

/// Most chain verdicts remembered; past this the memory starts over.
const VERIFIED_MAX: usize = 64;

/// The revocation checker with its caches. One per agent.
pub struct Revocation {
    pub policy: RevocationPolicy,
    crls: RefCell<BTreeMap<String, CachedCrl>>,
    ocsp: RefCell<BTreeMap<(String, String), ocsp::OcspAnswer>>,
    /// Chains that verified against their CRLs, by a digest of everything
    /// the verdict depends on (anchors, chain, CRLs, policy), with the span
    /// of time it holds for. The connector meets the same chain and CRLs at
    /// every bootstrap (every ten minutes), so it verifies the signatures
    /// once per CRL instead of once per connection.
    verified: RefCell<BTreeMap<[u8; 32], (SystemTime, SystemTime)>>,
    /// Seconds the host clock was ahead of the last revocation server heard.
    last_skew: RefCell<Option<(i64, String)>>,
    /// Warnings already reported (each once).
    warned: RefCell<BTreeSet<String>>,
}

impl Revocation {
    pub fn new(policy: RevocationPolicy) -> Self {
        Revocation {
            policy,
            crls: RefCell::default(),
            ocsp: RefCell::default(),
            verified: RefCell::default(),
            last_skew: RefCell::default(),
            warned: RefCell::default(),
        }
    }

    /// Asks the revocation server of `chain`'s leaf for its time (its
    /// `Date`), to tell a skewed host clock from a bad certificate after a
    /// handshake failed on validity. Best effort.
    pub async fn probe_time(&self, env: &Env, chain: &[CertificateDer<'static>]) {
        let Some(url) =
            chain.first().and_then(|c| CertInfo::parse(c, "leaf").ok()).and_then(|i| i.crl_urls.first().cloned())
        else {
            return;
        };
        let Ok(parsed) = url.parse::<HttpUrl>() else { return };
        if let Ok(resp) = http::plain_request(env, &parsed, None, FETCH_TIMEOUT, REVOCATION_BODY_BYTES_MAX).await {
            self.note_date(env, &url, resp.date);
        }
    }

    /// The clock difference with the revocation servers last observed, if
    /// beyond tolerance: `(seconds the host is ahead, URL)`.
    pub fn observed_skew(&self) -> Option<(i64, String)> {
        self.last_skew.borrow().clone().filter(|(s, _)| s.unsigned_abs() > SKEW_TOLERANCE.as_secs())
    }

    fn warn(&self, env: &Env, d: Diagnostic) {
        if self.warned.borrow_mut().insert(format!("{}|{}", d.code, d.message)) {
            env.emit(AgentEvent::Diagnostic(d));
        }
    }

    /// Records the clock difference with a server that answered at `date`.
    pub fn note_date(&self, env: &Env, url: &str, date: Option<SystemTime>) {
        if let Some(date) = date {
            let now = env.clock.now();
            let ahead = match now.duration_since(date) {
                Ok(d) => d.as_secs() as i64,
                Err(e) => -(e.duration().as_secs() as i64),
            };
            *self.last_skew.borrow_mut() = Some((ahead, url.to_string()));
        }
    }

    /// Checks the chain (`chain[0]` the leaf) `host` presented, anchored in
    /// `anchors`. Returns `Ok` when the connection may be used.
    pub async fn check(
        &self,
        env: &Env,
        anchors: &RootCertStore,
        host: &str,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), RevocationFailure> {
        let infos = chain
            .iter()
            .enumerate()
            .map(|(i, c)| CertInfo::parse(c, &if i == 0 { "leaf".to_string() } else { format!("issuer #{i}") }))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RevocationFailure::BadCertificate)?;
        let now = env.clock.now();
        let mut crls: Vec<ChainCrl> = Vec::new();
        let mut failed: Vec<(String, ConnectFailure)> = Vec::new();
        let mut cause: Option<Cause> = None;
        for info in &infos {
            let Some(url) = info.crl_urls.first() else {
                return Err(RevocationFailure::NoDistributionPoint { subject: info.subject.clone() });
            };
            match self.crl(env, url, now).await {
                Ok(c) => crls.push(c),
                Err(CrlFetch::Unreachable(f, c)) => {
                    failed.push((host_of(url), f));
                    cause.get_or_insert(*c);
                }
                Err(CrlFetch::Failed(fail)) => return Err(fail),
            }
        }
        if let Some(cause) = cause {
            let failure = RevocationFailure::Unreachable { failed, cause: Box::new(cause) };
            match self.policy {
                RevocationPolicy::HardFail => return Err(failure),
                RevocationPolicy::SoftFail => {
                    self.warn(env, failure.diagnostic(host).soft_failed());
                }
            }
        }
        let crls_complete = crls.len() == infos.len();
        self.verify_with_webpki(anchors, chain, &infos, &crls, now)?;
        self.check_ocsp(env, chain, &infos, now, crls_complete).await
    }

    /// Verifies the chain against its CRLs, remembering chains that passed:
    /// the verdict is a function of the anchors, the chain, the CRLs and the
    /// policy, and holds from the latest `notBefore` to the earliest
    /// `notAfter` or CRL `nextUpdate`.
    fn verify_with_webpki(
        &self,
        anchors: &RootCertStore,
        chain: &[CertificateDer<'static>],
        infos: &[CertInfo],
        crls: &[ChainCrl],
        now: SystemTime,
    ) -> Result<(), RevocationFailure> {
        let key = verdict_key(self.policy, anchors, chain, crls);
        let holds = |(from, until): &(SystemTime, SystemTime)| *from <= now && now < *until;
        if self.verified.borrow().get(&key).is_some_and(holds) {
            return Ok(());
        }
        let lists: Vec<CertRevocationList<'_>> = crls.iter().map(|c| CertRevocationList::from(c.crl.clone())).collect();
        let refs: Vec<&CertRevocationList<'_>> = lists.iter().collect();
        let Ok(builder) = webpki::RevocationOptionsBuilder::new(&refs) else {
            // No CRL at all: only possible under soft-fail with every server down.
            return Ok(());
        };
        let status = match self.policy {
            RevocationPolicy::HardFail => webpki::UnknownStatusPolicy::Deny,
            RevocationPolicy::SoftFail => webpki::UnknownStatusPolicy::Allow,
        };
        let options = builder
            .with_depth(webpki::RevocationCheckDepth::Chain)
            .with_status_policy(status)
            .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
            .build();
        let ee = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
            RevocationFailure::BadCertificate(CertError { what: "leaf".into(), reason: format!("{e:?}") })
        })?;
        let algs = crate::signatures::algorithms().all;
        let since = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let result = ee.verify_for_usage(
            algs,
            &anchors.roots,
            &chain[1..],
            UnixTime::since_unix_epoch(since),
            webpki::KeyUsage::server_auth(),
            Some(options),
            None,
        );
        let urls = crls.iter().map(|c| c.url.as_str()).collect::<Vec<_>>().join(", ");
        match result {
            Ok(_) => {
                let from = infos.iter().map(|i| i.not_before).max().unwrap_or(now);
                let until = infos.iter().map(|i| i.not_after).chain(crls.iter().map(|c| c.next_update)).min();
                let mut verified = self.verified.borrow_mut();
                if verified.len() >= VERIFIED_MAX {
                    verified.clear();
                }
                verified.insert(key, (from, until.unwrap_or(now)));
                Ok(())
            }
            Err(webpki::Error::CrlExpired { .. }) => match self.observed_skew() {
                Some((ahead_s, url)) => Err(RevocationFailure::ClockSkew { ahead_s, url }),
                None => Err(RevocationFailure::BadResponse { url: urls, what: "revocation list expired".into() }),
            },
            Err(webpki::Error::CertRevoked) => Err(revoked_by_crl(chain, infos, crls)),
            Err(e) => {
                // Time errors while the revocation servers' clock disagrees with ours are skew.
                let text = format!("{e:?}");
                let validity = matches!(
                    e,
                    webpki::Error::CertExpired { .. }
                        | webpki::Error::CertNotValidYet { .. }
                        | webpki::Error::CrlExpired { .. }
                );
                if let (true, Some((ahead_s, url))) = (validity, self.observed_skew()) {
                    return Err(RevocationFailure::ClockSkew { ahead_s, url });
                }
                Err(RevocationFailure::BadResponse { url: urls, what: text })
            }
        }
    }

    async fn check_ocsp(
        &self,
        env: &Env,
        chain: &[CertificateDer<'static>],
        infos: &[CertInfo],
        now: SystemTime,
        crls_complete: bool,
    ) -> Result<(), RevocationFailure> {
        let (Some(leaf), Some(issuer), Some(url)) = (chain.first(), chain.get(1), infos[0].ocsp_urls.first()) else {
            return Ok(());
        };
        let bad = |what: String| RevocationFailure::BadResponse { url: url.clone(), what };
        let key = (url.clone(), infos[0].serial.clone());
        let cached = self.ocsp.borrow().get(&key).filter(|a| a.next_update.is_some_and(|n| n > now)).cloned();
        let answer = match cached {
            Some(a) => a,
            None => {
                // The request's CertID, only when one is sent: a fresh answer
                // cached for this responder and serial needs none (it was
                // 40 % of a check that the cache answered, at every bootstrap).
                // A leaf or issuer that only this parse would refuse is then
                // not refused on a cache hit; both passed `CertInfo::parse`
                // and webpki's verification above.
                let id = ocsp::cert_id(leaf, issuer).map_err(|e| bad(e.to_string()))?;
                let parsed: HttpUrl = url.parse().map_err(bad)?;
                let body = ocsp::request_der(&id).map_err(|e| bad(e.to_string()))?;
                let resp = http::plain_request(
                    env,
                    &parsed,
                    Some(("application/ocsp-request", body)),
                    FETCH_TIMEOUT,
                    REVOCATION_BODY_BYTES_MAX,
                )
                .await;
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) => {
                        if let Some((f, cause)) = unreachable(&e) {
                            // Without every CRL (soft-fail let the connection
                            // through) the soft-fail warning already says the
                            // status is unknown; "checked by CRL only" would
                            // be false.
                            if crls_complete {
                                self.warn(env, ocsp_unreachable(&parsed.host, &f, cause));
                            }
                            return Ok(());
                        }
                        return Err(bad(e.to_string()));
                    }
                };
                self.note_date(env, url, resp.date);
                if resp.status != 200 {
                    return Err(bad(format!("HTTP {}", resp.status)));
                }
                let answer =
                    ocsp::verify(&resp.body, &id, issuer, now).map_err(|e| match (&e, self.observed_skew()) {
                        (
                            ocsp::OcspError::Expired { .. } | ocsp::OcspError::NotYetValid { .. },
                            Some((ahead_s, url)),
                        ) => RevocationFailure::ClockSkew { ahead_s, url },
                        _ => bad(e.to_string()),
                    })?;
                env.emit(AgentEvent::OcspChecked { url: url.clone(), status: status_word(&answer.status) });
                self.ocsp.borrow_mut().insert(key, answer.clone());
                answer
            }
        };
        match answer.status {
            OcspStatus::Good => Ok(()),
            OcspStatus::Revoked { reason, .. } => Err(RevocationFailure::Revoked {
                subject: infos[0].subject.clone(),
                serial: infos[0].serial.clone(),
                source: format!(
                    "the OCSP responder {url}{}",
                    reason.map(|r| format!(" (reason {r})")).unwrap_or_default()
                ),
            }),
            OcspStatus::Unknown => Err(bad("the responder does not know this certificate".into())),
        }
    }

    /// The CRL at `url`: from the cache while fresh, else fetched.
    async fn crl(&self, env: &Env, url: &str, now: SystemTime) -> Result<ChainCrl, CrlFetch> {
        let cached = self.crls.borrow().get(url).map(|c| (c.crl.clone(), c.der.clone(), c.next_update));
        if let Some((crl, der, next_update)) = &cached {
            if *next_update > now {
                return Ok(ChainCrl {
                    url: url.to_string(),
                    crl: crl.clone(),
                    der: der.clone(),
                    next_update: *next_update,
                });
            }
        }
        let bad = |what: String| CrlFetch::Failed(RevocationFailure::BadResponse { url: url.to_string(), what });
        let parsed: HttpUrl = url.parse().map_err(bad)?;
        let resp = match http::plain_request(env, &parsed, None, FETCH_TIMEOUT, REVOCATION_BODY_BYTES_MAX).await {
            Ok(r) => r,
            Err(e) => {
                let Some((failure, cause)) = unreachable(&e) else { return Err(bad(e.to_string())) };
                return Err(match cached {
                    Some((_, _, next_update)) => CrlFetch::Failed(RevocationFailure::Stale {
                        url: url.to_string(),
                        expired_s_ago: now.duration_since(next_update).unwrap_or_default().as_secs(),
                        failure,
                        cause: Box::new(cause),
                    }),
                    None => CrlFetch::Unreachable(failure, Box::new(cause)),
                });
            }
        };
        self.note_date(env, url, resp.date);
        if resp.status != 200 {
            return Err(bad(format!("HTTP {}", resp.status)));
        }
        let crl = OwnedCertRevocationList::from_der(&resp.body).map_err(|e| match der_shortfall(&resp.body) {
            Some(what) => bad(format!("not a valid CRL: {what}")),
            None => bad(format!("not a valid CRL: {e:?}")),
        })?;
        // webpki verifies, x509-parser reads what webpki does not expose.
        let (next_update, revoked) = x509_parser::revocation_list::CertificateRevocationList::from_der(&resp.body)
            .ok()
            .and_then(|(_, c)| Some((c.next_update()?, c.iter_revoked_certificates().count())))
            .map(|(t, n)| (SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0).unsigned_abs()), n))
            .ok_or_else(|| bad("CRL without nextUpdate".into()))?;
        env.emit(AgentEvent::CrlFetched { url: url.to_string(), revoked });
        let der = resp.body.to_vec();
        self.crls.borrow_mut().insert(url.to_string(), CachedCrl { crl: crl.clone(), der: der.clone(), next_update });
        Ok(ChainCrl { url: url.to_string(), crl, der, next_update })
    }
}

/// A digest of everything a chain's verdict against its CRLs depends on.
fn verdict_key(
    policy: RevocationPolicy,
    anchors: &RootCertStore,
    chain: &[CertificateDer<'static>],
    crls: &[ChainCrl],
) -> [u8; 32] {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    // Every part and list goes in with its length, so no two inputs run
    // together.
    let mut part = |bytes: &[u8]| {
        digest.update(&(bytes.len() as u64).to_be_bytes());
        digest.update(bytes);
    };
    part(&[matches!(policy, RevocationPolicy::HardFail) as u8]);
    for count in [anchors.roots.len(), chain.len(), crls.len()] {
        part(&(count as u64).to_be_bytes());
    }
    for anchor in &anchors.roots {
        part(anchor.subject.as_ref());
        part(anchor.subject_public_key_info.as_ref());
        part(anchor.name_constraints.as_ref().map_or(&[][..], |n| n.as_ref()));
    }
    for cert in chain {
        part(cert.as_ref());
    }
    for crl in crls {
        part(&crl.der);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.finish().as_ref());
    key
}

/// Names the certificate webpki found revoked (it only says "revoked"; the
/// CRLs' signatures are verified by then).
fn revoked_by_crl(chain: &[CertificateDer<'static>], infos: &[CertInfo], crls: &[ChainCrl]) -> RevocationFailure {
    for (info, cert) in infos.iter().zip(chain) {
        let Ok((_, parsed)) = x509_parser::prelude::X509Certificate::from_der(cert) else { continue };
        for c in crls {
            if crl_issuer_matches(&c.der, &parsed)
                && CertRevocationList::from(c.crl.clone()).find_serial(parsed.raw_serial()).ok().flatten().is_some()
            {
                return RevocationFailure::Revoked {
                    subject: info.subject.clone(),
                    serial: info.serial.clone(),
                    source: format!("the CRL at {}", c.url),
                };
            }
        }
    }
    let urls = crls.iter().map(|c| c.url.as_str()).collect::<Vec<_>>().join(", ");
    RevocationFailure::Revoked { subject: "a certificate of the chain".into(), serial: String::new(), source: urls }
}

/// "truncated" or "not DER" for a body whose outer DER SEQUENCE does not
/// match its length: clearer for an administrator than the parser's error.
pub fn der_shortfall(body: &[u8]) -> Option<String> {
    if body.first() != Some(&0x30) {
        let first = body.first().map(|b| format!(", first byte {b:#04x}")).unwrap_or_default();
        return Some(format!("{} bytes that are not a DER structure{first}", body.len()));
    }
    let (len, header) = match *body.get(1)? {
        n if n < 0x80 => (usize::from(n), 2),
        n => {
            let count = usize::from(n & 0x7f);
            if count == 0 || count > 4 {
                return Some("a DER length that is not valid".into());
            }
            let bytes = body.get(2..2 + count)?;
            (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), 2 + count)
        }
    };
    let want = header + len;
    match body.len() {
        got if got < want => Some(format!("truncated: {got} of {want} bytes")),
        got if got > want => Some(format!("{} bytes of trailing data after the CRL", got - want)),
        _ => None,
    }
}

enum CrlFetch {
    /// The server could not be reached: how, and why.
    Unreachable(ConnectFailure, Box<Cause>),
    Failed(RevocationFailure),
}

/// The connection failure inside a call error, when the server could not
/// be reached at all.
fn unreachable(e: &CallError) -> Option<(ConnectFailure, Cause)> {
    match e {
        CallError::Connect { failure, verdict, diagnostic, .. } => {
            Some((failure.clone(), Cause { verdict: Some((**verdict).clone()), diagnostic: (**diagnostic).clone() }))
        }
        CallError::Timeout { .. } => {
            Some((ConnectFailure::TimedOut, Cause { verdict: None, diagnostic: e.diagnostic() }))
        }
        _ => None,
    }
}

/// The OCSP responder could not be reached while the CRLs were had: a
/// warning, worded from the classifier's verdict like the CRL findings (a
/// missing entry or a blocked port keep their requirement with the
/// `ocsp-unreachable` finding, so neither reads as a refusal).
fn ocsp_unreachable(responder: &str, failure: &ConnectFailure, cause: Cause) -> Diagnostic {
    let said =
        format!("OCSP responder {responder}:80 cannot be reached ({failure}); revocation was checked by CRL only");
    match cause.verdict {
        Some(Verdict::EntryMissing { works, .. }) => Diagnostic::new(
            code::NET_CRL_OCSP_UNREACHABLE,
            Some(EventId::Networking),
            format!("{said}; {works}:80 answered"),
            format!("add {responder} (port 80) to the allow-list"),
        ),
        Some(Verdict::PortBlocked { .. }) => Diagnostic::new(
            code::NET_80_OCSP_UNREACHABLE,
            Some(EventId::Networking),
            format!("{said}; nothing else answers on port 80 either"),
            format!("allow outbound TCP 80 to the CRL/OCSP hosts ({responder} among them) on every firewall and proxy"),
        ),
        _ => Diagnostic { message: format!("{said}: {}", cause.diagnostic.message), ..cause.diagnostic },
    }
}

fn host_of(url: &str) -> String {
    url.parse::<HttpUrl>().map(|u| u.host).unwrap_or_else(|_| url.to_string())
}

fn status_word(s: &OcspStatus) -> String {
    match s {
        OcspStatus::Good => "good".into(),
        OcspStatus::Revoked { .. } => "revoked".into(),
        OcspStatus::Unknown => "unknown".into(),
    }
}

/// Whether the CRL (DER) was issued by the certificate's issuer.
fn crl_issuer_matches(crl_der: &[u8], cert: &x509_parser::prelude::X509Certificate<'_>) -> bool {
    x509_parser::revocation_list::CertificateRevocationList::from_der(crl_der)
        .is_ok_and(|(_, crl)| crl.issuer().as_raw() == cert.issuer().as_raw())
}

#[cfg(test)]
mod tests {
    use super::der_shortfall;

    #[test]
    fn der_shortfall_names_truncation_and_junk() {
        assert_eq!(der_shortfall(&[0x30, 0x03, 1, 2, 3]), None);
        assert_eq!(der_shortfall(&[0x30, 0x05, 1, 2]).as_deref(), Some("truncated: 4 of 7 bytes"));
        assert!(der_shortfall(&[0x30, 0x01, 1, 2]).unwrap().contains("trailing"));
        assert!(der_shortfall(&[0x42]).unwrap().contains("not a DER"));
        assert_eq!(der_shortfall(&[0x30, 0x82, 0x01, 0x00]).as_deref(), Some("truncated: 4 of 260 bytes"));
        assert_eq!(der_shortfall(&[]).as_deref(), Some("0 bytes that are not a DER structure"));
        assert_eq!(der_shortfall(&[0x49]).as_deref(), Some("1 bytes that are not a DER structure, first byte 0x49"));
    }
}
