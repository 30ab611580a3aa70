//! Scenario files: TOML parsed into typed structs. A scenario is a world
//! (tenant, connectors, backends, apps, firewall), user load, a timeline of
//! events, and expectations. Unknown keys, bad durations, unknown events and
//! dangling references are refused with file, line and column.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use connector::allowlist::Group;
use connector::pki::RevocationPolicy;
use relay_sim::backend::Behaviour;
use relay_sim::directory::{PreAuthentication, Role, SingleSignOn};
use relay_sim::inspector::Mode as InspectionMode;
use relay_sim::pki::RevocationFault;
use relay_sim::services::revocation::TRUST_LIST_HOSTS;
use relay_sim::world::{Action, Dns, HostSuffix, Rule};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A duration written as `90s`, `30m`, `1h`, `2d`, `250ms` or `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct SimDuration(pub Duration);

impl FromStr for SimDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err("empty duration: write e.g. \"30s\", \"10m\", \"1h\"".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("duration {s:?}: expected a number at {rest:?}"));
            }
            let n: u64 = rest[..digits].parse().map_err(|_| format!("duration {s:?}: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86_400)),
                "" => return Err(format!("duration {s:?}: missing unit after {n} (ms, s, m, h or d)")),
                other => return Err(format!("duration {s:?}: unknown unit {other:?} (ms, s, m, h or d)")),
            };
            total = total.saturating_add(part);
        }
        Ok(SimDuration(total))
    }
}

impl<'de> Deserialize<'de> for SimDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SimDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Something that happens to the world at a point of the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineEvent {
    /// Crash every relay endpoint host and start it again.
    RestartRelay,
    CrashRelay,
    StartRelay,
    /// Add a perimeter rule silently dropping outbound connections to a port.
    BlockPort(u16),
    /// Add a rule refusing outbound connections to a port at once.
    RejectPort(u16),
    /// Remove the timeline's rules for a port.
    UnblockPort(u16),
    /// Add a perimeter rule dropping (or refusing) outbound connections to
    /// a domain suffix, on every port: an allow-list entry that goes away.
    BlockHost(HostSuffix),
    RejectHost(HostSuffix),
    /// Remove the timeline's rules for a domain suffix.
    UnblockHost(HostSuffix),
    /// One of the five events above, on the firewall between the explicit
    /// proxy and the Internet instead of the perimeter the connector hosts
    /// sit behind (`block port 443 at proxy`).
    AtProxy(Box<TimelineEvent>),
    /// The same, on one connector host's own firewall (`block port 443 on
    /// connector-2`).
    OnHost(String, Box<TimelineEvent>),
    /// The world's DNS stops resolving a suffix (NXDOMAIN), or a DNS filter
    /// starts answering 0.0.0.0 for it; `dns restore` ends either, also
    /// when the world file set it.
    DnsFail(HostSuffix),
    DnsSinkhole(HostSuffix),
    DnsRestore(HostSuffix),
    StopBackend(String),
    StartBackend(String),
    RestartConnector(String),
    /// Crash a connector host (its service stops; state on disk stays).
    StopConnector(String),
    /// Start a stopped connector host again.
    StartConnector(String),
    /// Move the service's certificates to the new root (DigiCert Global Root G2).
    RotateRoot,
    /// Revoke the relay endpoints' server certificates.
    RevokeRelayCertificate,
    /// Revoke a connector's client certificate.
    RevokeConnector(String),
    /// Stop or start the explicit proxy's host (its port then refuses).
    StopProxy,
    StartProxy,
    /// Stop or start the CRL/OCSP servers (all six names).
    StopRevocationServers,
    StartRevocationServers,
    /// Stop or start the server behind one CRL/OCSP or trust-list name
    /// (`stop revocation server crl3.digicert.com`); the others answer.
    StopRevocationServer(String),
    StartRevocationServer(String),
    /// Restart, crash or start one relay endpoint, by name
    /// (`cwap-weu-1.servicebus.windows.net`) or number (`crash relay 2`).
    OneRelay(RelayVerb, String),
    /// The cloud moves to next week's published address ranges.
    AdvanceIpWeek,
    /// Stop or start a connector host's updater service (OPS-SERVICES).
    StopUpdater(String),
    StartUpdater(String),
    /// The spec's manual upgrade (VER-UPGRADE): stop, uninstall, delete
    /// the folders, install the newest release (which registers anew).
    UpgradeConnector(String),
    /// The same, forgetting to delete the folders: the install finds them.
    UpgradeConnectorKeepingFolders(String),
    /// Something changes on a connector's server while it runs.
    Host {
        name: String,
        change: HostChange,
    },
    /// The release feed changes (`publish release V`, `withdraw release V`,
    /// `offer release V to GROUP`, `offer release V to all`).
    Feed(FeedChange),
    /// The service moves the tenant to another instance of its region
    /// (`move tenant to instance N`): the old instance's relays send its
    /// connectors away.
    MoveTenant(u32),
    /// A connector group is pinned to a region (`pin group G to REGION`),
    /// in effect 30 minutes later as the service's multi-geo is.
    PinGroup(String, String),
}

/// A change to what the release feed offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedChange {
    Publish(String),
    Withdraw(String),
    /// Add a group to the release's staged rollout.
    OfferTo(String, String),
    /// End the rollout: offered to every group.
    OfferToAll(String),
}

impl FeedChange {
    /// The release it names.
    pub fn release(&self) -> &str {
        match self {
            FeedChange::Publish(v)
            | FeedChange::Withdraw(v)
            | FeedChange::OfferTo(v, _)
            | FeedChange::OfferToAll(v) => v,
        }
    }
}

/// The names served on port 80 (CRL, OCSP, trust list) that `stop
/// revocation server NAME` may name.
fn port_80_names() -> impl Iterator<Item = &'static str> {
    relay_sim::pki::REVOCATION_HOSTS.iter().chain(&TRUST_LIST_HOSTS).copied()
}

fn release_versions() -> Vec<String> {
    relay_sim::releases::history().into_iter().map(|r| r.version).collect()
}

fn known_release(v: &str) -> bool {
    release_versions().iter().any(|r| r == v)
}

/// A change to a connector's server, noticed as the real connector would:
/// products and .NET at the updater's next check, registry keys after the
/// next restart, the clock at the next handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostChange {
    /// `install password-protection-proxy on NAME` (or `entra-connect`).
    Install(connector::host::Product),
    Uninstall(connector::host::Product),
    /// `disable tls12 on NAME`: the SCHANNEL TLS 1.2 client keys turned off
    /// (in effect after the next `reboot`).
    DisableTls12,
    /// `enable tls12 on NAME`: the spec's keys (in effect after a reboot).
    EnableTls12,
    /// `reboot NAME`: the server restarts; pending registry changes apply.
    Reboot,
    /// `upgrade dotnet on NAME to 4.8` (or a release number, 528040).
    DotNet(u32),
    /// `set clock on NAME +2d`: the server's clock jumps to this offset.
    SetClock(Skew),
}

/// .NET Framework versions by their `Release` numbers.
const DOTNET_RELEASES: [(&str, u32); 6] = [
    ("4.6.2", 394_802),
    ("4.7", 460_798),
    ("4.7.1", 461_308),
    ("4.7.2", 461_808),
    ("4.8", 528_040),
    ("4.8.1", 533_320),
];

const PRODUCTS: [(&str, connector::host::Product); 3] = [
    ("password-protection-proxy", connector::host::Product::PasswordProtectionProxy),
    ("entra-connect", connector::host::Product::EntraConnect),
    ("private-network-connector", connector::host::Product::PrivateNetworkConnector),
];

