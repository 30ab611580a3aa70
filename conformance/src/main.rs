//! `connsim`: run conformance scenarios against the real connector in a
//! deterministic simulation, replay failures, measure speed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "connsim",
    version,
    about = "Deterministic conformance runs of the connector against a simulated cloud",
    long_about = "Runs scenario files (TOML) in a turmoil simulation: the real connector code against \
relay-sim, with simulated time, network and seeded randomness. The same scenario and seed always give \
the same trace hash. A failing run prints the one command that replays it.",
    after_long_help = "Environment:
  NO_COLOR            no color when --color is auto (the default)
  RUST_LOG            log filter of the connector and relay-sim binaries (e.g. info,
                      connector::event=debug; the netns world sets info); connsim
                      keeps the connector's events in each run's trace instead
                      (connsim repro prints it)
  PROPTEST_CASES, PROPTEST_RNG_SEED
                      cases and seed of the property tests that take them (cargo test:
                      fault_schedules, proto_props' model test)
  CI                  set: the HTML report's rendering test fails without Chromium
                      instead of skipping; CI=true: fault_schedules runs 1,000 cases

Start with: connsim run scenarios/   (then connsim help run)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When to color the text report: auto (standard output on a terminal,
    /// unless NO_COLOR is set), always (files given with --out too) or
    /// never. clap's own help and errors follow NO_COLOR, not this flag.
    #[arg(long, global = true, value_enum, default_value_t = cli::ColorChoice::Auto)]
    color: cli::ColorChoice,
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
    Run(cli::run::RunArgs),
    /// Merge the JSON reports of a run split with --partition into one
    /// report and one verdict (exit 1 if any run failed).
    #[command(after_help = "Example (two machines, then one):
  connsim run scenarios/ --seeds 1..500 --partition 1/2 --format json --out part1.json
  connsim run scenarios/ --seeds 1..500 --partition 2/2 --format json --out part2.json
  connsim merge part1.json part2.json --format html --out report.html")]
    Merge(cli::merge::MergeArgs),
    /// Send N user requests at once to an ingress and print the answers'
    /// statuses as JSON (the netns world runs it inside the cloud's
    /// namespace).
    #[command(hide = true)]
    Users(cli::users::UsersArgs),
    /// Replay one scenario with one seed and print its full trace.
    #[command(after_help = "Examples (a failing run prints its own repro line):
  connsim repro scenarios/core/outbound-443-blocked.toml --seed 7
  connsim repro scenarios/core/happy-path.toml | grep tunnel_")]
    Repro(cli::repro::ReproArgs),
    /// Measure runs per second and simulated-to-wall ratio of a scenario,
    /// against a baseline (the same world with no connector traffic).
    #[command(after_help = "Examples:
  connsim bench scenarios/core/happy-path.toml --runs 10
  connsim bench --all --runs 20      # every bench world: sweep, 30 days, scale")]
    Bench(cli::bench::BenchArgs),
    /// Measure the connector's real data path on loopback: requests/s and
    /// p50/p99 through relay-sim's ingress, a TLS tunnel and the connector
    /// to a backend, beside the same backend hit directly (and through
    /// rathole with --rathole), in one run; and the connector's idle memory.
    /// For each closed loop it also prints each process's CPU a request,
    /// how long each waited for a core a request (ready to run, not
    /// running), and the share of the cores left idle.
    ///
    /// Starts the relay-sim and connector binaries found next to connsim
    /// (build them with `cargo build --release --workspace`), on 127.0.0.1
    /// only, and stops them when done. rathole: `cargo install rathole`,
    /// then `--rathole ~/.cargo/bin/rathole`.
    #[command(after_help = "Examples:
  cargo build --release --workspace && target/release/connsim bench-real
  connsim bench-real --rathole ~/.cargo/bin/rathole --runs 3
  connsim bench-real --rathole ~/.cargo/bin/rathole --rathole-tls /opt/rathole-tls/bin/rathole
  connsim bench-real --conns 64 --duration 10")]
    BenchReal(cli::bench::real::BenchRealArgs),
    /// One end of bench-real's TLS tunnel floor (a TLS tunnel that does
    /// nothing else), started by bench-real.
    #[command(hide = true, subcommand)]
    FloorEnd(cli::bench::floor_end::FloorEndArgs),
    /// Build connector and relay-sim optimised with a profile of their own
    /// hot paths (profile-guided optimisation): an instrumented build runs
    /// bench-real's loads, its profile is merged, and the dist build is made
    /// again with it. Needs `rustup component add llvm-tools`; takes two
    /// dist builds (fat LTO) and about a minute of load.
    ///
    /// Run it inside the workspace (it calls `cargo build`), then measure
    /// the result with `connsim bench-real --bin-dir target/pgo/optimised/dist`.
    #[command(after_help = "Examples:
  rustup component add llvm-tools
  target/dist/connsim pgo
  target/dist/connsim bench-real --bin-dir target/pgo/optimised/dist --rathole ~/.cargo/bin/rathole
  connsim pgo --out /tmp/pgo --duration 5")]
    Pgo(cli::pgo::PgoArgs),
    /// Run one generated bench world and print a JSON line with its wall
    /// time, peak memory and verdict (`connsim bench --all` runs each in a
    /// child process so memory is measured per world).
    #[command(hide = true)]
    BenchWorld(cli::bench::world::BenchWorldArgs),
    /// List the requirement catalogue with how many scenarios cover each
    /// ID (passing and failing cases); --scenarios lists scenario files.
    #[command(after_help = "Examples:
  connsim list
  connsim list --scenarios scenarios/pki")]
    List(cli::catalogue::ListArgs),
    /// Explain a diagnostic code (what it means, the requirement it is
    /// about), a requirement (its source, text, and the scenarios covering
    /// it with the diagnostics the failing cases expect), a field of the
    /// scenario format (by its path or last name), or a timeline event (by
    /// its first words).
    ///
    /// Examples:
    ///   connsim explain NET-CRL.stale
    ///   connsim explain NET-CRL
    ///   connsim explain world.instances
    ///   connsim explain expect.window
    ///   connsim explain move tenant
    Explain {
        /// A diagnostic code (`NET-443.unreachable`), a requirement ID, a
        /// field (`world.connectors.region`, `between`) or the first words
        /// of a timeline event (`pin group`).
        #[arg(required = true, num_args = 1..)]
        topic: Vec<String>,
        #[arg(long, default_value = "scenarios")]
        scenarios: Vec<PathBuf>,
    },
    /// Print the JSON Schema of scenario files, generated from the types
    /// the loader reads (their doc comments are its descriptions). Point an
    /// editor at it: with taplo / Even Better TOML, a first line
    /// `#:schema PATH` in a scenario file, PATH relative to that file
    /// (`../../scenario.schema.json` under scenarios/geo/).
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
    FromBundle(cli::bundle::FromBundleArgs),
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
    Matrix(cli::matrix::MatrixArgs),
    /// Per requirement, the passing and failing-case scenarios covering it;
    /// exit 1 when an ID lacks either half (unless the catalogue waives it,
    /// with a reason) or a scenario names an unknown ID.
    #[command(after_help = "Examples:
  connsim coverage
  connsim coverage scenarios/ --format json")]
    Coverage(cli::catalogue::CoverageArgs),
    /// Print a completion script for a shell (subcommands, flags, values).
    #[command(after_help = "Examples:
  connsim completions bash > ~/.local/share/bash-completion/completions/connsim
  connsim completions zsh > ~/.zfunc/_connsim      # with fpath+=(~/.zfunc) in .zshrc
  connsim completions fish > ~/.config/fish/completions/connsim.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print connsim's manual page (roff), or a subcommand's.
    #[command(after_help = "Examples:
  connsim man | man -l -
  connsim man run > connsim-run.1")]
    Man {
        /// A subcommand (`run`, `merge`, ...); none: connsim itself.
        subcommand: Option<String>,
    },
}

fn main() -> ExitCode {
    // Like any Unix filter: `connsim list | head` ends quietly when the
    // reader goes away, instead of panicking in `println!` (Rust ignores
    // SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal before any
    // thread starts; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("connsim: {e}");
            ExitCode::from(2)
        }
    }
}

