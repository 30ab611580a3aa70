//! `connector`: the agent on a real host.

use clap::{Parser, Subcommand};

mod cli;

use cli::diagnose::{diagnose, DiagnoseArgs};
use cli::host::{install, preflight, uninstall, InstallArgs, PreflightArgs, UninstallArgs};
use cli::run::{run, RunArgs};

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
