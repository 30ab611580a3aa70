//! The one rule set from connection evidence to a finding. Sans I/O: it
//! takes the failed attempt, what was learned about the destination before,
//! and the probes made *now* to other destinations, and names the cause.
//! Every path that connects (service calls, tunnels, CRL/OCSP downloads,
//! the trust list, renewal, `connector diagnose`) explains a failed connect
//! here, so the same network fact gives the same finding everywhere.
//!
//! The rules, in order:
//! 1. the name did not resolve, or resolved to a sinkhole: DNS (NET-DNS);
//! 2. the proxy refused or demanded authentication, or does not answer
//!    itself (NET-PROXY);
//! 3. it worked before at another address, this one fails and the port
//!    works elsewhere: the service moved out of an IP allow-list (NET-RULES);
//! 4. another host under the *same* allow-list entry answers now: the
//!    entry is fine, this host is unavailable (SVC.host-unavailable);
//! 5. a host under *another* entry on the same port answers now: the
//!    allow-list misses this entry (NET-SVC, NET-REG, NET-CRL);
//! 6. nothing of the connector's cloud answers on the port but a host of
//!    the other cloud does: the network is the other cloud's (REG-GOV);
//! 7. destinations of at least two allow-list groups on the port fail the
//!    same way now: the port is blocked (NET-443, NET-80);
//! 8. otherwise the evidence cannot tell the port from the entry, and the
//!    finding names the entry with what was seen.

use std::net::IpAddr;

use crate::allowlist::{self, Environment, Group};
use crate::code::{self, Code, EventId};
use crate::diag::Diagnostic;
use crate::net::{is_sinkhole, Account, ConnectFailure, Onward, ProxyError};

/// The attempt that failed, and what is known about its destination.
#[derive(Debug, Clone)]
pub struct Failed<'a> {
    pub host: &'a str,
    pub port: u16,
    /// What the name resolved to, if it did.
    pub addr: Option<IpAddr>,
    pub failure: &'a ConnectFailure,
    /// Where it last worked, if it ever did.
    pub last_good: Option<IpAddr>,
    /// The cloud the connector is installed for.
    pub cloud: Environment,
    /// The outbound proxy the attempt went through (then `addr` is the
    /// proxy's, and the proxy resolved and dialled the destination).
    pub via: Option<&'a str>,
    /// The account the attempt was made as.
    pub account: &'a Account,
    /// When the port never worked as `account` but did as another: that
    /// account and a host it reached.
    pub other_account: Option<(Account, String)>,
    /// A relay that worked and that the service stopped naming when it
    /// named this one (a tenant moved to another instance).
    pub replaced: Option<String>,
}

/// A connection tried now to another destination, to locate the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub host: String,
    pub port: u16,
    /// `None` when it connected.
    pub failure: Option<ConnectFailure>,
    /// It failed at the very address where it worked before: whatever
    /// blocks it does not depend on the service having moved.
    pub failed_where_it_worked: bool,
}

impl Probe {
    fn entry(&self) -> Option<(Group, &'static str)> {
        allowlist::entry_for(&self.host, self.port)
    }
}

/// "entry on TCP port (requirement, group)", or the bare destination.
pub fn entry_text(host: &str, port: u16) -> String {
    match allowlist::entry_for(host, port) {
        Some((g, e)) => format!("{e} on TCP {port} ({}, group {g})", g.requirement()),
        None => format!("{host} on TCP {port}"),
    }
}

