//! Serving: the connector service's bootstrap loop (configuration pull
//! that doubles as heartbeat), which keeps serving from the cached
//! configuration when a later bootstrap fails.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::allowlist::Group;
use crate::api::{BootstrapRequest, BootstrapResponse, RelayEndpoint};
use crate::backoff::Backoff;
use crate::diag::Diagnostic;
use crate::event::AgentEvent;
use crate::health::Health;
use crate::http::CallError;
use crate::identity::Identity;
use crate::pki::{ServiceTls, Trust};

use super::updater::Updates;
use super::{Agent, AgentError};
use crate::service::ServiceState;
use crate::tunnel::{SeenIds, Shared};

/// What the loop knows of a failed bootstrap when it decides what next.
#[derive(Debug, Clone, Copy)]
pub(super) struct Failure {
    /// The service no longer knows this connector.
    pub(super) unknown_connector: bool,
    /// The service answered with a refusal (an HTTP status), rather than
    /// the network or TLS failing.
    pub(super) refused: bool,
    /// A new version is proving itself (the updater's pending switch).
    pub(super) switch_pending: bool,
}

/// What a failed bootstrap leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum AfterFailure {
    /// Not registered any more: the connector stops. Not while a new
    /// version proves itself: the refusal may be that version's fault.
    Stop,
    /// The service refuses the new version: roll it back and bootstrap
    /// again soon, as the previous one (VER-UPDATER).
    RollBack { delay: Duration },
    /// Try again after `delay` (the bootstrap backoff); `report` the
    /// finding only for the first failure of a run, so an outage is one
    /// finding, not one per attempt.
    Retry { delay: Duration, report: bool },
}

/// The connector service's pace: whether bootstrap is failing, and what a
/// failure leads to. The loop makes the calls; this decides.
#[derive(Debug, Default)]
pub(super) struct Pace {
    /// Bootstraps failed in a row.
    failures: u32,
}

impl Pace {
    /// How soon a rolled-back connector bootstraps as its previous version.
    pub(super) const AFTER_ROLLBACK: Duration = Duration::from_secs(1);

    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// While bootstrap fails, a tunnel coming back is the sign to retry
    /// early; while it works, a relay's "moved" is.
    pub(super) fn failing(&self) -> bool {
        self.failures > 0
    }

    /// Decides after a failure; `jitter` (a unit random number) is drawn
    /// only when a backoff delay is computed.
    pub(super) fn failed(&mut self, f: Failure, jitter: impl FnOnce() -> f64) -> AfterFailure {
        if f.unknown_connector && !f.switch_pending {
            return AfterFailure::Stop;
        }
        if f.refused && f.switch_pending {
            self.failures = 0;
            return AfterFailure::RollBack { delay: Self::AFTER_ROLLBACK };
        }
        let report = self.failures == 0;
        let delay = Backoff::BOOTSTRAP.delay(self.failures, jitter());
        self.failures = self.failures.saturating_add(1);
        AfterFailure::Retry { delay, report }
    }
}

impl Agent {
    /// The connector service and the updater service, side by side; returns
    /// only when the client certificate has expired.
    pub(super) async fn serve(&self, identity: Identity, trust: Rc<Trust>, mtls: ServiceTls) -> Result<(), AgentError> {
        let shared = Rc::new(Shared {
            incarnation: self.env.entropy.next_u64(),
            seen: RefCell::new(SeenIds::new(65_536)),
            slots: Rc::default(),
            tls: RefCell::new(mtls),
            up: RefCell::new(0),
            backends: Rc::default(),
            network_back: tokio::sync::Notify::new(),
            moved: RefCell::default(),
            moved_pending: std::cell::Cell::new(false),
            moved_wake: tokio::sync::Notify::new(),
            draining: std::cell::Cell::new(false),
            drain_wake: tokio::sync::Notify::new(),
        });
        let tunnels = RefCell::new(BTreeMap::new());
        let updates = Updates::default();
        if let Ok(Some(previous)) = self.installation.previous_version() {
            // Restarted in the middle of a switch: the version on disk has
            // yet to prove itself.
            *updates.pending.borrow_mut() = Some(previous);
        }
        let connector_id = identity.connector_id.clone();
        tokio::select! {
            biased;
            result = self.connector_service(identity, &trust, &shared, &tunnels, &updates) => result,
            () = self.updater_service(&connector_id, &shared, &tunnels, &updates) => Ok(()),
        }
    }

