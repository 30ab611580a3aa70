//! The catalogue's coverage, expected failures and every report format,
//! including the HTML report in headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

use conformance::catalogue::{self, Catalogue};
use conformance::expected::ExpectedFailures;
use conformance::report::{self, Entry, Status};
use conformance::{collect_scenarios, run, RunResult, Scenario, Verdict};
use connsim_tests::scenario_dir;

const SMALL_WORLD: &str = r#"
duration = "5m"
covers = ["NET-443"]

[world]
admin = { user = "admin@contoso.com", password = "correct-horse" }

[[world.connectors]]
name = "connector-1"

[[world.backends]]
name = "app1.corp.local"

[[world.apps]]
name = "app1"
backend = "app1.corp.local"

[[load]]
app = "app1"
requests = 2
start = "2m"
interval = "30s"
"#;

fn small(name: &str, requests_ok: u32) -> Scenario {
    let text =
        format!("name = \"{name}\"\n{SMALL_WORLD}\n[expect]\noutcome = \"serving\"\nrequests_ok = {requests_ok}\n");
    Scenario::parse(&text, Path::new(&format!("{name}.toml"))).expect("scenario")
}

fn entry<'a>(s: &Scenario, r: &'a RunResult, status: Status) -> Entry<'a> {
    let file = PathBuf::from(format!("scenarios/test/{}.toml", s.name));
    Entry::new(&file, s, r, status, report::repro_command(&file, r.seed))
}

#[test]
fn every_requirement_has_a_passing_and_a_failing_case() {
    let catalogue = Catalogue::builtin();
    let files = collect_scenarios(&[scenario_dir()]).expect("scenarios");
    let scenarios: Vec<(PathBuf, Scenario)> =
        files.into_iter().map(|f| (f.clone(), Scenario::load(&f).expect("loads"))).collect();
    let (coverage, unknown) = catalogue::coverage(&catalogue, &scenarios);
    assert!(unknown.is_empty(), "scenarios name IDs the catalogue lacks: {unknown:?}");
    let gaps: Vec<String> = catalogue
        .requirements
        .iter()
        .zip(&coverage)
        .filter(|(r, c)| !c.gaps(r).is_empty())
        .map(|(r, c)| format!("{}: {}", r.id, c.gaps(r).join(", ")))
        .collect();
    assert!(gaps.is_empty(), "coverage gaps (run `connsim coverage`): {gaps:?}");
}

#[test]
fn expected_failures_are_reported_as_such_and_stale_entries_fail() {
    let catalogue = Catalogue::builtin();
    let list = ExpectedFailures::parse(
        "[[expected]]\nscenario = \"wants-too-much\"\nrequirement = \"NET-443\"\nreason = \"asks for 99 answers\"\n\n\
         [[expected]]\nscenario = \"fine\"\nrequirement = \"NET-443\"\nreason = \"listed by mistake\"\n",
        &catalogue,
    )
    .expect("list");
    let failing = small("wants-too-much", 99);
    let r = run(&failing, 1);
    assert_eq!(r.verdict, Verdict::Fail);
    let status = Status::of(&r, list.find(&failing.name, 1));
    assert!(matches!(status, Status::ExpectedFail { .. }), "{status:?}");
    assert!(!status.is_bad());

    let fine = small("fine", 2);
    let r = run(&fine, 1);
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    let status = Status::of(&r, list.find(&fine.name, 1));
    assert!(matches!(status, Status::UnexpectedPass { .. }), "{status:?}");
    assert!(status.is_bad(), "an unexpected pass must fail the run");
}

struct Pair {
    pass: (Scenario, RunResult),
    fail: (Scenario, RunResult),
}

fn pair() -> Pair {
    let ok = small("small-ok", 2);
    let bad = small("small-bad", 5);
    let (r_ok, r_bad) = (run(&ok, 1), run(&bad, 1));
    assert_eq!((r_ok.verdict, r_bad.verdict), (Verdict::Pass, Verdict::Fail));
    Pair { pass: (ok, r_ok), fail: (bad, r_bad) }
}

fn entries(p: &Pair) -> Vec<Entry<'_>> {
    vec![entry(&p.pass.0, &p.pass.1, Status::Pass), entry(&p.fail.0, &p.fail.1, Status::Fail)]
}

