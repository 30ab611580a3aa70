//! The updater service: it asks the update feed for a release, fetches
//! and checks the package, switches the connector over and rolls back a
//! release the service refuses.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api::{PackageRequest, PackageResponse, RelayEndpoint, Release, UpdatePhase, UpdateRequest, UpdateResponse};
use crate::code::{self, Code};
use crate::diag::Diagnostic;
use crate::event::AgentEvent;
use crate::http::CallError;
use crate::package::PackageError;
use crate::pki::ServiceTls;

use super::Agent;
use crate::service::ServiceState;
use crate::tunnel::Shared;

/// What the connector and updater services share about updates.
#[derive(Default)]
pub(super) struct Updates {
    /// How often to check the feed (from the last bootstrap).
    pub(super) check_every: std::cell::Cell<Option<Duration>>,
    /// A bootstrap succeeded (the updater waits for the first).
    pub(super) configured: tokio::sync::Notify,
    /// The updater switched versions (or gave up switching): bootstrap now.
    pub(super) switched: tokio::sync::Notify,
    /// The version to roll back to while a new one proves itself.
    pub(super) pending: RefCell<Option<String>>,
    /// A pending switch was confirmed or rolled back.
    pub(super) settled: tokio::sync::Notify,
}

/// What a release the feed offers leads to, decided before anything is
/// fetched or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// A release this connector does not install: this server's .NET
    /// Framework release (`too_old_dotnet`) is older than it needs
    /// (VER-NET471), or
    /// the version was rolled back here before. Checked before the slot,
    /// so the finding comes whether or not it is this connector's turn; a
    /// slot granted is given back at once, for the group's next connector.
    Refuse { too_old_dotnet: Option<u32>, give_back_slot: bool },
    /// Another connector of the group is upgrading: ask again later.
    Defer,
    /// Fetch, check and switch.
    Install,
}

/// Decides what to do with the `release` the feed offers, `granted` the
/// group's upgrade slot or not, given this server's .NET Framework release
/// (`None`: not known, never refused for it) and the versions refused
/// before.
pub(super) fn plan(release: &Release, granted: bool, dotnet: Option<u32>, refused: &BTreeSet<String>) -> Plan {
    let too_old_dotnet = dotnet.filter(|have| *have < release.min_dotnet_release);
    if too_old_dotnet.is_some() || refused.contains(&release.version) {
        return Plan::Refuse { too_old_dotnet, give_back_slot: granted };
    }
    if granted {
        Plan::Install
    } else {
        Plan::Defer
    }
}

impl Agent {
    /// The updater's look at the server before each check: whether
    /// Password Protection Proxy's updater has replaced ours (HOST-PPP),
    /// which keeps the connector from being updated.
    fn updater_blocked_by_host(&self) -> bool {
        let Some(host) = &self.config.host else { return false };
        let found = crate::host::in_service(&host.now());
        let blocked = found.notes.iter().any(|d| d.requirement == code::HOST_PPP_CO_INSTALLED.requirement);
        self.report_host_notes(found.notes);
        blocked
    }

    /// Downloads `release`'s package and checks it against the feed's
    /// announcement before anything changes ([`crate::package::verify`]).
    async fn fetch_package(&self, connector_id: &str, tls: &ServiceTls, release: &Release) -> Result<(), Diagnostic> {
        let v = &release.version;
        let finding = |code: Code, what: String, remedy: &str| {
            let message = format!("the updater did not install {v}: {what}; nothing was changed");
            Diagnostic::new(code, None, message, remedy)
        };
        const RETRY: &str = "nothing to do if it passes: the updater tries again at its next check; if it lasts, look for a proxy or inspection box altering downloads from the service";
        let ask = PackageRequest { connector_id: connector_id.to_string(), version: v.clone() };
        let resp: PackageResponse = self
            .call(&self.names.bootstrap, tls)
            .post_json("/package", &ask, None)
            .await
            .map_err(|e| finding(code::VER_UPDATER_DOWNLOAD_FAILED, format!("its download failed ({e})"), RETRY))?;
        let bytes = crate::package::unhex(&resp.package_hex)
            .ok_or_else(|| finding(code::VER_UPDATER_DOWNLOAD_FAILED, "the download is not a package".into(), RETRY))?;
        crate::package::verify(release, &bytes, &crate::package::PUBLISHER_KEY).map_err(|e| match e {
            PackageError::Digest { .. } => finding(code::VER_UPDATER_PACKAGE_CORRUPT, format!("the package arrived damaged: {e}"), RETRY),
            PackageError::Unannounced | PackageError::Signature => finding(
                code::VER_UPDATER_PACKAGE_UNTRUSTED,
                format!("the package is not the publisher's: {e}"),
                "do not install it by hand; report it: the release feed or something between it and this server serves packages the publisher did not sign",
            ),
        })
    }

