//! The `connector` binary's subcommands, one module each, and what they
//! share: argument parsers, the real world's `Env`, a runtime to block on.

pub mod diagnose;
pub mod host;
pub mod run;

use anyhow::Context;
use connector::allowlist::Environment;
use connector::api::RelayEndpoint;
use connector::env::{Env, LogSink, OsEntropy, SystemClock};
use connector::identity::parse_pem_certs;
use connector::net::{ResolveEntry, TokioNet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

pub fn parse_environment_name(s: &str) -> Result<Environment, String> {
    Environment::from_environment_name(Some(s))
}

pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
    let port = p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?;
    if h.is_empty() {
        return Err(format!("{s:?}: empty host"));
    }
    Ok((h.to_string(), port))
}

pub fn parse_relay(s: &str) -> Result<RelayEndpoint, String> {
    match s.rsplit_once(':') {
        Some(_) => parse_host_port(s).map(|(host, port)| RelayEndpoint { host, port }),
        None => Ok(RelayEndpoint { host: s.to_string(), port: 443 }),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RevocationArg {
    /// Refuse the connection (as the real host does).
    HardFail,
    /// Allow it and report a warning.
    SoftFail,
}

pub fn read_roots(paths: &[PathBuf]) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let mut roots = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = parse_pem_certs(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{}: no certificate in file", path.display());
        roots.extend(certs);
    }
    Ok(roots)
}

pub fn real_env(resolve: Vec<ResolveEntry>, proxy: Option<(String, u16)>) -> Env {
    let mut net: Rc<dyn connector::net::Net> = Rc::new(TokioNet::new(resolve));
    if let Some((host, port)) = proxy {
        net = Rc::new(connector::proxy::ProxyNet { inner: net, host, port });
    }
    Env {
        net,
        clock: Arc::new(SystemClock),
        entropy: Arc::new(OsEntropy),
        events: Rc::new(LogSink),
        evidence: Rc::default(),
    }
}

/// Runs `fut` as a task of a `LocalSet` on a current-thread runtime.
///
/// As a task, not as the future the set is blocked on: tokio polls that
/// future at every wake-up of any task of the set, and the agent's
/// supervision loop (a select over several notifications and a timer)
/// would then be polled once or twice for every request a tunnel serves.
/// A panic in `fut` is resumed here, as if it had been polled in place.
pub fn block_on<T: 'static>(fut: impl std::future::Future<Output = anyhow::Result<T>> + 'static) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    let task = local.spawn_local(fut);
    match local.block_on(&rt, task) {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow::anyhow!("the main task was cancelled: {e}")),
    }
}

/// How `preflight` and `diagnose` print their reports.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}
