//! The `connsim` subcommands, one module each (with its arguments):
//! `main` parses and dispatches. What several share is here: the one
//! scenario loader, the stepping flag, where the other binaries are.

pub mod bench;
pub mod bundle;
pub mod catalogue;
pub mod explain;
pub mod matrix;
pub mod merge;
pub mod pgo;
pub mod repro;
pub mod run;
pub mod users;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::OnceLock;

use conformance::{collect_scenarios, Scenario, Stepping};

/// Every scenario under `paths`, loaded; all load errors at once.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Scenario)>, String> {
    let files = collect_scenarios(paths)?;
    if files.is_empty() {
        return Err("no scenario files (*.toml) found".into());
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for f in files {
        match Scenario::load(&f) {
            Ok(s) => out.push((f, s)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        warn_shared_names(&out);
        Ok(out)
    } else {
        Err(errors.join("\n"))
    }
}

/// Two files with one name are two scenarios (reports tell them apart by
/// file), but most likely a copy that was not renamed: say so.
fn warn_shared_names(loaded: &[(PathBuf, Scenario)]) {
    for (i, (file, s)) in loaded.iter().enumerate() {
        // The same file named twice (`scenarios ./scenarios`) is no copy.
        let same_file = |other: &PathBuf| std::fs::canonicalize(other).ok() == std::fs::canonicalize(file).ok();
        if let Some((first, _)) = loaded[..i].iter().find(|(f, t)| t.name == s.name && !same_file(f)) {
            eprintln!(
                "warning: {} has the same name as {} ({:?}); reports tell them apart by file",
                file.display(),
                first.display(),
                s.name
            );
        }
    }
}

/// `--fixed-steps` as a stepping mode.
pub fn stepping(fixed_steps: bool) -> Stepping {
    if fixed_steps {
        Stepping::Fixed
    } else {
        Stepping::SkipIdle
    }
}

/// The folder connsim runs from, where `cargo build` puts the workspace's
/// other binaries too.
pub fn exe_dir() -> Result<PathBuf, String> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
        .ok_or_else(|| "cannot tell where connsim is (pass --bin-dir to bench-real)".to_string())
}

/// `--color`: when the terminal report is colored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set (and not empty).
    #[default]
    Auto,
    Always,
    Never,
}

/// The `--color` of this process, set once by `main`.
static COLOR: OnceLock<ColorChoice> = OnceLock::new();

pub fn set_color(choice: ColorChoice) {
    // `main` calls this once, before any output.
    let _ = COLOR.set(choice);
}

/// Whether a report goes out in color (see [`color_for`]).
pub fn colored(to_stdout: bool) -> bool {
    let choice = COLOR.get().copied().unwrap_or_default();
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    color_for(choice, to_stdout && std::io::stdout().is_terminal(), no_color)
}

/// `--color always` or `never` decide; `auto` colors only a terminal
/// (`to_terminal`), and not when NO_COLOR is set (<https://no-color.org>:
/// a flag given on the command line wins over it).
pub fn color_for(choice: ColorChoice, to_terminal: bool, no_color: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => to_terminal && !no_color,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn color_follows_the_flag_then_the_terminal_and_no_color() {
        use ColorChoice::{Always, Auto, Never};
        for (to_terminal, no_color) in [(false, false), (false, true), (true, false), (true, true)] {
            assert!(color_for(Always, to_terminal, no_color));
            assert!(!color_for(Never, to_terminal, no_color));
            assert_eq!(color_for(Auto, to_terminal, no_color), to_terminal && !no_color);
        }
    }
}
