//! The network the connector meets in a simulation: a [`SimNet`] over
//! turmoil with a firewall in front of it, and a [`SimClock`] over the
//! simulated clock. Firewalls live here, in the world, never in the
//! connector.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
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
        let host_ok = self.host_suffix.as_deref().is_none_or(|s| {
            let s = s.trim_start_matches('*');
            let h = host.to_ascii_lowercase();
            let s = s.to_ascii_lowercase();
            h == s.trim_start_matches('.') || h.ends_with(&s)
        });
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

/// turmoil's network behind a firewall. The firewall is shared so a
/// timeline event can change it while the simulation runs.
#[derive(Debug, Clone)]
pub struct SimNet {
    pub firewall: Rc<RefCell<Firewall>>,
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
            // Unknown names fail with NotFound, like a failed DNS lookup.
            let host = host.to_ascii_lowercase();
            let s = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// Simulated wall clock: a fixed epoch plus simulated elapsed time, plus a
/// per-host skew.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    pub epoch: SystemTime,
    /// Seconds this host's clock is ahead (negative: behind).
    pub skew_s: i64,
}

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        let t = self.epoch + turmoil::sim_elapsed().unwrap_or(Duration::ZERO);
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
