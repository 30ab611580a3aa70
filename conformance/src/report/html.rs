//! The HTML report: one self-contained file (no network) to look at a run
//! in. The summary comes first; then the requirements by area, each linked
//! to its scenarios; then each scenario with its requirements, a timeline
//! of a run, the sequence diagram of its first failing exchange, a sweep's
//! outcomes and its runs. A filter box hides what does not match, and a
//! small script recounts the verdicts and measures the layout into
//! `#counts`, so a browser test can tell the page was laid out and run.

use std::fmt::Write;

use super::svg;
use super::timeline::Timeline;
use super::{cell, cells, counts, counts_line, scenarios, xml_escape, Entry, Status};
use crate::catalogue::{Catalogue, Requirement};
use crate::run::Verdict;
use crate::scenario::Outcome;

const STYLE: &str = "\
*{box-sizing:border-box}body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;max-width:1200px;color:#222;overflow-wrap:anywhere}\n\
h1{margin:.2em 0}h2{margin-top:1.5em;border-bottom:1px solid #ddd}h3{margin:.2em 0}\n\
table{border-collapse:collapse;margin:.5em 0;width:100%;table-layout:fixed}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}\n\
.pass{background:#d6f5d6}.fail{background:#f7c6c6}.xfail{background:#fbe9b7}.xpass{background:#e6c6f7}\n\
pre{background:#f6f6f6;padding:.5em;overflow:auto;font-size:12px;max-height:24em}code{font-size:12px;overflow-wrap:anywhere}\n\
#summary{display:flex;flex-wrap:wrap;gap:.5em 2em;align-items:baseline;padding:.6em 1em;border-radius:6px}\n\
#summary .verdict{font-size:28px;font-weight:bold}#summary nav a{margin-right:1em}\n\
#filter{width:100%;font-size:15px;padding:.4em;margin:.8em 0}\n\
.reqs th.id{width:12em}.reqs td.text{width:45%}.chip{display:inline-block;margin:1px 3px 1px 0;padding:0 5px;border-radius:8px;font-size:12px;text-decoration:none;color:#222}\n\
.scenario{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;margin:1em 0}.scenario h3 .chip{font-weight:normal}\n\
.muted{color:#666;font-size:12px}.runs th:nth-child(1){width:6em}.runs th:nth-child(6){width:11em}\n\
details summary{cursor:pointer}svg{display:block;max-width:100%}\n";

/// The counting and filtering script; it writes what it saw into
/// `#counts`: the verdicts it counted, the page's scroll width and where
/// the summary ends. A link to `report.html#filter=WORDS` opens the page
/// filtered.
const SCRIPT: &str = "(function(){\
var n={pass:0,fail:0,xfail:0,xpass:0};document.querySelectorAll('.runs tr[data-status]').forEach(function(r){n[r.dataset.status]++;});\
var p=document.getElementById('counts');p.setAttribute('data-rendered','pass='+n.pass+' fail='+n.fail+' xfail='+n.xfail+' xpass='+n.xpass);\
p.setAttribute('data-scroll-width',document.documentElement.scrollWidth);\
p.setAttribute('data-summary-bottom',Math.ceil(document.getElementById('summary').getBoundingClientRect().bottom));\
var f=document.getElementById('filter');f.addEventListener('input',function(){var q=f.value.toLowerCase();\
document.querySelectorAll('[data-text]').forEach(function(e){e.style.display=e.dataset.text.indexOf(q)<0?'none':'';});\
document.querySelectorAll('.area').forEach(function(a){var shown=[].some.call(a.querySelectorAll('tr[data-text]'),function(r){return r.style.display!=='none';});\
a.style.display=q&&!shown?'none':'';});});\
var h=decodeURIComponent(location.hash);if(h.indexOf('#filter=')===0){f.value=h.slice(8);f.dispatchEvent(new Event('input'));}\
})();";

/// An id for a name in a URL fragment: letters, digits, `-` and `_`
/// (requirement IDs are made of these; scenarios get [`ScenarioRuns::id`]).
fn anchor(prefix: &str, name: &str) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("{prefix}-{safe}")
}

