//! Profile-guided builds of the real binaries (`connsim pgo`): connector
//! and relay-sim built instrumented, run under `bench-real`'s loads, then
//! built again with the profile of where they spent their time.
//!
//! Why: on the request path the connector's user time is code that runs
//! once a request (TLS records, frames, HTTP heads, the runtime's
//! wake-ups), probably with caches gone cold in between; a byte forwarder
//! such as rathole has little of it. A profile lets LLVM keep hot code
//! together and inline along the paths actually taken. The gain is
//! measured, beside rathole built the same way, in BENCHMARKS.md (round
//! thirteen).
//!
//! The flags go to cargo as `CARGO_ENCODED_RUSTFLAGS` (the caller's own
//! first), which makes cargo ignore `rustflags` set in a `.cargo/config`:
//! to compare with a build that used such flags, give them in the
//! environment instead.
//!
//! The steps, all under one output folder:
//! 1. `instrumented/`: `cargo build --profile dist` with
//!    `-Cprofile-generate`, so each process counts its branches and writes
//!    them to `raw/` when it exits;
//! 2. `bench-real`'s loads (both closed loops, the open loop, large bodies,
//!    held streams) on those binaries, which are then stopped as by
//!    Ctrl-C so that they write their counts;
//! 3. `merged.profdata`: the counts merged by the toolchain's
//!    `llvm-profdata` (its LLVM must be rustc's: `rustup component add
//!    llvm-tools`);
//! 4. `optimised/dist/`: the build again with `-Cprofile-use`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::realbench;

/// What `connsim pgo` builds and how long it trains.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The folder every step writes under.
    pub out: PathBuf,
    /// Length of each training load.
    pub duration: Duration,
    /// The `llvm-profdata` to merge with (default: the active toolchain's).
    pub llvm_profdata: Option<PathBuf>,
}

/// Why a profile-guided build stopped.
#[derive(Debug, thiserror::Error)]
pub enum PgoError {
    #[error(
        "llvm-profdata not found at {0}: install the toolchain's with `rustup component add llvm-tools`, or pass --llvm-profdata"
    )]
    NoProfdata(PathBuf),
    #[error("running {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("{what} failed ({status})")]
    Failed { what: String, status: ExitStatus },
    #[error("{what}: unexpected output {output:?}")]
    Output { what: String, output: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("training on the instrumented build: {0}")]
    Training(String),
    #[error(
        "found {found} profile(s) in {dir}, not one from each of connector and relay-sim (was one killed rather than stopped?)"
    )]
    TooFewProfiles { found: usize, dir: PathBuf },
    #[error("LLVM_PROFILE_FILE is set, which would send the instrumented binaries' counts elsewhere: unset it")]
    ProfileFileSet,
    #[error("{0} is not UTF-8, so it cannot be passed to rustc as a flag")]
    NotUtf8(String),
}

/// Profiles the training must leave: one from each binary (the
/// instrumented processes of one binary share a file).
const PROFILES_EXPECTED: usize = 2;

