//! The evidence log: every outbound connection attempt the agent makes, as a
//! typed fact (destination, port, route, when, and what happened), so that
//! findings are derived from what the connector saw, on every path alike
//! (service calls, tunnels, revocation downloads, `connector diagnose`),
//! never from one path's private memory.
//!
//! Sans I/O: `env::connect_observed` fills it. The classifier's I/O half
//! ([`crate::reach`]) reads it for what it remembers (where a destination
//! last worked, which destinations to probe) and reuses an outcome seen in
//! the last seconds instead of probing again; the health checks read the
//! round trips.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::allowlist::{self, Environment, Group};
use crate::net::{Account, ConnectFailure, Route};
use crate::time::Instant;

/// How many attempts the log keeps (the newest; older ones fall off).
pub const LOG_MAX: usize = 256;

/// How long before an account's first attempt on a port another account's
/// success there still tells about a rule by user.
pub const ACCOUNT_GAP: Duration = Duration::from_secs(600);

/// Round-trip samples kept per host.
const RTT_SAMPLES: usize = 8;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// TCP (through the proxy: the proxy's tunnel) is open. `rtt` is one
    /// round trip to the destination itself: the TCP handshake when
    /// direct, the proxy's onward leg when proxied.
    Connected { addr: IpAddr, rtt: Duration },
    /// It failed; `addr` is what the name resolved to, if it did.
    Failed { addr: Option<IpAddr>, failure: ConnectFailure },
}

/// One outbound connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: Instant,
    pub host: String,
    pub port: u16,
    pub route: Route,
    pub outcome: Outcome,
    /// The account it was made as.
    pub account: Account,
}

impl Attempt {
    pub fn new(host: &str, port: u16, route: Route, outcome: Outcome) -> Self {
        let account = Account::NetworkService;
        Attempt { at: Instant::now(), host: host.to_ascii_lowercase(), port, route, outcome, account }
    }

    /// The attempt, made as `account`.
    pub fn by(self, account: Account) -> Self {
        Attempt { account, ..self }
    }
}

/// The log, and what it keeps beyond the log's window: where each
/// destination last worked (to tell "the service moved to addresses the
/// IP allow-list lacks", NET-RULES, even weeks later) and recent round
/// trips per host.
#[derive(Debug, Default)]
pub struct Evidence {
    log: RefCell<VecDeque<Attempt>>,
    last_good: RefCell<BTreeMap<(String, u16), IpAddr>>,
    /// The last host that worked on a port, per account, and when: a
    /// port that never worked for the services while it did for the
    /// installer's account just before points at a firewall filtering by
    /// user (NET-USER).
    worked_as: RefCell<BTreeMap<(u16, Account), (String, Instant)>>,
    /// When each account first tried each port.
    first_tried: RefCell<BTreeMap<(u16, Account), Instant>>,
    rtts: RefCell<BTreeMap<String, VecDeque<Duration>>>,
    /// Destinations of other allow-list entries worth probing when a
    /// destination fails (the tenant's service names, the trust list, a
    /// CRL host, and the other cloud's): chosen from the spec's table.
    references: RefCell<Vec<(String, u16)>>,
    /// The relays the last bootstrap named (each the others' sibling under
    /// one allow-list entry); replaced at every bootstrap, so a relay the
    /// service stopped naming is not taken for a sibling.
    relays: RefCell<Vec<(String, u16)>>,
    /// The relays a bootstrap stopped naming when it named others (the
    /// service moved the tenant or its group): a new relay that fails
    /// where one of these worked points at an allow-list of relay names.
    moved_from: RefCell<Vec<(String, u16)>>,
    /// The cloud the connector is installed for.
    cloud: std::cell::Cell<Environment>,
}

impl Evidence {
    pub fn record(&self, attempt: Attempt) {
        if let Outcome::Connected { addr, rtt } = attempt.outcome {
            self.last_good.borrow_mut().insert((attempt.host.clone(), attempt.port), addr);
            let worked = (attempt.host.clone(), attempt.at);
            self.worked_as.borrow_mut().insert((attempt.port, attempt.account.clone()), worked);
            let mut rtts = self.rtts.borrow_mut();
            let samples = rtts.entry(attempt.host.clone()).or_default();
            if samples.len() == RTT_SAMPLES {
                samples.pop_front();
            }
            samples.push_back(rtt);
        }
        self.first_tried.borrow_mut().entry((attempt.port, attempt.account.clone())).or_insert(attempt.at);
        let mut log = self.log.borrow_mut();
        if log.len() == LOG_MAX {
            log.pop_front();
        }
        log.push_back(attempt);
    }

