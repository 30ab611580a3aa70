//! The network the connector meets in a simulation (NET-*): firewalls with
//! ordered rules, the world's DNS (names that fail, sinkholes, CDN
//! aliases), the cloud's public addresses that move every week, and an
//! optional inspection box in the path. [`SimNet`] puts them in front of
//! turmoil's network; it is the connector's [`Net`] in a simulation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::str::FromStr;

use connector::allowlist::{self, Environment, Group};
use connector::net::{Account, BoxStream, LocalBoxFuture, Net};
use serde::{Deserialize, Deserializer, Serialize};

/// What a firewall rule does with a matching connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let the connection through.
    Allow,
    /// Silently discard: the connect hangs until the caller's timeout.
    Drop,
    /// Refuse at once (TCP RST / ICMP unreachable).
    Reject,
}

/// A domain suffix as admins write it: `*.servicebus.windows.net`,
/// `.msappproxy.net`, or an exact name. Validated when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostSuffix(String);

impl HostSuffix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `host` is this name or under this suffix.
    pub fn matches(&self, host: &str) -> bool {
        suffix_matches(&self.0, host)
    }
}

impl FromStr for HostSuffix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("*.").or_else(|| lower.strip_prefix('.')).unwrap_or(&lower);
        if name.is_empty() {
            return Err(format!("domain suffix {s:?} is empty"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(format!("domain suffix {s:?} has an empty label"));
            }
            if label.len() > 63 {
                return Err(format!("domain suffix {s:?}: label {label:?} is longer than 63 characters"));
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
                return Err(format!(
                    "domain suffix {s:?}: {c:?} is not allowed (letters, digits, '-', '.', and a leading '*.')"
                ));
            }
        }
        Ok(HostSuffix(lower))
    }
}

impl schemars::JsonSchema for HostSuffix {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HostSuffix".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*(\\*\\.|\\.)?[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)*\\s*$",
            "description": "A domain suffix: \"*.servicebus.windows.net\" or \".servicebus.windows.net\" (every name under it), or a single name.",
        })
    }
}

impl<'de> Deserialize<'de> for HostSuffix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl From<&str> for HostSuffix {
    /// For names known to be valid (the spec's table); invalid text is kept
    /// as is and simply matches nothing unusual.
    fn from(s: &str) -> Self {
        s.parse().unwrap_or_else(|_| HostSuffix(s.to_ascii_lowercase()))
    }
}

fn suffix_matches(suffix: &str, host: &str) -> bool {
    let s = suffix.trim_start_matches('*').to_ascii_lowercase();
    let h = host.to_ascii_lowercase();
    h == s.trim_start_matches('.') || h.ends_with(&s) && s.starts_with('.')
}

/// An IPv4 range in CIDR notation (`20.38.16.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        let IpAddr::V4(a) = addr else { return false };
        let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
        u32::from(a) & mask == u32::from(self.net) & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s.trim().split_once('/').ok_or_else(|| format!("CIDR {s:?}: expected ADDRESS/PREFIX"))?;
        let net: Ipv4Addr = ip.parse().map_err(|_| format!("CIDR {s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("CIDR {s:?}: prefix {prefix:?} is not a number"))?;
        if prefix > 32 {
            return Err(format!("CIDR {s:?}: prefix {prefix} is larger than 32"));
        }
        let c = Cidr { net, prefix };
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
        if u32::from(net) & !mask != 0 {
            return Err(format!(
                "CIDR {s:?}: host bits are set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(u32::from(net) & mask)
            ));
        }
        Ok(c)
    }
}

impl schemars::JsonSchema for Cidr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}\\s*$",
            "description": "An IPv4 address range: \"20.38.16.0/22\".",
        })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The account a connection originates from. The connector's services run
/// as Network Service.
pub const NETWORK_SERVICE: &str = "network-service";

