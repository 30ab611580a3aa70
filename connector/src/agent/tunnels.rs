//! One tunnel per relay endpoint the last bootstrap returned: tunnels to
//! endpoints no longer listed are stopped, new ones started.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api::{BootstrapResponse, RelayEndpoint};
use crate::backoff::Backoff;
use crate::identity::Identity;

use super::Agent;
use crate::tunnel::{self, Shared, TunnelConfig};

/// A running tunnel when a bootstrap lists the relay endpoints.
#[derive(Debug, Clone, Copy)]
pub(super) struct Running {
    /// Its endpoint is still listed.
    pub(super) listed: bool,
    /// Its task has ended (a tunnel sent away, or one that gave up).
    pub(super) finished: bool,
}

/// What becomes of a running tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Keep,
    /// Forgotten and cut now (for a task that has ended, cutting changes
    /// nothing).
    Stop,
    /// Forgotten but not cut: sent away by its relay ("moved"), it
    /// finishes its requests and ends by itself.
    LetFinish,
}

impl Running {
    /// `moving` is asked only for a tunnel that is not kept. A listed
    /// endpoint whose tunnel is not kept gets a new one.
    pub(super) fn fate(self, moving: impl FnOnce() -> bool) -> Fate {
        if self.listed && !self.finished {
            Fate::Keep
        } else if moving() {
            Fate::LetFinish
        } else {
            Fate::Stop
        }
    }
}

impl Agent {
    /// Starts a tunnel for every new endpoint and stops those no longer
    /// listed; says whether it started any. Endpoints are kept in a
    /// `BTreeMap`: start order is stable.
    pub(super) fn reconcile(
        &self,
        tunnels: &mut BTreeMap<RelayEndpoint, JoinHandle<()>>,
        cfg: &BootstrapResponse,
        identity: &Identity,
        shared: &Rc<Shared>,
    ) -> bool {
        let listed: BTreeSet<&RelayEndpoint> = cfg.relay_endpoints.iter().collect();
        tunnels.retain(|ep, handle| {
            let running = Running { listed: listed.contains(ep), finished: handle.is_finished() };
            match running.fate(|| shared.is_moving(&ep.to_string())) {
                Fate::Keep => true,
                Fate::Stop => {
                    handle.abort();
                    false
                }
                Fate::LetFinish => false,
            }
        });
        let mut started = false;
        for ep in listed {
            if tunnels.contains_key(ep) {
                continue;
            }
            let tcfg = TunnelConfig {
                connector_id: identity.connector_id.clone(),
                connect_timeout: self.config.connect_timeout,
                keepalive: Duration::from_secs(cfg.keepalive_s.max(1)),
                backend_timeout: self.config.backend_timeout,
                max_inflight: self.config.max_inflight.min(cfg.connection_limit.max(1) as usize),
                backoff: Backoff::TUNNEL,
                request_body_hold_bytes: 1 << 20,
            };
            let handle = tokio::task::spawn_local(tunnel::run(self.env.clone(), tcfg, shared.clone(), ep.clone()));
            tunnels.insert(ep.clone(), handle);
            started = true;
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_live_tunnel_is_kept_whatever_its_relay_said() {
        let live = Running { listed: true, finished: false };
        assert_eq!(live.fate(|| panic!("not asked for a kept tunnel")), Fate::Keep);
    }

    #[test]
    fn an_unlisted_tunnel_is_cut_unless_it_was_sent_away() {
        let unlisted = Running { listed: false, finished: false };
        assert_eq!(unlisted.fate(|| false), Fate::Stop);
        // Sent away: its requests finish before it ends.
        assert_eq!(unlisted.fate(|| true), Fate::LetFinish);
    }

    #[test]
    fn an_ended_tunnel_is_not_kept_even_if_listed() {
        // Forgotten (cutting an ended task changes nothing), so that
        // `reconcile` starts a new one for the endpoint still listed.
        let ended = Running { listed: true, finished: true };
        assert_ne!(ended.fate(|| false), Fate::Keep);
        assert_ne!(ended.fate(|| true), Fate::Keep);
    }
}
