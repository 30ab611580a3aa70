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
        let mut failures: u32 = 0;
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
                    failures = 0;
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
                Err(e) => {
                    let d = e.diagnostic();
                    self.env.emit(AgentEvent::BootstrapFailed { code: d.code.clone() });
                    if e.is_unknown_connector() && updates.pending.borrow().is_none() {
                        let message = format!(
                            "connector {} is no longer registered with the service, and stops: {}",
                            identity.connector_id, d.message
                        );
                        return Err(AgentError::NotRegistered(Diagnostic { message, ..d }));
                    }
                    if self.roll_back_if_refused(&e, updates) {
                        // Bootstrap again at once, as the previous version.
                        failures = 0;
                        Duration::from_secs(1)
                    } else {
                        if failures == 0 {
                            self.env.emit(AgentEvent::Diagnostic(d));
                        }
                        let delay = Backoff::BOOTSTRAP.delay(failures, self.env.entropy.unit_f64());
                        failures = failures.saturating_add(1);
                        delay
                    }
                }
            };
            tokio::select! {
                biased;
                // A switch: bootstrap at once, as the new version.
                () = updates.switched.notified() => {}
                // After failures, a tunnel that came back says the network is.
                () = shared.network_back.notified(), if failures > 0 => {}
                // A relay no longer serves this connector: learn where to go
                // now (not while bootstrap fails: its backoff keeps the pace).
                () = shared.moved_wake.notified(), if failures == 0 => {}
                // Or already said so while this loop was busy.
                () = std::future::ready(()), if failures == 0 && shared.moved_pending.get() => {}
                () = crate::time::sleep(delay) => {}
            }
        }
    }
}
