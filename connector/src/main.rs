//! `connector`: the agent on a real host.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use connector::env::{Env, LogSink, OsEntropy, ResolveEntry, SystemClock, TokioNet};
use connector::identity::parse_pem_certs;
use connector::pki::RevocationPolicy;
use connector::{Agent, AgentConfig, Credentials};

#[derive(Parser)]
#[command(name = "connector", version, about = "Outbound-only private network connector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register (first run) and serve: bootstrap every 10 minutes, keep a
    /// tunnel to every relay endpoint, forward pushed requests to backends.
    ///
    /// The connector only dials out: 443 to the service, 80 for revocation.
    /// Its key and certificate live in INSTALL_DIR/identity; once there, the
    /// administrator's sign-in is no longer needed.
    ///
    /// Example against a local relay-sim (it prints the full command):
    ///   connector run --tenant contoso --install-dir ./c1 --trust-root relay-sim-state/root.pem
    ///     --user admin@contoso.com --password ... --resolve login.microsoftonline.com=127.0.0.1:40001 ...
    Run {
        /// Tenant id (appears in the service host names).
        #[arg(long)]
        tenant: String,
        /// Install folder: identity and state are kept here.
        #[arg(long)]
        install_dir: PathBuf,
        /// PEM file of root certificates the host trusts (its trust store).
        #[arg(long, required = true)]
        trust_root: Vec<PathBuf>,
        /// PEM file of the roots the service uses. When given, service
        /// chains must end in one of these that the host also trusts, which
        /// refuses TLS inspection boxes re-signing with a host-trusted CA.
        #[arg(long)]
        service_root: Vec<PathBuf>,
        /// What to do when a certificate's revocation status cannot be
        /// learned (CRL/OCSP servers unreachable on port 80).
        #[arg(long, value_enum, default_value = "hard-fail")]
        revocation: RevocationArg,
        /// Administrator user for registration.
        #[arg(long)]
        user: Option<String>,
        /// Administrator password (or set CONNECTOR_PASSWORD).
        #[arg(long, env = "CONNECTOR_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Name this machine reports (defaults to the host name).
        #[arg(long)]
        machine_name: Option<String>,
        /// Override name resolution, like curl: NAME[:PORT]=ADDR:PORT.
        #[arg(long, value_name = "NAME=ADDR:PORT")]
        resolve: Vec<ResolveEntry>,
        /// Bootstrap interval in seconds (default: what the service says, 600).
        #[arg(long)]
        bootstrap_interval: Option<u64>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RevocationArg {
    /// Refuse the connection (as the real host does).
    HardFail,
    /// Allow it and report a warning.
    SoftFail,
}

fn read_roots(paths: &[PathBuf]) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let mut roots = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = parse_pem_certs(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{}: no certificate in file", path.display());
        roots.extend(certs);
    }
    Ok(roots)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let Command::Run {
        tenant,
        install_dir,
        trust_root,
        service_root,
        revocation,
        user,
        password,
        machine_name,
        resolve,
        bootstrap_interval,
    } = Cli::parse().command;
    let roots = read_roots(&trust_root)?;
    anyhow::ensure!(!roots.is_empty(), "no trusted root: pass --trust-root FILE");
    let machine = machine_name.or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| "connector-host".into());
    let mut config = AgentConfig::new(&tenant, &machine, install_dir);
    config.trusted_roots = roots;
    config.service_roots = read_roots(&service_root)?;
    config.revocation = match revocation {
        RevocationArg::HardFail => RevocationPolicy::HardFail,
        RevocationArg::SoftFail => RevocationPolicy::SoftFail,
    };
    config.bootstrap_interval = bootstrap_interval.map(Duration::from_secs);
    config.credentials = match (user, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (Some(_), None) => anyhow::bail!("--user needs --password (or CONNECTOR_PASSWORD)"),
        _ => None,
    };
    let env = Env {
        net: Rc::new(TokioNet::new(resolve)),
        clock: Arc::new(SystemClock),
        entropy: Arc::new(OsEntropy),
        events: Rc::new(LogSink),
        reach: Rc::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        tokio::select! {
            res = Agent::new(env, config).run() => res.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
