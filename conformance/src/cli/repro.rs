//! `connsim repro`: one scenario, one seed, the whole trace.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use conformance::report::{self, Entry, Status};
use conformance::{run_with, Scenario, Verdict};

use super::stepping;

/// Which run to replay.
#[derive(clap::Args)]
pub struct ReproArgs {
    pub file: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Step every tick instead of skipping idle time.
    #[arg(long)]
    pub fixed_steps: bool,
}

/// Prints the scenario's ways out, its trace line by line, then its verdict.
pub fn repro(args: ReproArgs) -> Result<ExitCode, String> {
    let ReproArgs { file, seed, fixed_steps } = args;
    let s = Scenario::load(&file).map_err(|e| e.to_string())?;
    let r = run_with(&s, seed, stepping(fixed_steps));
    // A reader that stops early (`| head`) ends the output, not the program.
    let mut out = std::io::stdout().lock();
    let lines = conformance::path::describe(&s).into_iter().map(|l| format!("# way out of {l}"));
    let events = r
        .trace
        .iter()
        .map(|e| format!("{:>10} {:<40} {}", e.t_ms, e.host, serde_json::to_string(&e.what).unwrap_or_default()));
    let entry = Entry::new(&file, &s, &r, Status::of(&r, None), report::repro_command(&file, seed));
    let report = format!("\n{}", report::text(&[entry]));
    for line in lines.chain(events).chain(std::iter::once(report)) {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(if r.verdict == Verdict::Pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
