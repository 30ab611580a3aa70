//! `connector diagnose`: the network checked the way a field engineer
//! would.

use super::{block_on, parse_environment_name, parse_host_port, parse_relay, read_roots, real_env, ReportFormat};
use anyhow::Context;
use connector::allowlist::Environment;
use connector::api::RelayEndpoint;
use connector::diagnose::DiagnoseConfig;
use connector::net::ResolveEntry;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DiagnoseArgs {
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

/// Checks every destination the connector needs and reports.
pub fn diagnose(args: DiagnoseArgs) -> anyhow::Result<()> {
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
