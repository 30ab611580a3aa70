//! `connsim`: run conformance scenarios against the real connector in a
//! deterministic simulation, replay failures, measure speed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};

use conformance::catalogue::{self, Catalogue};
use conformance::expected::ExpectedFailures;
use conformance::report::{self, Entry, Status};
use conformance::stopwatch::Stopwatch;
use conformance::{collect_scenarios, run_with, RunResult, Scenario, Stepping, Verdict};

mod cli;

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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Requirements × scenarios matrix, then the verdict table.
    Text,
    Json,
    /// JUnit XML, for CI test tabs.
    Junit,
    Markdown,
    /// One self-contained HTML file.
    Html,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchKind {
    Long,
    Scale,
    /// The simulator's floor for `long`: its keepalive traffic over bare
    /// TCP (see `conformance::floor`).
    Floor,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

/// A seed range: `7`, `1..1000` (inclusive) or `1..=1000`.
#[derive(Clone, Copy, Debug)]
struct Seeds {
    first: u64,
    last: u64,
}

fn parse_seeds(s: &str) -> Result<Seeds, String> {
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

#[derive(Subcommand)]
enum Command {
    /// Run scenarios and report (exit 1 if any fails or a listed failure passes).
    ///
    /// The terminal view is a requirements × scenarios matrix (colored on a
    /// terminal; NO_COLOR turns it off), then one line per run. Failures
    /// print the one command that replays them. Runs go on every core.
    #[command(after_help = "Examples:
  connsim run scenarios/
  connsim run scenarios/core/happy-path.toml --seed 7 --format json
  connsim run scenarios/ --format html --out report.html
  connsim run scenarios/core --seeds 1..1000
  connsim run scenarios/ --check-determinism
  connsim run scenarios/core --check-stepping")]
    Run {
        /// Scenario files or folders (searched for *.toml).
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Seed for every scenario (default: each file's `seed`, else 1).
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Run every scenario with each seed of a range: `1..1000`
        /// (inclusive). A progress bar shows on a terminal.
        #[arg(long, value_parser = parse_seeds, value_name = "FIRST..LAST")]
        seeds: Option<Seeds>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Write the report here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Known failures (scenario, requirement, reason); default:
        /// conformance/expected-failures.toml when it exists.
        #[arg(long)]
        expected_failures: Option<PathBuf>,
        /// Run each scenario twice and fail if the trace hashes differ.
        #[arg(long)]
        check_determinism: bool,
        /// Also run each scenario stepping every tick and fail if its trace
        /// hash differs: proves that skipping idle time changed nothing
        /// (slow: about 5 s a simulated hour).
        #[arg(long, conflicts_with = "fixed_steps")]
        check_stepping: bool,
        /// Simulations run at once, each on its own thread (default: one
        /// per core). Results and trace hashes do not depend on it.
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// Only scenarios whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Step every tick instead of skipping idle time (slow; the
        /// reference the skipping must match hash for hash).
        #[arg(long)]
        fixed_steps: bool,
        /// Where to run: `sim` (turmoil, simulated time) or `netns` (the
        /// real relay-sim and connector binaries in Linux network
        /// namespaces, the scenario's firewall as nftables rules, real
        /// time; needs root, iproute2 and nftables). netns runs only the
        /// scenarios marked `worlds = ["sim", "netns"]`.
        #[arg(long, value_enum, default_value = "sim")]
        world: WorldArg,
    },
    /// Send N user requests at once to an ingress and print the answers'
    /// statuses as JSON (the netns world runs it inside the cloud's
    /// namespace).
    #[command(hide = true)]
    Users {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 1)]
        requests: usize,
        /// Wait this long before the first request.
        #[arg(long, default_value_t = 0)]
        start_ms: u64,
        /// Between requests (0: all at once).
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
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
        /// The whole table: suite, seed sweep, 30 simulated days, and
        /// 10/100/1,000 connectors (each world in a child process, so its
        /// peak memory is its own), each beside its baseline and target.
        /// Takes a few minutes.
        #[arg(long)]
        all: bool,
    },
    /// Measure the connector's real data path on loopback: requests/s and
    /// p50/p99 through relay-sim's ingress, a TLS tunnel and the connector
    /// to a backend, beside the same backend hit directly (and through
    /// rathole with --rathole), in one run; and the connector's idle memory.
    ///
    /// Starts the relay-sim and connector binaries found next to connsim
    /// (build them with `cargo build --release --workspace`), on 127.0.0.1
    /// only, and stops them when done. rathole: `cargo install rathole`,
    /// then `--rathole ~/.cargo/bin/rathole`.
    BenchReal {
        /// Closed-loop connection counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "32,1")]
        conns: Vec<usize>,
        /// Seconds per closed-loop run.
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Closed-loop runs per point (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Open-loop rate, requests a second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds of open-loop load.
        #[arg(long, default_value_t = 10)]
        rate_duration: u64,
        /// Relay endpoints, and so tunnels the connector keeps.
        #[arg(long, default_value_t = 8)]
        relays: usize,
        /// A rathole binary to measure on the same backend.
        #[arg(long)]
        rathole: Option<PathBuf>,
        /// Where relay-sim and connector are (default: next to connsim).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Run one generated bench world and print a JSON line with its wall
    /// time, peak memory and verdict (`connsim bench --all` runs each in a
    /// child process so memory is measured per world).
    #[command(hide = true)]
    BenchWorld {
        #[arg(value_enum)]
        kind: BenchKind,
        /// Connectors (scale) or simulated days (long, floor).
        #[arg(long, default_value_t = 10)]
        size: usize,
        #[arg(long, default_value_t = 50)]
        groups: usize,
        /// Write the generated scenario here too.
        #[arg(long)]
        write: Option<PathBuf>,
        /// The world's quiet baseline instead (see `bench`).
        #[arg(long)]
        quiet: bool,
    },
    /// List the requirement catalogue with how many scenarios cover each
    /// ID (passing and failing cases); --scenarios lists scenario files.
    List {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// List scenario files with the IDs they cover instead.
        #[arg(long)]
        scenarios: bool,
    },
    /// Explain a requirement (its source, text, and the scenarios covering
    /// it with the diagnostics the failing cases expect), a field of the
    /// scenario format (by its path or last name), or a timeline event (by
    /// its first words).
    ///
    /// Examples:
    ///   connsim explain NET-CRL
    ///   connsim explain world.instances
    ///   connsim explain expect.window
    ///   connsim explain move tenant
    Explain {
        /// A requirement ID, a field (`world.connectors.region`, `between`)
        /// or the first words of a timeline event (`pin group`).
        #[arg(required = true, num_args = 1..)]
        topic: Vec<String>,
        #[arg(long, default_value = "scenarios")]
        scenarios: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario files, generated from the types
    /// the loader reads (their doc comments are its descriptions). Point an
    /// editor at it: with taplo / Even Better TOML, a first line
    /// `#:schema ./scenario.schema.json` in a scenario file.
    ///
    /// Example: connsim schema > scenario.schema.json
    Schema,
    /// Turn a `connector diagnose --format json` report from the field into
    /// a scenario that rebuilds that network in simulation (unresolved
    /// names, dropped or refused connections, TLS inspection), run it, and
    /// say which of the report's findings it reproduces. The scenario goes
    /// to standard output; exit 1 if a finding was not reproduced.
    ///
    /// Example:
    ///   connsim from-bundle bundle.json --name contoso-relays > scenarios/field/contoso-relays.toml
    FromBundle {
        bundle: PathBuf,
        /// The scenario's name (default: the bundle file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// The diagnosis matrix: every combination of fault × allow-list group ×
    /// path × cloud × moment × duration, built as a scenario and run; each
    /// cell must report the one expected finding (from a table written from
    /// the spec), nothing else, and be back within the documented bounds once
    /// the fault ends. Exit 1 if any cell fails.
    ///
    /// Examples:
    ///   connsim matrix
    ///   connsim matrix --filter "port-dropped while-serving" --verbose
    ///   connsim matrix --show entry-missing/crl-80/direct/public/at-registration/never-ends
    Matrix {
        /// Only cells whose id contains every word of this text.
        #[arg(long, default_value = "")]
        filter: String,
        /// The simulation seed of every cell.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulations run at once (default: one per core).
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
        /// List passing and skipped cells too, not only failures.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Print the scenario file of one cell (by its id) and exit.
        #[arg(long)]
        show: Option<String>,
    },
    /// Per requirement, the passing and failing-case scenarios covering it;
    /// exit 1 when an ID lacks either half (unless the catalogue waives it,
    /// with a reason) or a scenario names an unknown ID.
    Coverage {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: ListFormat,
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
        Command::Users { addr, host, requests, start_ms, interval_ms } => {
            let target = conformance::loadgen::Target { addr, host, path: "/".into() };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            let answers = tokio::task::LocalSet::new().block_on(
                &rt,
                conformance::loadgen::each_once(
                    &target,
                    requests.min(10_000),
                    std::time::Duration::from_millis(start_ms),
                    std::time::Duration::from_millis(interval_ms),
                ),
            );
            let mut statuses: BTreeMap<String, u32> = BTreeMap::new();
            for a in answers {
                let key = match a {
                    Ok(status) => status.to_string(),
                    Err(_) => "none".to_string(),
                };
                *statuses.entry(key).or_default() += 1;
            }
            println!("{}", serde_json::to_string(&statuses).map_err(|e| e.to_string())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { paths, world: WorldArg::Netns, filter, format, out, .. } => {
            let scenarios: Vec<(PathBuf, Scenario)> = load_all(&paths)?
                .into_iter()
                .filter(|(_, s)| filter.as_deref().is_none_or(|f| s.name.contains(f)))
                .collect();
            run_netns(&scenarios, format, out.as_deref())
        }
        Command::Run {
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
            world: WorldArg::Sim,
        } => {
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
            let scenarios: Vec<(PathBuf, Scenario)> = load_all(&paths)?
                .into_iter()
                .filter(|(_, s)| filter.as_deref().is_none_or(|f| s.name.contains(f)))
                .collect();
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
        Command::Repro { file, seed, fixed_steps } => {
            let s = Scenario::load(&file).map_err(|e| e.to_string())?;
            let r = run_with(&s, seed, stepping(fixed_steps));
            // A reader that stops early (`| head`) ends the output, not the program.
            let mut out = std::io::stdout().lock();
            let lines = conformance::path::describe(&s).into_iter().map(|l| format!("# way out of {l}"));
            let events = r.trace.iter().map(|e| {
                format!("{:>10} {:<40} {}", e.t_ms, e.host, serde_json::to_string(&e.what).unwrap_or_default())
            });
            let entry = Entry {
                file: file.display().to_string(),
                covers: s.covers.clone(),
                failing_case: !s.expect.findings().is_empty(),
                result: &r,
                status: Status::of(&r, None),
                repro: report::repro_command(&file, seed),
            };
            let report = format!("\n{}", report::text(&[entry]));
            for line in lines.chain(events).chain(std::iter::once(report)) {
                if writeln!(out, "{line}").is_err() {
                    break;
                }
            }
            Ok(if r.verdict == Verdict::Pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::BenchReal { conns, duration, runs, rate, rate_duration, relays, rathole, bin_dir } => {
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
            };
            let figures = conformance::realbench::measure(&opts, &mut |line| eprintln!("[bench-real] {line}"))?;
            print!("{}", conformance::realbench::render(&figures, &opts));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { file, runs, all } => {
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
        Command::List { paths, scenarios: true } => {
            for (file, s) in load_all(&paths)? {
                println!("{:<40} {:<56} {}", s.name, file.display(), s.covers.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List { paths, scenarios: false } => {
            let catalogue = Catalogue::builtin();
            let (cov, _) = catalogue::coverage(&catalogue, &load_all(&paths)?);
            println!("{:<14} {:<7} {:>4} {:>4}  text", "id", "source", "pass", "fail");
            for (r, c) in catalogue.requirements.iter().zip(&cov) {
                let mut text = r.text.clone();
                if text.chars().count() > 90 {
                    text = text.chars().take(89).collect::<String>() + "…";
                }
                println!("{:<14} {:<7} {:>4} {:>4}  {text}", r.id, r.source.as_str(), c.passing.len(), c.failing.len());
            }
            println!("\n`connsim explain ID` for one requirement; `connsim coverage` checks every ID is covered.");
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { topic, scenarios } => cli::explain::run(&topic.join(" "), &scenarios, load_all),
        Command::Schema => {
            let schema = conformance::schema::scenario_schema();
            let text = serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchWorld { kind, size, groups, write, quiet } => {
            let text = match kind {
                BenchKind::Long => conformance::bench::long_run(u32::try_from(size).unwrap_or(30)),
                BenchKind::Scale => conformance::bench::scaled(size, groups),
                BenchKind::Floor => {
                    let days = u32::try_from(size).unwrap_or(30);
                    let f = conformance::floor::keepalive(
                        std::time::Duration::from_secs(u64::from(days) * 86_400),
                        conformance::floor::TUNNELS,
                        1,
                    )?;
                    let line = serde_json::json!({
                        "world": format!("floor-{days}-days"), "wall_ms": f.wall.as_secs_f64() * 1000.0,
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
        Command::FromBundle { bundle, name } => {
            let json = std::fs::read_to_string(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
            let report = conformance::bundle::parse(&json).map_err(|e| format!("{}: {e}", bundle.display()))?;
            let name = name.unwrap_or_else(|| {
                bundle.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "field".into())
            });
            let tr = conformance::bundle::translate(&report, &name);
            let v = conformance::bundle::verify(&tr)?;
            print!("{}", v.toml);
            for n in &tr.notes {
                eprintln!("not rebuilt: {n}");
            }
            eprintln!(
                "reproduced {} of {} findings{}",
                v.reproduced.len(),
                tr.expected.len(),
                if v.missing.is_empty() { String::new() } else { format!("; missing: {}", v.missing.join(", ")) }
            );
            Ok(if v.missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Matrix { filter, seed, jobs, verbose, show } => matrix(&filter, seed, jobs, verbose, show),
        Command::Coverage { paths, format } => {
            let catalogue = Catalogue::builtin();
            let (cov, unknown) = catalogue::coverage(&catalogue, &load_all(&paths)?);
            let mut bad = !unknown.is_empty();
            let rows: Vec<(&catalogue::Requirement, &catalogue::Coverage, Vec<&str>)> =
                catalogue.requirements.iter().zip(&cov).map(|(r, c)| (r, c, c.gaps(r))).collect();
            bad |= rows.iter().any(|(_, _, gaps)| !gaps.is_empty());
            match format {
                ListFormat::Json => {
                    let doc: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|(r, c, gaps)| {
                            serde_json::json!({
                                "id": r.id, "source": r.source.as_str(), "passing": c.passing.len(),
                                "failing": c.failing.len(), "waiver": r.waiver, "gaps": gaps,
                            })
                        })
                        .collect();
                    let unknown: Vec<serde_json::Value> =
                        unknown.iter().map(|(id, s)| serde_json::json!({"id": id, "scenario": s})).collect();
                    let doc = serde_json::json!({"requirements": doc, "unknown_ids": unknown, "complete": !bad});
                    println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
                }
                ListFormat::Text => {
                    println!("{:<14} {:<7} {:>7} {:>7}  verdict", "id", "source", "passing", "failing");
                    for (r, c, gaps) in &rows {
                        let verdict = if !gaps.is_empty() {
                            format!("MISSING: {}", gaps.join(", "))
                        } else if r.waiver.passing.is_some() || r.waiver.failing.is_some() {
                            "ok (waived half: `connsim explain` says why)".into()
                        } else {
                            "ok".into()
                        };
                        println!(
                            "{:<14} {:<7} {:>7} {:>7}  {verdict}",
                            r.id,
                            r.source.as_str(),
                            c.passing.len(),
                            c.failing.len()
                        );
                    }
                    for (id, s) in &unknown {
                        println!("scenario {s} covers {id}, which the catalogue does not know");
                    }
                    let missing = rows.iter().filter(|(_, _, g)| !g.is_empty()).count();
                    println!("\n{} requirements, {missing} with a gap", rows.len());
                }
            }
            Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
    }
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

/// Where `connsim run` runs scenarios.
#[derive(Clone, Copy, ValueEnum)]
enum WorldArg {
    Sim,
    Netns,
}

/// The folder connsim runs from, where `cargo build` puts the workspace's
/// other binaries too.
fn exe_dir() -> Result<PathBuf, String> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .ok_or_else(|| "cannot tell where connsim is (pass --bin-dir to bench-real)".to_string())
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
    let floor_rate =
        rate(jobs, &|seed| conformance::floor::keepalive(s.duration.0, conformance::floor::TUNNELS, seed).map(|_| ()))?;
    row(
        "  floor: its keepalives alone, bare TCP",
        format!("{floor_rate:.1} runs/s"),
        format!("the sweep is {:.1}x the floor's time", floor_rate / main.max(1e-9)),
        "",
    );
    // Thirty days.
    let (long, rss, ok) = bench_child(&["long".into(), "--size".into(), "30".into()])?;
    let (long_q, _, _) = bench_child(&["long".into(), "--size".into(), "30".into(), "--quiet".into()])?;
    row(
        &format!("30 simulated days, 1 connector{}", if ok { "" } else { " (FAILED)" }),
        format!("{:.2} s, {} MiB", long / 1000.0, rss / 1024),
        format!("{:.2} s quiet ({:.1}x)", long_q / 1000.0, long / long_q.max(1e-9)),
        "< 3 s",
    );
    let (floor, _, _) = bench_child(&["floor".into(), "--size".into(), "30".into()])?;
    row(
        "  floor: its keepalives alone, bare TCP",
        format!("{:.2} s", floor / 1000.0),
        format!("30 days are {:.1}x the floor", long / floor.max(1e-9)),
        "",
    );
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

/// `connsim matrix`: runs the cells, prints failures (and, verbose, every
/// cell) and the totals; `--show ID` prints one cell's scenario file.
fn matrix(filter: &str, seed: u64, jobs: Option<u16>, verbose: bool, show: Option<String>) -> Result<ExitCode, String> {
    use conformance::matrix;
    if let Some(id) = show {
        let cell = matrix::cells().into_iter().find(|c| c.id() == id).ok_or_else(|| {
            format!("no cell {id:?}: ids look like entry-missing/crl-80/direct/public/at-registration/never-ends")
        })?;
        if let Some(why) = matrix::skip_reason(&cell) {
            return Err(format!("cell {id} is skipped: {why}"));
        }
        print!("{}", matrix::scenario(&cell).0);
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = jobs.map_or_else(conformance::parallel::default_jobs, usize::from);
    let terminal = std::io::stderr().is_terminal();
    let results = matrix::run_all(filter, seed, jobs, |done, total| {
        if terminal || done == total || done % 100 == 0 {
            eprint!("\r{done}/{total} cells");
            if done == total {
                eprintln!();
            }
        }
    });
    if results.is_empty() {
        return Err(format!("no cell matches {filter:?}"));
    }
    print!("{}", matrix::render(&results, verbose));
    let failed = results.iter().any(|(_, s)| matches!(s, matrix::Status::Fail(_)));
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
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
