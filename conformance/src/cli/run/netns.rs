//! `connsim run --world netns`: the marked scenarios in network namespaces.

use std::path::PathBuf;
use std::process::ExitCode;

use conformance::catalogue::Catalogue;
use conformance::report::{self, Entry, Status};
use conformance::{run_with, Scenario, Stepping, Verdict};

use super::{write_report, Format};
use crate::cli::exe_dir;

/// `connsim run --world netns`: each scenario marked for it, in network
/// namespaces, reported like a simulated run. A verdict or diagnostic codes
/// that differ from the simulation's fail the scenario: one of the two
/// network models is wrong.
pub(super) fn run_netns(
    scenarios: &[(PathBuf, Scenario)],
    format: Format,
    out: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    use conformance::netns::{self, NetnsResult};
    if let Some(why) = netns::unavailable() {
        eprintln!("netns world unavailable: {why}; nothing ran");
        return Ok(ExitCode::from(2));
    }
    let marked: Vec<&(PathBuf, Scenario)> =
        scenarios.iter().filter(|(_, s)| s.worlds.contains(&conformance::scenario::WorldKind::Netns)).collect();
    if marked.is_empty() {
        return Err("no scenario here is marked worlds = [\"sim\", \"netns\"]".into());
    }
    let bins = netns::Binaries::in_dir(&exe_dir()?)?;
    netns::clean_up_on_interrupt();
    let mut results = Vec::new();
    for (i, (path, s)) in marked.iter().enumerate() {
        eprintln!("[netns {}/{}] {} (real time)", i + 1, marked.len(), s.name);
        let result = match netns::run(s, &bins) {
            Ok(r) => {
                let mut result = r.as_run_result(s);
                let sim = run_with(s, s.seed.unwrap_or(1), Stepping::SkipIdle);
                if let Some(diff) = r.differs_from(&sim) {
                    result.verdict = Verdict::Fail;
                    result.failures.push(diff);
                }
                result
            }
            Err(e) => NetnsResult::not_run(s, e),
        };
        results.push((path.clone(), s, result));
    }
    let mut entries: Vec<Entry<'_>> = results
        .iter()
        .map(|(file, s, r)| {
            let repro =
                format!("cargo run --release -p conformance --bin connsim -- run --world netns {}", file.display());
            Entry::new(file, s, r, Status::of(r, None), repro)
        })
        .collect();
    report::draw_timelines(&mut entries);
    write_report(&entries, None, format, out, &Catalogue::builtin())?;
    let bad = entries.iter().any(|e| e.status.is_bad());
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
