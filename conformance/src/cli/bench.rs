//! `connsim bench`, `bench-real` and the hidden `bench-world`: every
//! figure beside a baseline measured in the same run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use conformance::floor::Phase;
use conformance::stopwatch::Stopwatch;
use conformance::{run_with, Scenario, Stepping, Verdict};

use crate::{exe_dir, load_all};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKind {
    Long,
    Scale,
    /// The simulator's floor for `long`: its keepalive traffic over bare
    /// TCP, the tunnels pinging together (see `conformance::floor`).
    Floor,
    /// The same, the tunnels out of phase, as a connector's are once they
    /// have carried a request or reconnected.
    FloorSpread,
}

/// What `connsim bench` measures.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(default_value = "scenarios/core/happy-path.toml")]
    pub file: PathBuf,
    /// Measured runs (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    /// The whole table: suite, seed sweep, 30 simulated days, and
    /// 10/100/1,000 connectors (each world in a child process, so its
    /// peak memory is its own), each beside its baseline and target.
    /// Takes a few minutes.
    #[arg(long)]
    pub all: bool,
}

/// The loads `connsim bench-real` puts on the real data path.
#[derive(clap::Args)]
pub struct BenchRealArgs {
    /// Closed-loop connection counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "32,1")]
    pub conns: Vec<usize>,
    /// Seconds per closed-loop run.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Closed-loop runs per point (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Open-loop rate, requests a second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds of open-loop load.
    #[arg(long, default_value_t = 10)]
    pub rate_duration: u64,
    /// Relay endpoints, and so tunnels the connector keeps.
    #[arg(long, default_value_t = 8)]
    pub relays: usize,
    /// MiB moved by each large-body transfer (download and upload); 0
    /// skips them.
    #[arg(long, default_value_t = 100)]
    pub large_mib: usize,
    /// Large-body transfers per run, one after the other on one connection.
    #[arg(long, default_value_t = 3)]
    pub transfers: u32,
    /// A rathole binary to measure on the same backend.
    #[arg(long)]
    pub rathole: Option<PathBuf>,
    /// Where relay-sim and connector are (default: next to connsim).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// The generated world `connsim bench-world` runs.
#[derive(clap::Args)]
pub struct BenchWorldArgs {
    #[arg(value_enum)]
    pub kind: BenchKind,
    /// Connectors (scale) or simulated days (long, floor).
    #[arg(long, default_value_t = 10)]
    pub size: usize,
    #[arg(long, default_value_t = 50)]
    pub groups: usize,
    /// Write the generated scenario here too.
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// The world's quiet baseline instead (see `bench`).
    #[arg(long)]
    pub quiet: bool,
}

/// One scenario's runs per second, against its quiet world and fixed steps.
pub fn bench(args: BenchArgs) -> Result<ExitCode, String> {
    let BenchArgs { file, runs, all } = args;
    if all {
        return bench_all(&file, runs);
    }
    let s = Scenario::load(&file).map_err(|e| e.to_string())?;
    let baseline = conformance::bench::quiet(&s);
    // Seconds a run, and the steps of the warm-up run.
    let measure = |sc: &Scenario, stepping: Stepping, runs: u32| {
        let steps = run_with(sc, 1, stepping).steps;
        let watch = Stopwatch::start();
        for i in 0..runs {
            let _ = run_with(sc, u64::from(i) + 1, stepping);
        }
        (watch.elapsed().as_secs_f64() / f64::from(runs.max(1)), steps)
    };
    let (main, steps) = measure(&s, Stepping::SkipIdle, runs);
    let (base, _) = measure(&baseline, Stepping::SkipIdle, runs);
    let (fixed, fixed_steps) = measure(&s, Stepping::Fixed, 1);
    let sim_s = s.duration.0.as_secs_f64();
    println!("scenario              {}", s.name);
    println!("runs                  {runs} (+1 warm-up), seeds 1..={runs}");
    println!("runs/s                {:.1}", 1.0 / main);
    println!("wall per run          {:.1} ms", main * 1000.0);
    println!("sim-to-wall ratio     {:.0}x", sim_s / main);
    println!(
        "steps, host runs      {} steps ({} skipping idle time), {} host runs (seed 1)",
        steps.steps, steps.skips, steps.host_runs
    );
    println!(
        "vs fixed 10ms steps   {:.1}x faster  ({:.1} ms a run, 1 run: {} steps, {} host runs)",
        fixed / main,
        fixed * 1000.0,
        fixed_steps.steps,
        fixed_steps.host_runs
    );
    println!(
        "vs quiet world        {:.2}x the cost  ({:.1} ms a run: same world, connector blocked, no users)",
        main / base,
        base * 1000.0
    );
    Ok(ExitCode::SUCCESS)
}

/// The real binaries on loopback, beside direct (and rathole).
pub fn bench_real(args: BenchRealArgs) -> Result<ExitCode, String> {
    let BenchRealArgs { conns, duration, runs, rate, rate_duration, relays, large_mib, transfers, rathole, bin_dir } =
        args;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => exe_dir()?,
    };
    if conns.is_empty() || conns.contains(&0) {
        return Err("--conns: give one or more counts above zero, e.g. 32,1".into());
    }
    let opts = conformance::realbench::Options {
        bin_dir,
        rathole,
        relays: relays.clamp(1, 64),
        conns,
        duration: std::time::Duration::from_secs(duration.max(1)),
        runs,
        rate: rate.max(1),
        rate_duration: std::time::Duration::from_secs(rate_duration.max(1)),
        large_bytes: large_mib.min(relay_sim::backend::ECHO_SIZE_MAX >> 20) << 20,
        transfers: transfers.max(1),
    };
    let figures = conformance::realbench::measure(&opts, &mut |line| eprintln!("[bench-real] {line}"))?;
    print!("{}", conformance::realbench::render(&figures, &opts));
    Ok(ExitCode::SUCCESS)
}

