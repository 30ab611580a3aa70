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
    libtest_mimic::run(&args, trials).exit();
}