    /// Bootstrap loop, certificate renewal and tunnel supervision.
    async fn connector_service(
        &self,
        mut identity: Identity,
        trust: &Rc<Trust>,
        shared: &Rc<Shared>,
        tunnels: &RefCell<BTreeMap<RelayEndpoint, JoinHandle<()>>>,
        updates: &Updates,
    ) -> Result<(), AgentError> {
        self.env.emit(AgentEvent::ServiceState { service: "connector".into(), state: ServiceState::Running });
        let mut health = Health::default();
        let mut pace = Pace::default();
        let mut next_renewal_check = crate::time::Instant::now();
        loop {
            self.check_not_expired(&identity)?;
            let request = BootstrapRequest {
                connector_id: identity.connector_id.clone(),
                version: self.version.borrow().clone(),
                machine_name: self.config.machine_name.clone(),
            };
            let tls = shared.tls.borrow().clone();
            let result: Result<BootstrapResponse, CallError> =
                self.call(&self.names.bootstrap, &tls).post_json("/bootstrap", &request, None).await;
            let delay = match result {
                Ok(cfg) => {
                    pace.succeeded();
                    shared.moved_pending.set(false);
                    self.confirm_switch(updates);
                    let interval =
                        self.config.bootstrap_interval.unwrap_or(Duration::from_secs(cfg.bootstrap_interval_s.max(1)));
                    self.env.emit(AgentEvent::BootstrapOk {
                        endpoints: cfg.relay_endpoints.len(),
                        interval_s: interval.as_secs(),
                    });
                    self.env
                        .evidence
                        .set_relays(cfg.relay_endpoints.iter().map(|e| (e.host.clone(), e.port)).collect());
                    if self.reconcile(&mut tunnels.borrow_mut(), &cfg, &identity, shared) {
                        health.tunnels_restarted();
                    }
                    let up = *shared.up.borrow();
                    for d in health.after_bootstrap(
                        &self.names.bootstrap,
                        &cfg,
                        up,
                        self.env.evidence.group_rtt(Group::Service443, crate::health::RTT_SAMPLES_MIN),
                    ) {
                        self.env.emit(AgentEvent::Diagnostic(d));
                    }
                    updates.check_every.set(Some(Duration::from_secs(cfg.update_check_interval_min.max(1) * 60)));
                    updates.configured.notify_one();
                    if crate::time::Instant::now() >= next_renewal_check {
                        next_renewal_check = crate::time::Instant::now()
                            + Duration::from_secs(cfg.trust_renewal_interval_min.max(1) * 60);
                        if let Some(renewed) = self.renew_if_due(&identity, &tls).await {
                            *shared.tls.borrow_mut() = self.service_tls(trust, Some(&renewed))?;
                            identity = renewed;
                        }
                    }
                    interval
                }
                Err(e) => self.after_failure(&e, &mut pace, &identity, updates)?,
            };
            tokio::select! {
                biased;
                // A switch: bootstrap at once, as the new version.
                () = updates.switched.notified() => {}
                // After failures, a tunnel that came back says the network is.
                () = shared.network_back.notified(), if pace.failing() => {}
                // A relay no longer serves this connector: learn where to go
                // now (not while bootstrap fails: its backoff keeps the pace).
                () = shared.moved_wake.notified(), if !pace.failing() => {}
                // Or already said so while this loop was busy.
                () = std::future::ready(()), if !pace.failing() && shared.moved_pending.get() => {}
                () = crate::time::sleep(delay) => {}
            }
        }
    }

