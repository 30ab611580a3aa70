//! The worlds `connsim bench` measures, generated as scenario files so any
//! of them can be written out and replayed: a long single-connector run and
//! scaled worlds of many connectors in many groups.

use std::fmt::Write;
use std::path::Path;

use crate::scenario::Scenario;

/// One connector for `days` simulated days: bootstraps every 10 minutes,
/// keepalives, trust-renewal checks (certificates of [`CERT_LIFETIME_DAYS`],
/// renewed from [`RENEWAL_DAY`] on), an update from 1.5.3437.0, and
/// a user request every 6 hours.
pub fn long_run(days: u32) -> String {
    let requests = days * 4;
    // A renewal is expected only of a world that lasts past the renewal
    // day (a shorter one, as profiles run, has none to show).
    let renewals = if days > RENEWAL_DAY { ", certificate_renewed = 1" } else { "" };
    format!(
        r#"name = "bench-{days}-days"
covers = ["NET-SVC"]
duration = "{days}d"

[world]
admin = {{ user = "admin@contoso.com", password = "correct-horse" }}
pki = {{ client_cert_lifetime = "{CERT_LIFETIME_DAYS}d" }}

[[world.connectors]]
name = "connector-1"
version = "1.5.3437.0"

[[world.backends]]
name = "app1.corp.local"

[[world.apps]]
name = "app1"
backend = "app1.corp.local"

[[load]]
app = "app1"
requests = {requests}
start = "1h"
interval = "6h"

[expect]
outcome = "serving"
requests_ok = {requests}
events_min = {{ upgraded = 1{renewals} }}
"#
    )
}

/// How long `long_run`'s connector certificates are valid.
const CERT_LIFETIME_DAYS: u32 = 20;

/// The day `long_run`'s certificates are due for renewal: past the
/// connector's default fraction of their lifetime (half), seen at the next
/// of its 6-hourly checks, so by day 10¼ of a world that lasts longer.
const RENEWAL_DAY: u32 = (CERT_LIFETIME_DAYS as f64 * connector::agent::RENEW_AFTER_FRACTION) as u32;

/// `connectors` connectors spread over `groups` groups (one app and one
/// backend per group), one simulated hour, each app called every 5 minutes
/// from minute 5.
pub fn scaled(connectors: usize, groups: usize) -> String {
    let groups = groups.clamp(1, connectors.max(1));
    let mut t = format!(
        r#"name = "bench-{connectors}-connectors"
covers = ["OPS-GROUPS"]
duration = "1h"

[world]
relays = 1
admin = {{ user = "admin@contoso.com", password = "correct-horse" }}

"#
    );
    for i in 0..connectors {
        let _ = writeln!(t, "[[world.connectors]]\nname = \"c{i}\"\ngroup = \"g{}\"\n", i % groups);
    }
    for g in 0..groups {
        let _ = write!(
            t,
            r#"[[world.backends]]
name = "b{g}.corp.local"

[[world.apps]]
name = "app{g}"
backend = "b{g}.corp.local"
group = "g{g}"

[[load]]
app = "app{g}"
requests = 11
start = "5m"
interval = "5m"

"#
        );
    }
    let _ = writeln!(t, "[expect]\noutcome = \"serving\"\nrequests_ok = {}", groups * 11);
    t
}

/// The same world with nothing to do: no users, no timeline, one connector
/// whose every connection is refused. What the world itself costs.
pub fn quiet(s: &Scenario) -> Scenario {
    let mut q = s.clone();
    q.load.clear();
    q.timeline.clear();
    q.world.connectors.truncate(1);
    q.world.firewall = vec![relay_sim::world::Rule {
        port: None,
        ..relay_sim::world::Rule::port(relay_sim::world::Action::Reject, 0)
    }];
    q
}

/// Parses a generated world (a bug here is ours, so the message says so).
pub fn parse(text: &str, name: &str) -> Result<Scenario, String> {
    Scenario::parse(text, Path::new(name)).map_err(|e| format!("generated bench world {name} is invalid: {e}"))
}

/// The median of a bench's runs (the upper middle for an even count),
/// `None` for no runs: taken between medians, ratios shrug off one run
/// that a busy VM slowed.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// This process's peak resident memory, in KiB (Linux; `None` elsewhere).
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("self", "VmHWM")
}

/// A memory field (`VmRSS`, `VmHWM`, ...) of process `pid` (or `self`),
/// in KiB, from `/proc/PID/status` (Linux; `None` elsewhere or once the
/// process is gone).
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_worlds_parse() {
        parse(&long_run(30), "long").unwrap();
        let s = parse(&scaled(100, 50), "scale").unwrap();
        assert_eq!(s.world.connectors.len(), 100);
        assert_eq!(s.world.apps.len(), 50);
    }

    #[test]
    fn only_a_world_past_the_renewal_day_expects_a_renewal() {
        let renewals = |days| {
            let world = parse(&long_run(days), "long").expect("a generated world parses, whatever its length");
            world.expect.events_min.get("certificate_renewed").copied()
        };
        assert_eq!(renewals(3), None, "a profile's short world has none to show");
        assert_eq!(renewals(RENEWAL_DAY), None);
        assert_eq!(renewals(RENEWAL_DAY + 1), Some(1));
        assert_eq!(renewals(30), Some(1));
    }

    #[test]
    fn the_median_is_the_middle_run() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(3.0));
        assert_eq!(median(vec![5.0]), Some(5.0));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn memory_fields_are_read_by_exact_name() {
        if cfg!(target_os = "linux") {
            // Each field on its own: the kernel's counters are per thread and
            // synced lazily, so a peak read after the resident size can be
            // below it while other test threads allocate.
            assert!(status_kib("self", "VmRSS").unwrap() > 0);
            assert!(peak_rss_kib().unwrap() > 0);
            assert_eq!(status_kib("self", "VmRS"), None, "a prefix of a name is not the name");
            assert_eq!(status_kib(&u32::MAX.to_string(), "VmRSS"), None);
        }
    }
}