    /// The address `host:port` last worked at.
    pub fn last_good(&self, host: &str, port: u16) -> Option<IpAddr> {
        self.last_good.borrow().get(&(host.to_ascii_lowercase(), port)).copied()
    }

    /// When `port` never worked as `account` but did as another shortly
    /// before `account` first tried it (within [`ACCOUNT_GAP`], so that a
    /// port closed for everyone long after registration is not read as a
    /// rule by user): that account, and the host it reached last.
    pub fn worked_only_as_other(&self, port: u16, account: &Account) -> Option<(Account, String)> {
        let worked = self.worked_as.borrow();
        if worked.contains_key(&(port, account.clone())) {
            return None;
        }
        let first = *self.first_tried.borrow().get(&(port, account.clone()))?;
        worked
            .iter()
            .filter(|((p, a), (_, at))| {
                *p == port && a != account && first.saturating_duration_since(*at) <= ACCOUNT_GAP
            })
            .map(|((_, a), (h, _))| (a.clone(), h.clone()))
            .next()
    }

    /// Hosts that worked on `port` at some time, other than `except`.
    pub fn worked_on(&self, port: u16, except: &str) -> Vec<String> {
        let except = except.to_ascii_lowercase();
        self.last_good.borrow().keys().filter(|(h, p)| *p == port && *h != except).map(|(h, _)| h.clone()).collect()
    }

    /// The distance to the hosts of `group`: the least round trip among
    /// the recent samples of its hosts, once there are at least `min`
    /// samples (one sample carries the network's jitter; the minimum of
    /// several is the path's delay, as TCP's own min-RTT filter takes it).
    pub fn group_rtt(&self, group: Group, min: usize) -> Option<Duration> {
        let rtts = self.rtts.borrow();
        let samples: Vec<Duration> = rtts
            .iter()
            .filter(|(h, _)| allowlist::entry_for(h, group.port()).map(|(g, _)| g) == Some(group))
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        (samples.len() >= min).then(|| samples.into_iter().min()).flatten()
    }

    /// The destinations worth probing, and the cloud the connector is for.
    pub fn set_references(&self, cloud: Environment, hosts: Vec<(String, u16)>) {
        self.cloud.set(cloud);
        *self.references.borrow_mut() = hosts;
    }

    pub fn cloud(&self) -> Environment {
        self.cloud.get()
    }

    /// The relays the service names now.
    pub fn set_relays(&self, relays: Vec<(String, u16)>) {
        let mut current = self.relays.borrow_mut();
        let gone: Vec<(String, u16)> = current.iter().filter(|r| !relays.contains(r)).cloned().collect();
        if !gone.is_empty() {
            *self.moved_from.borrow_mut() = gone;
        }
        *current = relays;
    }

    /// When `host:port` is a relay the service named in place of others
    /// and that never worked itself, one of those that worked.
    pub fn replaced_relay(&self, host: &str, port: u16) -> Option<String> {
        let named = self.relays.borrow().iter().any(|(h, p)| h.eq_ignore_ascii_case(host) && *p == port);
        let last_good = self.last_good.borrow();
        if last_good.contains_key(&(host.to_ascii_lowercase(), port)) {
            return None;
        }
        let moved_from = self.moved_from.borrow();
        let worked = moved_from.iter().find(|r| last_good.contains_key(*r));
        worked.filter(|_| named).map(|(h, _)| h.clone())
    }

    /// Hosts to probe on `port` when `except` fails: the current relays,
    /// the references, then what worked before; each once.
    pub fn candidates(&self, port: u16, except: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let listed = self.relays.borrow().iter().chain(self.references.borrow().iter()).cloned().collect::<Vec<_>>();
        let known = listed.into_iter().filter(|(_, p)| *p == port).map(|(h, _)| h.to_ascii_lowercase());
        for h in known.chain(self.worked_on(port, except)) {
            if !h.eq_ignore_ascii_case(except) && !out.contains(&h) {
                out.push(h);
            }
        }
        out
    }

