//! The requirement catalogue (`catalogue.toml`, built in) and coverage: which
//! scenarios cover each requirement, as a passing case (the connector honours
//! it) or a failing case (the scenario shows the failure the requirement
//! prevents, with the connector's diagnostic).
//!
//! A scenario is a failing case when it expects findings
//! ([`crate::scenario::Expect::findings`]: diagnostics of the world or of
//! one host, or the cloud's `x-relay-error` answers to users); otherwise
//! it is a passing case. Both halves are
//! needed for every requirement unless the catalogue waives one, with a
//! reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

const BUILTIN: &str = include_str!("../catalogue.toml");

/// Where a requirement comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A fact of Microsoft's connector guide.
    Spec,
    /// A decision of this project where the spec is silent.
    Design,
}

impl Source {
    /// The name the catalogue file and the reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Spec => "spec",
            Source::Design => "design",
        }
    }
}

/// Why one half of a requirement's coverage cannot exist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    pub passing: Option<String>,
    pub failing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    pub id: String,
    pub source: Source,
    pub area: String,
    pub text: String,
    #[serde(default)]
    pub waiver: Waiver,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    requirement: Vec<Requirement>,
}

/// Every requirement, in catalogue order.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub requirements: Vec<Requirement>,
}

impl Catalogue {
    /// The catalogue compiled into this binary.
    pub fn builtin() -> Catalogue {
        // Parsed by a unit test on every build: cannot fail at run time.
        Catalogue::parse(BUILTIN).unwrap_or_else(|e| panic!("built-in catalogue.toml: {e}"))
    }

    pub fn parse(text: &str) -> Result<Catalogue, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = std::collections::BTreeSet::new();
        for r in &file.requirement {
            if !seen.insert(r.id.as_str()) {
                return Err(format!("requirement {} is listed twice", r.id));
            }
        }
        Ok(Catalogue { requirements: file.requirement })
    }

    pub fn get(&self, id: &str) -> Option<&Requirement> {
        self.requirements.iter().find(|r| r.id.eq_ignore_ascii_case(id))
    }

    /// What `connsim explain` says of a diagnostic code: what it means and
    /// the requirement it is about. `None` for a code the connector never
    /// reports (see [`connector::code::known`]).
    pub fn explain_code(&self, text: &str) -> Option<String> {
        use connector::code::{self, Known};
        let (requirement, meaning) = match code::known(text)? {
            Known::Listed(c) => (c.requirement, c.meaning.to_string()),
            Known::SoftFail { requirement } => (
                requirement,
                "a revocation failure the soft-fail policy let through: the connection went on, unchecked".into(),
            ),
            Known::Service => (code::SERVICE_REQUIREMENT, "a refusal the service names with a code of its own".into()),
        };
        let about = match (self.get(requirement), code::GENERAL.iter().find(|(p, _)| *p == requirement)) {
            (Some(r), _) => format!("{} ({}, {}): {}", r.id, r.source.as_str(), r.area, r.text),
            (None, Some((p, what))) => format!("{p}: no requirement of the catalogue, but {what}"),
            (None, None) => return None,
        };
        Some(format!("{text}\n\n  {meaning}\n\n  about {about}"))
    }
}

/// One scenario's part in a requirement's coverage.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub scenario: String,
    pub file: PathBuf,
    /// Findings the scenario expects (empty for a passing case).
    pub diagnostics: Vec<String>,
}

/// A requirement's coverage.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub id: String,
    pub passing: Vec<Case>,
    pub failing: Vec<Case>,
}

impl Coverage {
    /// What is missing, with the waivers taken into account.
    pub fn gaps(&self, r: &Requirement) -> Vec<&'static str> {
        let mut gaps = Vec::new();
        if self.passing.is_empty() && r.waiver.passing.is_none() {
            gaps.push("no passing case");
        }
        if self.failing.is_empty() && r.waiver.failing.is_none() {
            gaps.push("no failing case");
        }
        gaps
    }
}

/// The coverage of every requirement by `scenarios`, and the IDs scenarios
/// name that the catalogue does not know (with the scenario naming them).
pub fn coverage(catalogue: &Catalogue, scenarios: &[(PathBuf, Scenario)]) -> (Vec<Coverage>, Vec<(String, String)>) {
    let mut by_id: BTreeMap<&str, Coverage> = catalogue
        .requirements
        .iter()
        .map(|r| (r.id.as_str(), Coverage { id: r.id.clone(), passing: Vec::new(), failing: Vec::new() }))
        .collect();
    let mut unknown = Vec::new();
    for (file, s) in scenarios {
        for id in &s.covers {
            let Some(c) = by_id.get_mut(id.as_str()) else {
                unknown.push((id.clone(), s.name.clone()));
                continue;
            };
            let case = Case { scenario: s.name.clone(), file: file.clone(), diagnostics: s.expect.findings() };
            if case.diagnostics.is_empty() {
                c.passing.push(case);
            } else {
                c.failing.push(case);
            }
        }
    }
    let ordered = catalogue.requirements.iter().filter_map(|r| by_id.remove(r.id.as_str())).collect();
    (ordered, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalogue_parses_and_has_every_spec_area() {
        let c = Catalogue::parse(BUILTIN).expect("catalogue.toml");
        assert!(c.requirements.len() >= 35);
        for prefix in ["HOST-", "NET-", "TLS-", "REG-", "VER-", "OPS-"] {
            assert!(c.requirements.iter().any(|r| r.id.starts_with(prefix)), "{prefix}");
        }
        assert_eq!(c.get("net-443").map(|r| r.source), Some(Source::Spec));
        assert_eq!(c.get("NET-OUTONLY").map(|r| r.source), Some(Source::Design));
    }

    #[test]
    fn duplicates_are_refused() {
        let one = "[[requirement]]\nid = \"A-B\"\nsource = \"spec\"\narea = \"x\"\ntext = \"t\"\n";
        let err = Catalogue::parse(&format!("{one}{one}")).unwrap_err();
        assert!(err.contains("A-B"), "{err}");
    }
}