impl HostChange {
    fn parse(words: &[&str]) -> Option<Result<(String, HostChange), String>> {
        let product = |w: &str| {
            PRODUCTS.iter().find(|(n, _)| *n == w).map(|(_, p)| *p).ok_or_else(|| {
                let known: Vec<&str> = PRODUCTS.iter().map(|(n, _)| *n).collect();
                format!("unknown product {w:?}; known: {known:?}")
            })
        };
        let release = |w: &str| {
            let number = w.parse::<u32>().ok().filter(|r| *r >= DOTNET_RELEASES[0].1);
            DOTNET_RELEASES.iter().find(|(v, _)| *v == w).map(|(_, r)| *r).or(number).ok_or_else(|| {
                let known: Vec<&str> = DOTNET_RELEASES.iter().map(|(v, _)| *v).collect();
                format!("{w:?} is neither a .NET version {known:?} nor a release number")
            })
        };
        let named = |n: &str, c: Result<HostChange, String>| Some(c.map(|c| (n.to_string(), c)));
        match words {
            ["install", p, "on", n] => named(n, product(p).map(HostChange::Install)),
            ["uninstall", p, "on", n] => named(n, product(p).map(HostChange::Uninstall)),
            ["disable", "tls12", "on", n] => named(n, Ok(HostChange::DisableTls12)),
            ["enable", "tls12", "on", n] => named(n, Ok(HostChange::EnableTls12)),
            ["reboot", n] => named(n, Ok(HostChange::Reboot)),
            ["upgrade", "dotnet", "on", n, "to", r] => named(n, release(r).map(HostChange::DotNet)),
            ["set", "clock", "on", n, skew] => named(n, skew.parse().map(HostChange::SetClock)),
            _ => None,
        }
    }

    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let product = |p: &connector::host::Product| PRODUCTS.iter().find(|(_, q)| q == p).map_or("?", |(n, _)| *n);
        match self {
            HostChange::Install(p) => write!(f, "install {} on {name}", product(p)),
            HostChange::Uninstall(p) => write!(f, "uninstall {} on {name}", product(p)),
            HostChange::DisableTls12 => write!(f, "disable tls12 on {name}"),
            HostChange::EnableTls12 => write!(f, "enable tls12 on {name}"),
            HostChange::Reboot => write!(f, "reboot {name}"),
            HostChange::DotNet(r) => write!(f, "upgrade dotnet on {name} to {r}"),
            HostChange::SetClock(s) => write!(f, "set clock on {name} {:+}s", s.ahead_s),
        }
    }
}

/// What a timeline event does to a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayVerb {
    Restart,
    Crash,
    Start,
}

impl fmt::Display for RelayVerb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayVerb::Restart => "restart",
            RelayVerb::Crash => "crash",
            RelayVerb::Start => "start",
        })
    }
}

impl TimelineEvent {
    /// The connector host this event takes down, if any (its tunnels end).
    pub fn stops_host(&self) -> Option<&str> {
        match self {
            TimelineEvent::StopConnector(n)
            | TimelineEvent::RestartConnector(n)
            | TimelineEvent::UpgradeConnector(n)
            | TimelineEvent::UpgradeConnectorKeepingFolders(n)
            | TimelineEvent::Host { name: n, change: HostChange::Reboot } => Some(n),
            _ => None,
        }
    }

    /// The connector host this event names, if any.
    pub fn connector(&self) -> Option<&str> {
        match self {
            TimelineEvent::RestartConnector(n)
            | TimelineEvent::StopConnector(n)
            | TimelineEvent::StartConnector(n)
            | TimelineEvent::RevokeConnector(n)
            | TimelineEvent::StopUpdater(n)
            | TimelineEvent::StartUpdater(n)
            | TimelineEvent::UpgradeConnector(n)
            | TimelineEvent::UpgradeConnectorKeepingFolders(n)
            | TimelineEvent::Host { name: n, .. }
            | TimelineEvent::OnHost(n, _) => Some(n),
            _ => None,
        }
    }

    /// Whether this is a firewall event (block, reject or unblock a port
    /// or host) or a DNS event, which `at proxy` and `on NAME` may follow.
    fn is_network(&self) -> bool {
        matches!(
            self,
            TimelineEvent::BlockPort(_)
                | TimelineEvent::RejectPort(_)
                | TimelineEvent::UnblockPort(_)
                | TimelineEvent::BlockHost(_)
                | TimelineEvent::RejectHost(_)
                | TimelineEvent::UnblockHost(_)
                | TimelineEvent::DnsFail(_)
                | TimelineEvent::DnsSinkhole(_)
                | TimelineEvent::DnsRestore(_)
        )
    }
}

/// Every form a timeline event can take, with what it does: the parser's
/// error lists the forms, `connsim explain` and `connsim schema` show both.
pub const EVENT_FORMS: &[(&str, &str)] = &[
    ("restart relay", "crash every relay host and start it again (also with a relay's name, or its number among the first instance's relays: \"restart relay 2\")"),
    ("crash relay", "crash every relay host (or one: \"crash relay cwap-weu-1.servicebus.windows.net\")"),
    ("start relay", "start the relay hosts again (or one)"),
    ("block port N", "the perimeter silently drops new connections to port N (\"at proxy\": the proxy's egress; \"on NAME\": that connector host's own firewall, which also stalls open connections)"),
    ("reject port N", "the same, refusing (RST) instead of dropping"),
    ("unblock port N", "lift the timeline's own block or reject of port N (never a rule of the world's)"),
    ("block host SUFFIX", "drop new connections to names under SUFFIX (\"*.servicebus.windows.net\"); also \"at proxy\" and \"on NAME\""),
    ("reject host SUFFIX", "refuse connections to names under SUFFIX"),
    ("unblock host SUFFIX", "lift the timeline's own rule for SUFFIX"),
    ("dns fail SUFFIX", "names under SUFFIX stop resolving (\"at proxy\": the proxy's resolver; \"on NAME\": that host's)"),
    ("dns sinkhole SUFFIX", "names under SUFFIX resolve to a sinkhole address"),
    ("dns restore SUFFIX", "end a DNS fault for SUFFIX"),
    ("stop backend NAME", "a backend stops answering"),
    ("start backend NAME", "a backend answers again"),
    ("restart connector NAME", "the connector host restarts its software"),
    ("stop connector NAME", "the connector host goes down"),
    ("start connector NAME", "the connector host comes back"),
    ("rotate root", "the service moves its TLS certificates to the new root CA (TLS-ROOTS)"),
    ("revoke relay certificate", "the CA revokes the relays' certificates (their CRLs and OCSP say so)"),
    ("revoke connector NAME", "the service revokes that connector's client certificate and ends its tunnels"),
    ("stop proxy", "the explicit proxy goes down"),
    ("start proxy", "the explicit proxy comes back"),
    ("stop revocation servers", "every CRL/OCSP host stops answering"),
    ("start revocation servers", "they answer again"),
    ("stop revocation server NAME", "one CRL/OCSP host (\"crl3.digicert.com\") stops answering"),
    ("start revocation server NAME", "it answers again"),
    ("advance ip week", "the cloud moves to next week's published address ranges (NET-RULES)"),
    ("stop updater NAME", "the connector host's updater service stops (OPS-SERVICES)"),
    ("start updater NAME", "it runs again"),
    ("upgrade connector NAME", "the spec's manual upgrade: stop, uninstall, delete the folders, install the newest release"),
    ("upgrade connector NAME keeping folders", "the same, forgetting to delete the folders"),
    ("install PRODUCT on NAME", "another product is installed on the host (password-protection-proxy, entra-connect, ...)"),
    ("uninstall PRODUCT on NAME", "it is removed"),
    ("disable tls12 on NAME", "TLS 1.2 registry keys are turned off (in effect after \"reboot NAME\")"),
    ("enable tls12 on NAME", "they are turned on (in effect after a reboot)"),
    ("reboot NAME", "the host restarts: registry changes take effect"),
    ("upgrade dotnet on NAME to VERSION", ".NET Framework is upgraded (4.8, or a release number such as 528040)"),
    ("set clock on NAME SKEW", "the host's clock jumps (\"+2d\", \"-1h\")"),
    ("publish release V", "the release feed publishes a withheld release"),
    ("withdraw release V", "the feed stops offering a release"),
    ("offer release V to GROUP", "add a connector group to a release's staged rollout"),
    ("offer release V to all", "end the rollout: every group is offered the release"),
    ("move tenant to instance N", "the service moves the tenant to instance N of its region: the old relays send its connectors away (GoAway moved) and bootstrap names the new ones"),
    ("pin group GROUP to REGION", "application proxy's multi-geo: the group is served from REGION's instance, in effect 30 minutes later (Private Access ignores pins)"),
];

/// The forms of [`EVENT_FORMS`], quoted, for error messages.
fn event_forms_text() -> String {
    EVENT_FORMS.iter().map(|(form, _)| format!("{form:?}")).collect::<Vec<_>>().join(", ")
}