#[test]
fn every_format_carries_every_run_and_the_repro_of_failures() {
    let p = pair();
    let entries = entries(&p);
    let catalogue = Catalogue::builtin();
    let repro = &entries[1].repro;

    let junit = report::junit(&entries);
    assert_eq!(junit.matches("<testcase ").count(), 2, "{junit}");
    assert_eq!(junit.matches("<failure ").count(), 1, "{junit}");
    assert!(junit.contains("tests=\"2\" failures=\"1\""), "{junit}");
    assert!(junit.contains(&repro.replace('"', "&quot;")), "{junit}");

    let json: serde_json::Value = serde_json::from_str(&report::json(&entries)).expect("json");
    assert_eq!(json["passed"], 1);
    assert_eq!(json["failed"], 1);
    assert_eq!(json["scenarios"][1]["status"], "fail");

    let md = report::markdown(&entries, &catalogue);
    assert!(md.contains("| small-bad | 1 | FAIL |"), "{md}");
    assert!(md.contains("## Failures") && md.contains(repro.as_str()), "{md}");

    let matrix = report::matrix(&entries, &catalogue, false);
    let row = matrix.lines().find(|l| l.starts_with("NET-443 ")).expect("NET-443 row");
    assert!(row.ends_with("+X"), "{row}");
    assert!(!matrix.contains('\x1b'), "no colour codes when colour is off");
    assert!(report::matrix(&entries, &catalogue, true).contains("\x1b[1;31mX"));

    let html = report::html(&entries, &catalogue);
    assert!(html.contains("data-passed=\"1\" data-failed=\"1\""));
    for fetch in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(fetch), "the HTML report must not load anything ({fetch})");
    }
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let out = Command::new("which").arg(name).output().ok()?;
        out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
}

/// Chromium, or `None` with a word why the test is skipped (CI must have
/// it: there a missing browser fails the test).
fn chromium_or_skip() -> Option<PathBuf> {
    let browser = chromium();
    if browser.is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must have Chromium (`.ci/run` installs Debian's chromium)");
        eprintln!("skipped: no Chromium on this machine (apt-get install chromium)");
    }
    browser
}

/// Headless Chromium on `file` with a 1280×800 window, its profile in
/// `dir`, with `args` (what to dump).
fn chromium_on(browser: &Path, dir: &Path, file: &Path, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,800",
            // No network here: keep Chromium from trying (and waiting).
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium runs")
}

/// What the report's script measured (`#counts`' attribute `name`).
fn measured<'a>(dom: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = dom.find(&key).map(|i| i + key.len()).unwrap_or_else(|| panic!("no {name} in the DOM: {}", head(dom)));
    let len = dom[start..].find('"').expect("closing quote");
    &dom[start..start + len]
}

/// Loads the HTML report in headless Chromium and reads, from the DOM, the
/// verdict counts its script computed from the rendered table.
#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium_or_skip() else { return };
    let mut p = pair();
    // A failure with one long unbroken word must wrap, not widen the page.
    p.fail.1.failures.push(format!("{}: a word longer than the window", "x".repeat(400)));
    let mut entries = entries(&p);
    report::draw_timelines(&mut entries);
    let html = report::html(&entries, &Catalogue::builtin());
    assert_eq!(html.matches("<svg class=\"timeline\"").count(), 2, "a timeline a scenario");
    // small-bad fails on a count: no event of its trace is a failure, so
    // it has no failing exchange to draw.
    assert_eq!(html.matches("<svg class=\"sequence\"").count(), 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.html");
    std::fs::write(&file, html).expect("write");
    let out = chromium_on(&browser, dir.path(), &file, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-rendered=\"pass=1 fail=1 xfail=0 xpass=0\""),
        "the report's script did not run or counted wrong; stderr: {}\nDOM head: {}",
        String::from_utf8_lossy(&out.stderr),
        head(&dom)
    );
    let width: u32 = measured(&dom, "data-scroll-width").parse().expect("a width");
    assert!(width <= 1280, "a failure's long word makes the page {width} px wide");
}

/// The start of a DOM, for a failure message (whole characters).
fn head(dom: &str) -> &str {
    dom.char_indices().nth(600).map_or(dom, |(i, _)| &dom[..i])
}