    /// A failed bootstrap: reported, then what [`Pace::failed`] decides,
    /// done. The delay before the next bootstrap, or the end of the
    /// connector when the service no longer knows it.
    fn after_failure(
        &self,
        e: &CallError,
        pace: &mut Pace,
        identity: &Identity,
        updates: &Updates,
    ) -> Result<Duration, AgentError> {
        let d = e.diagnostic();
        self.env.emit(AgentEvent::BootstrapFailed { code: d.code.clone() });
        let failure = Failure {
            unknown_connector: e.is_unknown_connector(),
            refused: matches!(e, CallError::Status { .. }),
            switch_pending: updates.pending.borrow().is_some(),
        };
        match pace.failed(failure, || self.env.entropy.unit_f64()) {
            AfterFailure::Stop => {
                let message = format!(
                    "connector {} is no longer registered with the service, and stops: {}",
                    identity.connector_id, d.message
                );
                Err(AgentError::NotRegistered(Diagnostic { message, ..d }))
            }
            AfterFailure::RollBack { delay } => {
                self.roll_back(e, updates);
                Ok(delay)
            }
            AfterFailure::Retry { delay, report } => {
                if report {
                    self.env.emit(AgentEvent::Diagnostic(d));
                }
                Ok(delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK: Failure = Failure { unknown_connector: false, refused: false, switch_pending: false };

    fn retry(pace: &mut Pace, f: Failure) -> (Duration, bool) {
        match pace.failed(f, || 0.5) {
            AfterFailure::Retry { delay, report } => (delay, report),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn an_outage_is_reported_once_and_retried_slower_each_time() {
        let mut pace = Pace::default();
        let attempts: Vec<(Duration, bool)> = (0..5).map(|_| retry(&mut pace, NETWORK)).collect();
        let reports: Vec<bool> = attempts.iter().map(|a| a.1).collect();
        assert_eq!(reports, [true, false, false, false, false]);
        assert_eq!(attempts[0].0, Duration::from_secs(3));
        assert!(attempts.windows(2).all(|w| w[0].0 <= w[1].0), "{attempts:?}");
        assert_eq!(attempts[4].0, Duration::from_secs(600), "capped at ten minutes");
        assert!(pace.failing());
        // Back: the next outage starts from the first delay, and is reported.
        pace.succeeded();
        assert!(!pace.failing());
        assert_eq!(retry(&mut pace, NETWORK), (Duration::from_secs(3), true));
    }

    #[test]
    fn an_unknown_connector_stops_unless_a_new_version_may_be_at_fault() {
        let gone = Failure { unknown_connector: true, refused: true, ..NETWORK };
        assert_eq!(Pace::default().failed(gone, || 0.5), AfterFailure::Stop);
        let proving = Failure { switch_pending: true, ..gone };
        assert_eq!(Pace::default().failed(proving, || 0.5), AfterFailure::RollBack { delay: Pace::AFTER_ROLLBACK });
    }

    #[test]
    fn only_the_services_refusal_rolls_a_new_version_back() {
        let mut pace = Pace::default();
        // Network trouble during the switch is not the version's fault.
        let flaky = Failure { switch_pending: true, ..NETWORK };
        assert_eq!(retry(&mut pace, flaky), (Duration::from_secs(3), true));
        let refused = Failure { refused: true, ..flaky };
        assert_eq!(pace.failed(refused, || 0.5), AfterFailure::RollBack { delay: Pace::AFTER_ROLLBACK });
        assert!(!pace.failing(), "the previous version starts with a clean slate");
        // With no switch pending, a refusal is a failure like another.
        assert_eq!(retry(&mut pace, Failure { refused: true, ..NETWORK }), (Duration::from_secs(3), true));
    }

    #[test]
    fn a_backoff_draws_one_jitter_and_uses_it() {
        let mut drawn = 0;
        let failed = Pace::default().failed(NETWORK, || {
            drawn += 1;
            0.0
        });
        // The least jitter: 20 % under the first delay of 3 s.
        assert_eq!(failed, AfterFailure::Retry { delay: Duration::from_millis(2400), report: true });
        assert_eq!(drawn, 1, "one draw per backoff, or every later random number of the run shifts");
    }

    #[test]
    fn jitter_is_drawn_only_for_a_backoff() {
        let mut drawn = 0;
        let gone = Failure { unknown_connector: true, ..NETWORK };
        let _ = Pace::default().failed(gone, || {
            drawn += 1;
            0.5
        });
        let rollback = Failure { refused: true, switch_pending: true, ..NETWORK };
        let _ = Pace::default().failed(rollback, || {
            drawn += 1;
            0.5
        });
        assert_eq!(drawn, 0, "a draw would shift every later random number of the run");
    }
}