impl FromStr for TimelineEvent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let port = |w: &str| w.parse::<u16>().map_err(|_| format!("event {s:?}: {w:?} is not a port number"));
        let suffix = |w: &str| w.parse::<HostSuffix>().map_err(|e| format!("event {s:?}: {e}"));
        if let [rule @ .., "at", "proxy"] = words.as_slice() {
            let inner: TimelineEvent = rule.join(" ").parse()?;
            return match inner {
                e if e.is_network() => Ok(TimelineEvent::AtProxy(Box::new(e))),
                other => Err(format!(
                    "event {s:?}: \"at proxy\" goes after a firewall or DNS event (block, reject or unblock a port or host; dns fail, sinkhole or restore), not after \"{other}\""
                )),
            };
        }
        let on_host = matches!(words.as_slice(), ["block" | "reject" | "unblock", "port" | "host", _, "on", _])
            || matches!(words.as_slice(), ["dns", "fail" | "sinkhole" | "restore", _, "on", _]);
        if let (true, [rule @ .., "on", name]) = (on_host, words.as_slice()) {
            let inner: TimelineEvent = rule.join(" ").parse()?;
            return Ok(TimelineEvent::OnHost(name.to_string(), Box::new(inner)));
        }
        if let Some(host) = HostChange::parse(&words) {
            let (name, change) = host.map_err(|e| format!("event {s:?}: {e}"))?;
            return Ok(TimelineEvent::Host { name, change });
        }
        Ok(match words.as_slice() {
            ["publish", "release", v] => TimelineEvent::Feed(FeedChange::Publish(v.to_string())),
            ["withdraw", "release", v] => TimelineEvent::Feed(FeedChange::Withdraw(v.to_string())),
            ["offer", "release", v, "to", "all"] => TimelineEvent::Feed(FeedChange::OfferToAll(v.to_string())),
            ["offer", "release", v, "to", g] => TimelineEvent::Feed(FeedChange::OfferTo(v.to_string(), g.to_string())),
            ["move", "tenant", "to", "instance", n] => TimelineEvent::MoveTenant(
                n.parse().map_err(|_| format!("event {s:?}: {n:?} is not an instance number"))?,
            ),
            ["pin", "group", g, "to", r] => TimelineEvent::PinGroup(g.to_string(), r.to_string()),
            ["restart", "relay"] => TimelineEvent::RestartRelay,
            ["restart", "relay", r] => TimelineEvent::OneRelay(RelayVerb::Restart, r.to_string()),
            ["crash", "relay", r] => TimelineEvent::OneRelay(RelayVerb::Crash, r.to_string()),
            ["start", "relay", r] => TimelineEvent::OneRelay(RelayVerb::Start, r.to_string()),
            ["stop", "revocation", "server", n] => TimelineEvent::StopRevocationServer(n.to_ascii_lowercase()),
            ["start", "revocation", "server", n] => TimelineEvent::StartRevocationServer(n.to_ascii_lowercase()),
            ["crash", "relay"] => TimelineEvent::CrashRelay,
            ["start", "relay"] => TimelineEvent::StartRelay,
            ["block", "port", p] => TimelineEvent::BlockPort(port(p)?),
            ["reject", "port", p] => TimelineEvent::RejectPort(port(p)?),
            ["unblock", "port", p] => TimelineEvent::UnblockPort(port(p)?),
            ["block", "host", h] => TimelineEvent::BlockHost(suffix(h)?),
            ["reject", "host", h] => TimelineEvent::RejectHost(suffix(h)?),
            ["unblock", "host", h] => TimelineEvent::UnblockHost(suffix(h)?),
            ["dns", "fail", h] => TimelineEvent::DnsFail(suffix(h)?),
            ["dns", "sinkhole", h] => TimelineEvent::DnsSinkhole(suffix(h)?),
            ["dns", "restore", h] => TimelineEvent::DnsRestore(suffix(h)?),
            ["stop", "backend", n] => TimelineEvent::StopBackend(n.to_string()),
            ["start", "backend", n] => TimelineEvent::StartBackend(n.to_string()),
            ["restart", "connector", n] => TimelineEvent::RestartConnector(n.to_string()),
            ["stop", "connector", n] => TimelineEvent::StopConnector(n.to_string()),
            ["start", "connector", n] => TimelineEvent::StartConnector(n.to_string()),
            ["rotate", "root"] => TimelineEvent::RotateRoot,
            ["revoke", "relay", "certificate"] => TimelineEvent::RevokeRelayCertificate,
            ["revoke", "connector", n] => TimelineEvent::RevokeConnector(n.to_string()),
            ["stop", "proxy"] => TimelineEvent::StopProxy,
            ["start", "proxy"] => TimelineEvent::StartProxy,
            ["stop", "revocation", "servers"] => TimelineEvent::StopRevocationServers,
            ["start", "revocation", "servers"] => TimelineEvent::StartRevocationServers,
            ["advance", "ip", "week"] => TimelineEvent::AdvanceIpWeek,
            ["stop", "updater", n] => TimelineEvent::StopUpdater(n.to_string()),
            ["start", "updater", n] => TimelineEvent::StartUpdater(n.to_string()),
            ["upgrade", "connector", n] => TimelineEvent::UpgradeConnector(n.to_string()),
            ["upgrade", "connector", n, "keeping", "folders"] => {
                TimelineEvent::UpgradeConnectorKeepingFolders(n.to_string())
            }
            _ => return Err(format!("unknown event {s:?}; expected one of {}", event_forms_text())),
        })
    }
}

impl<'de> Deserialize<'de> for TimelineEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TimelineEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimelineEvent::RestartRelay => write!(f, "restart relay"),
            TimelineEvent::CrashRelay => write!(f, "crash relay"),
            TimelineEvent::StartRelay => write!(f, "start relay"),
            TimelineEvent::BlockPort(p) => write!(f, "block port {p}"),
            TimelineEvent::RejectPort(p) => write!(f, "reject port {p}"),
            TimelineEvent::UnblockPort(p) => write!(f, "unblock port {p}"),
            TimelineEvent::BlockHost(h) => write!(f, "block host {}", h.as_str()),
            TimelineEvent::RejectHost(h) => write!(f, "reject host {}", h.as_str()),
            TimelineEvent::UnblockHost(h) => write!(f, "unblock host {}", h.as_str()),
            TimelineEvent::AtProxy(e) => write!(f, "{e} at proxy"),
            TimelineEvent::OnHost(n, e) => write!(f, "{e} on {n}"),
            TimelineEvent::DnsFail(h) => write!(f, "dns fail {}", h.as_str()),
            TimelineEvent::DnsSinkhole(h) => write!(f, "dns sinkhole {}", h.as_str()),
            TimelineEvent::DnsRestore(h) => write!(f, "dns restore {}", h.as_str()),
            TimelineEvent::StopBackend(n) => write!(f, "stop backend {n}"),
            TimelineEvent::StartBackend(n) => write!(f, "start backend {n}"),
            TimelineEvent::RestartConnector(n) => write!(f, "restart connector {n}"),
            TimelineEvent::StopConnector(n) => write!(f, "stop connector {n}"),
            TimelineEvent::StartConnector(n) => write!(f, "start connector {n}"),
            TimelineEvent::RotateRoot => write!(f, "rotate root"),
            TimelineEvent::RevokeRelayCertificate => write!(f, "revoke relay certificate"),
            TimelineEvent::RevokeConnector(n) => write!(f, "revoke connector {n}"),
            TimelineEvent::StopProxy => write!(f, "stop proxy"),
            TimelineEvent::StartProxy => write!(f, "start proxy"),
            TimelineEvent::StopRevocationServers => write!(f, "stop revocation servers"),
            TimelineEvent::StartRevocationServers => write!(f, "start revocation servers"),
            TimelineEvent::StopRevocationServer(n) => write!(f, "stop revocation server {n}"),
            TimelineEvent::StartRevocationServer(n) => write!(f, "start revocation server {n}"),
            TimelineEvent::OneRelay(verb, r) => write!(f, "{verb} relay {r}"),
            TimelineEvent::AdvanceIpWeek => write!(f, "advance ip week"),
            TimelineEvent::StopUpdater(n) => write!(f, "stop updater {n}"),
            TimelineEvent::StartUpdater(n) => write!(f, "start updater {n}"),
            TimelineEvent::UpgradeConnector(n) => write!(f, "upgrade connector {n}"),
            TimelineEvent::UpgradeConnectorKeepingFolders(n) => write!(f, "upgrade connector {n} keeping folders"),
            TimelineEvent::Host { name, change } => change.describe(name, f),
            TimelineEvent::Feed(FeedChange::Publish(v)) => write!(f, "publish release {v}"),
            TimelineEvent::Feed(FeedChange::Withdraw(v)) => write!(f, "withdraw release {v}"),
            TimelineEvent::Feed(FeedChange::OfferTo(v, g)) => write!(f, "offer release {v} to {g}"),
            TimelineEvent::Feed(FeedChange::OfferToAll(v)) => write!(f, "offer release {v} to all"),
            TimelineEvent::MoveTenant(n) => write!(f, "move tenant to instance {n}"),
            TimelineEvent::PinGroup(g, r) => write!(f, "pin group {g} to {r}"),
        }
    }
}