/// Parses the command line and hands it to the subcommand's module.
fn real_main() -> Result<ExitCode, String> {
    let cli = Cli::parse();
    cli::set_color(cli.color);
    match cli.command {
        Command::Run(args) => cli::run::run(args),
        Command::Merge(args) => cli::merge::merge(args),
        Command::Users(args) => cli::users::users(args),
        Command::Repro(args) => cli::repro::repro(args),
        Command::Bench(args) => cli::bench::bench(args),
        Command::BenchReal(args) => cli::bench::real::bench_real(args),
        Command::FloorEnd(args) => cli::bench::floor_end::floor_end(args),
        Command::Pgo(args) => cli::pgo::pgo(args),
        Command::BenchWorld(args) => cli::bench::world::bench_world(args),
        Command::List(args) => cli::catalogue::list(args),
        Command::Coverage(args) => cli::catalogue::coverage(args),
        Command::Explain { topic, scenarios } => cli::explain::run(&topic.join(" "), &scenarios),
        Command::Schema => {
            let schema = conformance::schema::scenario_schema();
            let text = serde_json::to_string_pretty(&schema).map_err(|e| e.to_string())?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::FromBundle(args) => cli::bundle::from_bundle(args),
        Command::Matrix(args) => cli::matrix::matrix(args),
        Command::Man { subcommand } => man(subcommand.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "connsim", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `connsim man`: the manual page of connsim or of one of its subcommands.
fn man(subcommand: Option<&str>) -> Result<ExitCode, String> {
    let connsim = Cli::command();
    let page = match subcommand {
        None => connsim,
        Some(name) => {
            let sub = connsim
                .find_subcommand(name)
                .ok_or_else(|| format!("no subcommand {name:?} (connsim --help lists them)"))?;
            // Named as man pages of subcommands are (git-commit(1)); the
            // synopsis says how to run it.
            sub.clone().name(format!("connsim-{name}")).bin_name(format!("connsim {name}"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut std::io::stdout(), &out).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