/// The whole suite's HTML report, as `connsim run scenarios/ --format html`
/// writes it: a timeline for every scenario, and at 1280×800 in headless
/// Chromium the summary above the fold and nothing wider than the window.
#[test]
fn the_suites_html_report_fits_a_laptop_screen() {
    let Some(browser) = chromium_or_skip() else { return };
    let bins = connsim_tests::real_world::binaries().expect("the workspace's binaries");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("report.html");
    let run = Command::new(&bins.connsim)
        .args(["run", "scenarios/", "--format", "html", "--out"])
        .arg(&file)
        .current_dir(connsim_tests::workspace_root())
        .output()
        .expect("connsim runs");
    assert!(run.status.success(), "the suite fails: {}", String::from_utf8_lossy(&run.stderr));
    let html = std::fs::read_to_string(&file).expect("report");
    let scenarios = collect_scenarios(&[scenario_dir()]).expect("scenarios").len();
    assert_eq!(html.matches("<section class=\"scenario\"").count(), scenarios);
    assert_eq!(html.matches("<svg class=\"timeline\"").count(), scenarios, "a timeline a scenario");

    let out = chromium_on(&browser, dir.path(), &file, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    assert_eq!(measured(&dom, "data-rendered"), format!("pass={scenarios} fail=0 xfail=0 xpass=0"));
    let width: u32 = measured(&dom, "data-scroll-width").parse().expect("a width");
    assert!(width <= 1280, "the page is {width} px wide at a 1280 px window: it scrolls sideways");
    let bottom: u32 = measured(&dom, "data-summary-bottom").parse().expect("a position");
    assert!(bottom <= 800, "the summary ends at {bottom} px, below the fold of an 800 px window");

    // The filter box, through a link that fills it in: only the scenarios
    // whose name, requirements or file hold the words stay shown.
    let filtered = dir.path().join("report.html#filter=outbound-443");
    let out = chromium_on(&browser, dir.path(), &filtered, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let tags: Vec<&str> = dom
        .split("<section class=\"scenario\"")
        .skip(1)
        .map(|rest| rest.split('>').next().unwrap_or_default())
        .collect();
    assert_eq!(tags.len(), scenarios);
    let visible: Vec<&&str> = tags.iter().filter(|tag| !tag.contains("display: none")).collect();
    assert_eq!(visible.len(), 1, "one scenario matches outbound-443: {visible:?}");
    assert!(visible[0].contains("outbound-443-blocked"), "{visible:?}");
}

/// What `connsim merge` reads back from a JSON report gives every format
/// the same report as the runs themselves: failures with their trace's
/// last events, expected failures and unexpected passes with their reasons,
/// answers by status.
#[test]
fn a_json_report_read_back_makes_the_same_reports() {
    let p = pair();
    let known = Status::ExpectedFail { requirement: "NET-443".into(), reason: "known".into() };
    let stale = Status::UnexpectedPass { requirement: "NET-443".into(), reason: "stale".into() };
    let entries = vec![
        entry(&p.pass.0, &p.pass.1, Status::Pass),
        entry(&p.fail.0, &p.fail.1, Status::Fail),
        entry(&p.fail.0, &p.fail.1, known),
        entry(&p.pass.0, &p.pass.1, stale),
    ];
    assert!(entries[1].trace_tail.as_deref().is_some_and(|t| t.lines().count() > 5), "a failure keeps its last events");
    assert!(!p.pass.1.summary.statuses.is_empty(), "answers by status to carry");
    let mut entries = entries;
    report::draw_timelines(&mut entries);
    let drawn: Vec<bool> = entries.iter().map(|e| e.timeline.is_some()).collect();
    assert_eq!(drawn, [true; 4], "every run here has its scenario's first seed");
    let json = report::json(&entries);
    let (part, back) = report::parse_json(&json).expect("read back");
    assert_eq!(part, None);
    let back: Vec<Entry<'_>> = back.iter().map(report::OwnedEntry::entry).collect();
    let catalogue = Catalogue::builtin();
    // Wall times too: serde_json parses floats exactly (`float_roundtrip`).
    same_lines("json", &report::json(&back), &json);
    same_lines("junit", &report::junit(&back), &report::junit(&entries));
    same_lines("markdown", &report::markdown(&back, &catalogue), &report::markdown(&entries, &catalogue));
    same_lines("html", &report::html(&back, &catalogue), &report::html(&entries, &catalogue));
    same_lines("text", &report::text(&back), &report::text(&entries));
}

/// Fails naming the first line where two reports differ.
fn same_lines(what: &str, got: &str, want: &str) {
    let first = got.lines().zip(want.lines()).position(|(a, b)| a != b);
    if let Some(i) = first {
        panic!("{what} line {}: {:?}, want {:?}", i + 1, got.lines().nth(i), want.lines().nth(i));
    }
    assert_eq!(got.lines().count(), want.lines().count(), "{what}: line counts");
}