/// One generated world, as a JSON line (run in a child process by `bench --all`).
pub fn bench_world(args: BenchWorldArgs) -> Result<ExitCode, String> {
    let BenchWorldArgs { kind, size, groups, write, quiet } = args;
    let text = match kind {
        BenchKind::Long => conformance::bench::long_run(u32::try_from(size).unwrap_or(30)),
        BenchKind::Scale => conformance::bench::scaled(size, groups),
        BenchKind::Floor | BenchKind::FloorSpread => {
            let days = u32::try_from(size).unwrap_or(30);
            let (phase, name) = match kind {
                BenchKind::Floor => (Phase::Together, "floor"),
                _ => (Phase::Spread, "floor-spread"),
            };
            let f = conformance::floor::keepalive(
                std::time::Duration::from_secs(u64::from(days) * 86_400),
                conformance::floor::TUNNELS,
                phase,
                1,
            )?;
            let line = serde_json::json!({
                "world": format!("{name}-{days}-days"), "wall_ms": f.wall.as_secs_f64() * 1000.0,
                "sim_s": u64::from(days) * 86_400, "peak_rss_kib": conformance::bench::peak_rss_kib(),
                "steps": f.steps, "host_runs": f.host_runs, "exchanges": f.exchanges, "pass": true,
            });
            println!("{line}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(path) = &write {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut s = conformance::bench::parse(&text, "bench.toml")?;
    if quiet {
        s = conformance::bench::quiet(&s);
    }
    let watch = Stopwatch::start();
    let r = run_with(&s, 1, Stepping::SkipIdle);
    let wall_ms = watch.elapsed().as_secs_f64() * 1000.0;
    let line = serde_json::json!({
        "world": s.name, "wall_ms": wall_ms, "sim_s": s.duration.0.as_secs(),
        "peak_rss_kib": conformance::bench::peak_rss_kib(), "steps": r.steps.steps, "host_runs": r.steps.host_runs,
        "pass": r.verdict == Verdict::Pass, "failures": r.failures,
    });
    println!("{line}");
    Ok(if r.verdict == Verdict::Pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `connsim bench --all`: every figure of the performance targets, each
/// beside a baseline measured in the same run.
fn bench_all(happy: &std::path::Path, runs: u32) -> Result<ExitCode, String> {
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

/// One generated world in a child process: (wall ms, peak RSS KiB, pass).
fn bench_child(args: &[String]) -> Result<(f64, u64, bool), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find connsim itself: {e}"))?;
    let out = std::process::Command::new(exe)
        .arg("bench-world")
        .args(args)
        .output()
        .map_err(|e| format!("bench-world {args:?}: {e}"))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("bench-world {args:?} printed {line:?}: {e}"))?;
    Ok((
        v["wall_ms"].as_f64().unwrap_or(f64::NAN),
        v["peak_rss_kib"].as_u64().unwrap_or(0),
        v["pass"].as_bool().unwrap_or(false),
    ))
}