/// One ordered rule, written the way an admin writes it. Empty matchers
/// match everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What the rule does with a matching connection.
    pub action: Action,
    /// Destination port (any when absent).
    #[serde(default)]
    pub port: Option<u16>,
    /// Destination domain suffix (as seen in TLS SNI, HTTP Host or the
    /// CONNECT authority).
    #[serde(default)]
    pub host_suffix: Option<HostSuffix>,
    /// Destination address range.
    #[serde(default)]
    pub cidr: Option<Cidr>,
    /// Originating account (`network-service`, or a user name); on-host
    /// firewalls see it, perimeter ones usually do not.
    #[serde(default)]
    pub user: Option<String>,
    /// Who put the rule there: a timeline step removes only its own rules,
    /// never the world file's rule that reads the same.
    #[serde(skip)]
    pub owner: Owner,
}

/// Who put a firewall rule in place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Owner {
    /// The world as the scenario describes it (or the admin who set it up).
    #[default]
    World,
    /// A timeline event, which a later one may lift.
    Timeline,
}

impl Rule {
    /// A rule matching a port only.
    pub fn port(action: Action, port: u16) -> Rule {
        Rule { action, port: Some(port), host_suffix: None, cidr: None, user: None, owner: Owner::World }
    }

    /// A rule matching a domain suffix only (every port).
    pub fn host(action: Action, suffix: HostSuffix) -> Rule {
        Rule { action, port: None, host_suffix: Some(suffix), cidr: None, user: None, owner: Owner::World }
    }

    /// Whether the rule applies to `c` (every matcher given agrees).
    pub fn matches(&self, c: &Conn<'_>) -> bool {
        self.port.is_none_or(|p| p == c.port)
            && self.host_suffix.as_ref().is_none_or(|s| s.matches(c.host))
            && self.cidr.is_none_or(|r| c.addr.is_some_and(|a| r.contains(a)))
            && self.user.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(c.account))
    }
}

/// A connection as a firewall sees it.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    pub host: &'a str,
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub account: &'a str,
}

/// An ordered rule list; first match wins; no match = allow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    pub rules: Vec<Rule>,
}

impl Firewall {
    pub fn verdict(&self, c: &Conn<'_>) -> Action {
        self.rules.iter().find(|r| r.matches(c)).map(|r| r.action).unwrap_or(Action::Allow)
    }

    /// Allow rules for `groups` of the spec's allow-list, by name.
    pub fn allow_groups(cloud: Environment, groups: &[Group]) -> Vec<Rule> {
        groups
            .iter()
            .flat_map(|g| {
                g.entries_in(cloud).iter().map(|e| Rule {
                    action: Action::Allow,
                    port: Some(g.port()),
                    host_suffix: Some(HostSuffix::from(*e)),
                    cidr: None,
                    user: None,
                    owner: Owner::World,
                })
            })
            .collect()
    }
}

/// The world's DNS behaviour for some names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Names that do not resolve (NXDOMAIN).
    #[serde(default)]
    pub fail: Vec<HostSuffix>,
    /// Names a DNS filter answers with 0.0.0.0.
    #[serde(default)]
    pub sinkhole: Vec<HostSuffix>,
}

/// A service tag: the published address ranges of one part of the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServiceTag {
    AppProxy,
    ServiceBus,
    AzureActiveDirectory,
}

impl ServiceTag {
    fn of(host: &str) -> Option<ServiceTag> {
        let h = host.to_ascii_lowercase();
        if h.ends_with(".servicebus.windows.net") || h.ends_with(".servicebus.usgovcloudapi.net") {
            Some(ServiceTag::ServiceBus)
        } else if h.ends_with(".msappproxy.net") || h.ends_with(".msappproxy.us") {
            Some(ServiceTag::AppProxy)
        } else if allowlist::entry_for(&h, 443).is_some_and(|(g, _)| g == Group::Registration443) {
            Some(ServiceTag::AzureActiveDirectory)
        } else {
            None
        }
    }

    /// The /24 this tag is published at in `week`.
    pub fn range(self, week: u32) -> Cidr {
        let w = (week % 200) as u8;
        let net = match self {
            ServiceTag::ServiceBus => Ipv4Addr::new(20, 38, 16u8.wrapping_add(w), 0),
            ServiceTag::AppProxy => Ipv4Addr::new(40, 126, 32u8.wrapping_add(w), 0),
            ServiceTag::AzureActiveDirectory => Ipv4Addr::new(20, 190, 128u8.wrapping_add(w), 0),
        };
        Cidr { net, prefix: 24 }
    }
}

