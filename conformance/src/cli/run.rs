//! `connsim run`: every scenario x seed in simulation (or the marked
//! ones in network namespaces), checked, and reported in one format.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use conformance::catalogue::Catalogue;
use conformance::expected::ExpectedFailures;
use conformance::report::{self, Entry, Status};
use conformance::{run_with, RunResult, Scenario, Stepping, Verdict};

use crate::{exe_dir, load_all, stepping};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Requirements × scenarios matrix, then the verdict table.
    Text,
    Json,
    /// JUnit XML, for CI test tabs.
    Junit,
    Markdown,
    /// One self-contained HTML file.
    Html,
}

/// A seed range: `7`, `1..1000` (inclusive) or `1..=1000`.
#[derive(Clone, Copy, Debug)]
pub struct Seeds {
    pub first: u64,
    pub last: u64,
}

pub fn parse_seeds(s: &str) -> Result<Seeds, String> {
    let num = |t: &str| t.trim().parse::<u64>().map_err(|_| format!("{t:?} is not a seed (a whole number)"));
    let (first, last) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
        None => (num(s)?, num(s)?),
    };
    if last < first {
        return Err(format!("empty seed range {s:?}: the end is below the start"));
    }
    Ok(Seeds { first, last })
}

/// Where `connsim run` runs scenarios.
#[derive(Clone, Copy, ValueEnum)]
pub enum WorldArg {
    Sim,
    Netns,
}

/// What `connsim run` runs, with which seeds, and how it reports.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario files or folders (searched for *.toml).
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// Seed for every scenario (default: each file's `seed`, else 1).
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run every scenario with each seed of a range: `1..1000`
    /// (inclusive). A progress bar shows on a terminal.
    #[arg(long, value_parser = parse_seeds, value_name = "FIRST..LAST")]
    pub seeds: Option<Seeds>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Known failures (scenario, requirement, reason); default:
    /// conformance/expected-failures.toml when it exists.
    #[arg(long)]
    pub expected_failures: Option<PathBuf>,
    /// Run each scenario twice and fail if the trace hashes differ.
    #[arg(long)]
    pub check_determinism: bool,
    /// Also run each scenario stepping every tick and fail if its trace
    /// hash differs: proves that skipping idle time changed nothing
    /// (slow: about 5 s a simulated hour).
    #[arg(long, conflicts_with = "fixed_steps")]
    pub check_stepping: bool,
    /// Simulations run at once, each on its own thread (default: one
    /// per core). Results and trace hashes do not depend on it.
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Only scenarios whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Step every tick instead of skipping idle time (slow; the
    /// reference the skipping must match hash for hash).
    #[arg(long)]
    pub fixed_steps: bool,
    /// Where to run: `sim` (turmoil, simulated time) or `netns` (the
    /// real relay-sim and connector binaries in Linux network
    /// namespaces, the scenario's firewall as nftables rules, real
    /// time; needs root, iproute2 and nftables). netns runs only the
    /// scenarios marked `worlds = ["sim", "netns"]`.
    #[arg(long, value_enum, default_value = "sim")]
    pub world: WorldArg,
}

/// Runs the scenarios in the world `args.world` names.
pub fn run(args: RunArgs) -> Result<ExitCode, String> {
    match args.world {
        WorldArg::Netns => {
            let RunArgs { paths, filter, format, out, .. } = args;
            let scenarios: Vec<(PathBuf, Scenario)> = load_all(&paths)?
                .into_iter()
                .filter(|(_, s)| filter.as_deref().is_none_or(|f| s.name.contains(f)))
                .collect();
            run_netns(&scenarios, format, out.as_deref())
        }
        WorldArg::Sim => sim(args),
    }
}

/// `connsim run` in simulation.
fn sim(args: RunArgs) -> Result<ExitCode, String> {
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
    let checks = Checks { determinism: check_determinism, stepping: check_stepping };
    let jobs = jobs.map_or_else(conformance::parallel::default_jobs, usize::from);
    let results = run_all(&scenarios, &runs, stepping(fixed_steps), checks, jobs);
    let entries: Vec<Entry<'_>> = results
        .iter()
        .map(|(i, r)| {
            let (file, s) = &scenarios[*i];
            Entry {
                file: file.display().to_string(),
                covers: s.covers.clone(),
                failing_case: !s.expect.findings().is_empty(),
                result: r,
                status: Status::of(r, expected.find(&s.name, r.seed)),
                repro: report::repro_command(file, r.seed),
            }
        })
        .collect();
    write_report(&entries, format, out.as_deref(), &catalogue)?;
    let bad = entries.iter().any(|e| e.status.is_bad());
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Where the expected-failures list is looked for by default.
const DEFAULT_EXPECTED_FAILURES: &str = "conformance/expected-failures.toml";

/// Extra runs that check each result.
#[derive(Clone, Copy)]
struct Checks {
    /// The same run again gives the same trace.
    determinism: bool,
    /// Stepping every tick gives the same trace as skipping idle time.
    stepping: bool,
}

/// Runs every (scenario, seed) on `jobs` threads, with a progress bar on a
/// terminal and a line now and then otherwise. Results come in `runs` order.
fn run_all(
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

/// Writes a report of `entries` in `format` to `out` (or standard output).
fn write_report(
    entries: &[Entry<'_>],
    format: Format,
    out: Option<&std::path::Path>,
    catalogue: &Catalogue,
) -> Result<(), String> {
    let text = match format {
        Format::Text => {
            let color = out.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            format!("{}\n{}", report::matrix(entries, catalogue, color), report::text(entries))
        }
        Format::Json => report::json(entries) + "\n",
        Format::Junit => report::junit(entries),
        Format::Markdown => report::markdown(entries, catalogue),
        Format::Html => report::html(entries, catalogue),
    };
    match out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            let c = report::counts(entries);
            eprintln!(
                "{} passed, {} failed, {} expected failures, {} unexpected passes; report in {}",
                c.passed,
                c.failed,
                c.expected_failures,
                c.unexpected_passes,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `connsim run --world netns`: each scenario marked for it, in network
/// namespaces, reported like a simulated run. A verdict or diagnostic codes
/// that differ from the simulation's fail the scenario: one of the two
/// network models is wrong.
fn run_netns(
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
    let entries: Vec<Entry<'_>> = results
        .iter()
        .map(|(file, s, r)| Entry {
            file: file.display().to_string(),
            covers: s.covers.clone(),
            failing_case: !s.expect.findings().is_empty(),
            result: r,
            status: Status::of(r, None),
            repro: format!("cargo run --release -p conformance --bin connsim -- run --world netns {}", file.display()),
        })
        .collect();
    write_report(&entries, format, out, &Catalogue::builtin())?;
    let bad = entries.iter().any(|e| e.status.is_bad());
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