    /// What happened to the last attempt at `host:port` as `account`, if
    /// it was made in the last `within`: an answer the network gave seconds
    /// ago is evidence enough, and asking again would only repeat the wait.
    /// (Another account's answer is not: firewalls may filter by user.)
    pub fn recent(&self, host: &str, port: u16, account: &Account, within: Duration) -> Option<Outcome> {
        let host = host.to_ascii_lowercase();
        let log = self.log.borrow();
        let last = log.iter().rev().find(|a| a.host == host && a.port == port && a.account == *account)?;
        (last.at.elapsed() <= within).then(|| last.outcome.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(host: &str, ms: u64) -> Attempt {
        let addr = IpAddr::from([10, 0, 0, 1]);
        Attempt::new(host, 443, Route::Direct, Outcome::Connected { addr, rtt: Duration::from_millis(ms) })
    }

    #[test]
    fn group_distance_is_the_least_of_enough_samples() {
        let e = Evidence::default();
        e.record(ok("t.bootstrap.msappproxy.net", 70));
        e.record(ok("login.microsoftonline.com", 1));
        assert_eq!(e.group_rtt(Group::Service443, 2), None, "one sample of the group is not enough");
        e.record(ok("cwap-weu-1.servicebus.windows.net", 55));
        assert_eq!(e.group_rtt(Group::Service443, 2), Some(Duration::from_millis(55)));
    }

    #[test]
    fn names_the_relay_a_new_one_replaced_only_if_that_one_worked() {
        let e = Evidence::default();
        let relays = |hs: &[&str]| hs.iter().map(|h| (h.to_string(), 443)).collect::<Vec<_>>();
        e.set_relays(relays(&["cwap-weu-1.servicebus.windows.net", "cwap-weu-2.servicebus.windows.net"]));
        assert_eq!(e.replaced_relay("cwap-weu-1.servicebus.windows.net", 443), None, "nothing replaced yet");
        e.set_relays(relays(&["cwap-weu2-1.servicebus.windows.net"]));
        assert_eq!(e.replaced_relay("cwap-weu2-1.servicebus.windows.net", 443), None, "the old ones never worked");
        e.record(ok("cwap-weu-2.servicebus.windows.net", 3));
        let old = Some("cwap-weu-2.servicebus.windows.net".to_string());
        assert_eq!(e.replaced_relay("CWAP-weu2-1.servicebus.windows.net", 443), old);
        assert_eq!(e.replaced_relay("t.bootstrap.msappproxy.net", 443), None, "not a relay");
        e.set_relays(relays(&["cwap-weu2-1.servicebus.windows.net"]));
        assert_eq!(e.replaced_relay("cwap-weu2-1.servicebus.windows.net", 443), old, "the same list again");
        e.record(ok("cwap-weu2-1.servicebus.windows.net", 3));
        assert_eq!(e.replaced_relay("cwap-weu2-1.servicebus.windows.net", 443), None, "it worked itself since");
    }

    #[test]
    fn tells_a_port_that_worked_only_for_another_account() {
        let failure = Outcome::Failed { addr: None, failure: ConnectFailure::TimedOut };
        let failed =
            |at| Attempt { at, ..Attempt::new("t.bootstrap.msappproxy.net", 443, Route::Direct, failure.clone()) };
        let e = Evidence::default();
        let admin = Account::User("contoso\\alice".into());
        let registered = ok("login.microsoftonline.com", 3).by(admin.clone());
        let then = registered.at;
        e.record(registered);
        let ns = Account::NetworkService;
        assert_eq!(e.worked_only_as_other(443, &ns), None, "Network Service has not tried 443 yet");
        e.record(failed(then + Duration::from_secs(5)));
        assert_eq!(e.worked_only_as_other(443, &ns), Some((admin.clone(), "login.microsoftonline.com".into())));
        assert_eq!(e.worked_only_as_other(443, &admin), None, "it worked for this account");
        assert_eq!(e.worked_only_as_other(80, &ns), None, "nothing worked on 80");
        e.record(ok("t.bootstrap.msappproxy.net", 3));
        assert_eq!(e.worked_only_as_other(443, &ns), None, "it worked as Network Service too");
        // Long after registration, a port closed for everyone is not a rule by user.
        let late = Evidence::default();
        late.record(ok("login.microsoftonline.com", 3).by(admin.clone()));
        late.record(failed(then + ACCOUNT_GAP + Duration::from_secs(1)));
        assert_eq!(late.worked_only_as_other(443, &ns), None);
    }

    #[test]
    fn remembers_where_a_destination_last_worked_beyond_the_window() {
        let e = Evidence::default();
        e.record(ok("T.bootstrap.msappproxy.net", 5));
        for _ in 0..LOG_MAX {
            e.record(ok("other.msappproxy.net", 5));
        }
        let ns = Account::NetworkService;
        assert_eq!(e.recent("t.bootstrap.msappproxy.net", 443, &ns, Duration::from_secs(60)), None, "out of the log");
        assert!(e.recent("other.msappproxy.net", 443, &ns, Duration::from_secs(60)).is_some());
        let admin = Account::User("contoso\\alice".into());
        assert_eq!(e.recent("other.msappproxy.net", 443, &admin, Duration::from_secs(60)), None, "another account's");
        assert_eq!(e.last_good("t.bootstrap.msappproxy.net", 443), Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(e.worked_on(443, "other.msappproxy.net"), vec!["t.bootstrap.msappproxy.net".to_string()]);
    }
}
