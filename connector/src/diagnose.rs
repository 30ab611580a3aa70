//! `connector diagnose`: the checks a field engineer runs on a connector
//! host, in order — name resolution, TCP reachability of every host and
//! port the connector needs, TLS to each service host with the issuer chain
//! it presents, and the port-80 downloads (trust list, CRLs) — with a
//! diagnostic for everything that fails. Runs over the same [`Env`] as the
//! agent: in a simulation it probes the simulated world, on a host the real
//! network.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};

use crate::agent::{ServiceNames, TRUST_LIST_PATH};
use crate::allowlist;
use crate::api::RelayEndpoint;
use crate::code::{self, EventId};
use crate::diag::Diagnostic;
use crate::env::Env;
use crate::http::HttpUrl;
use crate::pki::cert::CertInfo;
use crate::pki::{RevocationPolicy, Trust};
use crate::tls::TlsContext;

/// What to check.
#[derive(Debug, Clone)]
pub struct DiagnoseConfig {
    pub tenant_id: String,
    pub trusted_roots: Vec<CertificateDer<'static>>,
    pub service_roots: Vec<CertificateDer<'static>>,
    /// Relay endpoints to check (bootstrap hands them out; give them here).
    pub relays: Vec<RelayEndpoint>,
    pub timeout: Duration,
    /// The cloud whose names to check.
    pub cloud: crate::allowlist::Environment,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Step {
    Ok { detail: String },
    Failed { error: String },
    Skipped,
}

impl Step {
    fn ok(&self) -> bool {
        matches!(self, Step::Ok { .. })
    }
}

/// The checks of one destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub host: String,
    pub port: u16,
    /// The allow-list entry it falls under.
    pub entry: Option<String>,
    pub dns: Step,
    pub tcp: Step,
    /// TLS (port 443) or HTTP GET (port 80).
    pub protocol: Step,
    /// Subject → issuer of each certificate presented (TLS).
    pub chain: Vec<String>,
}

/// Everything `diagnose` found: the bundle a support engineer asks for
/// (`connsim from-bundle` turns it into a scenario).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// What was checked: tenant, cloud and relay endpoints.
    #[serde(default)]
    pub context: Context,
    pub checks: Vec<Check>,
    pub findings: Vec<Diagnostic>,
}

/// The settings a report was made with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    pub tenant: String,
    pub cloud: crate::allowlist::Environment,
    pub relays: Vec<RelayEndpoint>,
}

impl Context {
    fn of(cfg: &DiagnoseConfig) -> Self {
        Context { tenant: cfg.tenant_id.clone(), cloud: cfg.cloud, relays: cfg.relays.clone() }
    }
}

