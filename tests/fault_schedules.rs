//! Random fault schedules over the happy-path world (two connectors, two
//! relays): relay restarts and outages, a port blocked for a while,
//! connector crashes, CRL/OCSP outages, at random times with random
//! lengths. Invariants, checked by the scenario runner itself: no accepted
//! request is served twice, every request is answered or failed to its user,
//! no success carries a changed or cut body (uploads and downloads of
//! random sizes run through the same faults, beside a backend that answers
//! uploads early with 401 and one that dies mid-body, whose users must get
//! that 401 and a 502, never a success), and once the faults stop the
//! connectors serve again (every request sent after a recovery margin gets
//! a 2xx).
//!
//! A schedule is rendered as a scenario file before it runs, so when one
//! fails, proptest shrinks it and the minimal one is written to
//! `target/fault-schedules/` as a scenario `connsim repro` replays.
//! 48 schedules locally, 1,000 under CI (`CI=true`); more:
//! `PROPTEST_CASES=5000 cargo test --release --test fault_schedules`.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use conformance::{run, Scenario, Verdict};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Faults happen between these times (seconds of simulated time).
const FIRST_FAULT_S: u64 = 120;
const LAST_FAULT_S: u64 = 2400;
/// A fault lasts at most this long.
const LONGEST_FAULT_S: u64 = 300;
/// After the last fault ends, this long to be serving again: one tunnel
/// backoff step at its 60 s cap, with jitter, plus a keepalive round.
/// `FAULT_RECOVERY_S` tightens it, to explore.
fn recovery_s() -> u64 {
    std::env::var("FAULT_RECOVERY_S").ok().and_then(|v| v.parse().ok()).unwrap_or(150)
}

#[derive(Debug, Clone)]
enum Fault {
    RelayRestart,
    RelayOutage { secs: u64 },
    PortBlocked { port: u16, secs: u64 },
    ConnectorOutage { connector: u8, secs: u64 },
    RevocationOutage { secs: u64 },
}

impl Fault {
    fn secs(&self) -> u64 {
        match self {
            Fault::RelayRestart => 0,
            Fault::RelayOutage { secs }
            | Fault::PortBlocked { secs, .. }
            | Fault::ConnectorOutage { secs, .. }
            | Fault::RevocationOutage { secs } => *secs,
        }
    }

    /// The findings this fault may give, from what the connector can see
    /// of it: relays that worked at the same address stop answering while
    /// the bootstrap host answers (a rule changed or the relays are down:
    /// the evidence cannot tell), or one relay fails while the other
    /// answers; a closed port fails every group on it; stopped revocation
    /// servers look like a closed port 80 (the trust list's host is one of
    /// them) or, while one still answers, like missing entries.
    fn findings(&self) -> &'static [&'static str] {
        match self {
            Fault::RelayRestart | Fault::RelayOutage { .. } => {
                &["NET-SVC.unreachable", "SVC.host-unavailable", "OPS-ACTIVE.no-tunnel"]
            }
            Fault::PortBlocked { port: 443, .. } => &["NET-443.unreachable", "OPS-ACTIVE.no-tunnel"],
            Fault::PortBlocked { .. } | Fault::RevocationOutage { .. } => &[
                "NET-80.unreachable",
                "NET-CRL.unreachable",
                "NET-CRL.stale",
                "NET-80.ocsp-unreachable",
                "NET-CRL.ocsp-unreachable",
            ],
            Fault::ConnectorOutage { .. } => &[],
        }
    }

    /// Timeline events: (offset from the fault's start, event).
    fn events(&self) -> Vec<(u64, String)> {
        match self {
            Fault::RelayRestart => vec![(0, "restart relay".into())],
            Fault::RelayOutage { secs } => vec![(0, "crash relay".into()), (*secs, "start relay".into())],
            Fault::PortBlocked { port, secs } => {
                vec![(0, format!("block port {port}")), (*secs, format!("unblock port {port}"))]
            }
            Fault::ConnectorOutage { connector, secs } => vec![
                (0, format!("stop connector connector-{connector}")),
                (*secs, format!("start connector connector-{connector}")),
            ],
            Fault::RevocationOutage { secs } => {
                vec![(0, "stop revocation servers".into()), (*secs, "start revocation servers".into())]
            }
        }
    }
}

fn fault() -> impl Strategy<Value = Fault> {
    let secs = 10..=LONGEST_FAULT_S;
    prop_oneof![
        Just(Fault::RelayRestart),
        secs.clone().prop_map(|secs| Fault::RelayOutage { secs }),
        (prop_oneof![Just(443u16), Just(80u16)], secs.clone())
            .prop_map(|(port, secs)| Fault::PortBlocked { port, secs }),
        (1u8..=2, secs.clone()).prop_map(|(connector, secs)| Fault::ConnectorOutage { connector, secs }),
        secs.prop_map(|secs| Fault::RevocationOutage { secs }),
    ]
}

