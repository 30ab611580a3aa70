//! The `connsim` binary as a user runs it: `explain`, `schema`, and a
//! run split with `--partition` and joined with `merge`.

use std::process::Command;

fn connsim(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_connsim"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("connsim runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn explain_shows_requirements_fields_and_events() {
    let (ok, out, _) = connsim(&["explain", "NET-CRL"]);
    assert!(ok && out.contains("crl3.digicert.com") && out.contains("failing cases"), "{out}");
    let (ok, out, _) = connsim(&["explain", "world.instances"]);
    assert!(ok && out.starts_with("world.instances (integer)") && out.contains("Cloud instances"), "{out}");
    let (ok, out, _) = connsim(&["explain", "firewall.action"]);
    assert!(ok && out.contains("reject") && out.contains("TCP RST"), "{out}");
    let (ok, out, _) = connsim(&["explain", "pin", "group"]);
    assert!(ok && out.contains("event = \"pin group GROUP to REGION\""), "{out}");
    let (ok, _, err) = connsim(&["explain", "no-such-thing"]);
    assert!(!ok && err.contains("no requirement, scenario field or timeline event"), "{err}");
}

#[test]
fn schema_is_json_with_every_section() {
    let (ok, out, _) = connsim(&["schema"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["title"], "Scenario");
    for section in ["world", "load", "timeline", "expect"] {
        assert!(v["properties"].get(section).is_some(), "no {section} in {}", v["properties"]);
    }
}

/// A report's runs without what varies between two runs of the same
/// simulations (the wall-clock time each took).
fn runs_of(json: &str) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(json).expect("a JSON report");
    let mut runs = doc["scenarios"].as_array().expect("scenarios").clone();
    for r in &mut runs {
        r.as_object_mut().expect("a run").remove("wall_ms");
    }
    runs
}

#[test]
fn a_run_split_in_three_and_merged_is_the_whole_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).display().to_string();
    let run = |extra: &[&str], out: &str| {
        let mut args = vec!["run", "scenarios/core", "--seeds", "1..2", "--format", "json", "--out", out];
        args.extend_from_slice(extra);
        let (ok, _, err) = connsim(&args);
        assert!(ok, "{args:?}: {err}");
    };
    run(&[], &path("whole.json"));
    let parts: Vec<String> = (1..=3).map(|k| path(&format!("part{k}.json"))).collect();
    let mut sizes = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        run(&["--partition", &format!("{}/3", k + 1)], part);
        sizes.push(runs_of(&std::fs::read_to_string(part).expect("part")).len());
    }
    let whole = runs_of(&std::fs::read_to_string(path("whole.json")).expect("whole"));
    assert!(sizes.iter().all(|n| n.abs_diff(whole.len() / 3) <= 1), "parts of {sizes:?} for {}", whole.len());
    // Given in any order, the parts make the whole run: every verdict,
    // trace hash and summary, in the whole run's order.
    let (ok, merged, err) = connsim(&["merge", &parts[2], &parts[0], &parts[1], "--format", "json"]);
    assert!(ok, "{err}");
    assert_eq!(runs_of(&merged), whole);
    let (ok, html, _) = connsim(&["merge", &parts[0], &parts[1], &parts[2], "--format", "html"]);
    assert!(ok && html.contains("<html") && html.contains("happy-path"), "{html:.300}");
    // A part given twice, a part missing, or a file that is not a report
    // is refused.
    let (ok, _, err) = connsim(&["merge", &parts[0], &parts[0]]);
    assert!(!ok && err.contains("is in both"), "{err}");
    let (ok, _, err) = connsim(&["merge", &parts[0], &parts[2]]);
    assert!(!ok && err.contains("part 2/3 missing"), "{err}");
    let (ok, _, err) = connsim(&["merge", "Cargo.toml"]);
    assert!(!ok && err.contains("Cargo.toml: not a JSON report"), "{err}");
    let (ok, _, err) = connsim(&["run", "--partition", "4/3"]);
    assert!(!ok && err.contains("not a partition"), "{err}");
}

#[test]
fn completions_know_every_subcommand_and_flag() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, out, err) = connsim(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        // Flags as each shell's script names them (not in a description).
        let flag = |name: &str| if shell == "fish" { format!("-l {name}") } else { format!("--{name}") };
        for word in ["merge".into(), "explain".into(), flag("partition"), flag("check-determinism")] {
            assert!(out.contains(&word), "{shell} completion without {word}");
        }
    }
    let (ok, _, err) = connsim(&["completions", "tcsh"]);
    assert!(!ok && err.contains("invalid value"), "{err}");
}

#[test]
fn color_is_asked_for_or_left_to_the_terminal() {
    let scenario = "scenarios/core/happy-path.toml";
    let escape = |args: &[&str]| {
        let (ok, out, err) = connsim(args);
        assert!(ok, "{args:?}: {err}");
        out.contains('\u{1b}')
    };
    // The flag reaches the report, before or after the subcommand (the
    // rules themselves: `cli::color_for`'s unit test).
    assert!(escape(&["run", scenario, "--color", "always"]));
    assert!(escape(&["--color", "always", "run", scenario]));
    // Not a terminal here: auto is plain.
    assert!(!escape(&["run", scenario]));
}

/// The subcommands `connsim --help` lists (its "Commands:" section).
fn subcommands() -> Vec<String> {
    let (ok, out, _) = connsim(&["--help"]);
    assert!(ok);
    let commands = out.split("Commands:").nth(1).expect("a Commands section");
    commands
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every subcommand's help ends with an example to copy, and has a manual
/// page (`connsim man NAME`), as connsim itself has.
#[test]
fn every_subcommand_has_an_example_and_a_manual_page() {
    let names = subcommands();
    assert!(names.len() >= 12 && names.contains(&"bench-real".to_string()), "{names:?}");
    for name in &names {
        let (ok, out, err) = connsim(&[name, "--help"]);
        assert!(ok, "{name} --help: {err}");
        assert!(out.contains("Example"), "connsim {name} --help has no example:\n{out}");
        assert!(out.contains(&format!("connsim {name}")), "{name}'s example does not use it:\n{out}");
        let (ok, page, err) = connsim(&["man", name]);
        assert!(ok, "connsim man {name}: {err}");
        assert!(page.contains(&format!(".TH connsim-{name} 1")), "the page is named after {name}");
    }
    let (ok, page, _) = connsim(&["man"]);
    assert!(ok && page.contains(".TH connsim") && page.contains("Environment"), "{page}");
    let (ok, _, err) = connsim(&["man", "no-such-command"]);
    assert!(!ok && err.contains("no subcommand \"no-such-command\""), "{err}");
}