/// What a probe should find out, in the order to try: one other host under
/// the same entry (is it this host, or the entry?), then one host of every
/// other entry on the port, other groups first (is it the entry, or the
/// port?). `candidates` are hosts the connector knows on `port`: those that
/// worked before and the references of its cloud's allow-list.
pub fn probe_plan(host: &str, port: u16, cloud: Environment, candidates: &[String]) -> Vec<String> {
    let own = allowlist::entry_for(host, port);
    let mut plan: Vec<String> = Vec::new();
    let mut entries: Vec<Option<&'static str>> = Vec::new();
    let fresh = |c: &&String| !c.eq_ignore_ascii_case(host);
    let other_cloud = |c: &String| allowlist::cloud_of(c, port) == Some(cloud.other());
    if let Some((_, own_entry)) = own {
        if let Some(sibling) = candidates
            .iter()
            .filter(fresh)
            .filter(|c| !other_cloud(c))
            .find(|c| allowlist::entry_for(c, port).map(|(_, e)| e) == Some(own_entry))
        {
            plan.push(sibling.clone());
        }
        entries.push(Some(own_entry));
    }
    let own_group = own.map(|(g, _)| g);
    let mut others: Vec<(bool, &String)> = Vec::new();
    for c in candidates.iter().filter(fresh).filter(|c| !other_cloud(c)) {
        let Some((group, entry)) = allowlist::entry_for(c, port) else { continue };
        if entries.contains(&Some(entry)) {
            continue;
        }
        entries.push(Some(entry));
        others.push((Some(group) == own_group, c));
    }
    others.sort_by_key(|(same_group, _)| *same_group);
    plan.extend(others.into_iter().map(|(_, c)| c.clone()));
    // Last, one host of the other cloud: asked only when nothing of this
    // cloud answered.
    plan.extend(candidates.iter().filter(fresh).find(|c| other_cloud(c)).cloned());
    plan
}

/// Whether probes can tell anything about `failed`: not for a name that
/// does not resolve or resolves to a sinkhole, nor for the proxy's own
/// refusal; a proxy's report that it could not connect onward is probed
/// like a direct failure.
pub fn needs_probes(failed: &Failed<'_>) -> bool {
    !matches!(failed.failure.onward(), ConnectFailure::Unresolved | ConnectFailure::Proxy(_))
        && !failed.addr.is_some_and(is_sinkhole)
}

/// Whether probing can stop: a host answered, so the rules have what they
/// need (rules 3 to 6).
pub fn probes_settle(probes: &[Probe]) -> bool {
    probes.iter().any(|p| p.failure.is_none())
}

/// What the evidence says about a failed connect: the cause, with the
/// facts that show it. Each path phrases its finding from this ([`diagnostic`]
/// is the general wording; revocation downloads say it of their hosts), so
/// the cause is decided once, here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The name did not resolve.
    Unresolved,
    /// The name resolved to a sinkhole address.
    Sinkhole(IpAddr),
    /// The explicit proxy refused the tunnel, demanded authentication, or
    /// does not answer itself.
    Proxy(ProxyError),
    /// It worked at `before`; now it resolves to `now`, which fails.
    StaleRanges { now: IpAddr, before: IpAddr },
    /// `sibling`, under the same allow-list entry, answers now.
    HostUnavailable { sibling: String },
    /// `works`, under another entry on the same port, answers now.
    EntryMissing { group: Group, works: String },
    /// Destinations of other groups on the port (`others`) fail the same way.
    PortBlocked { others: Vec<String> },
    /// As `PortBlocked`, but the port never worked for this account while
    /// `account` reached `works` on it from this host: a firewall filters
    /// by originating user (NET-USER).
    AccountBlocked { others: Vec<String>, account: Account, works: String },
    /// Nothing of the connector's cloud answers on the port, but `works`,
    /// a host of the other cloud, does: the network is set up for the other
    /// cloud (or the connector was installed for the wrong one).
    OtherCloud { works: String },
    /// The probes failed in other ways, or there was nothing to probe, or
    /// the destination is under no allow-list entry (then `group` is none).
    Unclear { group: Option<Group>, seen: String },
}

impl Verdict {
    /// Whether the verdict rests on another destination answering now.
    pub fn another_answered(&self) -> bool {
        matches!(self, Verdict::HostUnavailable { .. } | Verdict::EntryMissing { .. } | Verdict::OtherCloud { .. })
    }
}

