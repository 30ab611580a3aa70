//! Scenario files: every shipped one parses; hostile ones are refused with
//! file, line, column and what was expected; nothing panics.

use std::path::Path;

use conformance::{collect_scenarios, Scenario, ScenarioError};
use connsim_tests::scenario_dir;
use proptest::prelude::*;

const MINIMAL: &str = r#"
name = "t"
duration = "1m"
[world]
admin = { user = "a@b.c", password = "p" }
[[world.connectors]]
name = "c1"
[[world.backends]]
name = "b1"
[[world.apps]]
name = "app"
backend = "b1"
[expect]
outcome = "serving"
"#;

fn refuse(text: &str) -> (usize, usize, String) {
    match Scenario::parse(text, Path::new("bad.toml")) {
        Err(ScenarioError::Invalid { line, column, message, path }) => {
            assert_eq!(path, Path::new("bad.toml"));
            (line, column, message)
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

#[test]
fn shipped_scenarios_all_parse() {
    let files = collect_scenarios(&[scenario_dir()]).unwrap();
    // Every scenario file, counted without the loader's own walk: a walk
    // that skipped a folder would leave its scenarios unchecked and unrun.
    fn tomls(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                tomls(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    tomls(&scenario_dir(), &mut all);
    all.sort();
    let mut found = files.clone();
    found.sort();
    assert!(all.len() > 100, "only {} scenario files under {}", all.len(), scenario_dir().display());
    assert_eq!(found, all, "the loader's walk and the folder disagree");
    for f in files {
        let s = Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.covers.is_empty(), "{}: lists no requirement it covers", f.display());
    }
}

#[test]
fn minimal_scenario_parses() {
    Scenario::parse(MINIMAL, Path::new("ok.toml")).unwrap();
}

#[test]
fn bad_duration_points_at_the_value() {
    let text = MINIMAL.replace("duration = \"1m\"", "duration = \"1 fortnight\"");
    let (line, column, msg) = refuse(&text);
    assert_eq!((line, column), (3, 12), "{msg}");
    assert!(msg.contains("unit") || msg.contains("number"), "{msg}");
}

#[test]
fn unknown_key_is_named() {
    let text = MINIMAL.replace("outcome = \"serving\"", "outcome = \"serving\"\nrequests_okay = 3");
    let (line, _, msg) = refuse(&text);
    assert_eq!(line, 15, "{msg}");
    assert!(msg.contains("requests_okay") && msg.contains("requests_ok"), "{msg}");
}

/// An unknown key in any section is refused at its own line and column,
/// naming the key; the shipped scenarios' sections, each in turn.
#[test]
fn an_unknown_key_is_refused_in_every_section() {
    let full = format!(
        "{MINIMAL}[[load]]\napp = \"app\"\nrequests = 1\nstart = \"30s\"\ninterval = \"1s\"\n[[timeline]]\nat = \"1m\"\nevent = \"reboot c1\"\n\
         [[world.users]]\nupn = \"alice@b.c\"\n[[expect.window]]\nbetween = [\"10s\", \"20s\"]\nany_of = [\"NET-443.unreachable\"]\n"
    );
    Scenario::parse(&full, Path::new("ok.toml")).expect("the sections without a stray key parse");
    let headers = [
        "name = \"t\"",
        "[world]",
        "[[world.connectors]]",
        "[[world.backends]]",
        "[[world.apps]]",
        "[expect]",
        "[[load]]",
        "[[timeline]]",
        "[[world.users]]",
        "[[expect.window]]",
    ];
    for header in headers {
        let at = full.lines().position(|l| l == header).unwrap_or_else(|| panic!("{header} in the text")) + 1;
        let text = full.replacen(&format!("{header}\n"), &format!("{header}\nfrobnicate = 1\n"), 1);
        let (line, column, msg) = refuse(&text);
        assert_eq!((line, column), (at + 1, 1), "{header}: {msg}");
        assert!(msg.contains("frobnicate"), "{header}: {msg}");
    }
}

/// Every shipped scenario file validates against the JSON Schema that
/// `connsim schema` prints (the one editors are pointed at), and the schema
/// refuses what the parser refuses: a stray key, a value of the wrong type.
#[test]
fn every_scenario_file_validates_against_connsim_schema() {
    let bins = connsim_tests::real_world::binaries().expect("the workspace's binaries");
    let out = std::process::Command::new(&bins.connsim).arg("schema").output().expect("connsim schema runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let as_json = |text: &str| -> serde_json::Value {
        let doc: toml::Value = toml::from_str(text).expect("TOML");
        serde_json::to_value(doc).expect("TOML as JSON")
    };
    let files = collect_scenarios(&[scenario_dir()]).expect("scenarios");
    assert!(files.len() > 100);
    for f in &files {
        let doc = as_json(&std::fs::read_to_string(f).expect("read"));
        let errors: Vec<String> =
            validator.iter_errors(&doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
    }
    assert!(validator.is_valid(&as_json(MINIMAL)));
    assert!(!validator.is_valid(&as_json(&MINIMAL.replace("[expect]", "[expect]\nfrobnicate = 1"))), "a stray key");
    assert!(!validator.is_valid(&as_json(&MINIMAL.replace("\"1m\"", "60"))), "a number for a duration");
    assert!(!validator.is_valid(&as_json(&MINIMAL.replace("\"1m\"", "\"1 fortnight\""))), "a duration's pattern");
}

#[test]
fn unknown_event_lists_the_accepted_forms() {
    let text = format!("{MINIMAL}\n[[timeline]]\nat = \"1m\"\nevent = \"reboot the internet\"\n");
    let (line, _, msg) = refuse(&text);
    assert_eq!(line, 18, "{msg}");
    assert!(msg.contains("restart relay"), "{msg}");
}

#[test]
fn dangling_backend_reference_points_at_it() {
    let text = MINIMAL.replace("backend = \"b1\"", "backend = \"nope\"");
    let (line, column, msg) = refuse(&text);
    assert_eq!((line, column), (12, 11), "{msg}");
    assert!(msg.contains("nope") && msg.contains("b1"), "{msg}");
}

#[test]
fn wrong_type_and_bad_outcome_are_refused() {
    let (_, _, msg) = refuse(&MINIMAL.replace("name = \"t\"", "name = 5"));
    assert!(msg.contains("string"), "{msg}");
    let (line, _, msg) = refuse(&MINIMAL.replace("\"serving\"", "\"great\""));
    assert_eq!(line, 14);
    assert!(msg.contains("serving"), "{msg}");
    let (_, _, msg) = refuse(&MINIMAL.replace("[[world.connectors]]\nname = \"c1\"\n", ""));
    assert!(msg.contains("no connector"), "{msg}");
    let bad_rule =
        MINIMAL.replace("[[world.connectors]]", "firewall = [{ action = \"explode\" }]\n[[world.connectors]]");
    let (_, _, msg) = refuse(&bad_rule);
    assert!(msg.contains("allow") && msg.contains("drop"), "{msg}");
}

#[test]
fn missing_file_is_an_io_error_with_the_path() {
    let err = Scenario::load(Path::new("/nonexistent/x.toml")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/x.toml"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary text (some of it TOML-shaped) is refused with a located
    /// error, never a panic or an empty message.
    #[test]
    fn garbage_is_refused_at_a_place_in_it(text in "(\\[[a-z.]{0,12}\\]\n|[a-z_]{1,10} = [^\n]{0,20}\n|.{0,40}){0,12}") {
        // Whatever the text, the error names this file and a line and
        // column inside it (or one past its end, for what is missing).
        match Scenario::parse(&text, Path::new("fuzz.toml")) {
            Ok(_) => {}
            Err(ScenarioError::Invalid { path, line, column, message }) => {
                prop_assert_eq!(path, Path::new("fuzz.toml"));
                prop_assert!(line >= 1 && line <= text.lines().count() + 1, "line {} of {}", line, text.lines().count());
                prop_assert!(column >= 1 && !message.is_empty());
            }
            Err(e) => prop_assert!(false, "not a located error: {}", e),
        }
    }

    /// Cutting a valid file anywhere gives a result or a located error.
    #[test]
    fn truncation_is_refused_cleanly(cut in 0usize..MINIMAL.len()) {
        let text = &MINIMAL[..cut];
        match Scenario::parse(text, Path::new("cut.toml")) {
            Ok(_) => {}
            Err(ScenarioError::Invalid { line, column, .. }) => prop_assert!(line >= 1 && column >= 1),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

/// Firewall rules as an admin writes them: a bad CIDR, suffix, action or
/// group is refused at the exact place, with what was wrong.
#[test]
fn bad_firewall_rules_point_at_the_value() {
    let with_world_line = |line: &str| MINIMAL.replace("admin = {", &format!("{line}\nadmin = {{"));
    // (line, text of the wrong value, what the message must say)
    let cases = [
        (r#"firewall = [{ action = "allow", cidr = "10.0.0.1/24" }]"#, r#""10.0.0.1/24""#, "did you mean 10.0.0.0/24"),
        (r#"firewall = [{ action = "allow", cidr = "10.0.0.0/40" }]"#, r#""10.0.0.0/40""#, "larger than 32"),
        (r#"firewall = [{ action = "allow", host_suffix = "bad name.com" }]"#, r#""bad name.com""#, "not allowed"),
        (r#"firewall = [{ action = "allow", host_suffix = "a..b" }]"#, r#""a..b""#, "empty label"),
        (r#"firewall = [{ action = "permit", port = 443 }]"#, r#""permit""#, "unknown variant"),
        (r#"firewall = [{ action = "drop", port = 70000 }]"#, "70000", "expected u16"),
        (r#"allow_list = { minus = ["service-8080"] }"#, r#""service-8080""#, "unknown variant"),
        // Inside a list, the span toml reports is the list's.
        (r#"dns = { fail = ["*."] }"#, r#"["*."]"#, "empty"),
    ];
    for (line, value, wanted) in cases {
        let (l, c, msg) = refuse(&with_world_line(line));
        assert_eq!(l, 5, "{line}: {msg}");
        let at = line.find(value).unwrap() + 1;
        assert_eq!(c, at, "{line}: points at column {c}, the value is at {at}: {msg}");
        assert!(msg.contains(wanted), "{line}: {msg}");
    }
}

#[test]
fn use_proxy_without_a_proxy_is_refused() {
    let text = MINIMAL.replace("name = \"c1\"", "name = \"c1\"\nuse_proxy = true");
    let (_, _, msg) = refuse(&text);
    assert!(msg.contains("[world.proxy]"), "{msg}");
}