/// Public addresses of the world's names. The cloud's move to a new /24
/// every week (published in advance as service-tag ranges); CDN names and
/// private hosts keep theirs.
#[derive(Debug, Clone, Default)]
pub struct AddressPlan {
    pub week: u32,
    /// Every name the world knows, with its index (stable address part).
    names: BTreeMap<String, u8>,
}

impl AddressPlan {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        let mut sorted: Vec<String> = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        sorted.sort();
        sorted.dedup();
        let names = sorted.into_iter().enumerate().map(|(i, n)| (n, (i % 240) as u8 + 10)).collect();
        AddressPlan { week: 1, names }
    }

    /// The address `host` resolves to this week.
    pub fn address(&self, host: &str) -> Option<IpAddr> {
        let h = host.to_ascii_lowercase();
        let i = *self.names.get(&h)?;
        // Port-80 names (CRL, OCSP, trust list) sit behind CDNs with
        // addresses of their own.
        if allowlist::entry_for(&h, 80).is_some() {
            return Some(IpAddr::V4(Ipv4Addr::new(192, 229, 211, i)));
        }
        Some(IpAddr::V4(match ServiceTag::of(&h) {
            Some(tag) => {
                let o = tag.range(self.week).net.octets();
                Ipv4Addr::new(o[0], o[1], o[2], i)
            }
            None => Ipv4Addr::new(10, 0, 0, i),
        }))
    }

    /// Allow rules for the published ranges of `week` (what an admin copies
    /// into an IP-based allow-list), on 443.
    pub fn range_rules(week: u32) -> Vec<Rule> {
        [ServiceTag::AppProxy, ServiceTag::ServiceBus, ServiceTag::AzureActiveDirectory]
            .iter()
            .map(|t| Rule {
                action: Action::Allow,
                port: Some(443),
                host_suffix: None,
                cidr: Some(t.range(week)),
                user: None,
                owner: Owner::World,
            })
            .collect()
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

/// turmoil's network as one host sees it: its on-host firewall, then the
/// perimeter firewall (both see the name asked for, the address, the port
/// and the originating account), the world's DNS, CDN aliases (the six
/// CRL/OCSP names share one server), and an optional inspection box.
/// Shared parts are `Rc<RefCell<_>>` so timeline events can change them.
#[derive(Debug, Clone)]
pub struct SimNet {
    pub host_firewall: Rc<RefCell<Firewall>>,
    pub firewall: Rc<RefCell<Firewall>>,
    pub plan: Rc<RefCell<AddressPlan>>,
    pub dns: Rc<RefCell<Dns>>,
    /// This host's own resolver's faults (a hosts file, a local DNS
    /// filter, a resolver of its own), asked before the world's DNS.
    pub host_dns: Rc<RefCell<Dns>>,
    pub aliases: Rc<BTreeMap<String, String>>,
    /// Names whose server is down while the host serving them (a CDN's,
    /// shared by several names) is up: connecting to them is refused.
    pub down: Rc<RefCell<std::collections::BTreeSet<String>>>,
    pub interception: Option<Rc<Interception>>,
    /// The account connections originate from.
    pub account: String,
}

impl Default for SimNet {
    fn default() -> Self {
        SimNet {
            host_firewall: Rc::default(),
            firewall: Rc::default(),
            plan: Rc::default(),
            dns: Rc::default(),
            host_dns: Rc::default(),
            aliases: Rc::default(),
            down: Rc::default(),
            interception: None,
            account: NETWORK_SERVICE.to_string(),
        }
    }
}

impl Net for SimNet {
    fn account(&self) -> Account {
        Account::from_rule_name(&self.account)
    }

    fn as_account(&self, account: &Account) -> Option<Rc<dyn Net>> {
        Some(Rc::new(SimNet { account: account.rule_name().to_string(), ..self.clone() }))
    }

    fn resolve<'a>(&'a self, host: &'a str) -> LocalBoxFuture<'a, io::Result<IpAddr>> {
        Box::pin(async move {
            for dns in [&self.host_dns, &self.dns] {
                let dns = dns.borrow();
                if dns.fail.iter().any(|s| s.matches(host)) {
                    return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host}: NXDOMAIN")));
                }
                if dns.sinkhole.iter().any(|s| s.matches(host)) {
                    return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                }
            }
            self.plan
                .borrow()
                .address(host)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: NXDOMAIN")))
        })
    }

    fn connect_addr<'a>(&'a self, host: &'a str, addr: IpAddr, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let conn = Conn { host, addr: Some(addr), port, account: &self.account };
            let verdict = match self.host_firewall.borrow().verdict(&conn) {
                Action::Allow => self.firewall.borrow().verdict(&conn),
                other => other,
            };
            match verdict {
                Action::Allow if !addr.is_unspecified() => {}
                // A sinkhole address leads nowhere: like a drop.
                Action::Allow | Action::Drop => std::future::pending::<()>().await,
                Action::Reject => return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "rejected by firewall")),
            }
            let host = host.to_ascii_lowercase();
            if self.down.borrow().contains(&host) {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("{host}: server down")));
            }
            let target = match &self.interception {
                Some(i) if i.applies(&host, port) => i.inspector.clone(),
                _ => self.aliases.get(&host).cloned().unwrap_or(host),
            };
            let s = turmoil::net::TcpStream::connect((target.as_str(), port)).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(host: &str, port: u16) -> Conn<'_> {
        Conn { host, addr: None, port, account: NETWORK_SERVICE }
    }

    #[test]
    fn first_matching_rule_wins() {
        let fw = Firewall {
            rules: vec![
                Rule { host_suffix: Some("*.msappproxy.net".parse().unwrap()), ..Rule::port(Action::Allow, 443) },
                Rule::port(Action::Drop, 443),
            ],
        };
        assert_eq!(fw.verdict(&conn("x.bootstrap.msappproxy.net", 443)), Action::Allow);
        assert_eq!(fw.verdict(&conn("a.servicebus.windows.net", 443)), Action::Drop);
        assert_eq!(fw.verdict(&conn("a.servicebus.windows.net", 80)), Action::Allow);
        assert_eq!(fw.verdict(&conn("msappproxy.net", 443)), Action::Allow);
        assert_eq!(fw.verdict(&conn("evilmsappproxy.net", 443)), Action::Drop);
    }

    #[test]
    fn rules_match_ranges_and_accounts() {
        let r = Rule { cidr: Some("20.38.17.0/24".parse().unwrap()), ..Rule::port(Action::Allow, 443) };
        let mut c = conn("a", 443);
        c.addr = Some("20.38.17.9".parse().unwrap());
        assert!(r.matches(&c));
        c.addr = Some("20.38.18.9".parse().unwrap());
        assert!(!r.matches(&c));
        let u = Rule { user: Some("alice".into()), ..Rule::port(Action::Allow, 443) };
        assert!(!u.matches(&conn("a", 443)));
    }

    #[test]
    fn bad_suffixes_and_cidrs_say_what_is_wrong() {
        assert!("*.ok-name.example".parse::<HostSuffix>().is_ok());
        assert!("bad name.com".parse::<HostSuffix>().unwrap_err().contains("not allowed"));
        assert!("a..b".parse::<HostSuffix>().unwrap_err().contains("empty label"));
        assert!("10.0.0.1/24".parse::<Cidr>().unwrap_err().contains("did you mean 10.0.0.0/24"));
        assert!("10.0.0.0/33".parse::<Cidr>().unwrap_err().contains("larger than 32"));
        assert!("10.0.0/8".parse::<Cidr>().unwrap_err().contains("not an IPv4"));
    }

    #[test]
    fn the_cloud_moves_weekly_and_published_ranges_follow() {
        let mut plan = AddressPlan::new(["cwap-weu-1.servicebus.windows.net".to_string(), "app1.corp.local".into()]);
        let before = plan.address("cwap-weu-1.servicebus.windows.net").unwrap();
        assert!(ServiceTag::ServiceBus.range(1).contains(before));
        plan.week = 2;
        let after = plan.address("cwap-weu-1.servicebus.windows.net").unwrap();
        assert_ne!(before, after);
        assert!(ServiceTag::ServiceBus.range(2).contains(after));
        assert_eq!(plan.address("app1.corp.local"), Some("10.0.0.10".parse().unwrap()));
        assert_eq!(plan.address("nowhere.example"), None);
    }
}