/// One scenario of the report and its runs, found once for the whole page
/// (a sweep has thousands of runs).
struct ScenarioRuns<'e, 'a> {
    /// Its name, with its file when another scenario has the same name.
    label: String,
    /// Its place in the report and its name, so that two names that read
    /// alike in a URL (`a.b`, `a b`) stay two ids.
    id: String,
    runs: Vec<&'e Entry<'a>>,
}

/// The report's scenarios in run order, each with its runs.
fn by_scenario<'e, 'a>(entries: &'e [Entry<'a>]) -> Vec<ScenarioRuns<'e, 'a>> {
    scenarios(entries)
        .into_iter()
        .enumerate()
        .map(|(i, sc)| ScenarioRuns {
            id: anchor(&format!("sc-{i}"), &sc.runs[0].result.name),
            label: sc.label,
            runs: sc.runs,
        })
        .collect()
}

/// One self-contained HTML file: see the module's documentation.
pub fn html(entries: &[Entry<'_>], catalogue: &Catalogue) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>connsim report</title>\n<style>\n{STYLE}{}</style></head><body>\n{}\n",
        svg::STYLE,
        svg::DEFS
    );
    let scenarios = by_scenario(entries);
    summary(&mut out, entries, scenarios.len());
    out.push_str(
        "<input id=\"filter\" type=\"search\" placeholder=\"Filter requirements and scenarios (id, name, words)\">\n",
    );
    requirements(&mut out, &scenarios, catalogue);
    scenario_sections(&mut out, &scenarios);
    let _ = write!(out, "<script>\n{SCRIPT}\n</script>\n</body></html>\n");
    out
}

/// The verdict, the counts and the way to the rest: what a reader must
/// see without scrolling.
fn summary(out: &mut String, entries: &[Entry<'_>], scenarios: usize) {
    let c = counts(entries);
    let bad = c.failed + c.unexpected_passes > 0;
    let _ = writeln!(
        out,
        "<header id=\"summary\" class=\"{}\"><h1>connsim report</h1><span class=\"verdict\">{}</span>\
<p id=\"counts\" data-passed=\"{}\" data-failed=\"{}\" data-expected-failures=\"{}\" data-unexpected-passes=\"{}\">{}: {} runs of {} scenarios</p>\
<nav><a href=\"#requirements\">Requirements</a><a href=\"#scenarios\">Scenarios</a>{}</nav></header>",
        if bad { "fail" } else { "pass" },
        if bad { "FAIL" } else { "PASS" },
        c.passed,
        c.failed,
        c.expected_failures,
        c.unexpected_passes,
        xml_escape(&counts_line(c)),
        entries.len(),
        scenarios,
        if bad { "<a href=\"#first-failure\">First failure</a>" } else { "" }
    );
}

/// Requirements grouped by area, each with its scenarios as links.
fn requirements(out: &mut String, scenarios: &[ScenarioRuns<'_, '_>], catalogue: &Catalogue) {
    let mut areas: Vec<&str> = Vec::new();
    for r in &catalogue.requirements {
        if !areas.contains(&r.area.as_str()) {
            areas.push(&r.area);
        }
    }
    out.push_str("<h2 id=\"requirements\">Requirements by area</h2>\n<p class=\"muted\">A scenario's chip: + passing case, − failing case shown (with its diagnostic), X failed, x expected failure, ! unexpected pass.</p>\n");
    for area in areas {
        let rows: Vec<(&Requirement, Vec<Chip<'_>>)> =
            catalogue.requirements.iter().filter(|r| r.area == area).map(|r| (r, chips(scenarios, &r.id))).collect();
        let failing = rows.iter().filter(|(_, c)| c.iter().any(|chip| matches!(chip.class, "fail" | "xpass"))).count();
        let uncovered = rows.iter().filter(|(_, c)| c.is_empty()).count();
        let _ = writeln!(
            out,
            "<section class=\"area\"><h3>{}: {} requirements, {} holding, {failing} failing, {uncovered} not covered here</h3><table class=\"reqs\">",
            xml_escape(area),
            rows.len(),
            rows.len() - failing - uncovered
        );
        let (run, not_run): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, chips)| !chips.is_empty());
        for (r, chips) in run {
            requirement_row(out, r, &chips);
        }
        out.push_str("</table>\n");
        if !not_run.is_empty() {
            let ids: Vec<String> = not_run.iter().map(|(r, _)| xml_escape(&r.id)).collect();
            let _ =
                writeln!(out, "<p class=\"muted\">Not covered by the scenarios of this run: {}</p>", ids.join(", "));
        }
        out.push_str("</section>\n");
    }
}