fn default_tenant() -> String {
    "contoso".into()
}
fn default_domain() -> String {
    "contoso.com".into()
}
fn default_region() -> String {
    "weu".into()
}
fn default_one() -> u32 {
    1
}
fn default_relays() -> usize {
    2
}
fn default_group() -> String {
    relay_sim::directory::DEFAULT_GROUP.into()
}
fn default_true() -> bool {
    true
}
fn default_port() -> u16 {
    8080
}
fn default_path() -> String {
    "/".into()
}
fn default_role() -> Role {
    Role::GlobalAdministrator
}

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name: reports and `connsim repro` use it.
    pub name: String,
    /// What the scenario shows, for reports (comments at the top of the
    /// file say the same for readers of the file).
    #[serde(default)]
    pub description: String,
    /// Requirement IDs this scenario covers.
    #[serde(default)]
    pub covers: Vec<String>,
    /// Simulated time the scenario runs for.
    pub duration: SimDuration,
    /// Seed used when none is given on the command line.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Worlds the scenario runs in: `sim` (always) and `netns` (the real
    /// binaries in network namespaces with nftables; `connsim run --world
    /// netns`). Scenarios that need simulated days stay `sim` only.
    #[serde(default = "default_worlds")]
    pub worlds: Vec<WorldKind>,
    /// What exists: the tenant and its cloud, the network, the connector
    /// hosts, the backends and the published apps.
    pub world: World,
    /// The users' requests (`[[load]]`, one table per stream).
    #[serde(default)]
    pub load: Vec<Load>,
    /// What happens when (`[[timeline]]`: `at` and `event`).
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    /// What must be true at the end (and in `[[expect.window]]`s).
    pub expect: Expect,
}

/// Where a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorldKind {
    /// turmoil: simulated time and network, deterministic.
    Sim,
    /// Linux network namespaces, real time, real binaries.
    Netns,
}

fn default_worlds() -> Vec<WorldKind> {
    vec![WorldKind::Sim]
}

/// The simulated world.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct World {
    /// The tenant's id, in its service names (`contoso.bootstrap.msappproxy.net`): default `contoso`.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The tenant's domain (REG-DOMAIN): default `contoso.com`.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// More domains (aliases) of the tenant.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Whether the directory uses application proxy / Private Access.
    #[serde(default = "default_true")]
    pub app_proxy_enabled: bool,
    /// The tenant's home region (OPS-GEO): weu (default), neu, eus, wus, sea or aue.
    #[serde(default = "default_region")]
    pub region: String,
    /// The cloud the tenant lives in: `public` (default) or `us-gov`.
    #[serde(default)]
    pub cloud: connector::allowlist::Environment,
    /// Relay endpoints (servicebus namespaces) bootstrap hands out.
    #[serde(default = "default_relays")]
    pub relays: usize,
    /// Cloud instances in the tenant's region, each with its own relays
    /// (`cwap-weu-N`, `cwap-weu2-N`, ...): default 1.
    #[serde(default = "default_one")]
    pub instances: u32,
    /// The instance that serves the tenant at the start (default 1);
    /// `move tenant to instance N` changes it mid-run.
    #[serde(default = "default_one")]
    pub instance: u32,
    /// Connector groups pinned to another region from the start
    /// (application proxy's multi-geo; Private Access ignores pins):
    /// `pinned = { "us-group" = "eus" }`.
    #[serde(default)]
    pub pinned: BTreeMap<String, String>,
    /// Overrides the service's 10-minute bootstrap interval.
    #[serde(default)]
    pub bootstrap_interval: Option<SimDuration>,
    /// The tenant uses Private Access (connectors need 1.5.3417.0+).
    #[serde(default)]
    pub private_access: bool,
    /// The service's TLS front ends offer TLS 1.2 only (no 1.3).
    #[serde(default)]
    pub service_tls12_only: bool,
    /// Releases the service refuses at bootstrap after shipping them (a
    /// bad build): a connector the updater moved to one rolls back.
    #[serde(default)]
    pub pulled_releases: Vec<String>,
    /// What the release feed offers at the start: `withheld` releases
    /// (published later, or never), a staged `rollout` (release → groups),
    /// download `faults` (release → `broken` | `tampered`).
    #[serde(default)]
    pub feed: relay_sim::feed::Feed,
    /// How often connectors' updaters check the release feed (60m).
    #[serde(default)]
    pub update_check_interval: Option<SimDuration>,
    /// Overrides how often connectors check for certificate renewal (360m).
    #[serde(default)]
    pub trust_renewal_interval: Option<SimDuration>,
    /// Simulation step (default 10ms): smaller is finer, slower.
    #[serde(default)]
    pub tick: Option<SimDuration>,
    /// The administrator who registers the connectors (REG-ADMIN).
    pub admin: Admin,
    /// The connector hosts (`[[world.connectors]]`).
    #[serde(default)]
    pub connectors: Vec<ConnectorSpec>,
    /// The private network's backends (`[[world.backends]]`).
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// The published applications (`[[world.apps]]`).
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// The directory's users besides the administrator (OPS-IDENTITY).
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Perimeter firewall rules, first match wins, default allow.
    #[serde(default)]
    pub firewall: Vec<Rule>,
    /// The cloud's PKI timers and deliberate revocation-server faults.
    #[serde(default)]
    pub pki: PkiSpec,
    /// A TLS inspection box on the connectors' outbound path.
    #[serde(default)]
    pub inspection: Option<InspectionSpec>,
    /// The perimeter allows the spec's allow-list (minus some groups) and
    /// drops the rest of 80 and 443; appended after `firewall`.
    #[serde(default)]
    pub allow_list: Option<AllowListSpec>,
    /// Names that fail to resolve or resolve to a sinkhole.
    #[serde(default)]
    pub dns: Dns,
    /// An explicit outbound proxy (`proxy.corp.local`).
    #[serde(default)]
    pub proxy: Option<ProxySpec>,
}

/// `[world.allow_list]`: the spec's table as perimeter rules.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowListSpec {
    /// Groups left out (`service-443`, `crl-80`, `registration-443`, `registration-80`).
    #[serde(default)]
    pub minus: Vec<Group>,
    /// Allow the 443 groups by name (default) or by this week's published IP ranges.
    #[serde(default)]
    pub by: AllowBy,
    /// The week whose ranges an IP allow-list was written from.
    #[serde(default = "default_week")]
    pub week: u32,
    /// What happens to everything else on 80 and 443: `drop` (default) or `reject`.
    #[serde(default = "default_drop")]
    pub otherwise: Action,
}

fn default_week() -> u32 {
    1
}
fn default_drop() -> Action {
    Action::Drop
}

/// How an allow-list names destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AllowBy {
    #[default]
    Names,
    Ranges,
}

/// `[world.proxy]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// The port the proxy listens on (default 8080).
    #[serde(default = "default_proxy_port")]
    pub port: u16,
    /// Demand proxy authentication (407).
    #[serde(default)]
    pub auth: bool,
    /// The proxy's own destination rules (first match wins, default allow):
    /// a destination they refuse gets 403 from the proxy.
    #[serde(default)]
    pub allow: Vec<Rule>,
    /// The firewall between the proxy and the Internet (first match wins,
    /// default allow): a destination it drops or refuses gets 504 or 502
    /// from the proxy. The perimeter rules in `firewall` are the connector
    /// hosts'; the proxy is the host they let out.
    #[serde(default)]
    pub egress: Vec<Rule>,
    /// The proxy's own resolver's faults, asked before the world's `dns`
    /// (the proxy resolves the names it is asked to CONNECT to).
    #[serde(default)]
    pub dns: Dns,
}

