//! `connector`: the agent on a real host.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use connector::allowlist::Environment;
use connector::api::RelayEndpoint;
use connector::diagnose::DiagnoseConfig;
use connector::env::{Env, LogSink, OsEntropy, SystemClock};
use connector::host::HostProfile;
use connector::identity::parse_pem_certs;
use connector::install::Installation;
use connector::net::{ResolveEntry, TokioNet};
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
    Run(RunArgs),
    /// Install a version into an empty install folder (`run` does this on
    /// first start). Refuses folders left by an earlier installation: the
    /// spec's upgrade is uninstall, delete the folders, install.
    Install(InstallArgs),
    /// Uninstall: remove both services' program folders. The data folders
    /// (the registration) stay unless --delete-folders is given.
    Uninstall(UninstallArgs),
    /// The installer's checks of this server (HOST-OS, HOST-TLS12,
    /// HOST-PPP, HOST-NET471, HOST-ONE, HOST-IEESC, HOST-COEXIST), from a
    /// host profile (JSON; fields not given are those of a compliant server)
    /// and a `.reg` export of the TLS keys. Exit status 1 if any fails.
    ///
    /// Example:
    ///   connector preflight --profile host.json --reg tls12.reg --version 1.5.3437.0
    Preflight(PreflightArgs),
    /// Check the network the way a field engineer would: name resolution and
    /// TCP reachability of every host and port the connector needs, TLS to
    /// each service host (with the issuer chain it presents), the trust list
    /// and CRL downloads on port 80. Exit status 1 if anything failed.
    ///
    /// Example:
    ///   connector diagnose --tenant contoso --trust-root roots.pem
    ///     --relay cwap-weu-1.servicebus.windows.net --format json --out report.json
    Diagnose(DiagnoseArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

fn parse_environment_name(s: &str) -> Result<Environment, String> {
    Environment::from_environment_name(Some(s))
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
    let port = p.parse().map_err(|_| format!("{s:?}: bad port {p:?}"))?;
    if h.is_empty() {
        return Err(format!("{s:?}: empty host"));
    }
    Ok((h.to_string(), port))
}

fn parse_relay(s: &str) -> Result<RelayEndpoint, String> {
    match s.rsplit_once(':') {
        Some(_) => parse_host_port(s).map(|(host, port)| RelayEndpoint { host, port }),
        None => Ok(RelayEndpoint { host: s.to_string(), port: 443 }),
    }
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
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Install(args) => install(args),
        Command::Uninstall(args) => uninstall(args),
        Command::Preflight(args) => preflight(args),
        Command::Diagnose(args) => diagnose(args),
    }
}

#[derive(clap::Args)]
struct RunArgs {
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
}

#[derive(clap::Args)]
struct InstallArgs {
    #[arg(long)]
    install_dir: PathBuf,
    #[arg(long, default_value = connector::agent::DEFAULT_VERSION)]
    version: String,
}

#[derive(clap::Args)]
struct UninstallArgs {
    #[arg(long)]
    install_dir: PathBuf,
    /// Also delete every folder the connector created (needed before
    /// installing again).
    #[arg(long)]
    delete_folders: bool,
}

#[derive(clap::Args)]
struct PreflightArgs {
    /// Host profile (JSON): os_version, dotnet_release, installed, ie_esc, restart_pending.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// `.reg` export (UTF-8 or UTF-16 with BOM) of the SCHANNEL and .NET keys.
    #[arg(long)]
    reg: Option<PathBuf>,
    /// Connector version to install.
    #[arg(long, default_value = connector::agent::DEFAULT_VERSION)]
    version: String,
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
}

