//! `connsim merge`: one report and one verdict from the JSON reports of a
//! run split over machines (`connsim run --partition k/n --format json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use conformance::catalogue::Catalogue;
use conformance::report::{self, Entry, OwnedEntry};

use crate::cli::run::{write_report, Format};

/// The reports to merge and the report to write.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// JSON reports of the parts (`connsim run --format json --out FILE`).
    #[arg(required = true, value_name = "REPORT.json")]
    pub reports: Vec<PathBuf>,
    /// Output format of the merged report.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the merged report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Reads every part, refuses a run found in two of them, and writes the
/// runs in the order an unsplit run reports them (files, then seeds).
/// Exit 1 if any run failed or a listed failure passed, as `run` would.
pub fn merge(args: MergeArgs) -> Result<ExitCode, String> {
    let mut runs: Vec<OwnedEntry> = Vec::new();
    let mut found_in: BTreeMap<(PathBuf, u64), &Path> = BTreeMap::new();
    for path in &args.reports {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let part = report::parse_json(&text)
            .map_err(|e| format!("{}: not a JSON report of connsim run ({e})", path.display()))?;
        for run in part {
            let key = (PathBuf::from(&run.file), run.result.seed);
            if let Some(other) = found_in.insert(key, path) {
                return Err(format!(
                    "{} with seed {} is in both {} and {}: merge the parts of one split run, each once",
                    run.file,
                    run.result.seed,
                    other.display(),
                    path.display()
                ));
            }
            runs.push(run);
        }
    }
    runs.sort_by(|a, b| Path::new(&a.file).cmp(Path::new(&b.file)).then(a.result.seed.cmp(&b.result.seed)));
    let entries: Vec<Entry<'_>> = runs.iter().map(OwnedEntry::entry).collect();
    write_report(&entries, args.format, args.out.as_deref(), &Catalogue::builtin())?;
    let bad = entries.iter().any(|e| e.status.is_bad());
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