impl Report {
    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !(c.dns.ok() && c.tcp.ok() && c.protocol.ok())).count()
    }

    /// A table for people.
    pub fn text(&self) -> String {
        let mark = |s: &Step| match s {
            Step::Ok { .. } => "ok",
            Step::Failed { .. } => "FAIL",
            Step::Skipped => "-",
        };
        let mut out =
            format!("{:<48} {:>5}  {:<4} {:<4} {:<5}  detail\n", "destination", "port", "dns", "tcp", "proto");
        for c in &self.checks {
            let detail = [&c.dns, &c.tcp, &c.protocol]
                .iter()
                .find_map(|s| match s {
                    Step::Failed { error } => Some(error.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| match &c.protocol {
                    Step::Ok { detail } => detail.clone(),
                    _ => String::new(),
                });
            out.push_str(&format!(
                "{:<48} {:>5}  {:<4} {:<4} {:<5}  {}\n",
                c.host,
                c.port,
                mark(&c.dns),
                mark(&c.tcp),
                mark(&c.protocol),
                detail
            ));
        }
        out.push_str(&format!("\n{} of {} destinations failed\n", self.failed(), self.checks.len()));
        for d in &self.findings {
            out.push_str(&format!("{d}\n"));
        }
        out
    }
}

/// Runs every check.
pub async fn run(env: &Env, cfg: &DiagnoseConfig) -> Report {
    let names = ServiceNames::in_cloud(cfg.cloud, &cfg.tenant_id);
    env.evidence.set_references(cfg.cloud, names.reference_hosts(443));
    env.evidence.set_relays(cfg.relays.iter().map(|r| (r.host.clone(), r.port)).collect());
    let tls_ctx = TlsContext::new(env.entropy.clone(), env.clock.clone());
    let trust = match Trust::new(
        cfg.trusted_roots.clone(),
        cfg.service_roots.clone(),
        RevocationPolicy::SoftFail,
        tls_ctx.provider.clone(),
    ) {
        Ok(t) => Rc::new(t),
        Err(e) => {
            let d = Diagnostic::new(
                code::TLS_ROOTS_NO_COMMON_ROOT,
                Some(EventId::Certificate),
                e.to_string(),
                "install the service's roots",
            );
            return Report { context: Context::of(cfg), checks: Vec::new(), findings: vec![d] };
        }
    };
    let config = tls_ctx.client_config(trust.verifier(), None).map(Arc::new);
    let mut targets: Vec<(String, u16)> = vec![
        (names.login.clone(), 443),
        (names.registration.clone(), 443),
        (names.bootstrap.clone(), 443),
        (names.renewtrust.clone(), 443),
    ];
    targets.extend(cfg.relays.iter().map(|r| (r.host.clone(), r.port)));
    targets.push((names.trust_list.clone(), 80));
    let mut report = Report { context: Context::of(cfg), checks: Vec::new(), findings: Vec::new() };
    let mut crl_urls: Vec<String> = Vec::new();
    for (host, port) in targets {
        let path = if host == names.trust_list { TRUST_LIST_PATH.to_string() } else { "/".into() };
        let check = check_one(env, cfg, &trust, config.as_ref().ok(), &host, port, &path, &mut report.findings).await;
        for cert in trust.seen_chain(&host).unwrap_or_default() {
            if let Ok(info) = CertInfo::parse(&cert, "chain") {
                for url in info.crl_urls {
                    if !crl_urls.contains(&url) {
                        crl_urls.push(url);
                    }
                }
            }
        }
        report.checks.push(check);
    }
    for url in crl_urls {
        let Ok(u) = url.parse::<HttpUrl>() else { continue };
        let check = check_one(env, cfg, &trust, None, &u.host, u.port, &u.path, &mut report.findings).await;
        report.checks.push(check);
    }
    report.findings.dedup();
    report
}

#[allow(clippy::too_many_arguments)]
async fn check_one(
    env: &Env,
    cfg: &DiagnoseConfig,
    trust: &Trust,
    tls: Option<&Arc<rustls::ClientConfig>>,
    host: &str,
    port: u16,
    path: &str,
    findings: &mut Vec<Diagnostic>,
) -> Check {
    let mut check = Check {
        host: host.to_string(),
        port,
        entry: allowlist::entry_for(host, port).map(|(g, e)| format!("{e} ({g})")),
        dns: Step::Skipped,
        tcp: Step::Skipped,
        protocol: Step::Skipped,
        chain: Vec::new(),
    };
    let mut note = |d: Diagnostic| {
        if !findings.contains(&d) {
            findings.push(d);
        }
    };
    let stream = match crate::reach::connect(env, host, port, cfg.timeout).await {
        Ok((addr, s)) => {
            check.dns = Step::Ok { detail: addr.to_string() };
            check.tcp = Step::Ok { detail: format!("{addr}:{port}") };
            s
        }
        Err(u) => {
            match u.addr {
                Some(addr) => {
                    check.dns = Step::Ok { detail: addr.to_string() };
                    check.tcp = Step::Failed { error: u.failure.to_string() };
                }
                None => check.dns = Step::Failed { error: u.failure.to_string() },
            }
            note(u.diagnostic);
            return check;
        }
    };
    match (port, tls) {
        (443, Some(tls)) => {
            let Ok(name) = ServerName::try_from(host.to_string()) else {
                check.protocol = Step::Failed { error: "not a valid server name".into() };
                return check;
            };
            let result =
                crate::time::timeout(cfg.timeout, tokio_rustls::TlsConnector::from(tls.clone()).connect(name, stream))
                    .await;
            check.chain = trust
                .seen_chain(host)
                .unwrap_or_default()
                .iter()
                .filter_map(|c| CertInfo::parse(c, "chain").ok())
                .map(|i| format!("{} ← {}", i.subject, i.issuer))
                .collect();
            match result {
                Ok(Ok(s)) => {
                    let version = s.get_ref().1.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
                    check.protocol =
                        Step::Ok { detail: format!("TLS {version}, issuer chain: {}", check.chain.join(" | ")) };
                }
                Ok(Err(e)) => {
                    let error = crate::tls_failure::TlsFailure::from_io(&e);
                    note(trust.explain(host, port, &error, env.clock.now()));
                    check.protocol = Step::Failed { error: error.to_string() };
                }
                Err(_) => check.protocol = Step::Failed { error: "TLS handshake timed out".into() },
            }
        }
        _ => {
            drop(stream);
            let url = HttpUrl { host: host.to_string(), port, path: path.to_string() };
            match crate::http::plain_request(env, &url, None, cfg.timeout, 4 << 20).await {
                Ok(r) if r.status == 200 => {
                    check.protocol = Step::Ok { detail: format!("GET {url}: {} bytes", r.body.len()) }
                }
                Ok(r) => check.protocol = Step::Failed { error: format!("GET {url}: HTTP {}", r.status) },
                Err(e) => {
                    note(e.diagnostic());
                    check.protocol = Step::Failed { error: e.to_string() };
                }
            }
        }
    }
    check
}
