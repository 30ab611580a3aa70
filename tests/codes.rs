//! Diagnostic codes are a table (`connector::code`), not text: every code
//! the connector can report is explained by `connsim explain`, and every
//! code an expectation names (scenario files, the diagnosis matrix's
//! table) is one the connector can report. A
//! misspelt expectation would otherwise wait for a finding that never
//! comes, or allow one that cannot happen.

use conformance::catalogue::Catalogue;
use conformance::Scenario;
use connector::code::{self, Known};
use connsim_tests::{scenario_files_or_exit, workspace_root};

/// Every code a scenario's expectations name: required, allowed, ruled
/// out, per host and per window (read from the parsed file, so a comment
/// cannot hide one).
fn codes_named(s: &Scenario) -> Vec<String> {
    let x = &s.expect;
    let mut codes: Vec<String> =
        x.diagnostics.iter().chain(&x.allowed_diagnostics).chain(&x.no_diagnostics).cloned().collect();
    codes.extend(x.diagnostics_by_host.values().flatten().cloned());
    for w in &x.window {
        codes.extend(w.diagnostics.iter().chain(&w.any_of).chain(&w.no_diagnostics).cloned());
        codes.extend(w.mentions.keys().map(|k| k.get_ref().clone()));
    }
    codes
}

#[test]
fn every_code_is_explained() {
    let catalogue = Catalogue::builtin();
    for c in code::ALL {
        let text =
            catalogue.explain_code(&c.to_string()).unwrap_or_else(|| panic!("`connsim explain {c}` knows nothing"));
        assert!(text.contains(c.meaning), "{c}: {text}");
        let about_known =
            catalogue.get(c.requirement).is_some() || code::GENERAL.iter().any(|(p, _)| *p == c.requirement);
        assert!(about_known, "{c}: {} is neither a requirement of the catalogue nor a general prefix", c.requirement);
    }
    assert!(catalogue.explain_code("NET-443.unreachabel").is_none(), "a misspelt code is explained");
}

#[test]
fn every_code_an_expectation_names_is_one_the_connector_reports() {
    let root = workspace_root();
    let mut unknown = Vec::new();
    let mut named = 0;
    for f in scenario_files_or_exit() {
        let s = Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
        for c in codes_named(&s) {
            named += 1;
            if code::known(&c).is_none() {
                unknown.push(format!("{}: {c}", f.strip_prefix(&root).unwrap_or(&f).display()));
            }
        }
    }
    // Cells the matrix skips (it says why) expect nothing real.
    for cell in conformance::matrix::cells().into_iter().filter(|c| conformance::matrix::skip_reason(c).is_none()) {
        let e = conformance::matrix::expected(&cell);
        for c in e.required.iter().chain(&e.allowed) {
            named += 1;
            if !matches!(code::known(c), Some(Known::Listed(_))) {
                unknown.push(format!("the matrix's table: {c}"));
            }
        }
    }
    assert!(named > 100, "only {named} codes named: is the search broken?");
    unknown.sort();
    unknown.dedup();
    assert!(unknown.is_empty(), "codes the connector never reports:\n{}", unknown.join("\n"));
}
