//! Every scenario file as a test case (libtest-mimic, so `cargo test` and
//! nextest list and partition them): it must pass, and a second run with the
//! same seed must give the same trace hash.

use conformance::{run, run_with, Scenario, Stepping, Verdict};
use connsim_tests::scenario_dir;
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let files = connsim_tests::scenario_files_or_exit();
    let mut trials: Vec<Trial> = files
        .into_iter()
        .map(|file| {
            let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Trial::test(format!("scenario::{name}"), move || {
                let s = Scenario::load(&file).map_err(|e| Failed::from(e.to_string()))?;
                let seed = s.seed.unwrap_or(1);
                let first = run(&s, seed);
                if first.verdict != Verdict::Pass {
                    return Err(format!(
                        "{} failed with seed {seed}:\n  {}\nrepro: connsim repro {} --seed {seed}",
                        s.name,
                        first.failures.join("\n  "),
                        file.display()
                    )
                    .into());
                }
                let second = run(&s, seed);
                if second.trace_hash != first.trace_hash {
                    return Err(format!(
                        "not deterministic: trace hash {} then {} for seed {seed}",
                        first.trace_hash, second.trace_hash
                    )
                    .into());
                }
                Ok(())
            })
        })
        .collect();
    trials.push(Trial::test("determinism::seeds_change_the_trace", || {
        let s =
            Scenario::load(&scenario_dir().join("core/happy-path.toml")).map_err(|e| Failed::from(e.to_string()))?;
        let a = run(&s, 1);
        let b = run(&s, 2);
        if a.trace_hash == b.trace_hash {
            return Err("seeds 1 and 2 gave the same trace: the seed does not reach the simulation".into());
        }
        if a.verdict != Verdict::Pass || b.verdict != Verdict::Pass {
            return Err(format!("happy path must pass with any seed: {:?} / {:?}", a.failures, b.failures).into());
        }
        Ok(())
    }));
    // Skipping idle time must not change anything: the same trace as
    // stepping every tick. Checked on the core scenarios (fixed stepping
    // costs seconds a scenario).
    for path in [
        "core/happy-path",
        "core/relay-restart",
        "core/backend-down",
        "core/outbound-443-blocked",
        "pki/revoked-relay-certificate",
        // A restart (crash and bounce) and a revocation met mid-run: the
        // cases an earlier, heuristic skipping got wrong.
        "pki/revoked-connector-certificate",
        "versions/manual-upgrade",
    ] {
        let name = path.rsplit('/').next().unwrap_or(path);
        trials.push(Trial::test(format!("determinism::skipping_idle_time_is_exact::{name}"), move || {
            let file = scenario_dir().join(format!("{path}.toml"));
            let s = Scenario::load(&file).map_err(|e| Failed::from(e.to_string()))?;
            let skipped = run_with(&s, 3, Stepping::SkipIdle);
            let fixed = run_with(&s, 3, Stepping::Fixed);
            if skipped.trace_hash != fixed.trace_hash {
                return Err(format!(
                    "skipping idle time changed the trace of {name} (seed 3): {} vs fixed steps {}; \
                     compare `connsim repro` with and without `--fixed-steps`",
                    skipped.trace_hash, fixed.trace_hash
                )
                .into());
            }
            if skipped.steps.skips == 0 {
                return Err(format!("{name}: no idle time was skipped").into());
            }
            Ok(())
        }));
    }
    trials.extend(nextest_trials(&trials));
    libtest_mimic::run(&args, trials).exit();
}

/// The trial that checks this binary speaks the protocol cargo-nextest
/// drives test binaries with, and the one that splits it with nextest
/// itself (ignored, with why, where `cargo nextest` is not installed).
fn nextest_trials(before: &[Trial]) -> Vec<Trial> {
    const LISTING: &str = "nextest::answers_the_listing_and_exact_runs";
    const SPLIT: &str = "nextest::count_partitions_split_the_scenarios";
    let mut names: Vec<String> = before.iter().map(|t| t.name().to_string()).collect();
    names.extend([LISTING.to_string(), SPLIT.to_string()]);
    let nextest = nextest_installed();
    if !nextest {
        eprintln!("{SPLIT} is ignored: no cargo-nextest here (cargo install cargo-nextest --locked)");
    }
    let scenarios = names.iter().filter(|n| n.starts_with("scenario::")).count();
    vec![
        Trial::test(LISTING, move || listing(&names)),
        Trial::test(SPLIT, move || split_by_nextest(scenarios)).with_ignored_flag(!nextest),
    ]
}

