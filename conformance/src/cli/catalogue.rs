//! `connsim list` and `connsim coverage`: the requirement catalogue
//! against the scenarios.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use conformance::catalogue::{self, Catalogue};

use super::load_all;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Text,
    Json,
}

/// What `connsim list` lists.
#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// List scenario files with the IDs they cover instead.
    #[arg(long)]
    pub scenarios: bool,
}

/// Where `connsim coverage` looks, and how it reports.
#[derive(clap::Args)]
pub struct CoverageArgs {
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: ListFormat,
}

/// The catalogue with coverage counts, or the scenario files.
pub fn list(args: ListArgs) -> Result<ExitCode, String> {
    let ListArgs { paths, scenarios } = args;
    if scenarios {
        for (file, s) in load_all(&paths)? {
            println!("{:<40} {:<56} {}", s.name, file.display(), s.covers.join(", "));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        let catalogue = Catalogue::builtin();
        let (cov, _) = catalogue::coverage(&catalogue, &load_all(&paths)?);
        println!("{:<14} {:<7} {:>4} {:>4}  text", "id", "source", "pass", "fail");
        for (r, c) in catalogue.requirements.iter().zip(&cov) {
            let mut text = r.text.clone();
            if text.chars().count() > 90 {
                text = text.chars().take(89).collect::<String>() + "…";
            }
            println!("{:<14} {:<7} {:>4} {:>4}  {text}", r.id, r.source.as_str(), c.passing.len(), c.failing.len());
        }
        println!("\n`connsim explain ID` for one requirement; `connsim coverage` checks every ID is covered.");
        Ok(ExitCode::SUCCESS)
    }
}

/// Each requirement's passing and failing cases; exit 1 on a gap.
pub fn coverage(args: CoverageArgs) -> Result<ExitCode, String> {
    let CoverageArgs { paths, format } = args;
    let catalogue = Catalogue::builtin();
    let (cov, unknown) = catalogue::coverage(&catalogue, &load_all(&paths)?);
    let mut bad = !unknown.is_empty();
    let rows: Vec<(&catalogue::Requirement, &catalogue::Coverage, Vec<&str>)> =
        catalogue.requirements.iter().zip(&cov).map(|(r, c)| (r, c, c.gaps(r))).collect();
    bad |= rows.iter().any(|(_, _, gaps)| !gaps.is_empty());
    match format {
        ListFormat::Json => {
            let doc: Vec<serde_json::Value> = rows
                .iter()
                .map(|(r, c, gaps)| {
                    serde_json::json!({
                        "id": r.id, "source": r.source.as_str(), "passing": c.passing.len(),
                        "failing": c.failing.len(), "waiver": r.waiver, "gaps": gaps,
                    })
                })
                .collect();
            let unknown: Vec<serde_json::Value> =
                unknown.iter().map(|(id, s)| serde_json::json!({"id": id, "scenario": s})).collect();
            let doc = serde_json::json!({"requirements": doc, "unknown_ids": unknown, "complete": !bad});
            println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
        }
        ListFormat::Text => {
            println!("{:<14} {:<7} {:>7} {:>7}  verdict", "id", "source", "passing", "failing");
            for (r, c, gaps) in &rows {
                let verdict = if !gaps.is_empty() {
                    format!("MISSING: {}", gaps.join(", "))
                } else if r.waiver.passing.is_some() || r.waiver.failing.is_some() {
                    "ok (waived half: `connsim explain` says why)".into()
                } else {
                    "ok".into()
                };
                println!(
                    "{:<14} {:<7} {:>7} {:>7}  {verdict}",
                    r.id,
                    r.source.as_str(),
                    c.passing.len(),
                    c.failing.len()
                );
            }
            for (id, s) in &unknown {
                println!("scenario {s} covers {id}, which the catalogue does not know");
            }
            let missing = rows.iter().filter(|(_, _, g)| !g.is_empty()).count();
            println!("\n{} requirements, {missing} with a gap", rows.len());
        }
    }
    Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
