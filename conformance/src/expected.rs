//! Known failures, as BoGo keeps them: a file of scenario/requirement pairs
//! known to fail, each with a reason. Such a failure is reported as
//! expected and does not fail the run; a listed pair that passes is reported
//! as an unexpected pass and does, so the list never goes stale.
//!
//! ```toml
//! [[expected]]
//! scenario = "relay-restart"
//! requirement = "NET-SVC"
//! reason = "the relay's GoAway is not yet sent on restart"
//! seeds = [3]          # optional: only these seeds
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::catalogue::Catalogue;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    pub scenario: String,
    pub requirement: String,
    pub reason: String,
    #[serde(default)]
    pub seeds: Vec<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailures {
    #[serde(default)]
    pub expected: Vec<ExpectedFailure>,
}

impl ExpectedFailures {
    /// Reads and checks `path`: every requirement must be in the catalogue.
    pub fn load(path: &Path, catalogue: &Catalogue) -> Result<ExpectedFailures, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, catalogue).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str, catalogue: &Catalogue) -> Result<ExpectedFailures, String> {
        let list: ExpectedFailures = toml::from_str(text).map_err(|e| e.to_string())?;
        for e in &list.expected {
            if catalogue.get(&e.requirement).is_none() {
                return Err(format!("scenario {}: unknown requirement {}", e.scenario, e.requirement));
            }
            if e.reason.trim().is_empty() {
                return Err(format!("scenario {} / {}: a reason is required", e.scenario, e.requirement));
            }
        }
        Ok(list)
    }

    /// The entry covering `scenario` with `seed`, if any.
    pub fn find(&self, scenario: &str, seed: u64) -> Option<&ExpectedFailure> {
        self.expected.iter().find(|e| e.scenario == scenario && (e.seeds.is_empty() || e.seeds.contains(&seed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_need_known_requirements_and_reasons() {
        let c = Catalogue::builtin();
        let ok = "[[expected]]\nscenario = \"a\"\nrequirement = \"NET-443\"\nreason = \"known\"\nseeds = [2]\n";
        let list = ExpectedFailures::parse(ok, &c).unwrap();
        assert!(list.find("a", 2).is_some());
        assert!(list.find("a", 3).is_none());
        let unknown = ok.replace("NET-443", "NET-999");
        assert!(ExpectedFailures::parse(&unknown, &c).unwrap_err().contains("NET-999"));
        let no_reason = ok.replace("\"known\"", "\"  \"");
        assert!(ExpectedFailures::parse(&no_reason, &c).unwrap_err().contains("reason"));
    }
}