/// The cause of `failed`, given the probes made now (the rules above).
pub fn verdict(failed: &Failed<'_>, probes: &[Probe]) -> Verdict {
    match failed.failure.onward() {
        ConnectFailure::Unresolved => return Verdict::Unresolved,
        ConnectFailure::Proxy(p) => {
            return match *p {
                ProxyError::Onward { onward: Onward::Sinkhole(a), .. } => Verdict::Sinkhole(a),
                p => Verdict::Proxy(p),
            }
        }
        _ => {}
    }
    if let Some(a) = failed.addr.filter(|a| is_sinkhole(*a)) {
        return Verdict::Sinkhole(a);
    }
    // Through a proxy, the probes start with the proxy itself.
    let is_proxy = |p: &Probe| failed.via.is_some_and(|v| v.eq_ignore_ascii_case(&format!("{}:{}", p.host, p.port)));
    if let Some(f) = probes.iter().find(|p| is_proxy(p)).and_then(|p| p.failure.as_ref()) {
        let proxy = failed.via.unwrap_or_default().to_string();
        return Verdict::Proxy(ProxyError::Down { proxy, what: f.to_string() });
    }
    let probes: Vec<Probe> = probes.iter().filter(|p| !is_proxy(p)).cloned().collect();
    let probes = probes.as_slice();
    let own = allowlist::entry_for(failed.host, failed.port);
    let other_cloud = |p: &Probe| allowlist::cloud_of(&p.host, p.port) == Some(failed.cloud.other());
    let worked: Vec<&Probe> = probes.iter().filter(|p| p.failure.is_none() && !other_cloud(p)).collect();
    // A new address that fails, while nothing fails at an address where it
    // worked before: the IP allow-list lags the service's ranges. (If
    // something fails where it worked, the port or a rule blocks old
    // addresses too, and a name that moved within its pool says nothing.)
    let blocked_in_place = probes.iter().any(|p| p.failure.is_some() && p.failed_where_it_worked);
    // (Through a proxy both addresses are the proxy's: nothing to compare.)
    if let (Some(now), Some(before), false, None) = (failed.addr, failed.last_good, blocked_in_place, failed.via) {
        if now != before {
            return Verdict::StaleRanges { now, before };
        }
    }
    if let (true, Some(other)) = (worked.is_empty(), probes.iter().find(|p| p.failure.is_none() && other_cloud(p))) {
        return Verdict::OtherCloud { works: other.host.clone() };
    }
    let same_entry = |p: &&&Probe| own.is_some() && p.entry().map(|(_, e)| e) == own.map(|(_, e)| e);
    if let Some(sibling) = worked.iter().find(same_entry) {
        return Verdict::HostUnavailable { sibling: sibling.host.clone() };
    }
    match (worked.first(), own) {
        (Some(other), Some((group, _))) => Verdict::EntryMissing { group, works: other.host.clone() },
        (None, Some(_)) if port_blocked(failed, probes) => {
            let others = probes.iter().map(|p| p.host.clone()).collect();
            match failed.other_account.clone() {
                Some((account, works)) => Verdict::AccountBlocked { others, account, works },
                None => Verdict::PortBlocked { others },
            }
        }
        _ => {
            let seen = probes
                .iter()
                .map(|p| match &p.failure {
                    Some(f) => format!("{}:{} ({})", p.host, p.port, seen_text(f)),
                    None => format!("{}:{} (works)", p.host, p.port),
                })
                .collect::<Vec<_>>();
            let seen = if seen.is_empty() { "none to compare with".into() } else { seen.join(", ") };
            Verdict::Unclear { group: own.map(|(g, _)| g), seen }
        }
    }
}

