//! `relay-sim`: runs the simulated cloud on real sockets.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use relay_sim::serve::{start, ServeOptions};

#[derive(Parser)]
#[command(name = "relay-sim", version, about = "The simulated connector cloud, on real sockets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve login, registration, bootstrap, relays, ingress and an echo
    /// backend on loopback, and print how to point a connector at them.
    ///
    /// Every service host name gets its own port. The printed `--resolve`
    /// flags make the connector dial them instead of the real cloud; the
    /// root certificate written to STATE_DIR/root.pem is the one it must
    /// trust. Users reach the published app at the printed ingress address
    /// with the printed Host header.
    Serve {
        /// Address to listen on (keep it on loopback).
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Tenant id used in the service host names.
        #[arg(long, default_value = "contoso")]
        tenant: String,
        /// The tenant's verified domain.
        #[arg(long, default_value = "contoso.com")]
        domain: String,
        /// A Global Administrator of the tenant.
        #[arg(long, default_value = "admin@contoso.com")]
        admin: String,
        /// That administrator's password.
        #[arg(long, default_value = "correct-horse")]
        password: String,
        /// Relay endpoints (servicebus namespaces) to serve.
        #[arg(long, default_value_t = 2)]
        relays: usize,
        /// Bootstrap interval handed to connectors, seconds.
        #[arg(long, default_value_t = 600)]
        bootstrap_interval: u64,
        /// Folder for root.pem and the manifest.
        #[arg(long, default_value = "relay-sim-state")]
        state_dir: PathBuf,
        /// Give each service host its own address counting up from this
        /// one, on the real ports (443, 80), instead of a port per host on
        /// --bind. The addresses must already be local (connsim's netns
        /// world routes a range to the loopback device).
        #[arg(long)]
        host_base: Option<std::net::Ipv4Addr>,
        /// The published app's backend, HOST:PORT (served here as an echo).
        #[arg(long, default_value = "echo.corp.local:8080")]
        backend: String,
        /// Largest upload the ingress relays, bytes (413 past it). Uploads
        /// and downloads stream; this is a policy, not a memory bound.
        #[arg(long, default_value_t = relay_sim::cloud::UPLOAD_BYTES_MAX)]
        upload_max: u64,
        /// Requests each connector may serve at once, handed out in
        /// bootstrap (the real service's is 200). A connector also applies
        /// its own --max-inflight.
        #[arg(long, default_value_t = relay_sim::cloud::CONNECTION_LIMIT)]
        connection_limit: u32,
    },
    /// Act on a running `relay-sim serve` through its control API, or show
    /// its status (connectors, tunnels, gates, what the backend served).
    ///
    /// The address and token come from STATE_DIR/manifest.json. Example:
    /// `relay-sim control block-port --port 443 --mode reject`, later
    /// `relay-sim control unblock-port --port 443`.
    Control {
        /// The folder `relay-sim serve` writes its manifest to.
        #[arg(long, default_value = "relay-sim-state")]
        state_dir: PathBuf,
        #[command(subcommand)]
        action: Option<relay_sim::control::Action>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Control { state_dir, action } => control(&state_dir, action.as_ref()),
        serve @ Command::Serve { .. } => run_serve(serve),
    }
}

/// `relay-sim control`: one request to the control API, its answer printed.
fn control(state_dir: &std::path::Path, action: Option<&relay_sim::control::Action>) -> anyhow::Result<()> {
    let path = state_dir.join("manifest.json");
    let text = std::fs::read(&path)
        .with_context(|| format!("reading {} (is relay-sim serve running with this --state-dir?)", path.display()))?;
    let manifest: relay_sim::serve::Manifest =
        serde_json::from_slice(&text).with_context(|| format!("{}: not a relay-sim manifest", path.display()))?;
    let reply = relay_sim::control::call(manifest.control, &manifest.control_token, action)
        .with_context(|| format!("control API at {}", manifest.control))?;
    println!("{}", reply.body);
    anyhow::ensure!(reply.status == 200, "the control API answered {}", reply.status);
    Ok(())
}

fn run_serve(command: Command) -> anyhow::Result<()> {
    let Command::Serve {
        bind,
        tenant,
        domain,
        admin,
        password,
        relays,
        bootstrap_interval,
        state_dir,
        host_base,
        backend,
        upload_max,
        connection_limit,
    } = command
    else {
        anyhow::bail!("not a serve command");
    };
    let (backend_host, backend_port) = backend
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .with_context(|| format!("--backend {backend:?}: expected HOST:PORT, e.g. app1.corp.local:8080"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let opts = ServeOptions {
            bind,
            tenant_id: tenant,
            domain,
            admin,
            password,
            relays,
            state_dir: state_dir.clone(),
            bootstrap_interval_s: bootstrap_interval,
            host_base,
            backend_host,
            backend_port,
            upload_bytes_max: upload_max,
            connection_limit: connection_limit.max(1),
        };
        let served = start(opts).await?;
        let manifest = &served.manifest;
        let manifest_path = state_dir.join("manifest.json");
        std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)
            .with_context(|| format!("writing {}", manifest_path.display()))?;
        println!("relay-sim serving tenant {} (manifest: {})", manifest.tenant_id, manifest_path.display());
        println!("\nRun a connector against it:\n  {}", manifest.connector_command("connector-install"));
        println!(
            "\nThen call the published app:\n  curl -H 'Host: {}' http://{}/hello",
            manifest.apps.first().map(String::as_str).unwrap_or("?"),
            manifest.ingress
        );
        println!(
            "\nAct on the cloud while it runs (stop a relay, block port 443, rotate the root, ...):\n  \
             relay-sim control --state-dir {} --help\n  \
             (the control API: http://{}, token {})",
            state_dir.display(),
            manifest.control,
            manifest.control_token
        );
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        Ok(())
    })
}
