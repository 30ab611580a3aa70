//! Where the service serves a tenant's connectors from (OPS-GEO).
//!
//! A region has one or more cloud instances, each with its own relay
//! namespaces. A tenant lives on one instance of its home region, and the
//! service may move it to another (the old instance's relays then refuse
//! its connectors: a `GoAway` saying `Moved`, and the next bootstrap names
//! the new ones). Application proxy lets a connector group be pinned to
//! another region (multi-geo), which takes effect about 30 minutes after
//! it is set; Private Access has no multi-geo: its connectors always get
//! the home instance, wherever they are installed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use connector::allowlist::Environment;
use connector::api::RelayEndpoint;

/// How long a new pin takes to reach the service's routing.
pub const PIN_DELAY: Duration = Duration::from_secs(30 * 60);

/// The instances the world has: fixed for a run.
#[derive(Debug, Clone)]
pub struct Instances {
    pub cloud: Environment,
    /// The tenant's home region.
    pub home: String,
    /// Cloud instances in the home region (numbered from 1).
    pub count: u32,
    /// Relay namespaces per instance.
    pub relays: usize,
    /// Other regions a group may be pinned to (their first instance
    /// serves pinned groups).
    pub pin_regions: BTreeSet<String>,
}

impl Instances {
    /// One instance with `relays` namespaces in `home`.
    pub fn single(cloud: Environment, home: &str, relays: usize) -> Self {
        Instances { cloud, home: home.to_string(), count: 1, relays, pin_regions: BTreeSet::new() }
    }

    /// Instance `instance`'s relay endpoints in `region`.
    pub fn relays_of(&self, region: &str, instance: u32) -> Vec<RelayEndpoint> {
        (1..=self.relays)
            .map(|i| RelayEndpoint { host: relay_host(self.cloud, region, instance, i), port: 443 })
            .collect()
    }

    /// Every relay endpoint of every instance, home instances first.
    pub fn all_relays(&self) -> Vec<RelayEndpoint> {
        let home = (1..=self.count.max(1)).flat_map(|k| self.relays_of(&self.home, k));
        let pinned = self.pin_regions.iter().filter(|r| **r != self.home).flat_map(|r| self.relays_of(r, 1));
        home.chain(pinned).collect()
    }
}

/// The `i`-th relay namespace (from 1) of instance `instance` of `region`
/// in `cloud`: `cwap-weu-1` for the first instance, `cwap-weu2-1` for the
/// second.
pub fn relay_host(cloud: Environment, region: &str, instance: u32, i: usize) -> String {
    let bus = match cloud {
        Environment::Public => "servicebus.windows.net",
        Environment::UsGov => "servicebus.usgovcloudapi.net",
    };
    match instance {
        0 | 1 => format!("cwap-{region}-{i}.{bus}"),
        k => format!("cwap-{region}{k}-{i}.{bus}"),
    }
}

/// The tenant's placement as it runs (timeline events change it).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The home-region instance serving the tenant.
    pub instance: u32,
    /// Group → its pins (region, from when in effect), in the order set:
    /// the last one in effect counts, so a pin in effect stays until the
    /// one that replaces it starts.
    pub pins: BTreeMap<String, Vec<(String, SystemTime)>>,
}

impl Placement {
    /// Which instance serves `group` at `now`: (region, instance).
    /// `private_access`: no multi-geo, pins are ignored.
    pub fn serving(&self, instances: &Instances, group: &str, now: SystemTime, private_access: bool) -> (String, u32) {
        let pinned = self.pins.get(group).and_then(|p| p.iter().rev().find(|(_, from)| *from <= now));
        match pinned {
            Some((region, _)) if !private_access => (region.clone(), 1),
            _ => (instances.home.clone(), self.instance.max(1)),
        }
    }

    /// Pins `group` to `region` from `from` on.
    pub fn pin(&mut self, group: &str, region: &str, from: SystemTime) {
        self.pins.entry(group.to_string()).or_default().push((region.to_string(), from));
    }

    /// The earliest time after `now` at which a pin takes effect.
    pub fn next_start(&self, now: SystemTime) -> Option<SystemTime> {
        self.pins.values().flatten().map(|(_, from)| *from).filter(|from| *from > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_take_effect_at_their_time_and_never_for_private_access() {
        let mut inst = Instances::single(Environment::Public, "weu", 2);
        inst.count = 2;
        inst.pin_regions.insert("eus".into());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut p = Placement { instance: 2, ..Placement::default() };
        p.pin("us", "eus", t0 + PIN_DELAY);
        assert_eq!(p.next_start(t0), Some(t0 + PIN_DELAY));
        assert_eq!(p.next_start(t0 + PIN_DELAY), None);
        assert_eq!(p.serving(&inst, "us", t0, false), ("weu".into(), 2));
        assert_eq!(p.serving(&inst, "us", t0 + PIN_DELAY, false), ("eus".into(), 1));
        // Pinned again: the pin in effect stays until the new one starts.
        p.pin("us", "wus", t0 + 2 * PIN_DELAY);
        assert_eq!(p.serving(&inst, "us", t0 + PIN_DELAY + PIN_DELAY / 2, false), ("eus".into(), 1));
        assert_eq!(p.serving(&inst, "us", t0 + 2 * PIN_DELAY, false), ("wus".into(), 1));
        assert_eq!(p.serving(&inst, "us", t0 + PIN_DELAY, true), ("weu".into(), 2));
        assert_eq!(p.serving(&inst, "default", t0 + PIN_DELAY, false), ("weu".into(), 2));
        let hosts: Vec<String> = inst.all_relays().into_iter().map(|e| e.host).collect();
        assert_eq!(
            hosts,
            [
                "cwap-weu-1.servicebus.windows.net",
                "cwap-weu-2.servicebus.windows.net",
                "cwap-weu2-1.servicebus.windows.net",
                "cwap-weu2-2.servicebus.windows.net",
                "cwap-eus-1.servicebus.windows.net",
                "cwap-eus-2.servicebus.windows.net",
            ]
        );
    }
}