fn default_proxy_port() -> u16 {
    8080
}

/// `[world.pki]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PkiSpec {
    /// Lifetime of connector client certificates (default 180d).
    #[serde(default)]
    pub client_cert_lifetime: Option<SimDuration>,
    /// Validity of each CRL (default 7d).
    #[serde(default)]
    pub crl_validity: Option<SimDuration>,
    /// Validity of each OCSP answer (default 4d).
    #[serde(default)]
    pub ocsp_validity: Option<SimDuration>,
    /// Faults of the revocation servers (bad-input scenarios).
    #[serde(default)]
    pub faults: Vec<RevocationFault>,
}

/// `[world.inspection]`: a box that intercepts outbound TLS.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InspectionSpec {
    /// Domain suffixes it intercepts on port 443.
    pub hosts: Vec<String>,
    /// How the box treats the TLS it intercepts (default: re-sign).
    #[serde(default)]
    pub mode: InspectionMode,
    /// Name of the enterprise CA it re-signs with.
    #[serde(default)]
    pub ca: Option<String>,
}

/// The account that registers connectors.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The administrator's sign-in name (`admin@contoso.com`).
    pub user: String,
    /// The administrator's password in the directory.
    pub password: String,
    /// The administrator's directory role (default: global administrator).
    #[serde(default = "default_role")]
    pub role: Role,
    /// Other directories the account belongs to.
    #[serde(default)]
    pub directories: Vec<String>,
    /// The directory the admin signs in to when registering (default: the
    /// tenant's).
    #[serde(default)]
    pub signs_in_to: Option<String>,
    /// The password typed at registration, when it differs from the
    /// directory's (a typo).
    #[serde(default)]
    pub signs_in_with: Option<String>,
    /// The directory's Conditional Access demands multi-factor
    /// authentication for this account's sign-in.
    #[serde(default)]
    pub mfa: bool,
    /// Registration signs in interactively (the installer's window, which
    /// can answer an MFA prompt) rather than with user name and password.
    #[serde(default)]
    pub signs_in_interactively: bool,
}

/// A connector host.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// The connector host's name (timeline events and expectations use it).
    pub name: String,
    /// The connector group it registers into (default `Default`).
    #[serde(default = "default_group")]
    pub group: String,
    /// The roots in the host's trust store: `baltimore` (the service's old
    /// root), `digicert-g2` (its new root), `enterprise` (the inspection
    /// box's CA).
    #[serde(default = "default_roots")]
    pub roots: Vec<RootName>,
    /// How far the host's clock is off: `"+2d"`, `"-40d"`, `"90s"`.
    #[serde(default)]
    pub clock_skew: Option<Skew>,
    /// Revocation policy when a status cannot be learned.
    #[serde(default)]
    pub revocation: RevocationPolicy,
    /// On-host firewall rules (checked before the perimeter's).
    #[serde(default)]
    pub host_firewall: Vec<Rule>,
    /// This host's own resolver's faults, asked before the world's `dns`.
    #[serde(default)]
    pub dns: Dns,
    /// The account the connector's services run as (`network-service`).
    #[serde(default)]
    pub account: Option<String>,
    /// The Windows account of the administrator who runs setup
    /// (`contoso\alice`): registration's connections go out as it, so host
    /// firewall rules by `user` can let registration through and stop the
    /// services, or the reverse (NET-USER). Absent: the scenario does not
    /// tell the accounts apart, and registration goes out as the services do.
    #[serde(default)]
    pub installed_by: Option<String>,
    /// Send everything through the world's proxy (`[world.proxy]`).
    #[serde(default)]
    pub use_proxy: bool,
    /// Run `connector diagnose` on this host at this time; its findings
    /// join the trace as diagnostics.
    #[serde(default)]
    pub diagnose_at: Option<SimDuration>,
    /// The Windows server (installer preflight before registration); every
    /// field defaults to a compliant server.
    #[serde(default)]
    pub host: Option<connector::host::HostProfile>,
    /// The connector version installed (default: the newest release).
    #[serde(default)]
    pub version: Option<String>,
    /// Where the host is (`weu`, `neu`, `eus`, `wus`, `sea`, `aue`); far
    /// from the tenant's region means long links to the cloud.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub region: Option<Spanned<String>>,
    /// The installer's `ENVIRONMENTNAME` (`AzureUSGovernment` for the US
    /// Government cloud); absent: the public cloud.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub environment_name: Option<Spanned<String>>,
}

/// Azure regions the simulation places hosts in, with a rough longitude
/// (degrees) for link latency.
pub const REGIONS: [(&str, f64); 6] =
    [("weu", 5.0), ("neu", -6.0), ("eus", -78.0), ("wus", -120.0), ("sea", 104.0), ("aue", 151.0)];

/// Most cloud instances a region may have in a scenario.
pub const MAX_INSTANCES: u32 = 9;
/// Most relay namespaces an instance may have in a scenario.
pub const MAX_RELAYS: usize = 64;

impl World {
    /// The connector groups the world names (its connectors' and apps').
    pub fn groups(&self) -> BTreeSet<&str> {
        self.connectors.iter().map(|c| c.group.as_str()).chain(self.apps.iter().map(|a| a.group.as_str())).collect()
    }

    /// Why `group` is no group of the world, if it is not.
    pub fn group_problem(&self, group: &str) -> Option<String> {
        let groups = self.groups();
        (!groups.contains(group)).then(|| format!("no connector group {group:?}; the world's are {groups:?}"))
    }

    /// What is wrong with pinning `group` to `region`, if anything: the
    /// group must exist and the region must be a known one other than the
    /// tenant's (groups without a pin are served there already).
    pub fn pin_problem(&self, group: &str, region: &str) -> Option<String> {
        if let Some(text) = self.group_problem(group) {
            return Some(text);
        }
        if region_latency(region, region).is_none() {
            let known: Vec<&str> = REGIONS.iter().map(|(n, _)| *n).collect();
            return Some(format!("unknown region {region:?}; known: {known:?}"));
        }
        (region == self.region).then(|| {
            format!(
                "group {group:?} pinned to {region:?}, the tenant's own region: groups without a pin are served there"
            )
        })
    }

    /// The cloud's side of the world: regions known, the tenant's instance
    /// among the region's, pins to existing groups, releases the feed has.
    fn validate_cloud(&self) -> Result<(), (usize, String)> {
        let known = || REGIONS.iter().map(|(n, _)| *n).collect::<Vec<&str>>();
        if region_latency(&self.region, &self.region).is_none() {
            return Err((0, format!("the tenant's region {:?} is unknown; known: {:?}", self.region, known())));
        }
        for r in self.connectors.iter().filter_map(|c| c.region.as_ref()) {
            if region_latency(r.get_ref(), r.get_ref()).is_none() {
                return Err((r.span().start, format!("unknown region {:?}; known: {:?}", r.get_ref(), known())));
            }
        }
        if !(1..=MAX_INSTANCES).contains(&self.instances) || !(1..=MAX_RELAYS).contains(&self.relays) {
            let text = format!("[world] instances = {} and relays = {}: a region has 1 to {MAX_INSTANCES} instances, each 1 to {MAX_RELAYS} relays", self.instances, self.relays);
            return Err((0, text));
        }
        if self.instance == 0 || self.instance > self.instances {
            let (i, n) = (self.instance, self.instances);
            return Err((0, format!("[world] instance = {i} but the region has instances 1 to {n}")));
        }
        if let Some(text) = self.pinned.iter().find_map(|(g, r)| self.pin_problem(g, r)) {
            return Err((0, format!("[world] pinned: {text}")));
        }
        let feed = &self.feed;
        let named = feed.withheld.iter().chain(feed.rollout.keys()).chain(feed.faults.keys());
        if let Some(v) = named.into_iter().find(|v| !known_release(v)) {
            return Err((0, format!("[world] feed names release {v:?}; the feed's are {:?}", release_versions())));
        }
        Ok(())
    }

    /// Every region a group is pinned to, at the start or by the timeline.
    pub fn pin_regions<'a>(&'a self, timeline: &'a [TimelineEntry]) -> BTreeSet<String> {
        let later = timeline.iter().filter_map(|e| match e.event.get_ref() {
            TimelineEvent::PinGroup(_, r) => Some(r.clone()),
            _ => None,
        });
        self.pinned.values().cloned().chain(later).collect()
    }
}

