//! `connsim`: run conformance scenarios against the real connector in a
//! deterministic simulation, replay failures, measure speed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use conformance::report::{self, Entry};
use conformance::stopwatch::Stopwatch;
use conformance::{collect_scenarios, run_with, RunResult, Scenario, Stepping, Verdict};

#[derive(Parser)]
#[command(
    name = "connsim",
    version,
    about = "Deterministic conformance runs of the connector against a simulated cloud",
    long_about = "Runs scenario files (TOML) in a turmoil simulation: the real connector code against \
relay-sim, with simulated time, network and seeded randomness. The same scenario and seed always give \
the same trace hash. A failing run prints the one command that replays it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios and print a verdict table (exit 1 if any fails).
    ///
    /// Examples:
    ///   connsim run scenarios/
    ///   connsim run scenarios/core/happy-path.toml --seed 7 --format json
    ///   connsim run scenarios/ --check-determinism
    Run {
        /// Scenario files or folders (searched for *.toml).
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Seed for every scenario (default: each file's `seed`, else 1).
        #[arg(long)]
        seed: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Run each scenario twice and fail if the trace hashes differ.
        #[arg(long)]
        check_determinism: bool,
        /// Only scenarios whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Step every tick instead of skipping idle time (slow; the
        /// reference the skipping must match hash for hash).
        #[arg(long)]
        fixed_steps: bool,
    },
    /// Replay one scenario with one seed and print its full trace.
    Repro {
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Step every tick instead of skipping idle time.
        #[arg(long)]
        fixed_steps: bool,
    },
    /// Measure runs per second and simulated-to-wall ratio of a scenario,
    /// against a baseline (the same world with no connector traffic).
    Bench {
        #[arg(default_value = "scenarios/core/happy-path.toml")]
        file: PathBuf,
        /// Measured runs (after one warm-up run).
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
    /// List scenarios with the requirements they cover.
    List {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
    },
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Scenario)>, String> {
    let files = collect_scenarios(paths)?;
    if files.is_empty() {
        return Err("no scenario files (*.toml) found".into());
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for f in files {
        match Scenario::load(&f) {
            Ok(s) => out.push((f, s)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("\n"))
    }
}

fn stepping(fixed_steps: bool) -> Stepping {
    if fixed_steps {
        Stepping::Fixed
    } else {
        Stepping::SkipIdle
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("connsim: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    match Cli::parse().command {
        Command::Run { paths, seed, format, check_determinism, filter, fixed_steps } => {
            let stepping = stepping(fixed_steps);
            let scenarios = load_all(&paths)?;
            let total = scenarios.len();
            let mut results: Vec<(PathBuf, RunResult)> = Vec::new();
            for (i, (file, s)) in scenarios.into_iter().enumerate() {
                if filter.as_deref().is_some_and(|f| !s.name.contains(f)) {
                    continue;
                }
                let seed = seed.or(s.seed).unwrap_or(1);
                eprintln!("[{}/{total}] {} (seed {seed})", i + 1, s.name);
                let mut r = run_with(&s, seed, stepping);
                if check_determinism {
                    let again = run_with(&s, seed, stepping);
                    if again.trace_hash != r.trace_hash {
                        r.verdict = Verdict::Fail;
                        r.failures.push(format!(
                            "determinism: second run gave trace hash {} instead of {}",
                            again.trace_hash, r.trace_hash
                        ));
                    }
                }
                results.push((file, r));
            }
            let entries: Vec<Entry<'_>> = results
                .iter()
                .map(|(f, r)| Entry {
                    file: f.display().to_string(),
                    result: r,
                    repro: report::repro_command(f, r.seed),
                })
                .collect();
            match format {
                Format::Text => print!("{}", report::text(&entries)),
                Format::Json => println!("{}", report::json(&entries)),
            }
            let failed = results.iter().any(|(_, r)| r.verdict == Verdict::Fail);
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Repro { file, seed, fixed_steps } => {
            let s = Scenario::load(&file).map_err(|e| e.to_string())?;
            let r = run_with(&s, seed, stepping(fixed_steps));
            for e in &r.trace {
                println!("{:>10} {:<40} {}", e.t_ms, e.host, serde_json::to_string(&e.what).unwrap_or_default());
            }
            let entry =
                Entry { file: file.display().to_string(), result: &r, repro: report::repro_command(&file, seed) };
            println!();
            print!("{}", report::text(&[entry]));
            Ok(if r.verdict == Verdict::Pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Bench { file, runs } => {
            let s = Scenario::load(&file).map_err(|e| e.to_string())?;
            let mut baseline = s.clone();
            baseline.load.clear();
            baseline.timeline.clear();
            baseline.world.connectors.truncate(1);
            baseline.world.firewall = vec![relay_sim::world::Rule {
                port: None,
                ..relay_sim::world::Rule::port(relay_sim::world::Action::Reject, 0)
            }];
            let measure = |sc: &Scenario, stepping: Stepping, runs: u32| {
                let _ = run_with(sc, 1, stepping);
                let watch = Stopwatch::start();
                for i in 0..runs {
                    let _ = run_with(sc, u64::from(i) + 1, stepping);
                }
                watch.elapsed().as_secs_f64() / f64::from(runs.max(1))
            };
            let main = measure(&s, Stepping::SkipIdle, runs);
            let base = measure(&baseline, Stepping::SkipIdle, runs);
            let fixed = measure(&s, Stepping::Fixed, 1);
            let sim_s = s.duration.0.as_secs_f64();
            println!("scenario              {}", s.name);
            println!("runs                  {runs} (+1 warm-up), seeds 1..={runs}");
            println!("runs/s                {:.1}", 1.0 / main);
            println!("wall per run          {:.1} ms", main * 1000.0);
            println!("sim-to-wall ratio     {:.0}x", sim_s / main);
            println!("vs fixed 10ms steps   {:.1}x faster  ({:.1} ms a run, 1 run)", fixed / main, fixed * 1000.0);
            println!(
                "vs quiet world        {:.2}x the cost  ({:.1} ms a run: same world, connector blocked, no users)",
                main / base,
                base * 1000.0
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::List { paths } => {
            for (file, s) in load_all(&paths)? {
                println!("{:<32} {:<40} {}", s.name, file.display(), s.covers.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