#[derive(Debug, Clone)]
struct Schedule {
    seed: u64,
    faults: Vec<(u64, Fault)>,
    /// Bytes each upload carries and each download asks for (the data
    /// path under the same faults: a success must carry the whole body).
    upload_bytes: usize,
    download_bytes: usize,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        1u64..10_000,
        prop::collection::vec((FIRST_FAULT_S..=LAST_FAULT_S, fault()), 1..6),
        0usize..(1 << 20),
        0usize..(2 << 20),
    )
        .prop_map(|(seed, faults, upload_bytes, download_bytes)| Schedule {
            seed,
            faults,
            upload_bytes,
            download_bytes,
        })
}

/// The schedule as a scenario file (TOML).
fn render(s: &Schedule) -> String {
    let mut events: Vec<(u64, String)> =
        s.faults.iter().flat_map(|(at, f)| f.events().into_iter().map(move |(d, e)| (at + d, e))).collect();
    events.sort();
    let quiet_from = s.faults.iter().map(|(at, f)| at + f.secs()).max().unwrap_or(0);
    let ok_after = quiet_from + recovery_s();
    let duration = ok_after + 600;
    let mut t = String::new();
    let _ = writeln!(t, "# A fault schedule generated by tests/fault_schedules.rs (seed {}).", s.seed);
    let _ = writeln!(t, "# Invariants: no request served twice, every request answered or failed,");
    let _ = writeln!(t, "# serving again {} s after the last fault ends.", recovery_s());
    let _ = writeln!(
        t,
        "name = \"fault-schedule\"\ncovers = [\"NET-SVC\"]\nduration = \"{duration}s\"\nseed = {}\n",
        s.seed
    );
    t.push_str(
        "[world]\nrelays = 2\nadmin = { user = \"admin@contoso.com\", password = \"correct-horse\" }\n\n\
         [[world.connectors]]\nname = \"connector-1\"\n\n[[world.connectors]]\nname = \"connector-2\"\n\n\
         [[world.backends]]\nname = \"app1.corp.local\"\n\n[[world.apps]]\nname = \"app1\"\nbackend = \"app1.corp.local\"\n\n\
         [[world.backends]]\nname = \"early.corp.local\"\nbehaviour = { kind = \"early\", code = 401 }\n\n\
         [[world.apps]]\nname = \"early\"\nbackend = \"early.corp.local\"\n\n\
         [[world.backends]]\nname = \"broken.corp.local\"\nbehaviour = { kind = \"close_mid_body\", bytes = 65536 }\n\n\
         [[world.apps]]\nname = \"broken\"\nbackend = \"broken.corp.local\"\n\n",
    );
    let requests = (duration - 60 - 30) / 30;
    let _ = writeln!(t, "[[load]]\napp = \"app1\"\nrequests = {requests}\nstart = \"60s\"\ninterval = \"30s\"\n");
    let (uploads, downloads) = ((duration - 70 - 60) / 60, (duration - 80 - 60) / 60);
    let _ = writeln!(
        t,
        "[[load]]\napp = \"app1\"\nrequests = {uploads}\nstart = \"70s\"\ninterval = \"60s\"\nupload_bytes = {}\n",
        s.upload_bytes
    );
    let _ = writeln!(
        t,
        "[[load]]\napp = \"app1\"\nrequests = {downloads}\nstart = \"80s\"\ninterval = \"60s\"\npath = \"/?size={}\"\n",
        s.download_bytes
    );
    // Backends that never succeed, under the same faults: an early 401 to
    // an upload must reach its user as the backend's 401, and a backend
    // that dies mid-body must give a 502, never a short success.
    let rare = (duration - 90 - 60) / 240;
    let _ = writeln!(
        t,
        "[[load]]\napp = \"early\"\nrequests = {rare}\nstart = \"90s\"\ninterval = \"240s\"\nupload_bytes = {}\n\
         expect_status = 401\n",
        s.upload_bytes
    );
    let _ = writeln!(
        t,
        "[[load]]\napp = \"broken\"\nrequests = {rare}\nstart = \"100s\"\ninterval = \"240s\"\nexpect_status = 502\n"
    );
    for (at, e) in &events {
        let _ = writeln!(t, "[[timeline]]\nat = \"{at}s\"\nevent = \"{e}\"\n");
    }
    // The broken backend's own finding is always there.
    let mut allowed: Vec<&str> = s.faults.iter().flat_map(|(_, f)| f.findings().iter().copied()).collect();
    allowed.push("BACKEND.broken");
    allowed.sort();
    allowed.dedup();
    let allowed = allowed.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(t, "[expect]\noutcome = \"serving\"\nok_after = \"{ok_after}s\"");
    let _ = writeln!(t, "# The findings these faults can explain, and no other.\nallowed_diagnostics = [{allowed}]");
    t
}