/// Runs every step; returns the folder of the optimised binaries.
pub fn run(plan: &Plan, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, PgoError> {
    if std::env::var_os("LLVM_PROFILE_FILE").is_some() {
        return Err(PgoError::ProfileFileSet);
    }
    let profdata = match &plan.llvm_profdata {
        Some(p) => p.clone(),
        None => toolchain_profdata()?,
    };
    // Tried before the builds, not after: a path or a name on PATH.
    if output(Command::new(&profdata).arg("--version"), "llvm-profdata --version").is_err() {
        return Err(PgoError::NoProfdata(profdata));
    }
    std::fs::create_dir_all(&plan.out).map_err(|source| PgoError::Io { path: plan.out.clone(), source })?;
    // Absolute: each instrumented process writes relative to its own
    // working folder otherwise, and rustc reads the profile from each
    // crate's.
    let out = std::fs::canonicalize(&plan.out).map_err(|source| PgoError::Io { path: plan.out.clone(), source })?;
    let raw = out.join("raw");
    let merged = out.join("merged.profdata");

    progress("building the instrumented binaries");
    let instrumented = build(&out.join("instrumented"), &path_flag("-Cprofile-generate", &raw)?)?;
    // Build scripts ran instrumented too: only the connector's and
    // relay-sim's counts are wanted.
    fresh_dir(&raw)?;
    progress("training: bench-real's loads on the instrumented binaries");
    let opts = training(&instrumented, plan.duration);
    realbench::measure(&opts, &mut |line| progress(&format!("training: {line}"))).map_err(PgoError::Training)?;
    let raws = profiles(&raw)?;
    if raws.len() < PROFILES_EXPECTED {
        return Err(PgoError::TooFewProfiles { found: raws.len(), dir: raw });
    }

    progress(&format!("merging {} profiles", raws.len()));
    let mut merge = Command::new(&profdata);
    merge.arg("merge").arg("-o").arg(&merged).args(&raws);
    exec(&mut merge, "llvm-profdata merge")?;

    progress("building with the profile");
    build(&out.join("optimised"), &path_flag("-Cprofile-use", &merged)?)
}

/// `name=path` as a compiler flag: the path as it is, or an error if it
/// is not UTF-8 (flags are text; a lossy one would name another file).
fn path_flag(name: &str, path: &Path) -> Result<String, PgoError> {
    let text = path.to_str().ok_or_else(|| PgoError::NotUtf8(path.display().to_string()))?;
    Ok(format!("{name}={text}"))
}

/// The loads the instrumented binaries run: bench-real's, once each, with
/// smaller large bodies and fewer held streams than a measurement takes.
fn training(bin_dir: &Path, duration: Duration) -> realbench::Options {
    realbench::Options {
        bin_dir: bin_dir.to_path_buf(),
        rathole: None,
        rathole_tls: None,
        relays: 8,
        conns: vec![32, 1],
        duration,
        runs: 1,
        rate: 1000,
        rate_duration: duration,
        large_bytes: 16 << 20,
        transfers: 1,
        open_streams: 200,
        // connsim is not trained: the floor would only lengthen the run.
        floor: None,
        split_cores: false,
    }
}

/// `cargo build --locked --profile dist -p connector -p relay-sim` into
/// `target_dir`, with `flag` added to the compiler's flags; the folder of
/// the binaries.
fn build(target_dir: &Path, flag: &str) -> Result<PathBuf, PgoError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let flags =
        encoded_rustflags(env_text("CARGO_ENCODED_RUSTFLAGS")?.as_deref(), env_text("RUSTFLAGS")?.as_deref(), flag);
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--locked", "--profile", "dist", "-p", "connector", "-p", "relay-sim", "--target-dir"])
        .arg(target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        .env_remove("RUSTFLAGS");
    exec(&mut cmd, "cargo build")?;
    Ok(target_dir.join("dist"))
}

/// An environment variable's text, if it is set.
fn env_text(name: &str) -> Result<Option<String>, PgoError> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(PgoError::NotUtf8(name.into())),
    }
}

/// The compiler flags to build with: the caller's own, as cargo would
/// take them (`CARGO_ENCODED_RUSTFLAGS` if set, even empty, else
/// `RUSTFLAGS`), then `extra`. Encoded (separated by 0x1f), so that a path
/// with a space stays one flag.
pub fn encoded_rustflags(encoded: Option<&str>, plain: Option<&str>, extra: &str) -> String {
    let mut flags: Vec<&str> = match (encoded, plain) {
        (Some(e), _) => e.split('\x1f').filter(|f| !f.is_empty()).collect(),
        (None, Some(p)) => p.split_whitespace().collect(),
        (None, None) => Vec::new(),
    };
    flags.push(extra);
    flags.join("\x1f")
}

/// The active toolchain's `llvm-profdata` (from its `llvm-tools`
/// component), found from `rustc`'s sysroot and host.
fn toolchain_profdata() -> Result<PathBuf, PgoError> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = output(Command::new(&rustc).args(["--print", "sysroot"]), "rustc --print sysroot")?;
    let version = output(Command::new(&rustc).arg("-vV"), "rustc -vV")?;
    let host =
        host_of(&version).ok_or_else(|| PgoError::Output { what: "rustc -vV".into(), output: version.clone() })?;
    Ok(profdata_path(Path::new(sysroot.trim()), host))
}

