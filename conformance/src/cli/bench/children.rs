//! The worlds `connsim bench --all` runs in child processes (`connsim
//! bench-world`), so that each one's peak memory is its own: 30 simulated
//! days and 10/100/1,000 connectors, beside their baselines and floors.

use super::world::bench_child;
use super::Row;
use conformance::plot::{Bar, Panel};

/// Runs of each scale world and of its floors. Their wall times moved by up
/// to a fifth between runs on a 2-core VM (the floors' ratio of 1,000 to 100
/// connectors read 10.7x in one run and 15.8x in another), so ratios are
/// taken between medians.
const SCALE_RUNS: usize = 3;

/// `bench_child(args)` `runs` times in a row: the median wall time, the
/// largest peak memory, and whether every run passed.
fn median_child(args: &[String], runs: usize) -> Result<(f64, u64, bool), String> {
    let (mut walls, mut rss, mut ok) = (Vec::new(), 0, true);
    for _ in 0..runs.max(1) {
        let (wall, peak, pass) = bench_child(args)?;
        walls.push(wall);
        rss = rss.max(peak);
        ok &= pass;
    }
    let wall = conformance::bench::median(walls).ok_or_else(|| format!("bench-world {args:?}: no run"))?;
    Ok((wall, rss, ok))
}

/// 10, 100 and 1,000 connectors for a simulated hour, each world in a
/// child process (its peak memory its own), median of [`SCALE_RUNS`].
pub(super) fn scale(row: Row<'_>) -> Result<Panel, String> {
    let mut bars = Vec::new();
    // Each world against the one before it: 1,000 against 100 is the
    // target's ratio.
    let mut previous: Option<(f64, usize)> = None;
    for n in [10usize, 100, 1000] {
        let groups = 50.min(n);
        let args = ["scale".into(), "--size".into(), n.to_string(), "--groups".into(), groups.to_string()];
        let (wall, rss, ok) = median_child(&args, SCALE_RUNS)?;
        let baseline = match previous {
            None => "(the baseline)".to_string(),
            Some((w, m)) => format!("{:.1}x the time of {m} for {:.0}x the connectors", wall / w, n as f64 / m as f64),
        };
        previous = Some((wall, n));
        row(
            &format!("{n} connectors, {groups} groups, 1 h{}", if ok { "" } else { " (FAILED)" }),
            format!("{:.2} s, {} MiB", wall / 1000.0, rss / 1024),
            baseline,
            if n == 1000 { "< 30 s, < 4096 MiB" } else { "" },
        );
        bars.push(Bar::measured(format!("{n} connectors, {groups} groups"), wall / 1000.0));
    }
    fleet_floors(row, &mut bars)?;
    Ok(Panel { title: "Scale: one simulated hour".into(), unit: "seconds (less is better)".into(), bars })
}

/// The simulator's floor for 100 and 1,000 connectors (keepalives over
/// bare TCP, `floor::fleet`; median of [`SCALE_RUNS`]), and the ratio of
/// the two: what the scale rows' ratio is to be read against.
fn fleet_floors(row: Row<'_>, bars: &mut Vec<Bar>) -> Result<(), String> {
    let mut walls = Vec::new();
    for n in [100usize, 1000] {
        let (wall, rss, _) = median_child(&["floor-fleet".into(), "--size".into(), n.to_string()], SCALE_RUNS)?;
        let baseline = match walls.first() {
            Some(w100) => format!("{:.1}x the floor of 100", wall / f64::max(*w100, 1e-9)),
            None => String::new(),
        };
        row(
            &format!("  floor, bare TCP keepalives, {n} connectors"),
            format!("{:.2} s, {} MiB", wall / 1000.0, rss / 1024),
            baseline,
            "",
        );
        bars.push(Bar::baseline(format!("floor: {n} connectors, bare TCP keepalives"), wall / 1000.0));
        walls.push(wall);
    }
    Ok(())
}

/// The 30-day world, beside its quiet world and the floors of its
/// keepalives (rows printed with `row`).
pub(super) fn thirty_days(row: Row<'_>) -> Result<Panel, String> {
    let (long, rss, ok) = bench_child(&["long".into(), "--size".into(), "30".into()])?;
    let (long_q, _, _) = bench_child(&["long".into(), "--size".into(), "30".into(), "--quiet".into()])?;
    row(
        &format!("30 simulated days, 1 connector{}", if ok { "" } else { " (FAILED)" }),
        format!("{:.2} s, {} MiB", long / 1000.0, rss / 1024),
        format!("{:.2} s quiet ({:.1}x)", long_q / 1000.0, long / long_q.max(1e-9)),
        "< 3 s",
    );
    let mut bars = vec![Bar::measured("30 days", long / 1000.0), Bar::baseline("quiet world", long_q / 1000.0)];
    let floors = [
        ("floor", "bare TCP keepalives, in phase"),
        ("floor-spread", "bare TCP keepalives, out of phase"),
        ("floor-tls", "TLS keepalives + bootstraps"),
    ];
    for (kind, what) in floors {
        let (floor, _, _) = bench_child(&[kind.into(), "--size".into(), "30".into()])?;
        row(
            &format!("  floor, {what}"),
            format!("{:.2} s", floor / 1000.0),
            format!("30 days are {:.1}x the floor", long / floor.max(1e-9)),
            "",
        );
        bars.push(Bar::baseline(format!("floor: {what}"), floor / 1000.0));
    }
    Ok(Panel { title: "30 simulated days, 1 connector".into(), unit: "seconds (less is better)".into(), bars })
}
