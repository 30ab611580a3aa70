//! `connsim matrix`: the diagnosis matrix.

use std::io::IsTerminal;
use std::process::ExitCode;

/// Which cells to run and how to show them.
#[derive(clap::Args)]
pub struct MatrixArgs {
    /// Only cells whose id contains every word of this text.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// The simulation seed of every cell.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulations run at once (default: one per core).
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// List passing and skipped cells too, not only failures.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Print the scenario file of one cell (by its id) and exit.
    #[arg(long)]
    pub show: Option<String>,
}

/// `connsim matrix`: runs the cells, prints failures (and, verbose, every
/// cell) and the totals; `--show ID` prints one cell's scenario file.
pub fn matrix(args: MatrixArgs) -> Result<ExitCode, String> {
    let MatrixArgs { filter, seed, jobs, verbose, show } = args;
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
    let results = matrix::run_all(&filter, seed, jobs, |done, total| {
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
