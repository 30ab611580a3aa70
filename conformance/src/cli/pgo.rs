//! `connsim pgo`: connector and relay-sim built with a profile of their
//! own hot paths, trained on `bench-real`'s loads (see `conformance::pgo`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where the profile-guided build goes and how long it trains.
#[derive(clap::Args)]
pub struct PgoArgs {
    /// The folder for both builds, the raw profiles and the merged one
    /// (relative to the current folder: run from the workspace's root);
    /// the optimised binaries end up in `<out>/optimised/dist`.
    #[arg(long, default_value = "target/pgo")]
    pub out: PathBuf,
    /// Seconds of each training load (bench-real's loads, one run each;
    /// 1 to 600).
    #[arg(long, default_value_t = 3)]
    pub duration: u64,
    /// The llvm-profdata to merge the profiles with; its LLVM must be
    /// rustc's (default: the active toolchain's, from `rustup component
    /// add llvm-tools`).
    #[arg(long)]
    pub llvm_profdata: Option<PathBuf>,
}

pub fn pgo(args: PgoArgs) -> Result<ExitCode, String> {
    let plan = conformance::pgo::Plan {
        out: args.out,
        duration: Duration::from_secs(args.duration.clamp(1, 600)),
        llvm_profdata: args.llvm_profdata,
    };
    let bin_dir = conformance::pgo::run(&plan, &mut |line| eprintln!("[pgo] {line}")).map_err(|e| e.to_string())?;
    println!("optimised connector and relay-sim: {}", bin_dir.display());
    println!("measure them: connsim bench-real --bin-dir {}", bin_dir.display());
    Ok(ExitCode::SUCCESS)
}
