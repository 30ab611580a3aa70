//! One tunnel per relay endpoint the last bootstrap returned: tunnels to
//! endpoints no longer listed are stopped, new ones started.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api::{BootstrapResponse, RelayEndpoint};
use crate::backoff::Backoff;
use crate::identity::Identity;

use super::Agent;
use crate::tunnel::{self, Shared, TunnelConfig};

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
        let mut started = false;
        let wanted: std::collections::BTreeSet<&RelayEndpoint> = cfg.relay_endpoints.iter().collect();
        tunnels.retain(|ep, handle| {
            let keep = wanted.contains(ep) && !handle.is_finished();
            // A tunnel sent away finishes its requests and ends by itself.
            if !keep && !shared.is_moving(&ep.to_string()) {
                handle.abort();
            }
            keep
        });
        for ep in wanted {
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
