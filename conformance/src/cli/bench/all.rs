//! `connsim bench --all`: every target of the performance issue, each
//! beside its floor measured in the same run.

use super::world::bench_child;
use crate::cli::load_all;
use conformance::floor::Phase;
use conformance::stopwatch::Stopwatch;
use conformance::{run_with, Scenario, Stepping, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;

/// `connsim bench --all`: every figure of the performance targets, each
/// beside a baseline measured in the same run.
pub(super) fn bench_all(happy: &std::path::Path, runs: u32) -> Result<ExitCode, String> {
    let row = |what: &str, value: String, baseline: String, target: &str| {
        println!("{what:<44} {value:>18}  {baseline:>44}  {target}");
    };
    println!("{:<44} {:>18}  {:>44}  target", "figure", "measured", "baseline (same run)");
    // The suite, and the same worlds with nothing to do, on every core (as
    // `connsim run` does).
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
    // Seed sweep of the happy path: on every core, and on one.
    let s = Scenario::load(happy).map_err(|e| e.to_string())?;
    let q = conformance::bench::quiet(&s);
    let seeds: Vec<u64> = (1..=u64::from(runs.max(1))).collect();
    // Runs/s of `run` over the seeds on `jobs` threads (an error fails the bench).
    let rate = |jobs: usize, run: &(dyn Fn(u64) -> Result<(), String> + Sync)| {
        let watch = Stopwatch::start();
        let results = conformance::parallel::map(&seeds, jobs, |seed| run(*seed), |_| {});
        let per_second = seeds.len() as f64 / watch.elapsed().as_secs_f64();
        results.into_iter().collect::<Result<(), String>>().map(|()| per_second)
    };
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
    // The simulator's floor for the sweep: the same hour's keepalives over
    // bare TCP, same seeds, same threads.
    for (phase, what) in [(Phase::Together, "in phase"), (Phase::Spread, "out of phase")] {
        let floor_rate = rate(jobs, &|seed| {
            conformance::floor::keepalive(s.duration.0, conformance::floor::TUNNELS, phase, seed).map(|_| ())
        })?;
        row(
            &format!("  floor, bare TCP keepalives, {what}"),
            format!("{floor_rate:.1} runs/s"),
            format!("the sweep is {:.1}x the floor's time", floor_rate / main.max(1e-9)),
            "",
        );
    }
    thirty_days(&row)?;
    // Scale.
    let mut first: Option<(f64, usize)> = None;
    for n in [10usize, 100, 1000] {
        let groups = 50.min(n);
        let (wall, rss, ok) =
            bench_child(&["scale".into(), "--size".into(), n.to_string(), "--groups".into(), groups.to_string()])?;
        let baseline = match first {
            None => "(the baseline)".to_string(),
            Some((w, m)) => format!("{:.1}x the time of {m} for {:.0}x the connectors", wall / w, n as f64 / m as f64),
        };
        first.get_or_insert((wall, n));
        row(
            &format!("{n} connectors, {groups} groups, 1 h{}", if ok { "" } else { " (FAILED)" }),
            format!("{:.2} s, {} MiB", wall / 1000.0, rss / 1024),
            baseline,
            if n == 1000 { "< 30 s, < 4096 MiB" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The 30-day world, beside its quiet world and the floors of its
/// keepalives (rows printed with `row`).
fn thirty_days(row: &dyn Fn(&str, String, String, &str)) -> Result<(), String> {
    let (long, rss, ok) = bench_child(&["long".into(), "--size".into(), "30".into()])?;
    let (long_q, _, _) = bench_child(&["long".into(), "--size".into(), "30".into(), "--quiet".into()])?;
    row(
        &format!("30 simulated days, 1 connector{}", if ok { "" } else { " (FAILED)" }),
        format!("{:.2} s, {} MiB", long / 1000.0, rss / 1024),
        format!("{:.2} s quiet ({:.1}x)", long_q / 1000.0, long / long_q.max(1e-9)),
        "< 3 s",
    );
    for (kind, what) in [("floor", "in phase"), ("floor-spread", "out of phase")] {
        let (floor, _, _) = bench_child(&[kind.into(), "--size".into(), "30".into()])?;
        row(
            &format!("  floor, bare TCP keepalives, {what}"),
            format!("{:.2} s", floor / 1000.0),
            format!("30 days are {:.1}x the floor", long / floor.max(1e-9)),
            "",
        );
    }
    Ok(())
}