#[derive(clap::Args)]
struct DiagnoseArgs {
    #[arg(long)]
    tenant: String,
    /// PEM file of root certificates the host trusts.
    #[arg(long, required = true)]
    trust_root: Vec<PathBuf>,
    /// PEM file of the roots the service uses (see `run --help`).
    #[arg(long)]
    service_root: Vec<PathBuf>,
    /// A relay endpoint to check (bootstrap hands them out), HOST[:PORT].
    #[arg(long, value_parser = parse_relay)]
    relay: Vec<RelayEndpoint>,
    /// Override name resolution, like curl: NAME[:PORT]=ADDR:PORT.
    #[arg(long, value_name = "NAME=ADDR:PORT")]
    resolve: Vec<ResolveEntry>,
    /// Go through this explicit proxy, as the connector would.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    proxy: Option<(String, u16)>,
    /// The cloud to register in, as the installer's ENVIRONMENTNAME:
    /// `AzureUSGovernment` for the US Government cloud (its hosts end in
    /// `.us`); leave out for the public cloud.
    #[arg(long, value_name = "NAME", value_parser = parse_environment_name)]
    environment_name: Option<Environment>,
    /// Seconds allowed for each step.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs the agent until it stops or Ctrl-C.
fn run(args: RunArgs) -> anyhow::Result<()> {
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

/// Installs a version into an empty install folder.
fn install(args: InstallArgs) -> anyhow::Result<()> {
    let InstallArgs { install_dir, version } = args;
    Installation::at(&install_dir).install(&version).map_err(|e| {
        let hint = match e {
            connector::install::InstallError::Leftover { .. } => {
                "\n  run `connector uninstall --install-dir DIR --delete-folders` first"
            }
            _ => "",
        };
        anyhow::anyhow!("{e}{hint}")
    })?;
    println!("installed {version} in {}", install_dir.display());
    Ok(())
}

/// Uninstalls, optionally deleting the folders.
fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let UninstallArgs { install_dir, delete_folders } = args;
    let installation = Installation::at(&install_dir);
    // Deleting what an earlier uninstall left needs nothing installed.
    if !(delete_folders && installation.installed_version()?.is_none()) {
        installation.uninstall()?;
    }
    if delete_folders {
        installation.delete_folders()?;
        println!("uninstalled; deleted the connector's folders in {}", install_dir.display());
    } else {
        let left = installation.leftovers();
        println!(
            "uninstalled; left in {}: {} (delete them before installing again)",
            install_dir.display(),
            left.join(", ")
        );
    }
    Ok(())
}

/// Checks a host profile against the installer's requirements.
fn preflight(args: PreflightArgs) -> anyhow::Result<()> {
    let PreflightArgs { profile, reg, version, format } = args;
    let mut host = match &profile {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_str::<HostProfile>(&text).with_context(|| format!("{}", p.display()))?
        }
        None => HostProfile::compliant(),
    };
    if let Some(path) = &reg {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let text = connector::host::reg::decode(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        connector::host::reg::RegFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        host.registry = Some(text);
    }
    let checks = connector::host::preflight(&host, &version);
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&checks)?),
        ReportFormat::Text => {
            for c in &checks {
                let verdict = if c.passed { "ok  " } else { "FAIL" };
                println!("{verdict} {:<12} {}", c.requirement, c.detail);
                if let Some(d) = &c.diagnostic {
                    println!("     fix: {}", d.remedy);
                }
            }
        }
    }
    if checks.iter().any(|c| !c.passed) {
        std::process::exit(1);
    }
    Ok(())
}

/// Checks every destination the connector needs and reports.
fn diagnose(args: DiagnoseArgs) -> anyhow::Result<()> {
    let DiagnoseArgs {
        tenant,
        trust_root,
        service_root,
        relay,
        resolve,
        proxy,
        environment_name,
        timeout,
        format,
        out,
    } = args;
    let cfg = DiagnoseConfig {
        tenant_id: tenant,
        trusted_roots: read_roots(&trust_root)?,
        service_roots: read_roots(&service_root)?,
        relays: relay,
        timeout: Duration::from_secs(timeout.max(1)),
        cloud: environment_name.unwrap_or_default(),
    };
    let env = real_env(resolve, proxy);
    let report = block_on(async move { Ok(connector::diagnose::run(&env, &cfg).await) })?;
    let text = match format {
        ReportFormat::Text => report.text(),
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    match out {
        Some(path) => std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    if report.failed() > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn real_env(resolve: Vec<ResolveEntry>, proxy: Option<(String, u16)>) -> Env {
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

fn block_on<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, fut)
}
