//! Helpers shared by the whole-system tests.

use std::path::PathBuf;

pub mod real_world;

/// The workspace root (where `scenarios/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The scenario folder.
pub fn scenario_dir() -> PathBuf {
    workspace_root().join("scenarios")
}

/// Every scenario file, for a test harness's `main`: a folder that cannot be
/// read ends the harness with status 2 and the reason.
pub fn scenario_files_or_exit() -> Vec<PathBuf> {
    match conformance::collect_scenarios(&[scenario_dir()]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot list scenarios: {e}");
            std::process::exit(2);
        }
    }
}
