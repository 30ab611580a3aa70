//! Reports of a suite run: a terminal view (requirements × scenarios matrix,
//! then the verdict table), JSON, JUnit XML, Markdown and one self-contained
//! HTML file. Every failure carries its repro command and a trace excerpt.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::catalogue::Catalogue;
use crate::expected::ExpectedFailure;
use crate::run::{RunResult, Verdict};
use crate::Scenario;

mod html;
mod svg;
pub mod timeline;

pub use html::html;
use timeline::Timeline;

/// A run's verdict once the expected-failures list is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Failed, and listed as known to fail.
    ExpectedFail {
        requirement: String,
        reason: String,
    },
    /// Listed as known to fail, yet passed: the list is stale.
    UnexpectedPass {
        requirement: String,
        reason: String,
    },
}

impl Status {
    /// A run's status once the expected-failures entry for it (if any) is
    /// applied.
    pub fn of(r: &RunResult, expected: Option<&ExpectedFailure>) -> Status {
        match (r.verdict, expected) {
            (Verdict::Pass, None) => Status::Pass,
            (Verdict::Fail, None) => Status::Fail,
            (Verdict::Fail, Some(e)) => {
                Status::ExpectedFail { requirement: e.requirement.clone(), reason: e.reason.clone() }
            }
            (Verdict::Pass, Some(e)) => {
                Status::UnexpectedPass { requirement: e.requirement.clone(), reason: e.reason.clone() }
            }
        }
    }

    /// Whether this status makes the run fail.
    pub fn is_bad(&self) -> bool {
        matches!(self, Status::Fail | Status::UnexpectedPass { .. })
    }

    pub fn label(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::ExpectedFail { .. } => "xfail",
            Status::UnexpectedPass { .. } => "XPASS",
        }
    }

    fn class(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::ExpectedFail { .. } => "xfail",
            Status::UnexpectedPass { .. } => "xpass",
        }
    }
}

/// One scenario run's line in a report.
#[derive(Debug, Clone, Serialize)]
pub struct Entry<'a> {
    pub file: String,
    /// Requirement IDs the scenario covers.
    pub covers: Vec<String>,
    /// The scenario shows a failure (it expects diagnostics).
    pub failing_case: bool,
    #[serde(flatten)]
    pub result: &'a RunResult,
    #[serde(flatten)]
    pub status: Status,
    pub repro: String,
    /// The last trace events of a run that did not pass, as the reports
    /// show them: kept in the JSON report (the trace itself is not), so
    /// that reports merged from JSON show them too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_tail: Option<String>,
    /// The run drawn small, for the HTML report: kept for the runs
    /// [`draw_timelines`] picks, in the JSON report too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// Trace events a report shows of a run that did not pass.
pub const TRACE_TAIL_EVENTS: usize = 30;

impl<'a> Entry<'a> {
    /// The line of `result`, a run of `scenario` from `file`, replayed by
    /// `repro`.
    pub fn new(file: &Path, scenario: &Scenario, result: &'a RunResult, status: Status, repro: String) -> Entry<'a> {
        let trace_tail = (status != Status::Pass).then(|| trace_excerpt(result, TRACE_TAIL_EVENTS));
        Entry {
            file: file.display().to_string(),
            covers: scenario.covers.clone(),
            failing_case: !scenario.expect.findings().is_empty(),
            result,
            status,
            repro,
            trace_tail,
            timeline: None,
        }
    }

    fn tail(&self) -> &str {
        self.trace_tail.as_deref().unwrap_or_default()
    }
}

/// An [`Entry`] read back from a JSON report (`connsim merge`).
#[derive(Debug, Clone, Deserialize)]
pub struct OwnedEntry {
    pub file: String,
    pub covers: Vec<String>,
    pub failing_case: bool,
    #[serde(flatten)]
    pub result: RunResult,
    #[serde(flatten)]
    pub status: Status,
    pub repro: String,
    #[serde(default)]
    pub trace_tail: Option<String>,
    #[serde(default)]
    pub timeline: Option<Timeline>,
}

impl OwnedEntry {
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            file: self.file.clone(),
            covers: self.covers.clone(),
            failing_case: self.failing_case,
            result: &self.result,
            status: self.status.clone(),
            repro: self.repro.clone(),
            trace_tail: self.trace_tail.clone(),
            timeline: self.timeline.clone(),
        }
    }
}