/// One-way latency between two regions: 2 ms plus 0.45 ms per degree of
/// longitude apart (West Europe–East US about 80 ms round trip, West
/// Europe–Southeast Asia about 95 ms).
pub fn region_latency(a: &str, b: &str) -> Option<Duration> {
    let at = |r: &str| REGIONS.iter().find(|(n, _)| *n == r).map(|(_, x)| *x);
    let d = (at(a)? - at(b)?).abs();
    let d = d.min(360.0 - d);
    Some(Duration::from_micros(((2.0 + 0.45 * d) * 1000.0) as u64))
}

/// A root a connector host may trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RootName {
    Baltimore,
    DigicertG2,
    Enterprise,
}

fn default_roots() -> Vec<RootName> {
    vec![RootName::Baltimore, RootName::DigicertG2]
}

/// A signed clock offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Skew {
    pub ahead_s: i64,
}

impl FromStr for Skew {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'-') => (-1, &t[1..]),
            Some(b'+') => (1, &t[1..]),
            _ => (1, t),
        };
        let d: SimDuration = rest.parse().map_err(|e| format!("clock skew {s:?}: {e}"))?;
        let secs = i64::try_from(d.0.as_secs()).map_err(|_| format!("clock skew {s:?} is too large"))?;
        Ok(Skew { ahead_s: sign * secs })
    }
}

impl<'de> Deserialize<'de> for Skew {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A private backend host.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// The backend's host name on the private network (`app1.corp.local`).
    pub name: String,
    /// The port it serves HTTP on (default 80).
    #[serde(default = "default_port")]
    pub port: u16,
    /// How it answers (default: echo).
    #[serde(default = "echo")]
    pub behaviour: Behaviour,
    /// Not running at the start.
    #[serde(default)]
    pub down: bool,
}

fn echo() -> Behaviour {
    Behaviour::Echo
}

/// A published application.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The application's name; users reach it at `NAME-TENANT.msappproxy.net`.
    pub name: String,
    /// Name of the backend it publishes.
    #[schemars(with = "String")]
    pub backend: Spanned<String>,
    /// The connector group that serves it (default `Default`).
    #[serde(default = "default_group")]
    pub group: String,
    /// `passthrough` (default) or `entra_id`: users sign in first and only
    /// users of the directory reach a connector (OPS-IDENTITY).
    #[serde(default)]
    pub pre_authentication: relay_sim::directory::PreAuthentication,
    /// `none` (default) or `headers`: the backend receives the signed-in
    /// user's name (and a synced user's on-premises account) in headers.
    #[serde(default)]
    pub sso: relay_sim::directory::SingleSignOn,
}

/// A user of the tenant's directory (besides the administrator).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// The user's sign-in name in the directory (`alice@contoso.com`).
    pub upn: String,
    /// The user's password (a load signs in with it).
    #[serde(default = "default_user_password")]
    pub password: String,
    /// The on-premises account it is synchronised from (`CONTOSO\alice`);
    /// absent: the user was created in the tenant.
    #[serde(default)]
    pub synced_from: Option<String>,
}

fn default_user_password() -> String {
    "user-password".into()
}

/// Users calling an app.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// The application the users call.
    #[schemars(with = "String")]
    pub app: Spanned<String>,
    /// How many requests, one every `interval` from `start`.
    pub requests: u32,
    /// When the first request goes out.
    pub start: SimDuration,
    /// Time between requests.
    pub interval: SimDuration,
    /// Path and query asked for (`/?size=8388608` makes the echo backend
    /// answer 8 MiB, checked against its SHA-256 header).
    #[serde(default = "default_path")]
    pub path: String,
    /// A request body of this many bytes (POST; the echo backend answers
    /// with its SHA-256, which the user checks).
    #[serde(default)]
    pub upload_bytes: usize,
    /// A `cookie` header of this many bytes (oversized headers).
    #[serde(default)]
    pub header_bytes: usize,
    /// The status that counts as this load's success, for an app whose
    /// backend never succeeds (an early 401; a 502 from a backend that
    /// breaks off): such answers do not count against `ok_after`, other
    /// ones do (as a gateway error does for an ordinary load), and a 2xx
    /// where an error is expected fails the run.
    #[serde(default)]
    #[schemars(with = "Option<u16>")]
    pub expect_status: Option<Spanned<u16>>,
    /// The user who signs in before each request (an app with `entra_id`
    /// pre-authentication); absent: requests carry no session.
    #[serde(default)]
    pub user: Option<String>,
    /// The password typed at sign-in (default: the user's own).
    #[serde(default)]
    pub password: Option<String>,
    /// A `x-ms-client-principal-name` header the user sends itself,
    /// claiming to be someone else: it must never reach the backend.
    #[serde(default)]
    pub forged_principal: Option<String>,
}

/// One timeline entry.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// When, from the start of the run.
    pub at: SimDuration,
    /// What happens (`connsim explain WORDS` lists the forms).
    #[schemars(with = "TimelineEvent")]
    pub event: Spanned<TimelineEvent>,
}

/// The end state of the connector(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Registered, bootstrapped, and a tunnel was up at the end.
    Serving,
    /// Registration never succeeded; the connector stopped.
    RegistrationFailed,
    /// Registered but no tunnel was up at the end.
    NotServing,
    /// Registered, then the agent stopped itself (e.g. its certificate
    /// expired).
    Stopped,
}

impl Outcome {
    /// The outcome as scenario files spell it (`registration_failed`).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Serving => "serving",
            Outcome::RegistrationFailed => "registration_failed",
            Outcome::NotServing => "not_serving",
            Outcome::Stopped => "stopped",
        }
    }
}

/// What must hold at the end.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// How the run ends for the users.
    pub outcome: Outcome,
    /// Exact number of user requests answered 2xx.
    #[serde(default)]
    pub requests_ok: Option<u32>,
    /// User requests answered 2xx, at least.
    #[serde(default)]
    pub requests_ok_min: Option<u32>,
    /// Most user requests allowed to fail (non-2xx or no answer).
    #[serde(default)]
    pub requests_failed_max: Option<u32>,
    /// Exact counts of user answers by HTTP status (`"502" = 3`).
    #[serde(default)]
    pub user_statuses: BTreeMap<String, u32>,
    /// Successful bootstraps (all connectors together), at least.
    #[serde(default)]
    pub bootstraps_min: Option<u32>,
    /// Tunnel openings beyond the first per endpoint, at least.
    #[serde(default)]
    pub tunnel_reconnects_min: Option<u32>,
    /// Diagnostic codes that must have been reported.
    #[serde(default)]
    pub diagnostics: Vec<String>,
    /// Diagnostic codes that may be reported but need not be. Every other
    /// code not in `diagnostics` fails the run: a finding nobody expected
    /// is a wrong explanation until shown otherwise, so each entry here
    /// carries a comment in the scenario file saying why it is tolerated.
    #[serde(default)]
    pub allowed_diagnostics: Vec<String>,
    /// Diagnostic codes that must not have been reported (already implied
    /// by the strict rule above; kept to state a scenario's point).
    #[serde(default)]
    pub no_diagnostics: Vec<String>,
    /// Text some reported diagnostic of the listed codes must contain in its
    /// message or remedy (e.g. the host and port, the allow-list entry).
    #[serde(default)]
    pub diagnostic_mentions: Vec<String>,
    /// Per connector host, the codes it must report; it may report no
    /// other but those in `allowed_diagnostics`. `"connector-1" = []`: that
    /// host reports nothing. (The world's union is judged as well, with
    /// these codes counted as expected.)
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub diagnostics_by_host: BTreeMap<Spanned<String>, Vec<String>>,
    /// Trace events (agent or cloud, by their `event` name) that must have
    /// happened at least this often: `{ crl_fetched = 2, ocsp_checked = 1 }`.
    #[serde(default)]
    pub events_min: BTreeMap<String, u32>,
    /// Trace events that must not have happened more often than this.
    #[serde(default)]
    pub events_max: BTreeMap<String, u32>,
    /// Exact number of requests each connector host served.
    #[serde(default)]
    pub served_by: BTreeMap<String, u32>,
    /// Least number of requests each connector host served.
    #[serde(default)]
    pub served_by_min: BTreeMap<String, u32>,
    /// Exact number of user answers with each ingress error code.
    #[serde(default)]
    pub relay_errors: BTreeMap<String, u32>,
    /// Bounds on the mean time to a 2xx answer, in milliseconds.
    #[serde(default)]
    pub user_latency_ms_avg_min: Option<u64>,
    /// Mean user latency of answered requests, in ms, at most.
    #[serde(default)]
    pub user_latency_ms_avg_max: Option<u64>,
    /// The version each named connector host runs at the end.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// Every user request sent at or after this time gets a 2xx answer
    /// (the connector is serving again after the timeline's faults).
    #[serde(default)]
    pub ok_after: Option<SimDuration>,
    /// Expectations about one host and one stretch of time.
    #[serde(default)]
    pub window: Vec<WindowExpect>,
}

