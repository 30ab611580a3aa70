//! The report of a run, in the format asked for, to a file or standard
//! output.

use conformance::catalogue::Catalogue;
use conformance::report::{self, Entry};

use super::Format;

/// Writes a report of `entries` (`part` of a split run, which only JSON
/// records) in `format` to `out` (or standard output);
/// only the text format has color (see [`crate::cli::colored`]).
pub(crate) fn write_report(
    entries: &[Entry<'_>],
    part: Option<report::Part>,
    format: Format,
    out: Option<&std::path::Path>,
    catalogue: &Catalogue,
) -> Result<(), String> {
    let text = match format {
        Format::Text => {
            let color = crate::cli::colored(out.is_none());
            format!("{}\n{}", report::matrix(entries, catalogue, color), report::text(entries))
        }
        Format::Json => report::json_part(entries, part) + "\n",
        Format::Junit => report::junit(entries),
        Format::Markdown => report::markdown(entries, catalogue),
        Format::Html => report::html(entries, catalogue),
    };
    match out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            let c = report::counts(entries);
            eprintln!(
                "{} passed, {} failed, {} expected failures, {} unexpected passes; report in {}",
                c.passed,
                c.failed,
                c.expected_failures,
                c.unexpected_passes,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