/// The general wording of `verdict` for `failed`.
pub fn diagnostic(failed: &Failed<'_>, verdict: &Verdict) -> Diagnostic {
    let (host, port) = (failed.host, failed.port);
    let failure = seen_text(failed.failure);
    let at = match (failed.via, failed.addr) {
        (Some(proxy), _) => format!(" through proxy {proxy}"),
        (None, Some(a)) => format!(" ({a})"),
        (None, None) => String::new(),
    };
    let before = match (failed.via, failed.last_good) {
        (Some(_), Some(_)) => "; it worked through the proxy before, so a rule on the proxy or beyond it changed or the service's hosts are down".to_string(),
        (None, Some(a)) => format!("; it worked at this address ({a}) before, so a firewall or proxy rule changed or the service's hosts there are down"),
        (_, None) => String::new(),
    };
    let before = match &failed.replaced {
        Some(old) => format!(
            "{before}; the service named this relay in place of {old}, which worked (the tenant or its group moved): an allow-list that names relays one by one misses the new ones"
        ),
        None => before,
    };
    let entry = entry_text(host, port);
    match verdict {
        Verdict::Unresolved | Verdict::Sinkhole(_) => dns_diagnostic(failed, verdict, &entry),
        Verdict::Proxy(p) => proxy_diagnostic(host, port, p, &entry),
        Verdict::StaleRanges { now, before } => Diagnostic::new(code::NET_RULES_STALE_RANGES, Some(EventId::Networking),
            format!(
                "cannot reach {host}:{port} at {now} ({failure}); it worked at {before} before: the service moved to addresses outside the allowed ranges"
            ),
            "the service's IP ranges change every week: allow by domain suffix where possible, else update the allow-list to this week's published ranges (service tags)",
        ),
        Verdict::HostUnavailable { sibling } => Diagnostic::new(code::SVC_HOST_UNAVAILABLE, Some(EventId::CannotConnect),
            format!(
                "cannot reach {host}:{port}{at} ({failure}) while {sibling}:{port}, under the same allow-list entry, works: this service host is down or unreachable by itself"
            ),
            "nothing to change on the network for this: the connector keeps retrying and uses the service's other hosts; if it lasts, check the service's health",
        ),
        Verdict::EntryMissing { group, works } => Diagnostic::new(
            unreachable_code(Some(*group), port),
            Some(EventId::Networking),
            format!("cannot reach {host}:{port}{at} ({failure}) while {works}:{port} works{before}"),
            format!("the allow-list misses an entry: allow {entry} on every firewall and proxy; {}", by_user(failed.account)),
        ),
        Verdict::PortBlocked { others } => Diagnostic::new(
            unreachable_code(None, port),
            Some(EventId::Networking),
            format!(
                "cannot reach {host}:{port}{at} ({failure}), and nothing else answers on {port} either (tried now: {})",
                others.join(", ")
            ),
            format!(
                "outbound TCP {port} appears blocked: allow {entry} on every firewall and proxy between the connector and the service; {}",
                by_user(failed.account)
            ),
        ),
        Verdict::AccountBlocked { others, account, works } => Diagnostic::new(code::NET_USER_ACCOUNT_BLOCKED, Some(EventId::Networking),
            format!(
                "cannot reach {host}:{port}{at} as {} ({failure}), nor anything else on {port} (tried now: {}), while {account} reached {works}:{port} from this host: a firewall filters outbound traffic by originating user",
                failed.account,
                others.join(", ")
            ),
            format!(
                "in every firewall that filters by user, allow {} on TCP 80 and 443 (the connector's services run as Network Service; registration runs as the administrator who runs setup)",
                failed.account
            ),
        ),
        Verdict::OtherCloud { works } => other_cloud_diagnostic(failed, works, &at, &failure, &entry),
        Verdict::Unclear { group, seen } => Diagnostic::new(
            unreachable_code(*group, port),
            Some(EventId::Networking),
            format!("cannot reach {host}:{port}{at} ({failure}); other destinations on {port}: {seen}{before}"),
            format!("allow {entry} on every firewall and proxy between the connector and the service"),
        ),
    }
}

/// The code of a destination that cannot be reached: its allow-list
/// group's, else the port's (a blocked port).
fn unreachable_code(group: Option<Group>, port: u16) -> Code {
    match group {
        Some(Group::Service443) => code::NET_SVC_UNREACHABLE,
        Some(Group::Crl80) => code::NET_CRL_UNREACHABLE,
        Some(Group::Registration443 | Group::Registration80) => code::NET_REG_UNREACHABLE,
        None if port == 80 => code::NET_80_UNREACHABLE,
        None => code::NET_443_UNREACHABLE,
    }
}

/// What to allow when firewalls filter by user: the account the attempt
/// was made as.
fn by_user(account: &Account) -> String {
    match account {
        Account::NetworkService => {
            "if firewalls filter by user, allow the Network Service account (NET-USER)".to_string()
        }
        Account::User(u) => format!(
            "if firewalls filter by user, allow {u}, the account registration runs as (setup's), as well as Network Service for the services (NET-USER)"
        ),
    }
}

