//! What the connector tells an administrator, pinned down: an insta
//! snapshot of the diagnostics of every failing-case scenario (the ones
//! that expect diagnostics), and, over every scenario, a check that no
//! secret (password, token, private key) reaches a diagnostic or the trace.
//!
//! Update snapshots after an intended wording change with
//! `INSTA_UPDATE=always cargo test --release --test diagnostics` (or
//! `cargo insta review`), then read the diff.

use conformance::{run, Scenario};
use libtest_mimic::{Arguments, Failed, Trial};

/// Replaces what is stable in a run yet changes with unrelated code (the
/// PKI's serials, derived connector IDs) so snapshots show wording.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let hexish = run.chars().filter(|c| c.is_ascii_hexdigit()).count();
        if run.len() >= 32 && run.len() <= 40 && run.matches('-').count() == 4 && hexish + 4 == run.len() {
            out.push_str("[uuid]");
        } else if run.len() >= 12 && hexish == run.len() && run.chars().any(|c| c.is_ascii_digit()) {
            out.push_str("[hex]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// A hex run long enough to be a token or key material (connector IDs are
/// UUIDs with dashes; certificate serials in the trace are 16 digits; a
/// public certificate's fingerprint is named as such, "SHA-256 <hex>").
fn long_hex_run(text: &str) -> Option<String> {
    let mut run = String::new();
    let mut start = 0;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        if c.is_ascii_hexdigit() {
            if run.is_empty() {
                start = i;
            }
            run.push(c);
        } else {
            if run.len() >= 40 && !text[..start].ends_with("SHA-256 ") {
                return Some(run);
            }
            run.clear();
        }
    }
    None
}

fn main() {
    let args = Arguments::from_args();
    let files = connsim_tests::scenario_files_or_exit();
    let mut trials = Vec::new();
    for file in files {
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let scenario = match Scenario::load(&file) {
            Ok(s) => s,
            Err(e) => {
                trials.push(Trial::test(format!("load::{name}"), move || Err(Failed::from(e.to_string()))));
                continue;
            }
        };
        let failing_case = !scenario.expect.findings().is_empty();
        let shared = std::sync::Arc::new(scenario);
        let s = shared.clone();
        let n = name.clone();
        trials.push(Trial::test(format!("no_secrets::{name}"), move || {
            let r = run(&s, s.seed.unwrap_or(1));
            let mut secrets: Vec<&str> = vec![s.world.admin.password.as_str()];
            if let Some(p) = &s.world.admin.signs_in_with {
                secrets.push(p);
            }
            let trace: Vec<String> =
                r.trace.iter().map(|e| serde_json::to_string(&e.what).unwrap_or_default()).collect();
            for (i, line) in trace.iter().enumerate() {
                for secret in &secrets {
                    if line.contains(secret) {
                        return Err(format!("{n}: trace event {i} carries the admin password: {line}").into());
                    }
                }
                for marker in ["PRIVATE KEY", "access_token", "Bearer "] {
                    if line.contains(marker) {
                        return Err(format!("{n}: trace event {i} carries {marker:?}: {line}").into());
                    }
                }
                if let Some(hex) = long_hex_run(line) {
                    return Err(format!("{n}: trace event {i} carries a token-like hex string {hex}: {line}").into());
                }
            }
            Ok(())
        }));
        if failing_case {
            let s = shared.clone();
            trials.push(Trial::test(format!("snapshot::{name}"), move || {
                let r = run(&s, s.seed.unwrap_or(1));
                let mut text = String::new();
                for d in &r.summary.diagnostics {
                    let event = d.event_id.map(|e| format!(" (event {e})")).unwrap_or_default();
                    text.push_str(&format!(
                        "{}{event}\n  {}\n  fix: {}\n",
                        d.code,
                        redact(&d.message),
                        redact(&d.remedy)
                    ));
                }
                // What users were told by the service (relay-side findings).
                for (code, n) in &r.summary.relay_errors {
                    text.push_str(&format!("users answered {code}: {n}\n"));
                }
                let outcome = std::panic::catch_unwind(|| {
                    let mut settings = insta::Settings::clone_current();
                    settings.set_snapshot_path(connsim_tests::workspace_root().join("tests/snapshots"));
                    settings.set_prepend_module_to_snapshot(false);
                    settings.set_description(format!("diagnostics of scenario {}", s.name));
                    settings.bind(|| insta::assert_snapshot!(format!("diagnostics__{name}"), text));
                });
                outcome.map_err(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "snapshot differs".into());
                    Failed::from(msg)
                })
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
