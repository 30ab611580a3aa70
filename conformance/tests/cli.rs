//! The `connsim` binary as a user runs it: `explain` and `schema`.

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
