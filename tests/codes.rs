//! Diagnostic codes are a table (`connector::code`), not text: every code
//! the connector can report is explained by `connsim explain`, and every
//! code an expectation names (scenario files, the diagnosis matrix's
//! table, the expected-failures list) is one the connector can report. A
//! misspelt expectation would otherwise wait for a finding that never
//! comes, or allow one that cannot happen.

use std::collections::BTreeSet;

use conformance::catalogue::Catalogue;
use connector::code::{self, Known};
use connsim_tests::{scenario_files_or_exit, workspace_root};

/// Code-shaped strings in a text: `"NET-443.unreachable"`.
fn codes_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for quoted in text.split('"').skip(1).step_by(2) {
        let Some((requirement, finding)) = quoted.split_once('.') else { continue };
        let requirement_like = requirement.starts_with(|c: char| c.is_ascii_uppercase())
            && requirement.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
        let finding_like =
            !finding.is_empty() && finding.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if requirement_like && finding_like {
            found.insert(quoted.to_string());
        }
    }
    found
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
    let mut files = scenario_files_or_exit();
    files.push(root.join("conformance/expected-failures.toml"));
    let mut named = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for c in codes_in(&text) {
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

#[test]
fn the_search_finds_codes_and_only_codes() {
    let text = r#"diagnostics = ["NET-443.unreachable", "TLS-CLIENT.expired"] version = "4.7" name = "a.b""#;
    assert_eq!(codes_in(text), BTreeSet::from(["NET-443.unreachable".to_string(), "TLS-CLIENT.expired".to_string()]));
}
