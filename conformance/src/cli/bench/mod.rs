//! `connsim bench`, `bench-real` and the hidden `bench-world`: every
//! figure beside a baseline measured in the same run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use conformance::stopwatch::Stopwatch;
use conformance::{run_with, Scenario, Stepping};

mod all;
mod children;
pub mod floor_end;
pub mod real;
pub mod world;

use all::bench_all;

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
    /// The same out of phase over TLS 1.3, with a resumed TLS handshake
    /// every 10 minutes as a bootstrap: the simulator and the cryptography
    /// the spec asks of a connector.
    FloorTls,
    /// The simulator's floor for `scale`: `--size` connector hosts, one
    /// tunnel each, keepalives out of phase over bare TCP, one hour.
    FloorFleet,
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
    /// peak memory is its own; the scale worlds and their floors the
    /// median of 3 runs), each beside its baseline, its floors (the
    /// simulator alone over bare TCP; with the spec's TLS: keepalives over
    /// TLS 1.3 and a resumed handshake every 10 minutes; and for the sweep,
    /// with the scenario's requests through the tunnel too) and its target.
    /// Takes about two minutes.
    #[arg(long)]
    pub all: bool,
    /// Where --all draws its figures as an SVG chart (plotters).
    #[arg(long, default_value = "bench-all.svg", requires = "all")]
    pub plot: PathBuf,
}

/// A printed row of `bench --all`'s table: figure, measured value,
/// baseline, target.
type Row<'a> = &'a dyn Fn(&str, String, String, &str);

/// Refuses a chart path whose folder does not exist before the minutes of
/// measuring, not after.
pub(crate) fn check_plot_path(plot: &std::path::Path) -> Result<(), String> {
    if plot.is_dir() {
        return Err(format!("--plot {}: a folder; give the chart's file name", plot.display()));
    }
    match plot.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(format!("--plot {}: no folder {}", plot.display(), dir.display()))
        }
        _ => Ok(()),
    }
}

/// One scenario's runs per second, against its quiet world and fixed steps.
pub fn bench(args: BenchArgs) -> Result<ExitCode, String> {
    let BenchArgs { file, runs, all, plot } = args;
    if all {
        return bench_all(&file, runs, &plot);
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