/// `[[expect.window]]`: what one connector host (or every host) reports
/// and serves within a stretch of simulated time.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowExpect {
    /// The connector host (default: any).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// From and to, simulated time (default: the whole run).
    #[serde(default)]
    pub between: Option<(SimDuration, SimDuration)>,
    /// Codes each reported in the window.
    #[serde(default)]
    pub diagnostics: Vec<String>,
    /// Codes of which at least one is reported in the window.
    #[serde(default)]
    pub any_of: Vec<String>,
    /// Codes not reported in the window.
    #[serde(default)]
    pub no_diagnostics: Vec<String>,
    /// For a code, words its finding (one of them, in the window) mentions.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub mentions: BTreeMap<Spanned<String>, Vec<String>>,
    /// Bounds on the requests the host served in the window.
    #[serde(default)]
    pub served_min: Option<u32>,
    /// Requests the host served inside the window, at most.
    #[serde(default)]
    pub served_max: Option<u32>,
}

impl WindowExpect {
    fn validate(&self, connectors: &[&str]) -> Result<(), (usize, String)> {
        if let Some(host) = self.host.as_ref().filter(|h| !connectors.contains(&h.get_ref().as_str())) {
            let text = format!("expect.window names host {:?}, but the connectors are {connectors:?}", host.get_ref());
            return Err((host.span().start, text));
        }
        if let Some((from, to)) = self.between.filter(|(from, to)| from > to) {
            return Err((0, format!("expect.window between = [{from}, {to}]: it ends before it starts")));
        }
        if let Some(code) = self.mentions.keys().find(|c| !self.names(c.get_ref())) {
            let text = format!(
                "expect.window mentions {:?}, which the window does not expect (list it in diagnostics or any_of)",
                code.get_ref()
            );
            return Err((code.span().start, text));
        }
        Ok(())
    }

    /// Whether the window expects `code` (reported or possibly reported).
    pub fn names(&self, code: &str) -> bool {
        self.diagnostics.iter().chain(&self.any_of).any(|c| c == code)
    }
}

impl Expect {
    /// Every finding the scenario expects: the world's diagnostics, each
    /// host's, and the cloud's answers to users (`relay:CODE`, from
    /// `x-relay-error`). A scenario expecting any is a failing case.
    pub fn findings(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let by_host = self.diagnostics_by_host.values().flatten();
        let in_windows = self.window.iter().flat_map(|w| w.diagnostics.iter().chain(&w.any_of));
        for code in self.diagnostics.iter().chain(by_host).chain(in_windows) {
            if !all.contains(code) {
                all.push(code.clone());
            }
        }
        all.extend(self.relay_errors.keys().map(|c| format!("relay:{c}")));
        all
    }
}

