//! `connsim merge`: one report and one verdict from the JSON reports of a
//! run split over machines (`connsim run --partition k/n --format json`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use conformance::catalogue::Catalogue;
use conformance::report::{self, Entry, OwnedEntry, Part};

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

/// Reads every part, refuses a run found in two of them or a split sweep
/// with a part missing, and writes the runs in the order an unsplit run
/// reports them (files, then seeds). Exit 1 if any run failed or a listed
/// failure passed, as `run` would.
pub fn merge(args: MergeArgs) -> Result<ExitCode, String> {
    let mut runs: Vec<(PathBuf, OwnedEntry)> = Vec::new();
    let mut parts: Vec<(&Path, Option<Part>)> = Vec::new();
    let mut found_in: BTreeMap<(PathBuf, u64), &Path> = BTreeMap::new();
    for path in &args.reports {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let (part, part_runs) = report::parse_json(&text)
            .map_err(|e| format!("{}: not a JSON report of connsim run ({e})", path.display()))?;
        parts.push((path, part));
        for mut run in part_runs {
            // `./scenarios/a.toml` on one machine is `scenarios/a.toml` on another.
            let file: PathBuf = Path::new(&run.file).components().filter(|c| *c != Component::CurDir).collect();
            if let Some(other) = found_in.insert((file.clone(), run.result.seed), path) {
                return Err(format!(
                    "{} with seed {} is in both {} and {}: merge the parts of one split run, each once",
                    run.file,
                    run.result.seed,
                    other.display(),
                    path.display()
                ));
            }
            // One form for the reports too, which tell scenarios apart by file.
            run.file = file.to_string_lossy().into_owned();
            runs.push((file, run));
        }
    }
    check_complete(&parts, runs.len())?;
    runs.sort_by(|(a, ra), (b, rb)| a.cmp(b).then(ra.result.seed.cmp(&rb.result.seed)));
    let mut entries: Vec<Entry<'_>> = runs.iter().map(|(_, run)| run.entry()).collect();
    report::keep_timelines(&mut entries);
    write_report(&entries, None, args.format, args.out.as_deref(), &Catalogue::builtin())?;
    let bad = entries.iter().any(|e| e.status.is_bad());
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The parts of a split sweep must all be there, once each, and hold its
/// runs (`runs` in all). Reports of unsplit runs are merged as they are.
fn check_complete(parts: &[(&Path, Option<Part>)], runs: usize) -> Result<(), String> {
    let split: Vec<(&Path, Part)> = parts.iter().filter_map(|(path, part)| part.map(|p| (*path, p))).collect();
    let Some((first_path, first)) = split.first().copied() else { return Ok(()) };
    if split.len() != parts.len() {
        return Err("some reports are parts of a split run (--partition) and some are not".into());
    }
    let mut seen: BTreeMap<usize, &Path> = BTreeMap::new();
    for (path, part) in &split {
        if (part.n, part.runs_in_sweep) != (first.n, first.runs_in_sweep) {
            return Err(format!(
                "{} is part {}/{} of a sweep of {} runs, {} part {}/{} of one of {}: not the same split",
                path.display(),
                part.k,
                part.n,
                part.runs_in_sweep,
                first_path.display(),
                first.k,
                first.n,
                first.runs_in_sweep
            ));
        }
        if let Some(other) = seen.insert(part.k, path) {
            return Err(format!("{} and {} are both part {}/{}", other.display(), path.display(), part.k, part.n));
        }
    }
    let missing: Vec<String> =
        (1..=first.n).filter(|k| !seen.contains_key(k)).map(|k| format!("{k}/{}", first.n)).collect();
    if !missing.is_empty() {
        return Err(format!("part {} missing: the merged verdict would not cover the sweep", missing.join(", ")));
    }
    if runs != first.runs_in_sweep {
        return Err(format!("the parts hold {runs} runs, the sweep has {}", first.runs_in_sweep));
    }
    Ok(())
}