/// The `host:` line of `rustc -vV`.
pub fn host_of(version: &str) -> Option<&str> {
    version.lines().find_map(|l| l.strip_prefix("host:")).map(str::trim).filter(|h| !h.is_empty())
}

/// Where the `llvm-tools` component puts `llvm-profdata`.
pub fn profdata_path(sysroot: &Path, host: &str) -> PathBuf {
    sysroot.join("lib").join("rustlib").join(host).join("bin").join("llvm-profdata")
}

/// The `.profraw` files in `dir`, by name.
fn profiles(dir: &Path) -> Result<Vec<PathBuf>, PgoError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PgoError::Io { path: dir.to_path_buf(), source })?;
    let mut raws: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "profraw"))
        .collect();
    raws.sort();
    Ok(raws)
}

/// `dir`, emptied (or made).
fn fresh_dir(dir: &Path) -> Result<(), PgoError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(PgoError::Io { path: dir.to_path_buf(), source: e });
        }
        _ => {}
    }
    std::fs::create_dir_all(dir).map_err(|source| PgoError::Io { path: dir.to_path_buf(), source })
}

/// Runs `cmd` with this terminal for its output; fails if it fails.
fn exec(cmd: &mut Command, what: &str) -> Result<(), PgoError> {
    let status = cmd.status().map_err(|source| PgoError::Spawn { what: what.into(), source })?;
    if status.success() {
        Ok(())
    } else {
        Err(PgoError::Failed { what: what.into(), status })
    }
}

/// What `cmd` prints, if it succeeds.
fn output(cmd: &mut Command, what: &str) -> Result<String, PgoError> {
    let out = cmd.output().map_err(|source| PgoError::Spawn { what: what.into(), source })?;
    if !out.status.success() {
        return Err(PgoError::Failed { what: what.into(), status: out.status });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callers_flags_come_first_and_paths_keep_their_spaces() {
        let extra = "-Cprofile-generate=/a b/raw";
        assert_eq!(encoded_rustflags(None, None, extra), extra);
        assert_eq!(
            encoded_rustflags(None, Some("  --cfg x  -Ctarget-cpu=native "), extra),
            format!("--cfg\x1fx\x1f-Ctarget-cpu=native\x1f{extra}")
        );
        // cargo prefers the encoded form, and so do we.
        assert_eq!(encoded_rustflags(Some("--cfg\x1fy z"), Some("--cfg x"), extra), format!("--cfg\x1fy z\x1f{extra}"));
        // Set but empty: no flags of the caller's, as cargo reads it.
        assert_eq!(encoded_rustflags(Some(""), Some("--cfg x"), extra), extra);
    }

    #[test]
    fn a_path_flag_names_the_path_as_it_is() {
        assert_eq!(
            path_flag("-Cprofile-use", Path::new("/a b/merged.profdata")).unwrap(),
            "-Cprofile-use=/a b/merged.profdata"
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let odd = Path::new(std::ffi::OsStr::from_bytes(b"/a/\xff/raw"));
            assert!(matches!(path_flag("-Cprofile-generate", odd), Err(PgoError::NotUtf8(_))));
        }
    }

    #[test]
    fn the_host_is_read_from_rustc_version_output() {
        let v = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(host_of(v), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(host_of("rustc 1.95.0\nhost: \n"), None);
        assert_eq!(host_of(""), None);
        assert_eq!(
            profdata_path(Path::new("/opt/rust"), "x86_64-unknown-linux-gnu"),
            Path::new("/opt/rust/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-profdata")
        );
    }

    #[test]
    fn only_raw_profiles_are_merged() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.profraw", "a.profraw", "notes.txt", "c.profdata"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names: Vec<_> = profiles(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["a.profraw", "b.profraw"]);
        fresh_dir(dir.path()).unwrap();
        assert!(profiles(dir.path()).unwrap().is_empty());
    }
}