    /// VER-NET471, once per release: the upgrade needs a newer .NET
    /// Framework than this server's (`have`).
    fn report_dotnet_too_old(&self, current: &str, release: &Release, have: u32) {
        let d = Diagnostic::new(code::VER_NET471_UPGRADE_REFUSED, None,
            format!(
                "the upgrade to {} needs .NET Framework release {} or later; this server has {}: nothing was changed, {current} keeps running",
                release.version, release.min_dotnet_release, have
            ),
            "install .NET Framework 4.7.1 or later; the updater will then upgrade the connector",
        );
        self.report_once(d, release);
    }

    /// Emits `d` once per code and release: the updater looks again at
    /// every bootstrap, and the same finding each time would bury the rest.
    fn report_once(&self, d: Diagnostic, release: &Release) {
        if self.reported.borrow_mut().insert(format!("{} {}", d.code, release.version)) {
            self.env.emit(AgentEvent::Diagnostic(d));
        }
    }

    /// The first bootstrap of a new version keeps it.
    pub(super) fn confirm_switch(&self, updates: &Updates) {
        if updates.pending.borrow_mut().take().is_some() {
            if let Err(e) = self.installation.confirm() {
                self.env.emit(AgentEvent::Diagnostic(e.diagnostic()));
            }
            self.env.emit(AgentEvent::Upgraded { version: self.version.borrow().clone() });
            updates.settled.notify_one();
        }
    }

