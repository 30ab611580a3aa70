//! `connsim bench --all`: every target of the performance issue, each
//! beside its floor measured in the same run.

use super::children::{scale, thirty_days};
use super::Row;
use crate::cli::load_all;
use conformance::floor::{Phase, Requests, Shape, Wire};
use conformance::plot::{Bar, Panel};
use conformance::stopwatch::Stopwatch;
use conformance::{run_with, Scenario, Stepping, Verdict};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `connsim bench --all`: every figure of the performance targets, each
/// beside a baseline measured in the same run; the same figures as a chart
/// in `plot`.
pub(super) fn bench_all(happy: &Path, runs: u32, plot: &Path) -> Result<ExitCode, String> {
    let row = |what: &str, value: String, baseline: String, target: &str| {
        println!("{what:<44} {value:>18}  {baseline:>44}  {target}");
    };
    super::check_plot_path(plot)?;
    println!("{:<44} {:>18}  {:>44}  target", "figure", "measured", "baseline (same run)");
    let panels = vec![suite(&row)?, sweep(happy, runs, &row)?, thirty_days(&row)?, scale(&row)?];
    conformance::plot::write_svg(plot, &panels).map_err(|e| e.to_string())?;
    println!("chart: {}", plot.display());
    Ok(ExitCode::SUCCESS)
}

/// The suite, and the same worlds with nothing to do, on every core (as
/// `connsim run` does).
fn suite(row: Row<'_>) -> Result<Panel, String> {
    let jobs = conformance::parallel::default_jobs();
    let scenarios: Vec<Scenario> = load_all(&[PathBuf::from("scenarios")])?.into_iter().map(|(_, s)| s).collect();
    let quiet: Vec<Scenario> = scenarios.iter().map(conformance::bench::quiet).collect();
    let timed = |worlds: &[Scenario]| {
        let watch = Stopwatch::start();
        let verdicts = conformance::parallel::map(
            worlds,
            jobs,
            |s| run_with(s, s.seed.unwrap_or(1), Stepping::SkipIdle).verdict,
            |_| {},
        );
        (watch.elapsed().as_secs_f64(), verdicts.iter().filter(|v| **v != Verdict::Pass).count())
    };
    let (suite, failed) = timed(&scenarios);
    let (quiet_suite, _) = timed(&quiet);
    row(
        &format!("suite, {} scenarios ({failed} failed), {jobs} threads", scenarios.len()),
        format!("{suite:.2} s"),
        format!("{quiet_suite:.2} s quiet worlds ({:.1}x)", suite / quiet_suite.max(1e-9)),
        "< 10 s",
    );
    let title = format!("The suite, {} scenarios, {jobs} threads", scenarios.len());
    let bars = vec![Bar::measured("suite", suite), Bar::baseline("quiet worlds (no traffic)", quiet_suite)];
    Ok(Panel { title, unit: "seconds (less is better)".into(), bars })
}

/// Seed sweep of the happy path on every core and on one, beside its quiet
/// world and the simulator's floor.
fn sweep(happy: &Path, runs: u32, row: Row<'_>) -> Result<Panel, String> {
    let jobs = conformance::parallel::default_jobs();
    let s = Scenario::load(happy).map_err(|e| e.to_string())?;
    let q = conformance::bench::quiet(&s);
    let seeds: Vec<u64> = (1..=u64::from(runs.max(1))).collect();
    // The floors run five times the seeds: a floor's run takes a few
    // milliseconds, and twenty of them are too short a time to rate.
    let floor_seeds: Vec<u64> = (1..=5 * u64::from(runs.max(1))).collect();
    // Runs/s of `run` over `seeds` on `jobs` threads (an error fails the bench).
    let rate_over = |seeds: &[u64], jobs: usize, run: &(dyn Fn(u64) -> Result<(), String> + Sync)| {
        let watch = Stopwatch::start();
        let results = conformance::parallel::map(seeds, jobs, |seed| run(*seed), |_| {});
        let per_second = seeds.len() as f64 / watch.elapsed().as_secs_f64();
        results.into_iter().collect::<Result<(), String>>().map(|()| per_second)
    };
    let rate = |jobs: usize, run: &(dyn Fn(u64) -> Result<(), String> + Sync)| rate_over(&seeds, jobs, run);
    let sweep = |sc: &Scenario, seed: u64| {
        run_with(sc, seed, Stepping::SkipIdle);
        Ok(())
    };
    let main = rate(jobs, &|seed| sweep(&s, seed))?;
    let base = rate(jobs, &|seed| sweep(&q, seed))?;
    let one = rate(1, &|seed| sweep(&s, seed))?;
    row(
        &format!("happy-path sweep, {} seeds, {jobs} threads", seeds.len()),
        format!("{main:.1} runs/s"),
        format!("{base:.1} runs/s quiet ({:.1}x cost)", base / main.max(1e-9)),
        ">= 200 runs/s",
    );
    row("  the same sweep on 1 thread", format!("{one:.1} runs/s"), String::new(), "");
    let mut bars = vec![
        Bar::measured(format!("happy path, {jobs} threads"), main),
        Bar::measured("happy path, 1 thread", one),
        Bar::baseline("quiet world", base),
    ];
    // The simulator's floor for the sweep: the same hour's keepalives over
    // bare TCP, same seeds, same threads; then over TLS with bootstraps;
    // then with the scenario's first load of users too.
    let users = s.load.first().map(|l| Requests { start: l.start.0, interval: l.interval.0, count: l.requests });
    let floors = [
        (Shape::keepalives(Phase::Together, Wire::Tcp), "bare TCP keepalives, in phase"),
        (Shape::keepalives(Phase::Spread, Wire::Tcp), "bare TCP keepalives, out of phase"),
        (Shape::keepalives(Phase::Spread, Wire::Tls), "TLS keepalives + bootstraps"),
        (Shape { requests: users, ..Shape::keepalives(Phase::Spread, Wire::Tls) }, "TLS, bootstraps + the requests"),
    ];
    // Without a load the last floor is the third again: not printed.
    for (shape, what) in floors.into_iter().filter(|(shape, _)| users.is_some() || shape.requests.is_none()) {
        let floor_rate = rate_over(&floor_seeds, jobs, &|seed| {
            conformance::floor::keepalive(s.duration.0, shape, seed).map(|_| ())
        })?;
        row(
            &format!("  floor, {what}"),
            format!("{floor_rate:.1} runs/s"),
            format!("the sweep is {:.1}x the floor's time", floor_rate / main.max(1e-9)),
            "",
        );
        bars.push(Bar::baseline(format!("floor: {what}"), floor_rate));
    }
    let title = format!("Seed sweep of the happy path, {} seeds", seeds.len());
    Ok(Panel { title, unit: "runs per second (more is better)".into(), bars })
}