/// A scenario file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid { path: PathBuf, line: usize, column: usize, message: String },
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|nl| before[nl + 1..].chars().count()).unwrap_or(before.chars().count()) + 1;
    (line, column)
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io { path: path.into(), source })?;
        Scenario::parse(&text, path)
    }

    /// Parses and validates scenario text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let invalid = |offset: usize, message: String| {
            let (line, column) = line_col(text, offset);
            ScenarioError::Invalid { path: path.into(), line, column, message }
        };
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            // The TOML parser says nothing for some input (a lone carriage
            // return): an error must still say what is wrong.
            let message = match e.message().trim() {
                "" => "not valid TOML here (a lone carriage return, or a character TOML does not allow)".to_string(),
                m => m.to_string(),
            };
            invalid(offset, message)
        })?;
        scenario.validate().map_err(|(offset, msg)| invalid(offset, msg))?;
        Ok(scenario)
    }

    /// Timeline events name existing hosts, releases and groups.
    fn validate_timeline(&self, backends: &[&str], connectors: &[&str]) -> Result<(), (usize, String)> {
        let w = &self.world;
        for entry in &self.timeline {
            let event = entry.event.get_ref();
            let (kind, name, known) = match (event, event.connector()) {
                (TimelineEvent::StopBackend(n) | TimelineEvent::StartBackend(n), _) => {
                    ("backend", n.as_str(), backends)
                }
                (_, Some(n)) => ("connector", n, connectors),
                (TimelineEvent::StopRevocationServer(n) | TimelineEvent::StartRevocationServer(n), _)
                    if !port_80_names().any(|h| h == n) =>
                {
                    let known: Vec<&str> = port_80_names().collect();
                    return Err((entry.event.span().start, format!("no revocation server {n:?}; known: {known:?}")));
                }
                (TimelineEvent::Feed(change), _) if !known_release(change.release()) => {
                    let text = format!("no release {:?}; the feed's are {:?}", change.release(), release_versions());
                    return Err((entry.event.span().start, text));
                }
                (TimelineEvent::Feed(FeedChange::OfferTo(_, group)), _) => match w.group_problem(group) {
                    Some(text) => return Err((entry.event.span().start, text)),
                    None => continue,
                },
                (TimelineEvent::MoveTenant(n), _) if *n == 0 || *n > w.instances => {
                    let text = format!("no instance {n}: the tenant's region has instances 1 to {}", w.instances);
                    return Err((entry.event.span().start, text));
                }
                (TimelineEvent::PinGroup(g, r), _) => match w.pin_problem(g, r) {
                    Some(text) => return Err((entry.event.span().start, text)),
                    None => continue,
                },
                (TimelineEvent::OneRelay(_, r), _)
                    if r.parse::<usize>().is_ok_and(|i| i == 0 || i > w.relays.max(1)) =>
                {
                    let text = format!("relay {r}: the world has relays 1 to {}", w.relays.max(1));
                    return Err((entry.event.span().start, text));
                }
                (TimelineEvent::AtProxy(_) | TimelineEvent::StopProxy | TimelineEvent::StartProxy, _)
                    if w.proxy.is_none() =>
                {
                    return Err((
                        entry.event.span().start,
                        format!("event \"{}\" needs a [world.proxy]", entry.event.get_ref()),
                    ));
                }
                _ => continue,
            };
            if !known.contains(&name) {
                return Err((
                    entry.event.span().start,
                    format!("event names {kind} {name:?}, but the world has {known:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Cross-references: apps name existing backends, loads name existing
    /// apps, timeline events name existing hosts.
    fn validate(&self) -> Result<(), (usize, String)> {
        if let Some(key) =
            self.expect.user_statuses.keys().find(|k| !k.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)))
        {
            return Err((0, format!("expect.user_statuses: {key:?} is not an HTTP status (100 to 599)")));
        }
        let w = &self.world;
        let backends: Vec<&str> = w.backends.iter().map(|b| b.name.as_str()).collect();
        let apps: Vec<&str> = w.apps.iter().map(|a| a.name.as_str()).collect();
        let connectors: Vec<&str> = w.connectors.iter().map(|c| c.name.as_str()).collect();
        for app in &w.apps {
            if app.sso == SingleSignOn::Headers && app.pre_authentication != PreAuthentication::EntraId {
                let text = format!(
                    "app {:?}: sso = \"headers\" needs pre_authentication = \"entra_id\" (a signed-in user to name)",
                    app.name
                );
                return Err((app.backend.span().start, text));
            }
            if !backends.contains(&app.backend.get_ref().as_str()) {
                return Err((
                    app.backend.span().start,
                    format!(
                        "app {:?} names backend {:?}, but the world has backends {backends:?}",
                        app.name,
                        app.backend.get_ref()
                    ),
                ));
            }
        }
        if let Some(host) = self.expect.diagnostics_by_host.keys().find(|h| !connectors.contains(&h.get_ref().as_str()))
        {
            let text = format!("diagnostics_by_host names {:?}, but the connectors are {connectors:?}", host.get_ref());
            return Err((host.span().start, text));
        }
        for w in &self.expect.window {
            w.validate(&connectors)?;
        }
        for load in &self.load {
            if !apps.contains(&load.app.get_ref().as_str()) {
                return Err((
                    load.app.span().start,
                    format!("load names app {:?}, but the world has apps {apps:?}", load.app.get_ref()),
                ));
            }
            if let Some(code) = load.expect_status.as_ref().filter(|c| !(100..=599).contains(c.get_ref())) {
                return Err((code.span().start, format!("expect_status {} is not an HTTP status", code.get_ref())));
            }
            let app = w.apps.iter().find(|a| &a.name == load.app.get_ref());
            let preauth = app.is_some_and(|a| a.pre_authentication == PreAuthentication::EntraId);
            if load.user.is_some() && !preauth {
                let text = format!(
                    "load signs in as {:?}, but app {:?} has no pre-authentication (set pre_authentication = \"entra_id\")",
                    load.user.as_deref().unwrap_or_default(),
                    load.app.get_ref()
                );
                return Err((load.app.span().start, text));
            }
        }
        self.validate_timeline(&backends, &connectors)?;
        for c in &w.connectors {
            if let Some(e) = &c.environment_name {
                if let Err(msg) = connector::allowlist::Environment::from_environment_name(Some(e.get_ref())) {
                    return Err((e.span().start, msg));
                }
            }
        }
        w.validate_cloud()?;
        for w in &self.expect.window {
            if let Some((_, to)) = w.between.filter(|(_, to)| *to > self.duration) {
                return Err((0, format!("expect.window ends at {to}, after the scenario ({})", self.duration)));
            }
        }
        if w.proxy.is_none() && w.connectors.iter().any(|c| c.use_proxy) {
            return Err((0, "a connector has use_proxy = true but the world has no [world.proxy]".into()));
        }
        if w.connectors.is_empty() {
            return Err((0, "the world has no connector ([[world.connectors]])".into()));
        }
        let x = &self.expect;
        if let Some(code) =
            x.allowed_diagnostics.iter().find(|c| x.diagnostics.contains(c) || x.no_diagnostics.contains(c))
        {
            return Err((
                0,
                format!("[expect] lists {code:?} in allowed_diagnostics and in diagnostics or no_diagnostics"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!("1h30m".parse::<SimDuration>().unwrap().0, Duration::from_secs(5400));
        assert_eq!("250ms".parse::<SimDuration>().unwrap().0, Duration::from_millis(250));
        assert!("10".parse::<SimDuration>().unwrap_err().contains("missing unit"));
        assert!("10y".parse::<SimDuration>().unwrap_err().contains("unknown unit"));
        assert_eq!(SimDuration(Duration::from_secs(1800)).to_string(), "30m");
    }

    #[test]
    fn events_parse_or_list_the_forms() {
        assert_eq!("block port 443".parse::<TimelineEvent>().unwrap(), TimelineEvent::BlockPort(443));
        assert!("block port x".parse::<TimelineEvent>().unwrap_err().contains("port number"));
        assert!("dance".parse::<TimelineEvent>().unwrap_err().contains("restart relay"));
    }

    #[test]
    fn host_events_parse_and_print_back() {
        for text in [
            "install password-protection-proxy on c1",
            "uninstall entra-connect on c1",
            "disable tls12 on c1",
            "enable tls12 on c1",
            "reboot c1",
            "upgrade dotnet on c1 to 528040",
            "set clock on c1 -3600s",
        ] {
            let e = text.parse::<TimelineEvent>().unwrap();
            assert_eq!(e.connector(), Some("c1"), "{text}");
            assert_eq!(e.to_string().parse::<TimelineEvent>().unwrap(), e, "{text}");
        }
        for text in [
            "publish release 1.5.4522.0",
            "withdraw release 1.5.4522.0",
            "offer release 1.5.4522.0 to Pilot",
            "offer release 1.5.4522.0 to all",
            "crash relay 2",
            "start relay cwap-weu-1.servicebus.windows.net",
            "stop revocation server crl3.digicert.com",
        ] {
            assert_eq!(text.parse::<TimelineEvent>().unwrap().to_string(), text);
        }
        for text in
            ["block port 443 on c1", "dns fail *.servicebus.windows.net on c1", "dns restore *.digicert.com at proxy"]
        {
            let e = text.parse::<TimelineEvent>().unwrap();
            assert_eq!(e.to_string(), text);
        }
        let dotnet = "upgrade dotnet on c1 to 4.8".parse::<TimelineEvent>().unwrap();
        assert_eq!(dotnet, TimelineEvent::Host { name: "c1".into(), change: HostChange::DotNet(528_040) });
        assert!("reboot c1".parse::<TimelineEvent>().unwrap().stops_host().is_some());
        let bad = "install antivirus on c1".parse::<TimelineEvent>().unwrap_err();
        assert!(bad.contains("unknown product") && bad.contains("password-protection-proxy"), "{bad}");
        let toml = "name = \"x\"\nduration = \"1m\"\n[world]\nadmin = { user = \"a@contoso.com\", password = \"p\" }\n[[world.connectors]]\nname = \"c\"\n[[timeline]]\nat = \"10s\"\nevent = \"reboot c9\"\n[expect]\noutcome = \"serving\"\n";
        let err = Scenario::parse(toml, Path::new("x.toml")).unwrap_err().to_string();
        assert!(err.contains("names connector \"c9\""), "{err}");
    }

    #[test]
    fn placement_events_parse_and_name_what_exists() {
        for text in ["move tenant to instance 2", "pin group us to eus"] {
            assert_eq!(text.parse::<TimelineEvent>().unwrap().to_string(), text);
        }
        assert!("move tenant to instance two".parse::<TimelineEvent>().unwrap_err().contains("instance number"));
        let world = |extra: &str, event: &str| {
            format!("name = \"x\"\nduration = \"1h\"\n[world]\nadmin = {{ user = \"a@contoso.com\", password = \"p\" }}\n{extra}\n[[world.connectors]]\nname = \"c\"\ngroup = \"us\"\n[[timeline]]\nat = \"10m\"\nevent = \"{event}\"\n[expect]\noutcome = \"serving\"\n")
        };
        let err = |extra: &str, event: &str| {
            Scenario::parse(&world(extra, event), Path::new("x.toml")).unwrap_err().to_string()
        };
        assert!(err("", "move tenant to instance 2").contains("instances 1 to 1"));
        assert!(err("instances = 2\ninstance = 3", "reboot c").contains("instance = 3"));
        assert!(err("", "pin group eu to eus").contains("no connector group \"eu\""));
        assert!(err("", "pin group us to mars").contains("unknown region \"mars\""));
        assert!(err("", "pin group us to weu").contains("the tenant's own region"));
        assert!(err("pinned = { us = \"xx\" }", "reboot c").contains("[world] pinned: unknown region"));
        let ok = world("instances = 2\npinned = { us = \"eus\" }", "move tenant to instance 2");
        let s = Scenario::parse(&ok, Path::new("x.toml")).unwrap();
        assert_eq!(s.world.pin_regions(&s.timeline).into_iter().collect::<Vec<_>>(), ["eus"]);
    }

    #[test]
    fn firewall_events_move_to_the_proxy_with_at_proxy() {
        let e = "reject host *.servicebus.windows.net at proxy".parse::<TimelineEvent>().unwrap();
        assert_eq!(
            e,
            TimelineEvent::AtProxy(Box::new(TimelineEvent::RejectHost("*.servicebus.windows.net".parse().unwrap())))
        );
        assert_eq!(e.to_string(), "reject host *.servicebus.windows.net at proxy");
        let wrong = "rotate root at proxy".parse::<TimelineEvent>().unwrap_err();
        assert!(wrong.contains("goes after a firewall or DNS event"), "{wrong}");
        let toml = "name = \"x\"\nduration = \"1m\"\n[world]\nadmin = { user = \"a@contoso.com\", password = \"p\" }\n[[world.connectors]]\nname = \"c\"\n[[timeline]]\nat = \"10s\"\nevent = \"block port 443 at proxy\"\n[expect]\noutcome = \"serving\"\n";
        let err = Scenario::parse(toml, Path::new("x.toml")).unwrap_err().to_string();
        assert!(err.contains("needs a [world.proxy]"), "{err}");
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