    /// Rolls back the new version the service refuses (VER-UPDATER; the
    /// decision is [`super::bootstrap::Pace::failed`]'s).
    pub(super) fn roll_back(&self, error: &CallError, updates: &Updates) {
        updates.pending.borrow_mut().take();
        let failed = self.version.borrow().clone();
        match self.installation.rollback() {
            Ok(previous) => {
                self.refused.borrow_mut().insert(failed.clone());
                *self.version.borrow_mut() = previous.clone();
                self.env.emit(AgentEvent::RolledBack { from: failed.clone(), to: previous.clone() });
                self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(code::VER_UPDATER_ROLLED_BACK, None,
                    format!(
                        "version {failed} failed after the update ({}); the updater put {previous} back and will not install {failed} again",
                        error.diagnostic().message
                    ),
                    "nothing to do: the connector serves on the previous version; a later release is installed when it is published",
                )));
            }
            Err(e) => self.env.emit(AgentEvent::Diagnostic(e.diagnostic())),
        }
        updates.settled.notify_one();
    }

    /// The updater service (VER-UPDATER, OPS-SERVICES): every check
    /// interval (the service's, from bootstrap) asks the release feed for a
    /// newer version, unless the service is Stopped.
    pub(super) async fn updater_service(
        &self,
        connector_id: &str,
        shared: &Rc<Shared>,
        tunnels: &RefCell<BTreeMap<RelayEndpoint, JoinHandle<()>>>,
        updates: &Updates,
    ) {
        let mut switch = self.config.updater_service.clone();
        let mut was = None;
        loop {
            let state = switch.state();
            if was != Some(state) {
                self.env.emit(AgentEvent::ServiceState { service: "updater".into(), state });
                if state == ServiceState::Stopped {
                    self.env.emit(AgentEvent::Diagnostic(Diagnostic::new(code::OPS_SERVICES_UPDATER_STOPPED, None,
                        "the connector updater service is Stopped: this connector gets no new versions",
                        "start the \"Microsoft Entra private network connector updater\" service; both services must be Running",
                    )));
                }
                was = Some(state);
            }
            if state == ServiceState::Stopped {
                switch.running().await;
                continue;
            }
            let Some(every) = updates.check_every.get() else {
                // No configuration yet: the first successful bootstrap wakes us.
                updates.configured.notified().await;
                continue;
            };
            let tls = shared.tls.borrow().clone();
            if !self.updater_blocked_by_host() && self.update(connector_id, &tls, tunnels, shared, updates).await {
                continue;
            }
            crate::time::sleep(every).await;
        }
    }

    /// One check of the release feed: asks for a newer version and the
    /// group's upgrade slot (one connector of a group at a time); refuses a
    /// release the host's .NET cannot run before changing anything
    /// (VER-NET471); otherwise drains in-flight requests (up to the backend
    /// timeout), stops the tunnels and switches the program folder, then
    /// waits until the new version proved itself or was rolled back before
    /// giving the slot back. A request may fail to its user during the
    /// switch, but none is served twice. Returns whether it switched.
    pub(super) async fn update(
        &self,
        connector_id: &str,
        tls: &ServiceTls,
        tunnels: &RefCell<BTreeMap<RelayEndpoint, JoinHandle<()>>>,
        shared: &Rc<Shared>,
        updates: &Updates,
    ) -> bool {
        let current = self.version.borrow().clone();
        let ask = |phase| UpdateRequest { connector_id: connector_id.to_string(), version: current.clone(), phase };
        let resp: UpdateResponse =
            match self.call(&self.names.bootstrap, tls).post_json("/update", &ask(UpdatePhase::Check), None).await {
                Ok(r) => r,
                Err(_) => return false,
            };
        let Some(release) = resp.release else { return false };
        let dotnet = self.config.host.as_ref().map(|h| h.now().dotnet_release);
        let decided = plan(&release, resp.granted, dotnet, &self.refused.borrow());
        let done = async {
            let _: Result<UpdateResponse, _> =
                self.call(&self.names.bootstrap, tls).post_json("/update", &ask(UpdatePhase::Done), None).await;
        };
        match decided {
            Plan::Refuse { too_old_dotnet, give_back_slot } => {
                if let Some(have) = too_old_dotnet {
                    self.report_dotnet_too_old(&current, &release, have);
                }
                if give_back_slot {
                    done.await;
                }
                return false;
            }
            Plan::Defer => {
                self.env.emit(AgentEvent::UpgradeDeferred { to: release.version });
                return false;
            }
            Plan::Install => {}
        }
        if let Err(d) = self.fetch_package(connector_id, tls, &release).await {
            self.report_once(d, &release);
            done.await;
            return false;
        }
        self.env.emit(AgentEvent::UpgradeStarted { from: current.clone(), to: release.version.clone() });
        // Drain: the relays stop sending (GoAway); what is in flight finishes.
        shared.drain(true);
        let deadline = crate::time::Instant::now() + self.config.backend_timeout;
        // At least one pause, so that the tunnels get their GoAway out.
        loop {
            crate::time::sleep(Duration::from_millis(100)).await;
            if shared.slots.used() == 0 || crate::time::Instant::now() >= deadline {
                break;
            }
        }
        for (_, handle) in std::mem::take(&mut *tunnels.borrow_mut()) {
            handle.abort();
        }
        shared.drain(false);
        if let Err(e) = self.installation.switch(&release.version) {
            // The old folder is still in place (or put back): keep serving.
            self.env.emit(AgentEvent::Diagnostic(e.diagnostic()));
            let _ = self.installation.rollback();
            self.refused.borrow_mut().insert(release.version);
            done.await;
            updates.switched.notify_one();
            return false;
        }
        *self.version.borrow_mut() = release.version.clone();
        *updates.pending.borrow_mut() = Some(current.clone());
        self.env.emit(AgentEvent::Switched { from: current.clone(), to: release.version });
        updates.switched.notify_one();
        while updates.pending.borrow().is_some() {
            updates.settled.notified().await;
        }
        done.await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// .NET Framework 4.7.1's release number, what releases ask for.
    const NET471: u32 = 461_308;

    fn release(version: &str) -> Release {
        Release {
            version: version.into(),
            notes: String::new(),
            min_dotnet_release: NET471,
            sha256: String::new(),
            signature: String::new(),
        }
    }

    fn none_refused() -> BTreeSet<String> {
        BTreeSet::new()
    }

    #[test]
    fn a_release_is_installed_only_with_the_groups_slot() {
        let v = release("1.5.4000.0");
        assert_eq!(plan(&v, true, Some(NET471), &none_refused()), Plan::Install);
        assert_eq!(plan(&v, false, Some(NET471), &none_refused()), Plan::Defer);
        // A host whose .NET is not known is not refused for it.
        assert_eq!(plan(&v, true, None, &none_refused()), Plan::Install);
    }

    #[test]
    fn old_dotnet_is_refused_with_or_without_the_slot_and_the_slot_goes_back() {
        let v = release("1.5.4000.0");
        let old = NET471 - 1;
        let refuse = |give_back_slot| Plan::Refuse { too_old_dotnet: Some(old), give_back_slot };
        assert_eq!(plan(&v, true, Some(old), &none_refused()), refuse(true));
        // Not this connector's turn: still refused (and said), nothing to give back.
        assert_eq!(plan(&v, false, Some(old), &none_refused()), refuse(false));
    }

    #[test]
    fn a_version_rolled_back_here_is_not_installed_again() {
        let refused = BTreeSet::from(["1.5.4000.0".to_string()]);
        let plan_for = |v, granted| plan(&release(v), granted, Some(NET471), &refused);
        assert_eq!(plan_for("1.5.4000.0", true), Plan::Refuse { too_old_dotnet: None, give_back_slot: true });
        assert_eq!(plan_for("1.5.4000.0", false), Plan::Refuse { too_old_dotnet: None, give_back_slot: false });
        // A later release is.
        assert_eq!(plan_for("1.5.4001.0", true), Plan::Install);
    }
}
