//! `connsim from-bundle`: a field report turned into a scenario, run.

use std::path::PathBuf;
use std::process::ExitCode;

/// The field report to rebuild.
#[derive(clap::Args)]
pub struct FromBundleArgs {
    pub bundle: PathBuf,
    /// The scenario's name (default: the bundle file's name).
    #[arg(long)]
    pub name: Option<String>,
}

/// Prints the scenario; says which findings it reproduces.
pub fn from_bundle(args: FromBundleArgs) -> Result<ExitCode, String> {
    let FromBundleArgs { bundle, name } = args;
    let json = std::fs::read_to_string(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let report = conformance::bundle::parse(&json).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let name = name.unwrap_or_else(|| {
        bundle.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "field".into())
    });
    let tr = conformance::bundle::translate(&report, &name);
    let v = conformance::bundle::verify(&tr)?;
    print!("{}", v.toml);
    for n in &tr.notes {
        eprintln!("not rebuilt: {n}");
    }
    eprintln!(
        "reproduced {} of {} findings{}",
        v.reproduced.len(),
        tr.expected.len(),
        if v.missing.is_empty() { String::new() } else { format!("; missing: {}", v.missing.join(", ")) }
    );
    Ok(if v.missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
