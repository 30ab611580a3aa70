//! `connsim run` in simulation: every scenario × seed on the worker
//! threads, with the determinism and stepping checks asked for.

use std::path::PathBuf;
use std::process::ExitCode;

use conformance::catalogue::Catalogue;
use conformance::expected::ExpectedFailures;
use conformance::report::{self, Entry, Status};
use conformance::Scenario;

use super::workers::{run_all, Checks};
use super::{write_report, RunArgs};
use crate::cli::{load_all, stepping};

/// `connsim run` in simulation.
pub(super) fn sim(args: RunArgs) -> Result<ExitCode, String> {
    let RunArgs {
        paths,
        seed,
        seeds,
        format,
        out,
        expected_failures,
        check_determinism,
        check_stepping,
        jobs,
        filter,
        fixed_steps,
        partition,
        world: _,
    } = args;
    let catalogue = Catalogue::builtin();
    let expected = match expected_failures {
        Some(path) => ExpectedFailures::load(&path, &catalogue)?,
        None => {
            let default = PathBuf::from(DEFAULT_EXPECTED_FAILURES);
            if default.is_file() {
                ExpectedFailures::load(&default, &catalogue)?
            } else {
                ExpectedFailures::default()
            }
        }
    };
    let scenarios: Vec<(PathBuf, Scenario)> =
        load_all(&paths)?.into_iter().filter(|(_, s)| filter.as_deref().is_none_or(|f| s.name.contains(f))).collect();
    if scenarios.is_empty() {
        return Err("no scenario matches the filter".into());
    }
    let runs: Vec<(usize, u64)> = scenarios
        .iter()
        .enumerate()
        .flat_map(|(i, (_, s))| {
            let range = match seeds {
                Some(r) => r.first..=r.last,
                None => {
                    let one = seed.or(s.seed).unwrap_or(1);
                    one..=one
                }
            };
            range.map(move |seed| (i, seed))
        })
        .collect();
    let runs_in_sweep = runs.len();
    let runs: Vec<(usize, u64)> =
        runs.into_iter().enumerate().filter(|(i, _)| partition.is_none_or(|p| p.takes(*i))).map(|(_, r)| r).collect();
    let part = partition.map(|p| report::Part { k: p.k, n: p.n, runs_in_sweep });
    if let Some(p) = part {
        // Said, so that an empty part (a split finer than the sweep) is not
        // a silent pass.
        eprintln!("part {}/{}: {} of the sweep's {} runs", p.k, p.n, runs.len(), p.runs_in_sweep);
    }
    let checks = Checks { determinism: check_determinism, stepping: check_stepping };
    let jobs = jobs.map_or_else(conformance::parallel::default_jobs, usize::from);
    let results = run_all(&scenarios, &runs, stepping(fixed_steps), checks, jobs);
    let mut entries: Vec<Entry<'_>> = results
        .iter()
        .map(|(i, r)| {
            let (file, s) = &scenarios[*i];
            let status = Status::of(r, expected.find(&s.name, r.seed));
            Entry::new(file, s, r, status, report::repro_command(file, r.seed))
        })
        .collect();
    report::draw_timelines(&mut entries);
    write_report(&entries, part, format, out.as_deref(), &catalogue)?;
    let bad = entries.iter().any(|e| e.status.is_bad());
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Where the expected-failures list is looked for by default.
const DEFAULT_EXPECTED_FAILURES: &str = "conformance/expected-failures.toml";
