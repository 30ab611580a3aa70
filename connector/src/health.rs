//! What the agent watches about itself after each bootstrap, and says when
//! it goes wrong: active but not receiving anything (OPS-ACTIVE), and far
//! from the tenant's cloud instance (OPS-GEO). Each finding is reported
//! once per episode.

use std::time::Duration;

use crate::api::BootstrapResponse;
use crate::code::{self, EventId};
use crate::diag::Diagnostic;
use crate::time::Instant;

/// A round trip to the service at least this long is reported (OPS-GEO):
/// within a region it is a few milliseconds, across an ocean 70 or more.
pub const FAR_RTT: Duration = Duration::from_millis(50);

/// Round-trip samples to the service's hosts needed before OPS-GEO judges
/// the distance (the least of them is taken: one sample carries jitter).
pub const RTT_SAMPLES_MIN: usize = 3;

/// How long tunnels get to come up before "active but no tunnel" is said.
pub const TUNNEL_GRACE: Duration = Duration::from_secs(120);

/// The agent's self-observation between bootstraps.
pub struct Health {
    bootstraps_ok: u32,
    /// When the current set of tunnels was (re)started.
    tunnels_since: Instant,
    geo_reported: bool,
    inactive_reported: bool,
}

impl Default for Health {
    fn default() -> Self {
        Health { bootstraps_ok: 0, tunnels_since: Instant::now(), geo_reported: false, inactive_reported: false }
    }
}

impl Health {
    /// Tunnels were (re)started: they get [`TUNNEL_GRACE`] to come up.
    pub fn tunnels_restarted(&mut self) {
        self.tunnels_since = Instant::now();
    }

    /// Findings after a successful bootstrap to `bootstrap_host`, with
    /// `tunnels_up` tunnels up and `rtt` the distance to the service's
    /// hosts (the least of several TCP handshakes with them).
    pub fn after_bootstrap(
        &mut self,
        bootstrap_host: &str,
        cfg: &BootstrapResponse,
        tunnels_up: usize,
        rtt: Option<Duration>,
    ) -> Vec<Diagnostic> {
        self.bootstraps_ok = self.bootstraps_ok.saturating_add(1);
        let mut found = Vec::new();
        // OPS-GEO: the service is the tenant's home-region instance wherever
        // the connector is; say when it is far.
        if let (false, Some(rtt)) = (self.geo_reported, rtt.filter(|r| *r >= FAR_RTT)) {
            let relays = cfg.relay_endpoints.iter().map(|e| e.host.as_str()).collect::<Vec<_>>().join(", ");
            found.push(Diagnostic::new(code::OPS_GEO_FAR_FROM_INSTANCE, None,
                format!(
                    "the cloud instance serving this connector is about {} ms away (round trips to {bootstrap_host} and its relays {relays}): every request pays this distance",
                    rtt.as_millis()
                ),
                "install connectors close to the region of the instance that serves them and to the applications (HOST-NEAR); the service picks the tenant's region wherever connectors are (Private Access has no multi-geo), and only application proxy can pin a connector group to another region",
            ));
            self.geo_reported = true;
        }
        // OPS-ACTIVE: bootstrap works (the portal shows the connector
        // active), yet no tunnel is up though they have had time to come up:
        // it cannot receive a single request.
        let no_tunnel = tunnels_up == 0 && !cfg.relay_endpoints.is_empty();
        let given_time = self.tunnels_since.elapsed() >= TUNNEL_GRACE;
        if no_tunnel && self.bootstraps_ok >= 2 && given_time && !self.inactive_reported {
            let endpoints = cfg.relay_endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
            found.push(Diagnostic::new(code::OPS_ACTIVE_NO_TUNNEL, Some(EventId::Networking),
                format!(
                    "the connector is active (bootstrap to {bootstrap_host} works) but none of its tunnels is up ({endpoints}): it cannot receive user requests"
                ),
                "active is not working: allow *.servicebus.windows.net on TCP 443 (NET-SVC); see the tunnels' diagnostics",
            ));
            self.inactive_reported = true;
        } else if !no_tunnel {
            self.inactive_reported = false;
        }
        found
    }
}