fn check(s: &Schedule) -> Result<(), TestCaseError> {
    let text = render(s);
    let scenario = Scenario::parse(&text, Path::new("fault-schedule.toml"))
        .map_err(|e| TestCaseError::fail(format!("generated scenario does not parse: {e}\n{text}")))?;
    let r = run(&scenario, s.seed);
    if r.verdict != Verdict::Pass {
        return Err(TestCaseError::fail(r.failures.join("; ")));
    }
    Ok(())
}

fn write_minimal(s: &Schedule) -> PathBuf {
    let dir = connsim_tests::workspace_root().join("target/fault-schedules");
    let _ = std::fs::create_dir_all(&dir);
    let text = render(s);
    let hash = text.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    let path = dir.join(format!("minimal-{hash:016x}.toml"));
    let _ = std::fs::write(&path, text);
    path
}

/// Schedules per run: `PROPTEST_CASES`, else 1,000 under CI (`CI=true`),
/// else 48. They are split over [`PARTS`] tests, which libtest runs in
/// parallel.
fn cases() -> u32 {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(if ci { 1000 } else { 48 })
}

const PARTS: u32 = 4;

/// Runs part `part` of the schedules. A fixed RNG seed per part: CI runs
/// the same schedules every time; raise PROPTEST_CASES (and change
/// FAULT_RNG_SEED) to explore further.
fn run_part(part: u32) {
    let cases = cases().div_ceil(PARTS);
    let base: u64 = std::env::var("FAULT_RNG_SEED").ok().and_then(|c| c.parse().ok()).unwrap_or(0x5eed);
    let rng_seed = base + u64::from(part);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&rng_seed.to_le_bytes());
    let config = Config { cases, max_shrink_iters: 200, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &bytes),
    );
    match runner.run(&schedule(), |s| check(&s)) {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => {
            let path = write_minimal(&minimal);
            panic!(
                "a fault schedule broke an invariant: {reason}\nminimal schedule written to {}\nreplay: cargo run --release -p conformance --bin connsim -- repro {} --seed {}",
                path.display(),
                path.display(),
                minimal.seed
            );
        }
        Err(TestError::Abort(why)) => panic!("fault schedule search aborted: {why}"),
    }
}

#[test]
fn fault_schedules_keep_the_invariants_1() {
    run_part(0);
}

#[test]
fn fault_schedules_keep_the_invariants_2() {
    run_part(1);
}

#[test]
fn fault_schedules_keep_the_invariants_3() {
    run_part(2);
}

#[test]
fn fault_schedules_keep_the_invariants_4() {
    run_part(3);
}

#[test]
fn a_rendered_schedule_is_a_valid_scenario_that_replays() {
    let s = Schedule {
        seed: 7,
        faults: vec![(300, Fault::RelayOutage { secs: 60 }), (900, Fault::ConnectorOutage { connector: 2, secs: 120 })],
        upload_bytes: 300_000,
        download_bytes: 500_000,
    };
    let text = render(&s);
    let scenario = Scenario::parse(&text, Path::new("x.toml")).expect("parses");
    assert_eq!(scenario.timeline.len(), 4);
    let (a, b) = (run(&scenario, s.seed), run(&scenario, s.seed));
    assert_eq!(a.verdict, Verdict::Pass, "{:?}", a.failures);
    assert_eq!(a.trace_hash, b.trace_hash);
}

#[test]
fn the_recovery_check_can_fail() {
    // Connector 1 stays down and connector 2 goes down for good: nothing
    // serves after the "recovery" time, and the check says so.
    let s = Schedule {
        seed: 3,
        faults: vec![(300, Fault::ConnectorOutage { connector: 1, secs: 60 })],
        upload_bytes: 0,
        download_bytes: 0,
    };
    let mut text = render(&s);
    text = text.replace("event = \"start connector connector-1\"", "event = \"stop connector connector-2\"");
    let scenario = Scenario::parse(&text, Path::new("x.toml")).expect("parses");
    let r = run(&scenario, s.seed);
    assert_eq!(r.verdict, Verdict::Fail);
    assert!(r.failures.iter().any(|f| f.contains("serving again")), "{:?}", r.failures);
}