/// How a scenario bears on a requirement: its mark (see the legend) and
/// the class of its worst status.
struct Chip<'a> {
    scenario: &'a str,
    /// The scenario's section.
    id: &'a str,
    mark: char,
    class: &'static str,
}

/// A requirement's chips: one for each scenario of the report that covers
/// it.
fn chips<'a>(scenarios: &'a [ScenarioRuns<'_, '_>], id: &str) -> Vec<Chip<'a>> {
    scenarios
        .iter()
        .filter_map(|sc| {
            cell(&sc.runs, id).map(|(c, class)| Chip {
                scenario: &sc.label,
                id: &sc.id,
                mark: if c == '-' { '−' } else { c },
                class,
            })
        })
        .collect()
}

fn requirement_row(out: &mut String, r: &Requirement, chips: &[Chip<'_>]) {
    let words = format!("{} {} {}", r.id, r.text, chips.iter().map(|c| c.scenario).collect::<Vec<_>>().join(" "));
    let _ = write!(
        out,
        "<tr id=\"{}\" data-text=\"{}\"><th class=\"id\">{}</th><td class=\"text\">{}</td><td>",
        anchor("req", &r.id),
        xml_escape(&words.to_lowercase()),
        xml_escape(&r.id),
        xml_escape(&r.text)
    );
    for Chip { scenario, id: href, mark, class } in chips {
        let name = xml_escape(scenario);
        let _ = write!(out, "<a class=\"chip {class}\" href=\"#{href}\">{mark} {name}</a>");
    }
    out.push_str("</td></tr>\n");
}

/// Each scenario in run order, with all its runs.
fn scenario_sections(out: &mut String, scenarios: &[ScenarioRuns<'_, '_>]) {
    let _ = writeln!(out, "<h2 id=\"scenarios\">Scenarios</h2>\n{}", svg::legend());
    let mut first_failure = true;
    for sc in scenarios {
        let first = sc.runs.iter().any(|e| e.status.is_bad()) && std::mem::take(&mut first_failure);
        scenario(out, sc, first);
    }
}

/// A scenario's section (`first_failure`: the first that did not pass,
/// which the summary links to).
fn scenario(out: &mut String, sc: &ScenarioRuns<'_, '_>, first_failure: bool) {
    let (id, name, runs) = (&sc.id, &sc.label, &sc.runs);
    let Some(first) = runs.first() else { return };
    let words = format!("{name} {} {}", first.covers.join(" "), first.file).to_lowercase();
    // The first failed run's timeline if one was drawn, else the first's.
    let shown = runs
        .iter()
        .position(|e| e.result.verdict == Verdict::Fail && e.timeline.is_some())
        .or_else(|| runs.iter().position(|e| e.timeline.is_some()));
    let _ = write!(
        out,
        "<section class=\"scenario\" id=\"{id}\" data-text=\"{}\">{}<h3>{}</h3><p>covers ",
        xml_escape(&words),
        if first_failure { "<a id=\"first-failure\"></a>" } else { "" },
        xml_escape(name),
    );
    for req in &first.covers {
        let _ = write!(out, "<a class=\"chip\" href=\"#{}\">{}</a>", anchor("req", req), xml_escape(req));
    }
    let _ = writeln!(
        out,
        "{} <span class=\"muted\">{}</span></p>",
        if first.failing_case { " <span class=\"muted\">(shows a failure and its diagnostic)</span>" } else { "" },
        xml_escape(&first.file)
    );
    if let Some((e, t)) = shown.and_then(|i| runs[i].timeline.as_ref().map(|t| (runs[i], t))) {
        drawing(out, e, t);
    }
    if runs.len() > 1 {
        let _ = writeln!(out, "<h4>Outcomes over {} seeds</h4>{}", runs.len(), svg::histogram(&outcomes(runs)));
    }
    runs_table(out, runs);
    failures(out, runs);
    // The other failures' timelines the report kept, folded.
    for (i, e) in runs.iter().enumerate() {
        if let (Some(t), false) = (&e.timeline, Some(i) == shown) {
            let _ =
                write!(out, "<details><summary>Timeline of seed {} ({})</summary>", e.result.seed, e.status.label());
            drawing(out, e, t);
            out.push_str("</details>\n");
        }
    }
    out.push_str("</section>\n");
}

/// A run's timeline and, if it saw a failure, the exchange around it.
fn drawing(out: &mut String, e: &Entry<'_>, t: &Timeline) {
    let _ = writeln!(
        out,
        "<p class=\"muted\">Timeline of seed {} (hover a mark for its events):</p>{}",
        e.result.seed,
        svg::timeline(t)
    );
    if !t.exchange.is_empty() {
        let hosts: Vec<String> = t.lanes.iter().map(|l| l.host.clone()).collect();
        let _ = writeln!(
            out,
            "<details{}><summary>The first failing exchange (seed {}), events in order</summary>{}</details>",
            if e.status.is_bad() { " open" } else { "" },
            e.result.seed,
            svg::sequence(&t.exchange, &hosts)
        );
    }
}

/// A sweep's runs counted by status and outcome, most first.
fn outcomes(runs: &[&Entry<'_>]) -> Vec<(String, &'static str, usize)> {
    let mut rows: Vec<(String, &'static str, usize)> = Vec::new();
    for e in runs {
        let outcome = outcome_of(e);
        let label = format!("{} · {}", e.status.label(), if outcome.is_empty() { "no outcome" } else { outcome });
        match rows.iter_mut().find(|r| r.0 == label) {
            Some(row) => row.2 += 1,
            None => rows.push((label, e.status.class(), 1)),
        }
    }
    rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    rows
}

/// The outcome a run ended in, as scenario files spell it
/// (`registration_failed`), or nothing.
fn outcome_of(e: &Entry<'_>) -> &'static str {
    e.result.summary.outcome.map_or("", Outcome::name)
}

/// Rows a runs table shows before it folds.
const RUNS_OPEN: usize = 8;

fn runs_table(out: &mut String, runs: &[&Entry<'_>]) {
    let fold = runs.len() > RUNS_OPEN;
    if fold {
        let _ = write!(out, "<details><summary>All {} runs</summary>", runs.len());
    }
    out.push_str("<table class=\"runs\"><tr><th>seed</th><th>verdict</th><th>sim time</th><th>wall</th><th>outcome</th><th>trace hash</th></tr>\n");
    for e in runs {
        let [_, seed, verdict, sim, wall, hash] = cells(e).map(|c| xml_escape(&c));
        let outcome = outcome_of(e);
        let _ = writeln!(
            out,
            "<tr class=\"{cls}\" data-status=\"{cls}\"><td>{seed}</td><td>{verdict}</td><td>{sim}</td><td>{wall}</td><td>{outcome}</td><td><code>{hash}</code></td></tr>",
            cls = e.status.class()
        );
    }
    out.push_str("</table>\n");
    if fold {
        out.push_str("</details>\n");
    }
}

/// What went wrong in runs that did not pass, with the command that
/// replays each.
fn failures(out: &mut String, runs: &[&Entry<'_>]) {
    for e in runs.iter().filter(|e| e.status.is_bad()) {
        let _ = write!(out, "<div class=\"failure\"><h4>Seed {}: {}</h4><ul>", e.result.seed, e.status.label());
        if let Status::UnexpectedPass { requirement, reason } = &e.status {
            let _ = write!(
                out,
                "<li>passed, but listed as failing ({}: {})</li>",
                xml_escape(requirement),
                xml_escape(reason)
            );
        }
        for f in &e.result.failures {
            let _ = write!(out, "<li>{}</li>", xml_escape(f));
        }
        let _ = writeln!(
            out,
            "</ul><p>repro: <code>{}</code></p><pre>{}</pre></div>",
            xml_escape(&e.repro),
            xml_escape(e.tail())
        );
    }
}
