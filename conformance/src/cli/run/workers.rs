//! Every (scenario, seed) of a run on worker threads, each checked as
//! asked (run again, or stepped every tick), with a progress bar on a
//! terminal.

use conformance::{run_with, RunResult, Scenario, Stepping, Verdict};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Extra runs that check each result.
#[derive(Clone, Copy)]
pub(super) struct Checks {
    /// The same run again gives the same trace.
    pub(super) determinism: bool,
    /// Stepping every tick gives the same trace as skipping idle time.
    pub(super) stepping: bool,
}

/// Runs every (scenario, seed) on `jobs` threads, with a progress bar on a
/// terminal and a line now and then otherwise. Results come in `runs` order.
pub(super) fn run_all(
    scenarios: &[(PathBuf, Scenario)],
    runs: &[(usize, u64)],
    stepping: Stepping,
    checks: Checks,
    jobs: usize,
) -> Vec<(usize, RunResult)> {
    let total = runs.len() as u64;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Some(bar)
    } else {
        None
    };
    let every = (total / 20).max(1);
    let finished = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let run_one = |&(i, seed): &(usize, u64)| {
        let s = &scenarios[i].1;
        let mut r = run_with(s, seed, stepping);
        // Runs the scenario again, stepped `how`; a different trace fails `r`.
        let mut again = |how: Stepping, what: &str, hint: &str| {
            let other = run_with(s, seed, how);
            if other.trace_hash != r.trace_hash {
                r.verdict = Verdict::Fail;
                r.failures
                    .push(format!("{what} gave trace hash {} instead of {}{hint}", other.trace_hash, r.trace_hash));
            }
        };
        if checks.determinism {
            again(stepping, "determinism: second run", "");
        }
        if checks.stepping && stepping != Stepping::Fixed {
            again(
                Stepping::Fixed,
                "stepping: stepping every tick",
                "; compare `connsim repro` with and without `--fixed-steps`",
            );
        }
        (i, r)
    };
    let progress = |(i, r): &(usize, RunResult)| {
        let failed = failed.fetch_add(u64::from(r.verdict == Verdict::Fail), Ordering::Relaxed)
            + u64::from(r.verdict == Verdict::Fail);
        let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
        let (name, seed) = (&scenarios[*i].1.name, r.seed);
        match &bar {
            Some(bar) => {
                bar.set_message(format!("{name} seed {seed}, {failed} failed"));
                bar.inc(1);
            }
            None if total <= 200 || done.is_multiple_of(every) || done == total => {
                eprintln!(
                    "[{done}/{total}] {name} (seed {seed}){}",
                    if failed > 0 { format!(", {failed} failed so far") } else { String::new() }
                );
            }
            None => {}
        }
    };
    let results = conformance::parallel::map(runs, jobs, run_one, progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    results
}
