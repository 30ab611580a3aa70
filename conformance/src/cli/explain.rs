//! `connsim explain TOPIC`: a diagnostic code, a requirement of the
//! catalogue, a field of the scenario format, or a timeline event.

use std::path::PathBuf;
use std::process::ExitCode;

use conformance::catalogue::{self, Catalogue, Requirement};
use conformance::schema::{self, FieldDoc};
use conformance::Scenario;

use super::load_all;

/// Explains `topic`: a diagnostic code first, then a requirement ID, a
/// field, an event.
pub fn run(topic: &str, scenarios: &[PathBuf]) -> Result<ExitCode, String> {
    let catalogue = Catalogue::builtin();
    if let Some(text) = catalogue.explain_code(topic) {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(r) = catalogue.get(topic) {
        requirement(&catalogue, r, &load_all(scenarios)?);
        return Ok(ExitCode::SUCCESS);
    }
    let fields = schema::lookup(topic);
    let events = schema::events(topic);
    if fields.is_empty() && events.is_empty() {
        return Err(not_found(&catalogue, topic));
    }
    for f in &fields {
        field(f);
    }
    if !events.is_empty() {
        println!("timeline event{}:", if events.len() == 1 { "" } else { "s" });
        for (form, what) in events {
            println!("  event = \"{form}\"\n      {what}");
        }
        println!(
            "\n  (in a [[timeline]] entry with `at = \"20m\"`; NAME is a connector host, GROUP a connector group)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn field(f: &FieldDoc) {
    println!("{} ({})\n", f.path, f.kind);
    for line in f.description.lines() {
        println!("  {line}");
    }
    if !f.choices.is_empty() {
        println!("\n  one of:");
        for (value, what) in &f.choices {
            let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
            println!("    {value:<22} {what}");
        }
    }
    if !f.fields.is_empty() {
        println!("\n  fields: {}", f.fields.join(", "));
    }
    println!();
}

fn requirement(catalogue: &Catalogue, r: &Requirement, loaded: &[(PathBuf, Scenario)]) {
    let (cov, _) = catalogue::coverage(catalogue, loaded);
    let c = cov.iter().find(|c| c.id == r.id);
    println!("{} ({}, {})\n\n  {}\n", r.id, r.source.as_str(), r.area, r.text);
    for (label, cases, waiver) in [
        ("passing cases (the connector honours it)", c.map(|c| &c.passing), &r.waiver.passing),
        ("failing cases (the failure it prevents, with the diagnostic)", c.map(|c| &c.failing), &r.waiver.failing),
    ] {
        println!("{label}:");
        let cases = cases.map(Vec::as_slice).unwrap_or_default();
        for case in cases {
            let diags = if case.diagnostics.is_empty() {
                String::new()
            } else {
                format!("  → {}", case.diagnostics.join(", "))
            };
            println!("  {:<40} {}{diags}", case.scenario, case.file.display());
        }
        if cases.is_empty() {
            match waiver {
                Some(why) => println!("  (waived: {why})"),
                None => println!("  (none)"),
            }
        }
    }
}

/// What to say when nothing matches: requirements of the same area, else
/// where to look.
fn not_found(catalogue: &Catalogue, topic: &str) -> String {
    if topic.contains('.') && topic.starts_with(|c: char| c.is_ascii_uppercase()) {
        return format!("{topic:?} is no diagnostic code the connector reports (codes are case-sensitive); `connsim list` shows the requirements");
    }
    let area = topic.to_ascii_uppercase();
    let area = area.split('-').next().unwrap_or_default();
    let near: Vec<&str> =
        catalogue.requirements.iter().map(|r| r.id.as_str()).filter(|k| k.split('-').next() == Some(area)).collect();
    if near.is_empty() {
        format!(
            "{topic:?} is no requirement, scenario field or timeline event; `connsim list` shows the requirements, `connsim schema` every field"
        )
    } else {
        format!("unknown requirement {topic:?} (same area: {}); `connsim list` shows them all", near.join(", "))
    }
}