/// `text` cut to `n` characters, with an ellipsis when cut (labels of the
/// timeline and its drawings).
fn ellipsis(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Runs of one scenario that get a timeline besides its first: the first
/// few that failed (a sweep of thousands of seeds keeps its JSON report
/// small).
pub const TIMELINES_OF_FAILURES: usize = 5;

/// Which runs the HTML report draws: each scenario's run with its lowest
/// seed (the first of a sweep: `--seeds` ranges go up), and its first
/// [`TIMELINES_OF_FAILURES`] runs that failed (expected failures too). The
/// same runs whether the sweep ran whole or in parts merged back: a part's
/// first failures include every one of the whole's that it holds.
fn wanted(entries: &[Entry<'_>]) -> Vec<bool> {
    // By file, as the reports tell scenarios apart (see [`scenarios`]).
    let mut lowest: BTreeMap<&str, u64> = BTreeMap::new();
    for e in entries {
        let seed = lowest.entry(&e.file).or_insert(e.result.seed);
        *seed = (*seed).min(e.result.seed);
    }
    let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
    entries
        .iter()
        .map(|e| {
            let first = lowest.get(e.file.as_str()) == Some(&e.result.seed);
            let failure = e.result.verdict == Verdict::Fail && {
                let n = failures.entry(&e.file).or_default();
                *n += 1;
                *n <= TIMELINES_OF_FAILURES
            };
            first || failure
        })
        .collect()
}

/// Draws the timelines of the runs the HTML report shows (see [`wanted`])
/// from their traces, and drops any other.
pub fn draw_timelines(entries: &mut [Entry<'_>]) {
    let wanted = wanted(entries);
    for (e, wanted) in entries.iter_mut().zip(wanted) {
        e.timeline = match wanted && !e.result.trace.is_empty() {
            true => Some(Timeline::of(&e.result.trace, e.result.sim_time_ms)),
            false => None,
        };
    }
}

/// Drops the timelines of a merged sweep's runs that the whole sweep would
/// not have drawn (each part kept its own first failures).
pub fn keep_timelines(entries: &mut [Entry<'_>]) {
    let wanted = wanted(entries);
    for (e, wanted) in entries.iter_mut().zip(wanted) {
        if !wanted {
            e.timeline = None;
        }
    }
}

/// The command that replays `result` from `file`.
pub fn repro_command(file: &Path, seed: u64) -> String {
    format!("cargo run --release -p conformance --bin connsim -- repro {} --seed {seed}", file.display())
}

/// Counts by status.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub expected_failures: usize,
    pub unexpected_passes: usize,
}

pub fn counts(entries: &[Entry<'_>]) -> Counts {
    let mut c = Counts::default();
    for e in entries {
        match e.status {
            Status::Pass => c.passed += 1,
            Status::Fail => c.failed += 1,
            Status::ExpectedFail { .. } => c.expected_failures += 1,
            Status::UnexpectedPass { .. } => c.unexpected_passes += 1,
        }
    }
    c
}

fn counts_line(c: Counts) -> String {
    let mut line = format!("{} passed, {} failed", c.passed, c.failed);
    if c.expected_failures > 0 {
        let _ = write!(line, ", {} expected failures", c.expected_failures);
    }
    if c.unexpected_passes > 0 {
        let _ = write!(line, ", {} unexpected passes", c.unexpected_passes);
    }
    line
}

/// The last `n` trace events of a run, one per line, for failure reports.
pub fn trace_excerpt(result: &RunResult, n: usize) -> String {
    let start = result.trace.len().saturating_sub(n);
    let mut out = String::new();
    for e in &result.trace[start..] {
        let what = serde_json::to_string(&e.what).unwrap_or_default();
        let _ = writeln!(out, "{:>10} {:<28} {}", e.t_ms, e.host, what);
    }
    out
}

/// The verdict table.
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
        let _ = writeln!(
            out,
            "{:<name_w$}  {:>6}  {:<7}  {:>10}  {:>7.0}ms  {:<16}",
            r.name,
            r.seed,
            e.status.label(),
            format_sim(r.sim_time_ms),
            r.wall_ms,
            &r.trace_hash[..16.min(r.trace_hash.len())]
        );
        match &e.status {
            Status::ExpectedFail { requirement, reason } => {
                let _ = writeln!(out, "    expected to fail ({requirement}): {reason}");
            }
            Status::UnexpectedPass { requirement, reason } => {
                let _ = writeln!(
                    out,
                    "    listed as failing ({requirement}: {reason}) but passed: remove it from the expected failures"
                );
            }
            _ => {}
        }
        if e.status == Status::Fail {
            for f in &r.failures {
                let _ = writeln!(out, "    - {f}");
            }
            let _ = writeln!(out, "    repro: {}", e.repro);
        }
    }
    let _ = writeln!(out, "\n{}", counts_line(counts(entries)));
    out
}

/// One cell of the matrix: how a scenario bears on a requirement, over
/// every seed it ran with (the worst status wins).
fn cell(entries: &[&Entry<'_>], id: &str) -> Option<(char, &'static str)> {
    let covering: Vec<&&Entry<'_>> = entries.iter().filter(|e| e.covers.iter().any(|c| c == id)).collect();
    let first = covering.first()?;
    let worst = covering
        .iter()
        .map(|e| &e.status)
        .max_by_key(|s| match s {
            Status::Pass => 0,
            Status::ExpectedFail { .. } => 1,
            Status::UnexpectedPass { .. } => 2,
            Status::Fail => 3,
        })
        .cloned()
        .unwrap_or(Status::Pass);
    Some(match worst {
        Status::Pass if first.failing_case => ('-', "pass"),
        Status::Pass => ('+', "pass"),
        Status::ExpectedFail { .. } => ('x', "xfail"),
        Status::UnexpectedPass { .. } => ('!', "xpass"),
        Status::Fail => ('X', "fail"),
    })
}

/// One scenario of a report: its label and its runs.
pub(crate) struct Scenarios<'e, 'a> {
    /// The scenario's name, and its file after it when another file of the
    /// report has the same name.
    pub label: String,
    pub runs: Vec<&'e Entry<'a>>,
}

/// The report's scenarios in run order, each with its runs. A scenario is
/// its file: two files that share a name (a copy not yet renamed) stay two
/// scenarios, each with its own runs.
pub(crate) fn scenarios<'e, 'a>(entries: &'e [Entry<'a>]) -> Vec<Scenarios<'e, 'a>> {
    let mut out: Vec<Scenarios<'e, 'a>> = Vec::new();
    // Each file's place in `out`: a sweep of many scenarios has many runs.
    let mut place: BTreeMap<&str, usize> = BTreeMap::new();
    for e in entries {
        match place.get(e.file.as_str()) {
            Some(&i) => out[i].runs.push(e),
            None => {
                place.insert(&e.file, out.len());
                out.push(Scenarios { label: e.result.name.clone(), runs: vec![e] });
            }
        }
    }
    let names: Vec<&str> = out.iter().map(|s| s.runs[0].result.name.as_str()).collect();
    let shared: Vec<bool> = names.iter().map(|n| names.iter().filter(|m| *m == n).count() > 1).collect();
    for (s, shared) in out.iter_mut().zip(shared) {
        if shared {
            s.label = format!("{} ({})", s.label, s.runs[0].file);
        }
    }
    out
}

/// The terminal's requirements × scenarios matrix: one row per requirement,
/// one column per scenario (numbered; the legend follows). `+` passing case,
/// `-` failing case (the failure shown, with the right diagnostic), `X`
/// failed, `x` expected failure, `!` unexpected pass.
pub fn matrix(entries: &[Entry<'_>], catalogue: &Catalogue, color: bool) -> String {
    let scenarios = scenarios(entries);
    let paint = |c: char, class: &str| -> String {
        if !color {
            return c.to_string();
        }
        let code = match class {
            "pass" => "32",
            "fail" => "1;31",
            "xfail" => "33",
            _ => "1;35",
        };
        format!("\x1b[{code}m{c}\x1b[0m")
    };
    let mut out = String::new();
    let id_w = catalogue.requirements.iter().map(|r| r.id.len()).max().unwrap_or(8);
    // Column numbers, written vertically (tens over units).
    for row in [10usize, 1] {
        let _ = write!(out, "{:id_w$}  ", "");
        for i in 1..=scenarios.len() {
            let digit = if row == 10 && i < 10 { ' ' } else { char::from(b'0' + ((i / row) % 10) as u8) };
            out.push(digit);
        }
        out.push('\n');
    }
    for r in &catalogue.requirements {
        let _ = write!(out, "{:<id_w$}  ", r.id);
        let mut covered = false;
        for sc in &scenarios {
            match cell(&sc.runs, &r.id) {
                Some((c, class)) => {
                    covered = true;
                    out.push_str(&paint(c, class));
                }
                None => out.push('.'),
            }
        }
        if !covered {
            out.push_str("  (not covered by these scenarios)");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "\n+ passing case  - failing case shown  X failed  x expected failure  ! unexpected pass");
    for (i, sc) in scenarios.iter().enumerate() {
        let _ = writeln!(out, "{:>4} {}", i + 1, sc.label);
    }
    out
}

pub(crate) fn format_sim(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{:03}s", s, ms % 1000)
    }
}

/// The JSON document: `{"scenarios": [...], "passed": n, "failed": n, ...}`.
pub fn json(entries: &[Entry<'_>]) -> String {
    json_part(entries, None)
}

/// Which part of a split run a report holds (`connsim run --partition`),
/// so that `connsim merge` can tell a sweep with a part missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub k: usize,
    pub n: usize,
    /// Runs of the whole sweep, before the split.
    pub runs_in_sweep: usize,
}

/// [`json`]'s document, with the part of a split run it holds.
pub fn json_part(entries: &[Entry<'_>], part: Option<Part>) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        part: Option<Part>,
        scenarios: &'a [Entry<'a>],
        #[serde(flatten)]
        counts: Counts,
    }
    let doc = Doc { part, scenarios: entries, counts: counts(entries) };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// A JSON report read back ([`json_part`]'s document): the part of a split
/// run it holds, if it is one, and its runs. The error names the line and
/// column.
pub fn parse_json(text: &str) -> Result<(Option<Part>, Vec<OwnedEntry>), serde_json::Error> {
    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        part: Option<Part>,
        scenarios: Vec<OwnedEntry>,
    }
    let doc = serde_json::from_str::<Doc>(text)?;
    Ok((doc.part, doc.scenarios))
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 cannot carry most control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test case per scenario run (`scenario@seed`); expected
/// failures are skipped with their reason.
pub fn junit(entries: &[Entry<'_>]) -> String {
    let c = counts(entries);
    let total_s: f64 = entries.iter().map(|e| e.result.wall_ms).sum::<f64>() / 1000.0;
    // The same totals on the run and on its one suite.
    let totals = format!(
        "tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total_s:.3}\"",
        entries.len(),
        c.failed + c.unexpected_passes,
        c.expected_failures
    );
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(out, "<testsuites name=\"connsim\" {totals}>");
    let _ = writeln!(out, "  <testsuite name=\"scenarios\" {totals}>");
    for e in entries {
        let r = e.result;
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}@{}\" file=\"{}\" time=\"{:.3}\"",
            xml_escape(&e.covers.join(",")),
            xml_escape(&r.name),
            r.seed,
            xml_escape(&e.file),
            r.wall_ms / 1000.0
        );
        match &e.status {
            Status::Pass => out.push_str("/>\n"),
            Status::ExpectedFail { requirement, reason } => {
                let _ = writeln!(
                    out,
                    ">\n      <skipped message=\"expected failure ({}): {}\"/>\n    </testcase>",
                    xml_escape(requirement),
                    xml_escape(reason)
                );
            }
            Status::UnexpectedPass { requirement, reason } => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"unexpected pass: listed as failing ({}: {})\"/>\n    </testcase>",
                    xml_escape(requirement),
                    xml_escape(reason)
                );
            }
            Status::Fail => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n      <system-out>repro: {}\n{}</system-out>\n    </testcase>",
                    xml_escape(r.failures.first().map(String::as_str).unwrap_or("failed")),
                    xml_escape(&r.failures.join("\n")),
                    xml_escape(&e.repro),
                    xml_escape(e.tail())
                );
            }
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// A run's row in the Markdown and HTML tables: scenario, seed, verdict,
/// simulated time, wall time, trace hash (shortened).
fn cells(e: &Entry<'_>) -> [String; 6] {
    let r = e.result;
    [
        r.name.clone(),
        r.seed.to_string(),
        e.status.label().to_string(),
        format_sim(r.sim_time_ms),
        format!("{:.0} ms", r.wall_ms),
        r.trace_hash[..16.min(r.trace_hash.len())].to_string(),
    ]
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Markdown: counts, the coverage table, the verdict table, and each
/// failure with its repro command and trace excerpt.
pub fn markdown(entries: &[Entry<'_>], catalogue: &Catalogue) -> String {
    let mut out = String::from("# connsim report\n\n");
    let _ = writeln!(out, "{}\n", counts_line(counts(entries)));
    out.push_str("## Requirements\n\n| requirement | source | scenarios (passing case) | scenarios (failing case) |\n|---|---|---|---|\n");
    for r in &catalogue.requirements {
        let of = |failing: bool| {
            let mut names: Vec<String> = entries
                .iter()
                .filter(|e| e.failing_case == failing && e.covers.contains(&r.id))
                .map(|e| format!("{} {}", if e.status.is_bad() { "✗" } else { "✓" }, e.result.name))
                .collect();
            names.dedup();
            md_cell(&names.join(", "))
        };
        let _ = writeln!(out, "| {} | {} | {} | {} |", r.id, r.source.as_str(), of(false), of(true));
    }
    out.push_str("\n## Scenarios\n\n| scenario | seed | verdict | sim time | wall | trace hash |\n|---|---:|---|---:|---:|---|\n");
    for e in entries {
        let [name, seed, verdict, sim, wall, hash] = cells(e);
        let _ = writeln!(out, "| {} | {seed} | {verdict} | {sim} | {wall} | `{hash}` |", md_cell(&name));
    }
    let failed: Vec<&Entry<'_>> = entries.iter().filter(|e| e.status.is_bad()).collect();
    if !failed.is_empty() {
        out.push_str("\n## Failures\n");
        for e in failed {
            let _ = writeln!(out, "\n### {} (seed {})\n", e.result.name, e.result.seed);
            for f in &e.result.failures {
                let _ = writeln!(out, "- {}", md_cell(f));
            }
            if let Status::UnexpectedPass { requirement, reason } = &e.status {
                let _ = writeln!(out, "- passed, but listed as failing ({requirement}: {})", md_cell(reason));
            }
            let _ = writeln!(out, "\nrepro: `{}`\n\n```text\n{}```", e.repro, e.tail());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Steps;

    fn result(name: &str, seed: u64, verdict: Verdict) -> RunResult {
        RunResult {
            name: name.into(),
            seed,
            verdict,
            failures: Vec::new(),
            sim_time_ms: 0,
            wall_ms: 0.0,
            trace_hash: String::new(),
            steps: Steps::default(),
            summary: Default::default(),
            trace: Vec::new(),
        }
    }

    fn entry(r: &RunResult) -> Entry<'_> {
        let status = if r.verdict == Verdict::Pass { Status::Pass } else { Status::Fail };
        Entry {
            file: String::new(),
            covers: Vec::new(),
            failing_case: false,
            result: r,
            status,
            repro: String::new(),
            trace_tail: None,
            timeline: None,
        }
    }

    /// Seeds 3..=14 of one scenario, every seed from 6 on failing.
    fn sweep() -> Vec<RunResult> {
        (3..=14).map(|seed| result("s", seed, if seed >= 6 { Verdict::Fail } else { Verdict::Pass })).collect()
    }

    fn drawn(wanted: &[bool], runs: &[RunResult]) -> Vec<u64> {
        runs.iter().zip(wanted).filter(|(_, w)| **w).map(|(r, _)| r.seed).collect()
    }

    #[test]
    fn the_first_seed_and_the_first_failures_are_drawn_whole_or_in_parts() {
        let runs = sweep();
        let whole: Vec<Entry<'_>> = runs.iter().map(entry).collect();
        let want = vec![3, 6, 7, 8, 9, 10];
        assert_eq!(drawn(&wanted(&whole), &runs), want);
        // Split in three as --partition does (every third run), each part
        // drawing its own first failures; merged, what the whole would not
        // draw is dropped, and nothing the whole draws is missing.
        let mut merged: Vec<Entry<'_>> = runs.iter().map(entry).collect();
        for k in 0..3 {
            let part: Vec<usize> = (k..runs.len()).step_by(3).collect();
            let entries: Vec<Entry<'_>> = part.iter().map(|&i| entry(&runs[i])).collect();
            for (&i, w) in part.iter().zip(wanted(&entries)) {
                if w {
                    merged[i].timeline = Some(Timeline { duration_ms: 1, lanes: Vec::new(), exchange: Vec::new() });
                }
            }
        }
        let drawn_by_parts = merged.iter().filter(|e| e.timeline.is_some()).count();
        assert!(drawn_by_parts > want.len(), "the parts drew more than the whole: {drawn_by_parts}");
        keep_timelines(&mut merged);
        let kept: Vec<u64> = merged.iter().filter(|e| e.timeline.is_some()).map(|e| e.result.seed).collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn two_files_with_one_name_are_two_scenarios() {
        let runs =
            [result("same", 1, Verdict::Pass), result("same", 1, Verdict::Fail), result("same", 2, Verdict::Pass)];
        let mut entries: Vec<Entry<'_>> = runs.iter().map(entry).collect();
        for (e, file) in entries.iter_mut().zip(["a.toml", "b.toml", "a.toml"]) {
            e.file = file.into();
        }
        let found = scenarios(&entries);
        let seen: Vec<(&str, Vec<u64>)> =
            found.iter().map(|s| (s.label.as_str(), s.runs.iter().map(|e| e.result.seed).collect())).collect();
        assert_eq!(seen, [("same (a.toml)", vec![1, 2]), ("same (b.toml)", vec![1])]);
        entries[1].result = &runs[0];
        entries[1].file = "a.toml".into();
        assert_eq!(scenarios(&entries)[0].label, "same", "one file: its name alone");
    }
}
