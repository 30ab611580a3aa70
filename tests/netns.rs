//! Differential test: every scenario marked `worlds = ["sim", "netns"]`
//! runs in the simulation and in network namespaces (the real binaries,
//! the firewall as nftables rules); both worlds must give the same verdict
//! and report the same diagnostic codes. A difference is a bug in one of
//! the two network models.
//!
//! Where the netns world cannot run (not root, no `ip`/`nft`), each test is
//! reported as ignored and the reason is printed: never a silent pass.
//! The binaries are built first when missing (`cargo test` builds only the
//! test targets).

use conformance::netns;
use conformance::scenario::WorldKind;
use conformance::{Scenario, Stepping};
use connsim_tests::real_world::binaries;
use connsim_tests::scenario_files_or_exit;
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let mut args = Arguments::from_args();
    let unavailable = netns::unavailable();
    if let Some(why) = &unavailable {
        eprintln!("netns world unavailable, its tests are ignored: {why}");
    }
    // A file that does not load is a failing test of its own: dropping it
    // would drop its netns run without a word.
    let mut marked: Vec<Scenario> = Vec::new();
    let mut unloadable: Vec<(String, String)> = Vec::new();
    for f in scenario_files_or_exit() {
        match Scenario::load(&f) {
            Ok(s) if s.worlds.contains(&WorldKind::Netns) => marked.push(s),
            Ok(_) => {}
            Err(e) => {
                let name = f.strip_prefix(connsim_tests::scenario_dir()).unwrap_or(&f).display().to_string();
                unloadable.push((name, e.to_string()));
            }
        }
    }
    // The runs mostly wait (real timeouts), each in its own namespaces: run
    // them all at once unless told otherwise.
    if args.test_threads.is_none() {
        args.test_threads = Some(marked.len().max(1));
    }
    let bins = if unavailable.is_none() && !args.list {
        match binaries() {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let mut trials = vec![Trial::test("netns::some_scenarios_are_marked", {
        let n = marked.len();
        move || if n >= 3 { Ok(()) } else { Err(Failed::from(format!("only {n} scenarios marked for netns"))) }
    })];
    for (file, error) in unloadable {
        trials.push(Trial::test(format!("netns::load::{file}"), move || Err(Failed::from(error))));
    }
    for s in marked {
        let bins = bins.clone();
        let name = format!("netns::{}", s.name);
        trials.push(
            Trial::test(name, move || {
                let Some(bins) = bins else { return Err("netns world unavailable".into()) };
                if let Some(why) = netns::unsupported(&s) {
                    return Err(format!("marked for netns but cannot run there: {why}").into());
                }
                let sim = conformance::run_with(&s, s.seed.unwrap_or(1), Stepping::SkipIdle);
                let real = netns::run(&s, &bins)?;
                if let Some(diff) = real.differs_from(&sim) {
                    return Err(format!("{diff} (netns failures: {:?})", real.failures).into());
                }
                if !real.passed() {
                    return Err(format!("both worlds fail: {:?}", real.failures).into());
                }
                Ok(())
            })
            .with_ignored_flag(unavailable.is_some()),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