/// A name that did not resolve, or resolved to a sinkhole; through a
/// proxy, at the proxy (it resolves the service's names for the connector).
fn dns_diagnostic(failed: &Failed<'_>, verdict: &Verdict, entry: &str) -> Diagnostic {
    let host = failed.host;
    let resolved_at = failed.via.map(|p| format!(" at the outbound proxy {p}")).unwrap_or_default();
    let answered =
        onward_report(failed.failure).map(|(_, status)| format!(" (it answered {status})")).unwrap_or_default();
    match verdict {
        Verdict::Sinkhole(a) => Diagnostic::new(code::NET_DNS_SINKHOLE, Some(EventId::Networking),
            format!("{host} resolves to {a}{resolved_at}{answered}, a sinkhole address: a DNS filter is blocking the name"),
            format!("allow {entry} in the DNS filter (and the firewall)"),
        ),
        _ => Diagnostic::new(code::NET_DNS_UNRESOLVED, Some(EventId::Networking),
            format!("{host} did not resolve{resolved_at}{answered}"),
            match failed.via {
                Some(_) => "check the proxy's DNS servers (it resolves the service's names for the connector) and that the name is not sinkholed",
                None => "check the connector host's DNS servers and that the name is not sinkholed",
            },
        ),
    }
}

/// The proxy's own answer: authentication demanded, a refusal, or the
/// proxy not answering at all.
fn proxy_diagnostic(host: &str, port: u16, p: &ProxyError, entry: &str) -> Diagnostic {
    match p {
        ProxyError::AuthRequired { proxy } => Diagnostic::new(code::NET_PROXY_AUTH_UNSUPPORTED, Some(EventId::Networking),
            format!("the outbound proxy {proxy} demands authentication (407) for {host}:{port}; the connector does not support proxy authentication"),
            "let the connector's traffic (Network Service) through the proxy without authentication, or bypass the proxy for the service's names",
        ),
        ProxyError::Down { .. } => Diagnostic::new(code::NET_PROXY_UNREACHABLE, Some(EventId::Networking),
            format!("{p}, so {host}:{port} cannot be reached through it"),
            "check that the proxy runs and that the connector host can reach it (name, address, port), or correct the proxy the connector is configured with",
        ),
        other => Diagnostic::new(code::NET_PROXY_REFUSED, Some(EventId::Networking),
            format!("{other}"),
            format!("add {entry} to the proxy's allow-list"),
        ),
    }
}

/// Nothing of the connector's cloud answers, a host of the other cloud does.
fn other_cloud_diagnostic(failed: &Failed<'_>, works: &str, at: &str, failure: &str, entry: &str) -> Diagnostic {
    let (host, port) = (failed.host, failed.port);
    let (this, other) = (failed.cloud.title(), failed.cloud.other().title());
    let remedy = match failed.cloud {
        Environment::Public => format!(
            "if the tenant is in the US Government cloud, install the connector with ENVIRONMENTNAME=\"{}\"; otherwise allow the public cloud's names ({entry} and the rest of its table) on the firewall",
            Environment::GOV_ENVIRONMENT_NAME
        ),
        Environment::UsGov => format!(
            "if the tenant is in the public cloud, install the connector without ENVIRONMENTNAME; otherwise allow the US Government cloud's names ({entry} and the rest of its table) on the firewall"
        ),
    };
    Diagnostic::new(code::REG_GOV_NETWORK_FOR_OTHER_CLOUD, Some(EventId::Networking),
        format!(
            "cannot reach {host}:{port}{at} ({failure}) nor any other {this} host on {port}, while {works}:{port} of the {other} answers: this network lets the other cloud's names out"
        ),
        remedy,
    )
}

/// A failure as the findings quote it: a proxy's report of its onward
/// attempt without repeating the proxy and destination the finding names.
fn seen_text(failure: &ConnectFailure) -> String {
    match onward_report(failure) {
        Some((onward, status)) => format!("{onward}; the proxy answered {status}"),
        None => failure.to_string(),
    }
}

/// The proxy's report of its own failed onward connection, and the status
/// it answered, if that is what `failure` is.
fn onward_report(failure: &ConnectFailure) -> Option<(&Onward, &str)> {
    match failure {
        ConnectFailure::Proxy(p) => match p.as_ref() {
            ProxyError::Onward { onward, status, .. } => Some((onward, status.as_str())),
            _ => None,
        },
        _ => None,
    }
}

