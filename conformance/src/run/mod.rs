//! One (scenario, seed) → a turmoil simulation → a trace, a summary and a
//! verdict. Everything random is seeded from the seed; every clock is the
//! simulated one; the same inputs give the same trace hash.
//!
//! - [`world`] builds what the scenario describes on the simulation;
//! - [`timeline`] applies the scenario's events to it at their times,
//!   through the firewall and resolver handles in [`edits`];
//! - [`users`] sends the load and judges each answer;
//! - `simulate` here drives the simulation and the timeline together.

mod edits;
mod timeline;
mod users;
mod world;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay_sim::backend::ServedLog;
use serde::{Deserialize, Serialize};

use crate::check::{self, Summary};
use crate::scenario::{Scenario, TimelineEvent};
use crate::stopwatch::Stopwatch;
use crate::trace::{self, Trace, TraceEvent, What, WorldEvent};
use crate::wakeups::Stepper;
use world::World;

/// Simulated wall-clock time at the start of every run: 2026-01-01T00:00Z.
pub const EPOCH_UNIX_S: u64 = 1_767_225_600;
/// Port of the user-facing ingress in the simulation.
pub const INGRESS_PORT: u16 = 80;
/// The simulation host serving every CRL/OCSP name.
pub(crate) const REVOCATION_HOST: &str = "revocation.cdn.example";
/// The simulation host serving the certificate trust list's names (Windows
/// Update's CDN: another service than the CA's revocation servers, so
/// stopping those leaves it up).
pub(crate) const TRUST_LIST_HOST: &str = "windowsupdate.cdn.example";
/// The cloud-internal host that keeps the portal's connector status.
pub(crate) const PORTAL_HOST: &str = "portal.cloud.internal";
/// The simulation host of the explicit proxy.
pub(crate) const PROXY_HOST: &str = "proxy.corp.local";
/// The simulation host of the TLS inspection box.
pub(crate) const INSPECTOR_HOST: &str = "inspection.corp.local";
/// Default simulation step.
pub(crate) const DEFAULT_TICK: Duration = Duration::from_millis(10);

/// Pass or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
}

/// Everything one run produced. Read back from a JSON report, it has no
/// trace (reports keep only a failure's last events, in `trace_tail`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub seed: u64,
    pub verdict: Verdict,
    /// Why it failed (empty on pass).
    pub failures: Vec<String>,
    pub sim_time_ms: u64,
    pub wall_ms: f64,
    pub trace_hash: String,
    pub steps: Steps,
    pub summary: Summary,
    #[serde(skip)]
    pub trace: Vec<TraceEvent>,
}

fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S)
}

/// A simulation as every world of the harness has it: seeded, starting at
/// the fixed epoch, stepping by `tick`, messages taking 1 to 20 ms, and an
/// hour of slack past `duration` before turmoil calls the run overdue.
pub(crate) fn new_sim<'a>(seed: u64, duration: Duration, tick: Duration) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(epoch())
        .simulation_duration(duration + Duration::from_secs(3600))
        .tick_duration(tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .tcp_capacity(4096)
        .build()
}

/// How the runner advances simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stepping {
    /// Skip idle spans in one step (see [`crate::wakeups`]); the default.
    #[default]
    SkipIdle,
    /// Every step is one tick: slow, and the reference the skipping is
    /// tested against (equal trace hashes).
    Fixed,
}

/// Runs `scenario` with `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> RunResult {
    run_with(scenario, seed, Stepping::default())
}

/// Runs `scenario` with `seed`, stepping as `stepping` says.
pub fn run_with(scenario: &Scenario, seed: u64, stepping: Stepping) -> RunResult {
    let watch = Stopwatch::start();
    let trace = Trace::default();
    let logs = ServedLog::default();
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| simulate(scenario, seed, stepping, &trace, &logs)));
    let mut steps = Steps::default();
    let mut failures = match outcome {
        Ok(Ok(s)) => {
            steps = s;
            Vec::new()
        }
        Ok(Err(e)) => vec![format!("simulation error: {e}")],
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            vec![format!("simulation panicked: {msg}")]
        }
    };
    let events = trace.events();
    let summary = check::summarize(&events, &logs);
    failures.extend(check::check(&scenario.expect, &summary, scenario.duration.0));
    RunResult {
        name: scenario.name.clone(),
        seed,
        verdict: if failures.is_empty() { Verdict::Pass } else { Verdict::Fail },
        failures,
        sim_time_ms: scenario.duration.0.as_millis() as u64,
        wall_ms: watch.elapsed().as_secs_f64() * 1000.0,
        trace_hash: trace::hash(&events),
        steps,
        summary,
        trace: events,
    }
}

type HostResult = Result<(), Box<dyn std::error::Error>>;

/// How the simulation was stepped.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Steps {
    /// Steps taken.
    pub steps: u64,
    /// Steps that skipped idle time.
    pub skips: u64,
    /// Host runs: one host's software run for one step (the main cost).
    pub host_runs: u64,
}

fn simulate(
    scenario: &Scenario,
    seed: u64,
    stepping: Stepping,
    trace: &Trace,
    logs: &ServedLog,
) -> Result<Steps, String> {
    let tick = scenario.world.tick.map(|t| t.0).unwrap_or(DEFAULT_TICK).max(Duration::from_millis(1));
    let mut sim = new_sim(seed, scenario.duration.0, tick);
    let world = World::build(scenario, seed, &mut sim, trace, logs)?;
    let plan = users::user_plan(scenario);
    if !plan.is_empty() {
        let (trace, ingress) = (trace.clone(), world.cloud.config.ingress_host.clone());
        sim.client("users", async move {
            users::users(plan, ingress, trace).await;
            HostResult::Ok(())
        });
    }
    world::region_links(&mut sim, scenario, &world.cloud);

    // Drive the simulation, applying the timeline as its times come.
    let mut events: Vec<(Duration, TimelineEvent)> =
        scenario.timeline.iter().map(|e| (e.at.0, e.event.get_ref().clone())).collect();
    events.sort_by_key(|(at, _)| *at);
    let mut next = 0;
    let mut stepper = Stepper::attach(&mut sim, tick, stepping == Stepping::SkipIdle);
    while sim.elapsed() < scenario.duration.0 {
        while next < events.len() && events[next].0 <= sim.elapsed() {
            let event = &events[next].1;
            next += 1;
            trace.record_at(
                sim.elapsed().as_millis() as u64,
                "world",
                What::World(WorldEvent::Applied { what: event.to_string() }),
            );
            timeline::apply(event, &mut sim, &world)?;
        }
        let limit = events.get(next).map_or(scenario.duration.0, |(at, _)| *at).min(scenario.duration.0);
        stepper.step(&mut sim, limit).map_err(|e| e.to_string())?;
        world.outside_ms.store(sim.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let host_runs = sim.host_runs();
    drop(sim);
    drop(world);
    Ok(Steps { steps: stepper.steps, skips: stepper.skips, host_runs })
}
