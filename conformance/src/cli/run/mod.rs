//! `connsim run`: every scenario x seed in simulation (or the marked
//! ones in network namespaces), checked, and reported in one format.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use conformance::Scenario;

use crate::cli::load_all;

mod netns;
mod output;
mod selection;
mod sim;
mod workers;

use netns::run_netns;
pub(crate) use output::write_report;
pub use selection::{parse_partition, parse_seeds, Partition, Seeds};
use sim::sim;

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
    /// Run only part k of n of the scenario x seed runs (simulation), to
    /// spread a sweep over machines; `connsim merge` joins the parts'
    /// JSON reports into one report and one verdict.
    #[arg(long, value_parser = parse_partition, value_name = "K/N")]
    pub partition: Option<Partition>,
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
            if args.partition.is_some() {
                return Err("--partition splits simulation runs; the netns world runs its few scenarios whole".into());
            }
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
