//! Reports of a suite run: a text table for people, one JSON document for
//! machines. Every failure carries the command that replays it.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::run::{RunResult, Verdict};

/// One scenario's line in a report.
#[derive(Debug, Clone, Serialize)]
pub struct Entry<'a> {
    pub file: String,
    #[serde(flatten)]
    pub result: &'a RunResult,
    pub repro: String,
}

/// The command that replays `result` from `file`.
pub fn repro_command(file: &Path, seed: u64) -> String {
    format!("cargo run --release -p conformance --bin connsim -- repro {} --seed {seed}", file.display())
}

/// The terminal table.
pub fn text(entries: &[Entry<'_>]) -> String {
    let mut out = String::new();
    let name_w = entries.iter().map(|e| e.result.name.len()).max().unwrap_or(8).max(8);
    let _ = writeln!(
        out,
        "{:<name_w$}  {:>6}  {:<7}  {:>10}  {:>9}  {:<16}",
        "scenario", "seed", "verdict", "sim time", "wall", "trace hash"
    );
    for e in entries {
        let r = e.result;
        let verdict = match r.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
        };
        let _ = writeln!(
            out,
            "{:<name_w$}  {:>6}  {:<7}  {:>10}  {:>7.0}ms  {:<16}",
            r.name,
            r.seed,
            verdict,
            format_sim(r.sim_time_ms),
            r.wall_ms,
            &r.trace_hash[..16.min(r.trace_hash.len())]
        );
        for f in &r.failures {
            let _ = writeln!(out, "    - {f}");
        }
        if r.verdict == Verdict::Fail {
            let _ = writeln!(out, "    repro: {}", e.repro);
        }
    }
    let passed = entries.iter().filter(|e| e.result.verdict == Verdict::Pass).count();
    let _ = writeln!(out, "\n{} passed, {} failed", passed, entries.len() - passed);
    out
}

fn format_sim(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{:03}s", s, ms % 1000)
    }
}

/// The JSON document: `{"scenarios": [...], "passed": n, "failed": n}`.
pub fn json(entries: &[Entry<'_>]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        scenarios: &'a [Entry<'a>],
        passed: usize,
        failed: usize,
    }
    let passed = entries.iter().filter(|e| e.result.verdict == Verdict::Pass).count();
    let doc = Doc { scenarios: entries, passed, failed: entries.len() - passed };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