/// Rule 7: the failed destination and probes of at least one other group
/// on the port all fail, and the same way (dropped, or refused).
fn port_blocked(failed: &Failed<'_>, probes: &[Probe]) -> bool {
    let own_group = allowlist::entry_for(failed.host, failed.port).map(|(g, _)| g);
    let own_way = std::mem::discriminant(&failed.failure.onward());
    let same_way = |f: &ConnectFailure| std::mem::discriminant(&f.onward()) == own_way;
    let failing_groups: Vec<Group> = probes
        .iter()
        .filter(|p| p.failure.as_ref().is_some_and(same_way))
        .filter_map(|p| p.entry().map(|(g, _)| g))
        .collect();
    probes.iter().all(|p| p.failure.is_some()) && failing_groups.iter().any(|g| Some(*g) != own_group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "cwap-weu-1.servicebus.windows.net";
    const RELAY2: &str = "cwap-weu-2.servicebus.windows.net";
    const BOOT: &str = "contoso.bootstrap.msappproxy.net";
    const LOGIN: &str = "login.microsoftonline.com";
    const CRL: &str = "crl3.digicert.com";
    const CRL2: &str = "crl.microsoft.com";
    const CTL: &str = "ctldl.windowsupdate.com";

    fn addr(n: u8) -> IpAddr {
        IpAddr::from([20, 38, 17, n])
    }

    fn ok(host: &str, port: u16) -> Probe {
        Probe { host: host.into(), port, failure: None, failed_where_it_worked: false }
    }

    /// Failed at an address other than where it last worked.
    fn moved(host: &str, port: u16) -> Probe {
        Probe { failed_where_it_worked: false, ..bad(host, port, ConnectFailure::TimedOut) }
    }

    fn bad(host: &str, port: u16, f: ConnectFailure) -> Probe {
        Probe { host: host.into(), port, failure: Some(f), failed_where_it_worked: true }
    }

    fn code(host: &str, port: u16, failure: ConnectFailure, last_good: Option<IpAddr>, probes: &[Probe]) -> String {
        let failed = Failed {
            host,
            port,
            addr: Some(addr(1)),
            failure: &failure,
            last_good,
            cloud: Environment::Public,
            via: None,
            account: &Account::NetworkService,
            other_account: None,
            replaced: None,
        };
        diagnostic(&failed, &verdict(&failed, probes)).code
    }

    fn onward(onward: Onward) -> ConnectFailure {
        let (proxy, target, status) = ("p:8080".into(), format!("{RELAY}:443"), "HTTP/1.1 502 Bad Gateway".into());
        ConnectFailure::Proxy(Box::new(ProxyError::Onward { proxy, target, status, onward }))
    }

    #[test]
    fn the_rules_table() {
        use ConnectFailure::{Refused, TimedOut};
        // (destination, port, its failure, where it last worked, probes, finding)
        type Row = (&'static str, u16, ConnectFailure, Option<IpAddr>, Vec<Probe>, &'static str);
        let table: Vec<Row> = vec![
            // Another relay answers: this one is down, not the allow-list.
            (RELAY, 443, TimedOut, None, vec![ok(RELAY2, 443)], "SVC.host-unavailable"),
            // Relays fail, the bootstrap host answers: the entry is missing.
            (RELAY, 443, TimedOut, None, vec![bad(RELAY2, 443, TimedOut), ok(BOOT, 443)], "NET-SVC.unreachable"),
            // Registration fails, the service answers: registration's entry.
            (LOGIN, 443, Refused, None, vec![ok(BOOT, 443)], "NET-REG.unreachable"),
            // Both groups on 443 dropped now: the port.
            (
                RELAY,
                443,
                TimedOut,
                None,
                vec![bad(RELAY2, 443, TimedOut), bad(LOGIN, 443, TimedOut)],
                "NET-443.unreachable",
            ),
            // Same groups, but failing differently: not provably the port.
            (RELAY, 443, TimedOut, None, vec![bad(LOGIN, 443, Refused)], "NET-SVC.unreachable"),
            // Only hosts of the same group failed: not provably the port.
            (RELAY, 443, TimedOut, None, vec![bad(BOOT, 443, TimedOut)], "NET-SVC.unreachable"),
            // A CRL host fails, another CRL entry answers: that entry.
            (CRL, 80, Refused, None, vec![ok(CRL2, 80)], "NET-CRL.unreachable"),
            // The trust list answers while CRLs fail: the CRL entries.
            (CRL, 80, Refused, None, vec![bad(CRL2, 80, Refused), ok(CTL, 80)], "NET-CRL.unreachable"),
            // Every group on 80 refused: the port.
            (CRL, 80, Refused, None, vec![bad(CRL2, 80, Refused), bad(CTL, 80, Refused)], "NET-80.unreachable"),
            // Worked at another address before: the IP allow-list is stale.
            (RELAY, 443, TimedOut, Some(addr(9)), vec![ok(BOOT, 443)], "NET-RULES.stale-ranges"),
            // Everything of the service moved and fails at its new address:
            // the ranges, even though no probe answers.
            (
                RELAY,
                443,
                TimedOut,
                Some(addr(9)),
                vec![moved(RELAY2, 443), moved(LOGIN, 443)],
                "NET-RULES.stale-ranges",
            ),
            // A new address of a pool on a closed port: the port, not the ranges.
            (
                RELAY,
                443,
                TimedOut,
                Some(addr(9)),
                vec![bad(RELAY2, 443, TimedOut), bad(LOGIN, 443, TimedOut)],
                "NET-443.unreachable",
            ),
            // Worked at this very address before: not stale ranges.
            (
                RELAY,
                443,
                TimedOut,
                Some(addr(1)),
                vec![bad(RELAY2, 443, TimedOut), ok(BOOT, 443)],
                "NET-SVC.unreachable",
            ),
            (RELAY, 443, ConnectFailure::Unresolved, None, vec![], "NET-DNS.unresolved"),
            (
                RELAY,
                443,
                ConnectFailure::Proxy(Box::new(ProxyError::AuthRequired { proxy: "p:8080".into() })),
                None,
                vec![],
                "NET-PROXY.auth-unsupported",
            ),
            // Nothing of this cloud answers on 80, the other cloud's trust list does.
            (
                CRL,
                80,
                TimedOut,
                None,
                vec![bad(CTL, 80, TimedOut), bad(CRL2, 80, TimedOut), ok("ctldl.windowsupdate.us", 80)],
                "REG-GOV.network-for-other-cloud",
            ),
            // The other cloud's host answering does not hide this cloud's.
            (
                LOGIN,
                443,
                TimedOut,
                None,
                vec![ok(BOOT, 443), ok("login.microsoftonline.us", 443)],
                "NET-REG.unreachable",
            ),
            // A destination outside the allow-list: only the port can be named.
            ("app.example", 443, TimedOut, None, vec![], "NET-443.unreachable"),
            // Through a proxy: what the proxy met on its way on is located
            // as a direct failure would be.
            (RELAY, 443, onward(Onward::Unresolved), None, vec![], "NET-DNS.unresolved"),
            (RELAY, 443, onward(Onward::Sinkhole(IpAddr::from([0, 0, 0, 0]))), None, vec![], "NET-DNS.sinkhole"),
            (RELAY, 443, onward(Onward::TimedOut), None, vec![ok(BOOT, 443)], "NET-SVC.unreachable"),
            (
                RELAY,
                443,
                onward(Onward::Refused),
                None,
                vec![bad(RELAY2, 443, onward(Onward::Refused)), bad(LOGIN, 443, Refused)],
                "NET-443.unreachable",
            ),
            // The proxy's own refusal is the proxy's, whatever else answers.
            (
                RELAY,
                443,
                ConnectFailure::Proxy(Box::new(ProxyError::Refused {
                    proxy: "p:8080".into(),
                    target: RELAY.into(),
                    status: "403".into(),
                })),
                None,
                vec![],
                "NET-PROXY.refused",
            ),
        ];
        for (host, port, failure, last_good, probes, want) in table {
            assert_eq!(
                code(host, port, failure.clone(), last_good, &probes),
                want,
                "{host}:{port} {failure:?} {probes:?}"
            );
        }
    }

    #[test]
    fn a_port_that_worked_only_for_the_installer_is_a_firewall_by_user() {
        let failure = ConnectFailure::TimedOut;
        let admin = Account::User("contoso\\alice".into());
        let probes = [bad(RELAY2, 443, ConnectFailure::TimedOut), bad(LOGIN, 443, ConnectFailure::TimedOut)];
        let mut failed = Failed {
            host: RELAY,
            port: 443,
            addr: Some(addr(1)),
            failure: &failure,
            last_good: None,
            cloud: Environment::Public,
            via: None,
            account: &Account::NetworkService,
            other_account: Some((admin.clone(), LOGIN.into())),
            replaced: None,
        };
        let d = diagnostic(&failed, &verdict(&failed, &probes));
        assert_eq!(d.code, "NET-USER.account-blocked");
        assert!(
            d.message.contains("as Network Service") && d.message.contains("contoso\\alice reached"),
            "{}",
            d.message
        );
        assert!(d.remedy.contains("allow Network Service on TCP 80 and 443"), "{}", d.remedy);
        // Something answers this account on the port: not the account.
        let answered = [bad(RELAY2, 443, ConnectFailure::TimedOut), ok(BOOT, 443)];
        assert_eq!(diagnostic(&failed, &verdict(&failed, &answered)).code, "NET-SVC.unreachable");
        // The installer's own failure, with nothing to compare: the port,
        // and the advice names the installer's account.
        failed.account = &admin;
        failed.other_account = None;
        let d = diagnostic(&failed, &verdict(&failed, &probes));
        assert_eq!(d.code, "NET-443.unreachable");
        assert!(d.remedy.contains("allow contoso\\alice, the account registration runs as"), "{}", d.remedy);
    }

    #[test]
    fn through_a_proxy_that_does_not_answer_the_proxy_is_named() {
        let failure = ConnectFailure::TimedOut;
        let failed = Failed {
            host: RELAY,
            port: 443,
            addr: Some(addr(1)),
            failure: &failure,
            last_good: None,
            cloud: Environment::Public,
            via: Some("proxy.corp.local:8080"),
            account: &Account::NetworkService,
            other_account: None,
            replaced: None,
        };
        let down = [bad("proxy.corp.local", 8080, ConnectFailure::TimedOut)];
        assert_eq!(diagnostic(&failed, &verdict(&failed, &down)).code, "NET-PROXY.unreachable");
        // The proxy answers: what lies beyond it is located as usual.
        let up = [
            ok("proxy.corp.local", 8080),
            bad(RELAY2, 443, ConnectFailure::TimedOut),
            bad(LOGIN, 443, ConnectFailure::TimedOut),
        ];
        assert_eq!(diagnostic(&failed, &verdict(&failed, &up)).code, "NET-443.unreachable");
    }

    #[test]
    fn a_sinkhole_answer_is_dns() {
        let failure = ConnectFailure::TimedOut;
        let failed = Failed {
            host: RELAY,
            port: 443,
            addr: Some(IpAddr::from([0, 0, 0, 0])),
            failure: &failure,
            last_good: None,
            cloud: Environment::Public,
            via: None,
            account: &Account::NetworkService,
            other_account: None,
            replaced: None,
        };
        assert_eq!(diagnostic(&failed, &verdict(&failed, &[ok(BOOT, 443)])).code, "NET-DNS.sinkhole");
    }

    #[test]
    fn the_plan_asks_a_sibling_then_other_groups_first() {
        let candidates: Vec<String> =
            [BOOT, RELAY2, LOGIN, "other.bootstrap.msappproxy.net"].map(String::from).to_vec();
        assert_eq!(
            probe_plan(RELAY, 443, Environment::Public, &candidates),
            vec![RELAY2.to_string(), LOGIN.into(), BOOT.into()]
        );
        let candidates: Vec<String> = ["crl.microsoft.us", CRL2, CTL, CRL].map(String::from).to_vec();
        assert_eq!(
            probe_plan(CRL, 80, Environment::Public, &candidates),
            vec![CTL.to_string(), CRL2.into(), "crl.microsoft.us".into()],
            "the other cloud's host comes last"
        );
    }
}