/// Whether `cargo nextest` would run: its binary on PATH or in Cargo's
/// own folder. Looked up, not spawned: this runs in every process nextest
/// starts, one per test.
fn nextest_installed() -> bool {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(cargo_bin).any(|dir| dir.join("cargo-nextest").is_file())
}

/// Cargo as a user runs it at the top of the checkout: without the
/// package's variables `cargo test` gave this process (build scripts that
/// read them would be rebuilt, here and again in the next `cargo test`).
fn cargo(args: &[&str]) -> std::io::Result<std::process::Output> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let keep = matches!(name.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_TERM_COLOR");
        if (name.starts_with("CARGO_") && !keep) || name == "LD_LIBRARY_PATH" || name == "OUT_DIR" {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.args(args).current_dir(connsim_tests::workspace_root()).output()
}

/// What nextest asks of a test binary: `--list --format terse` names every
/// test (`NAME: test`) and `--ignored` the ignored ones; `--exact NAME`
/// runs that test alone.
fn listing(names: &[String]) -> Result<(), Failed> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let run = |args: &[&str]| -> Result<String, Failed> {
        let out = std::process::Command::new(&exe).args(args).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let listed = |text: String| -> Vec<String> {
        text.lines().filter_map(|l| l.strip_suffix(": test")).map(str::to_string).collect()
    };
    let all = listed(run(&["--list", "--format", "terse"])?);
    if all != names {
        return Err(format!("listed {} tests, want {}: {all:?}", all.len(), names.len()).into());
    }
    let ignored = listed(run(&["--list", "--format", "terse", "--ignored"])?);
    if ignored.iter().any(|n| !n.starts_with("nextest::")) {
        return Err(format!("listed as ignored: {ignored:?}").into());
    }
    let one = run(&["--exact", "determinism::seeds_change_the_trace", "--test-threads", "1"])?;
    if !one.contains("1 passed") || !one.contains(&format!("{} filtered out", names.len() - 1)) {
        return Err(format!("--exact did not run that test alone:\n{one}").into());
    }
    Ok(())
}

/// `cargo nextest list --partition count:K/2` for K = 1, 2: every scenario
/// in exactly one part, the parts within one of each other.
fn split_by_nextest(scenarios: usize) -> Result<(), Failed> {
    // The profile this binary was built with: nextest lists what it builds.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let release = exe.parent().and_then(|deps| deps.parent()).is_some_and(|dir| dir.ends_with("release"));
    let mut parts: Vec<Vec<String>> = Vec::new();
    for k in 1..=2 {
        let partition = format!("count:{k}/2");
        let mut args = vec!["nextest", "list", "--locked"];
        if release {
            args.push("--release");
        }
        // The workspace's features, as `cargo test --workspace` builds them:
        // else nextest rebuilds the binary with the package's own.
        args.extend(["--workspace", "--test", "scenarios", "--partition", &partition, "--message-format", "oneline"]);
        let out = cargo(&args).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("nextest list {partition}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        parts.push(text.lines().filter_map(|l| l.split_once("scenario::").map(|(_, n)| n.to_string())).collect());
    }
    let mut joined: Vec<String> = parts.concat();
    let total = joined.len();
    joined.sort();
    joined.dedup();
    let (a, b) = (parts[0].len(), parts[1].len());
    if total != scenarios || joined.len() != total || a.abs_diff(b) > 1 {
        return Err(format!(
            "parts of {a} and {b} scenarios ({} distinct), want {scenarios} in all, split evenly",
            joined.len()
        )
        .into());
    }
    Ok(())
}
