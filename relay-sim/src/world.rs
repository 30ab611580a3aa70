//! The network the connector meets in a simulation: a [`SimNet`] over
//! turmoil with a firewall in front of it, and a [`SimClock`] over the
//! simulated clock. Firewalls live here, in the world, never in the
//! connector.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use connector::env::{BoxStream, Clock, LocalBoxFuture, Net};
use serde::{Deserialize, Serialize};

/// What a firewall rule does with a matching connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    /// Silently discard: the connect hangs until the caller's timeout.
    Drop,
    /// Refuse at once (TCP RST / ICMP unreachable).
    Reject,
}

/// One ordered rule. Empty matchers match everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default)]
    pub port: Option<u16>,
    /// Domain suffix such as `.servicebus.windows.net` or an exact name.
    #[serde(default)]
    pub host_suffix: Option<String>,
}

impl Rule {
    fn matches(&self, host: &str, port: u16) -> bool {
        let port_ok = self.port.is_none_or(|p| p == port);
        let host_ok = self.host_suffix.as_deref().is_none_or(|s| suffix_matches(s, host));
        port_ok && host_ok
    }
}

/// An ordered rule list; first match wins; no match = allow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    pub rules: Vec<Rule>,
}

impl Firewall {
    pub fn verdict(&self, host: &str, port: u16) -> Action {
        self.rules.iter().find(|r| r.matches(host, port)).map(|r| r.action).unwrap_or(Action::Allow)
    }
}

/// Where a TLS inspection box sits: outbound connections to these domain
/// suffixes on port 443 reach it instead of their destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interception {
    /// The simulation host of the inspection box.
    pub inspector: String,
    /// Domain suffixes it intercepts (`*.servicebus.windows.net`).
    pub suffixes: Vec<String>,
}

impl Interception {
    fn applies(&self, host: &str, port: u16) -> bool {
        port == 443 && self.suffixes.iter().any(|s| suffix_matches(s, host))
    }
}

fn suffix_matches(suffix: &str, host: &str) -> bool {
    let s = suffix.trim_start_matches('*').to_ascii_lowercase();
    let h = host.to_ascii_lowercase();
    h == s.trim_start_matches('.') || h.ends_with(&s)
}

/// turmoil's network behind a firewall, with the world's DNS: names served
/// by another simulation host (the six CRL/OCSP names share one server, as
/// behind a CDN), and an optional inspection box in the path. The firewall
/// is shared so a timeline event can change it while the simulation runs;
/// it sees the name the connector asked for.
#[derive(Debug, Clone, Default)]
pub struct SimNet {
    pub firewall: Rc<RefCell<Firewall>>,
    pub aliases: Rc<BTreeMap<String, String>>,
    pub interception: Option<Rc<Interception>>,
}

impl Net for SimNet {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let verdict = self.firewall.borrow().verdict(host, port);
            match verdict {
                Action::Allow => {}
                Action::Drop => std::future::pending::<()>().await,
                Action::Reject => return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "rejected by firewall")),
            }
            let host = host.to_ascii_lowercase();
            let target = match &self.interception {
                Some(i) if i.applies(&host, port) => i.inspector.clone(),
                _ => self.aliases.get(&host).cloned().unwrap_or(host),
            };
            // Unknown names fail with NotFound, like a failed DNS lookup.
            let s = turmoil::net::TcpStream::connect((target.as_str(), port)).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// Simulated wall clock: a fixed epoch plus simulated elapsed time, plus a
/// per-host skew. Outside any host (the runner applying a timeline event)
/// turmoil has no current clock; `outside_ms`, which the runner keeps at
/// the simulation's elapsed time, stands in.
#[derive(Debug, Clone)]
pub struct SimClock {
    pub epoch: SystemTime,
    /// Seconds this host's clock is ahead (negative: behind).
    pub skew_s: i64,
    pub outside_ms: Arc<AtomicU64>,
}

impl SimClock {
    pub fn new(epoch: SystemTime, skew_s: i64, outside_ms: Arc<AtomicU64>) -> Self {
        SimClock { epoch, skew_s, outside_ms }
    }
}

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        let elapsed = turmoil::sim_elapsed()
            .unwrap_or_else(|| Duration::from_millis(self.outside_ms.load(std::sync::atomic::Ordering::Relaxed)));
        let t = self.epoch + elapsed;
        if self.skew_s >= 0 {
            t + Duration::from_secs(self.skew_s.unsigned_abs())
        } else {
            t - Duration::from_secs(self.skew_s.unsigned_abs())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_wins() {
        let fw = Firewall {
            rules: vec![
                Rule { action: Action::Allow, port: Some(443), host_suffix: Some("*.msappproxy.net".into()) },
                Rule { action: Action::Drop, port: Some(443), host_suffix: None },
            ],
        };
        assert_eq!(fw.verdict("x.bootstrap.msappproxy.net", 443), Action::Allow);
        assert_eq!(fw.verdict("a.servicebus.windows.net", 443), Action::Drop);
        assert_eq!(fw.verdict("a.servicebus.windows.net", 80), Action::Allow);
        assert_eq!(fw.verdict("msappproxy.net", 443), Action::Allow);
        assert_eq!(fw.verdict("evilmsappproxy.net", 443), Action::Drop);
    }
}
