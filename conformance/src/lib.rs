//! conformance: scenario files → turmoil simulations of the real connector
//! against relay-sim → traces, checks, trace hashes and reports.

// Libraries report through return values, events and `tracing`; only the
// binaries print.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod bench;
pub mod bundle;
pub mod catalogue;
pub mod check;
pub mod cores;
pub mod expected;
pub mod floor;
pub mod held;
pub mod loadgen;
pub mod matrix;
pub mod netns;
pub mod parallel;
pub mod path;
pub mod pgo;
pub mod plot;
pub mod procs;
pub mod realbench;
pub mod realfloor;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schema;
pub mod stopwatch;
pub mod trace;
pub mod wakeups;
pub mod window;

pub use run::{run, run_with, RunResult, Stepping, Verdict};
pub use scenario::{Scenario, ScenarioError};

use std::path::{Path, PathBuf};

/// Every `*.toml` under `paths` (files as given, folders recursively), in
/// sorted order.
pub fn collect_scenarios(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).map_err(|e| format!("{}: {e}", p.display()))?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}
