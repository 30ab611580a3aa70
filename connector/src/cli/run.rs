//! `connector run`: register on first start, then serve.

use super::{block_on, parse_environment_name, parse_host_port, read_roots, real_env, RevocationArg};
use connector::allowlist::Environment;
use connector::net::ResolveEntry;
use connector::pki::RevocationPolicy;
use connector::{Agent, AgentConfig, Credentials};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct RunArgs {
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
    /// Send everything through this explicit proxy (HTTP CONNECT, no
    /// proxy authentication).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    proxy: Option<(String, u16)>,
    /// The cloud to register in, as the installer's ENVIRONMENTNAME:
    /// `AzureUSGovernment` for the US Government cloud (its hosts end in
    /// `.us`); leave out for the public cloud.
    #[arg(long, value_name = "NAME", value_parser = parse_environment_name)]
    environment_name: Option<Environment>,
    /// Most requests served at once, on all tunnels together; the
    /// service's connection limit (bootstrap) caps it too. Past it a
    /// request is refused as overloaded and the relay tries elsewhere.
    #[arg(long, default_value_t = connector::agent::MAX_INFLIGHT)]
    max_inflight: usize,
}

/// Runs the agent until it stops or Ctrl-C.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
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
        proxy,
        environment_name,
        max_inflight,
    } = args;
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
    config.proxy = proxy;
    config.cloud = environment_name.unwrap_or_default();
    config.max_inflight = max_inflight.max(1);
    config.credentials = match (user, password) {
        (Some(username), Some(password)) => {
            Some(Credentials { username, password, directory: None, interactive: false })
        }
        (Some(_), None) => anyhow::bail!("--user needs --password (or CONNECTOR_PASSWORD)"),
        _ => None,
    };
    let env = real_env(resolve, None);
    block_on(async move {
        tokio::select! {
            res = Agent::new(env, config).run() => res.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
