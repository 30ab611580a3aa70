//! The diagnosis matrix (`connsim matrix`) passes in full: every cell the
//! world model can build reports its one expected finding and nothing else,
//! and is back within the bounds once its fault ends. Skipped cells carry a
//! reason; their count is printed so a change that skips more shows.

use conformance::matrix::{self, Status};

#[test]
fn every_buildable_cell_of_the_diagnosis_matrix_passes() {
    let jobs = conformance::parallel::default_jobs();
    let results = matrix::run_all("", 1, jobs, |_, _| {});
    let table = matrix::render(&results, false);
    println!("{table}");
    let failed: Vec<String> =
        results.iter().filter(|(_, s)| matches!(s, Status::Fail(_))).map(|(c, _)| c.id()).collect();
    assert!(failed.is_empty(), "{} cells failed:\n{table}", failed.len());
    let run = results.iter().filter(|(_, s)| *s == Status::Pass).count();
    assert!(run >= 754, "only {run} cells ran: the matrix lost cells\n{table}");
}

#[test]
fn a_cell_fails_when_its_finding_is_wrong() {
    // The cell's scenario, with the expected finding swapped for another:
    // the run must fail on both the missing and the unexpected code.
    let cell = matrix::cells()
        .into_iter()
        .find(|c| c.id() == "entry-missing/crl-80/direct/public/at-registration/never-ends")
        .expect("the cell exists");
    let (toml, _) = matrix::scenario(&cell);
    let swapped = toml.replace("\"NET-CRL.unreachable\"", "\"NET-80.unreachable\"");
    assert_ne!(toml, swapped);
    let scenario = conformance::Scenario::parse(&swapped, std::path::Path::new("m.toml")).expect("parses");
    let r = conformance::run(&scenario, 1);
    assert!(r.failures.iter().any(|f| f.contains("NET-80.unreachable expected")), "{:?}", r.failures);
    assert!(r.failures.iter().any(|f| f.contains("unexpected diagnostic NET-CRL.unreachable")), "{:?}", r.failures);
}
