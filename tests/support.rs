//! Helpers shared by the whole-system tests.

use std::path::PathBuf;

/// The workspace root (where `scenarios/` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The scenario folder.
pub fn scenario_dir() -> PathBuf {
    workspace_root().join("scenarios")
}
