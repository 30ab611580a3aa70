//! `connector install`, `uninstall` and `preflight`: the footprint on
//! disk and the installer's checks of this server.

use super::ReportFormat;
use anyhow::Context;
use connector::host::HostProfile;
use connector::install::Installation;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InstallArgs {
    #[arg(long)]
    install_dir: PathBuf,
    #[arg(long, default_value = connector::agent::DEFAULT_VERSION)]
    version: String,
}

#[derive(clap::Args)]
pub struct UninstallArgs {
    #[arg(long)]
    install_dir: PathBuf,
    /// Also delete every folder the connector created (needed before
    /// installing again).
    #[arg(long)]
    delete_folders: bool,
}

#[derive(clap::Args)]
pub struct PreflightArgs {
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

/// Installs a version into an empty install folder.
pub fn install(args: InstallArgs) -> anyhow::Result<()> {
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
pub fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
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
pub fn preflight(args: PreflightArgs) -> anyhow::Result<()> {
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
