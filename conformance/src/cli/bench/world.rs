//! The hidden `connsim bench-world`: one generated world in a child
//! process, so that its peak memory is its own.

use super::BenchKind;
use conformance::floor::{Phase, Wire};
use conformance::stopwatch::Stopwatch;
use conformance::{run_with, Stepping, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;

/// The generated world `connsim bench-world` runs.
#[derive(clap::Args)]
pub struct BenchWorldArgs {
    #[arg(value_enum)]
    pub kind: BenchKind,
    /// Connectors (scale, floor-fleet) or simulated days (long, floor,
    /// floor-spread).
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

/// One generated world, as a JSON line (run in a child process by `bench --all`).
pub fn bench_world(args: BenchWorldArgs) -> Result<ExitCode, String> {
    let BenchWorldArgs { kind, size, groups, write, quiet } = args;
    let text = match kind {
        BenchKind::Long => conformance::bench::long_run(u32::try_from(size).unwrap_or(30)),
        BenchKind::Scale => conformance::bench::scaled(size, groups),
        BenchKind::FloorFleet => {
            let hour = std::time::Duration::from_secs(3600);
            let f = conformance::floor::fleet(hour, size, 1)?;
            print_floor(&format!("floor-fleet-{size}-connectors"), hour.as_secs(), &f);
            return Ok(ExitCode::SUCCESS);
        }
        BenchKind::Floor | BenchKind::FloorSpread | BenchKind::FloorTls => {
            let days = u32::try_from(size).unwrap_or(30);
            let (phase, wire, name) = match kind {
                BenchKind::Floor => (Phase::Together, Wire::Tcp, "floor"),
                BenchKind::FloorSpread => (Phase::Spread, Wire::Tcp, "floor-spread"),
                _ => (Phase::Spread, Wire::Tls, "floor-tls"),
            };
            let f = conformance::floor::keepalive(
                std::time::Duration::from_secs(u64::from(days) * 86_400),
                conformance::floor::Shape::keepalives(phase, wire),
                1,
            )?;
            print_floor(&format!("{name}-{days}-days"), u64::from(days) * 86_400, &f);
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

/// A floor world's JSON line.
fn print_floor(world: &str, sim_s: u64, f: &conformance::floor::Floor) {
    let line = serde_json::json!({
        "world": world, "wall_ms": f.wall.as_secs_f64() * 1000.0,
        "sim_s": sim_s, "peak_rss_kib": conformance::bench::peak_rss_kib(),
        "steps": f.steps, "host_runs": f.host_runs, "exchanges": f.exchanges,
        "bootstraps": f.bootstraps, "resumed": f.resumed, "pass": true,
    });
    println!("{line}");
}

/// One generated world in a child process: (wall ms, peak RSS KiB, pass).
pub(super) fn bench_child(args: &[String]) -> Result<(f64, u64, bool), String> {
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
