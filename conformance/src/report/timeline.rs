//! What happened in a run, small enough to draw: the trace reduced to marks
//! on one lane per host (the HTML report's timeline), and the events around
//! the first failure as steps between hosts (its sequence diagram).
//!
//! A timeline is kept in the JSON report, so that reports merged from parts
//! draw it too. Marks of one kind that fall in one column of a lane become
//! one mark with a count: however long the run and however many requests,
//! a lane has at most [`COLUMNS`] marks of each kind.

use std::collections::BTreeMap;

use connector::event::AgentEvent;
use relay_sim::event::CloudEvent;
use serde::{Deserialize, Serialize};

use crate::trace::{TraceEvent, UserEvent, What};

/// Columns a lane is reduced to.
pub const COLUMNS: u64 = 500;
/// Lanes drawn; hosts past the last share it.
pub const MAX_LANES: usize = 10;
/// Events the sequence diagram shows before the first failure, and after.
const BEFORE: usize = 9;
const AFTER: usize = 3;
/// Characters of a label kept (the rest is in the text trace).
const LABEL_CHARS: usize = 140;

/// What a mark stands for; each kind has its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A tunnel or proxy connection opened.
    Connect,
    /// An exchange with the service: sign-in, registration, bootstrap,
    /// certificate checks, a TLS refusal or interception.
    Handshake,
    /// Something broke: a tunnel down, a failed bootstrap, a revocation.
    Fault,
    /// The scenario's timeline changed the world.
    Timeline,
    /// A user request, at the users, the cloud or the connector.
    Request,
    /// A diagnostic finding.
    Diagnostic,
    /// Install, services, upgrades, the portal's view.
    Lifecycle,
}

impl Kind {
    pub const ALL: [Kind; 7] =
        [Kind::Connect, Kind::Handshake, Kind::Fault, Kind::Timeline, Kind::Request, Kind::Diagnostic, Kind::Lifecycle];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Handshake => "handshake",
            Kind::Fault => "fault",
            Kind::Timeline => "timeline event",
            Kind::Request => "request",
            Kind::Diagnostic => "diagnostic",
            Kind::Lifecycle => "lifecycle",
        }
    }
}

/// One mark on a lane: `n` events of one kind in one column, the first of
/// them labelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub t_ms: u64,
    pub kind: Kind,
    /// A failure (drawn red): an error answer, a refusal, a fault.
    pub bad: bool,
    pub n: u32,
    pub label: String,
}

/// A host's lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    pub host: String,
    pub marks: Vec<Mark>,
}

/// One row of the sequence diagram: an event on lane `at`, an arrow from
/// lane `from` when another host sent what it reacts to (`from == at`: a
/// note on its own lifeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub t_ms: u64,
    pub from: usize,
    pub at: usize,
    pub bad: bool,
    pub label: String,
}

/// A run drawn small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub duration_ms: u64,
    pub lanes: Vec<Lane>,
    /// The events around the first failure, if the run saw one.
    pub exchange: Vec<Step>,
}

/// Which way an event went between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow<'a> {
    /// Nothing crossed: a note.
    Note,
    /// The host received it from this host.
    From(Peer<'a>),
    /// The host sent it to this host.
    To(Peer<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer<'a> {
    Cloud,
    Users,
    /// A connector, by its id (the trace's lanes are machines).
    Connector(&'a str),
}

/// An event's kind, whether it is a failure, and its flow.
fn classify(what: &What) -> (Kind, bool, Flow<'_>) {
    match what {
        What::Agent(a) => agent(a),
        What::Cloud(c) => cloud(c),
        What::User(u) => {
            let bad = match u {
                UserEvent::Sent { .. } => return (Kind::Request, false, Flow::To(Peer::Cloud)),
                UserEvent::Answered { status, .. } => *status >= 500,
                UserEvent::Expected { .. } => false,
                UserEvent::Failed { .. } | UserEvent::Corrupted { .. } | UserEvent::Unexpected { .. } => true,
            };
            (Kind::Request, bad, Flow::From(Peer::Cloud))
        }
        What::World(_) => (Kind::Timeline, false, Flow::Note),
    }
}

fn agent(a: &AgentEvent) -> (Kind, bool, Flow<'_>) {
    use AgentEvent as A;
    let from_cloud = Flow::From(Peer::Cloud);
    match a {
        A::Registered { .. } | A::BootstrapOk { .. } | A::CrlFetched { .. } | A::CertificateRenewed { .. } => {
            (Kind::Handshake, false, from_cloud)
        }
        A::OcspChecked { status, .. } => (Kind::Handshake, status != "good", from_cloud),
        A::TunnelUp { .. } => (Kind::Connect, false, from_cloud),
        A::RequestAccepted { .. } => (Kind::Request, false, from_cloud),
        A::RequestServed { status, .. } => (Kind::Request, *status >= 500, Flow::To(Peer::Cloud)),
        A::DuplicateRefused { .. } => (Kind::Request, false, from_cloud),
        A::GoAwayReceived { .. } => (Kind::Fault, false, from_cloud),
        A::GoAwaySent { .. } => (Kind::Lifecycle, false, Flow::To(Peer::Cloud)),
        A::BootstrapFailed { .. } | A::TunnelDown { .. } | A::RolledBack { .. } | A::Stopped { .. } => {
            (Kind::Fault, true, Flow::Note)
        }
        A::Diagnostic(_) => (Kind::Diagnostic, true, Flow::Note),
        A::Diagnosed { failed, .. } => (Kind::Diagnostic, *failed > 0, Flow::Note),
        _ => (Kind::Lifecycle, false, Flow::Note),
    }
}

fn cloud(c: &CloudEvent) -> (Kind, bool, Flow<'_>) {
    use CloudEvent as C;
    match c {
        C::ConnectorRegistered { connector_id, .. } | C::BootstrapServed { connector_id } => {
            (Kind::Handshake, false, Flow::From(Peer::Connector(connector_id)))
        }
        C::TunnelOpened { connector_id, .. } => (Kind::Connect, false, Flow::From(Peer::Connector(connector_id))),
        C::ProxyConnect { status, .. } => (Kind::Connect, *status != 200, Flow::Note),
        C::RequestDispatched { connector_id, .. } => (Kind::Request, false, Flow::To(Peer::Connector(connector_id))),
        C::UserAnswered { status, .. } => (Kind::Request, *status >= 500, Flow::To(Peer::Users)),
        C::UserAnswerCut { .. } | C::PreAuthRefused { .. } => (Kind::Request, true, Flow::To(Peer::Users)),
        C::LoginOk { .. } | C::TrustListServed { .. } | C::CrlServed { .. } | C::OcspServed { .. } => {
            (Kind::Handshake, false, Flow::Note)
        }
        C::LoginDenied { .. } | C::RegistrationDenied { .. } | C::TlsRefused { .. } | C::UserSignInDenied { .. } => {
            (Kind::Handshake, true, Flow::Note)
        }
        C::Intercepted { .. } => (Kind::Handshake, true, Flow::Note),
        C::TunnelClosed { .. } | C::ConnectorRevoked { .. } | C::ServerRevoked { .. } | C::ConnectorInactive { .. } => {
            (Kind::Fault, true, Flow::Note)
        }
        C::RootRotated { .. } | C::TenantMoved { .. } | C::TunnelMovedAway { .. } => (Kind::Fault, false, Flow::Note),
        _ => (Kind::Lifecycle, false, Flow::Note),
    }
}

/// An event in words: its name and its fields
/// (`tunnel up: endpoint=cwap-weu-1.servicebus.windows.net:443`).
fn label(what: &What) -> String {
    let value = serde_json::to_value(what).unwrap_or_default();
    let Some((_, inner)) = value.as_object().and_then(|o| o.iter().next()) else { return String::new() };
    let Some(fields) = inner.as_object() else { return inner.to_string() };
    let name = fields.get("event").and_then(|v| v.as_str()).unwrap_or("event").replace('_', " ");
    let values: Vec<String> = fields
        .iter()
        .filter(|(k, v)| *k != "event" && !v.is_null())
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect();
    let text = if values.is_empty() { name } else { format!("{name}: {}", values.join(", ")) };
    super::ellipsis(&text, LABEL_CHARS)
}

impl Timeline {
    /// The timeline of a run of `duration_ms` that recorded `trace`.
    pub fn of(trace: &[TraceEvent], duration_ms: u64) -> Timeline {
        let duration_ms = duration_ms.max(trace.last().map_or(0, |e| e.t_ms)).max(1);
        let lanes = Lanes::of(trace);
        let mut marks: BTreeMap<(usize, u64, Kind, bool), Mark> = BTreeMap::new();
        for e in trace {
            let (kind, bad, _) = classify(&e.what);
            let column =
                (u128::from(e.t_ms.min(duration_ms)) * u128::from(COLUMNS - 1) / u128::from(duration_ms)) as u64;
            marks.entry((lanes.index(&e.host), column, kind, bad)).and_modify(|m| m.n += 1).or_insert_with(|| Mark {
                t_ms: e.t_ms,
                kind,
                bad,
                n: 1,
                label: label(&e.what),
            });
        }
        let mut drawn: Vec<Lane> =
            lanes.names.iter().map(|host| Lane { host: host.clone(), marks: Vec::new() }).collect();
        for ((lane, ..), mark) in marks {
            drawn[lane].marks.push(mark);
        }
        Timeline { duration_ms, lanes: drawn, exchange: exchange(trace, &lanes) }
    }

    /// Whether the run saw a failure.
    pub fn has_failure(&self) -> bool {
        self.lanes.iter().any(|l| l.marks.iter().any(|m| m.bad))
    }
}

/// The trace's hosts as lanes: the world's timeline and the users first,
/// then the cloud, then the rest in the order they first appear.
struct Lanes {
    names: Vec<String>,
    /// A connector's id to its machine (its lane).
    machines: BTreeMap<String, String>,
}

impl Lanes {
    fn of(trace: &[TraceEvent]) -> Lanes {
        let mut names: Vec<String> = Vec::new();
        let mut machines = BTreeMap::new();
        for e in trace {
            if !names.contains(&e.host) {
                names.push(e.host.clone());
            }
            match &e.what {
                What::Agent(
                    AgentEvent::Registered { connector_id, .. } | AgentEvent::IdentityLoaded { connector_id },
                ) => {
                    machines.insert(connector_id.clone(), e.host.clone());
                }
                What::Cloud(CloudEvent::ConnectorRegistered { connector_id, machine, .. }) => {
                    machines.insert(connector_id.clone(), machine.clone());
                }
                _ => {}
            }
        }
        let rank = |h: &String| match h.as_str() {
            "world" => 0,
            "users" => 1,
            "cloud" => 2,
            _ => 3,
        };
        names.sort_by_key(rank);
        if names.len() > MAX_LANES {
            let others = names.len() - (MAX_LANES - 1);
            names.truncate(MAX_LANES - 1);
            names.push(format!("{others} other hosts"));
        }
        Lanes { names, machines }
    }

    /// A host's lane (hosts past the last lane share it).
    fn index(&self, host: &str) -> usize {
        self.names.iter().position(|n| n == host).unwrap_or(self.names.len().saturating_sub(1))
    }

    fn of_peer(&self, peer: Peer<'_>) -> Option<usize> {
        let host = match peer {
            Peer::Cloud => "cloud",
            Peer::Users => "users",
            Peer::Connector(id) => self.machines.get(id)?.as_str(),
        };
        self.names.iter().position(|n| n == host)
    }
}

/// The events around the first failure, as sequence-diagram steps.
fn exchange(trace: &[TraceEvent], lanes: &Lanes) -> Vec<Step> {
    let Some(first) = trace.iter().position(|e| classify(&e.what).1) else { return Vec::new() };
    let start = first.saturating_sub(BEFORE);
    let end = (first + AFTER + 1).min(trace.len());
    trace[start..end]
        .iter()
        .map(|e| {
            let (_, bad, flow) = classify(&e.what);
            let at = lanes.index(&e.host);
            let (from, at) = match flow {
                Flow::Note => (at, at),
                Flow::From(peer) => (lanes.of_peer(peer).unwrap_or(at), at),
                Flow::To(peer) => (at, lanes.of_peer(peer).unwrap_or(at)),
            };
            Step { t_ms: e.t_ms, from, at, bad, label: label(&e.what) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::WorldEvent;

    fn event(t_ms: u64, host: &str, what: What) -> TraceEvent {
        TraceEvent { t_ms, host: host.into(), what }
    }

    fn sample() -> Vec<TraceEvent> {
        let id = "c-1".to_string();
        let mut trace = vec![
            event(
                0,
                "connector-1",
                What::Agent(AgentEvent::Registered { connector_id: id.clone(), cert_serial: "1".into() }),
            ),
            event(5, "cloud", What::Cloud(CloudEvent::TunnelOpened { connector_id: id.clone(), endpoint: "e".into() })),
            event(10, "world", What::World(WorldEvent::Applied { what: "reject port 443".into() })),
        ];
        for i in 0..50 {
            trace.push(event(20 + i, "users", What::User(UserEvent::Sent { mark: format!("m{i}") })));
        }
        trace.push(event(
            90,
            "cloud",
            What::Cloud(CloudEvent::RequestDispatched {
                id: 1,
                app: "a".into(),
                connector_id: id,
                endpoint: "e".into(),
                attempt: 0,
            }),
        ));
        trace.push(event(95, "connector-1", What::Agent(AgentEvent::BootstrapFailed { code: "NET-443".into() })));
        trace
    }

    #[test]
    fn lanes_put_the_world_and_users_first_and_merge_a_column() {
        let t = Timeline::of(&sample(), 100_000);
        let hosts: Vec<&str> = t.lanes.iter().map(|l| l.host.as_str()).collect();
        assert_eq!(hosts, ["world", "users", "cloud", "connector-1"]);
        let users = &t.lanes[1].marks;
        assert_eq!(users.iter().map(|m| m.n).sum::<u32>(), 50, "every request counted");
        assert_eq!(users.len(), 1, "requests in one column share a mark");
        assert_eq!(users[0].label, "sent: mark=m0");
        assert!(t.has_failure());
    }

    #[test]
    fn the_exchange_draws_arrows_between_machines_and_ends_after_the_failure() {
        let t = Timeline::of(&sample(), 100);
        let last = t.exchange.last().expect("steps");
        assert!(last.bad && last.from == last.at && last.label == "bootstrap failed: code=NET-443");
        let dispatched = &t.exchange[t.exchange.len() - 2];
        assert_eq!((dispatched.from, dispatched.at), (2, 3), "cloud to connector-1, found by its id");
        assert_eq!(t.exchange.len(), BEFORE + 1);
    }

    #[test]
    fn many_hosts_share_the_last_lane() {
        let trace: Vec<TraceEvent> = (0..30)
            .map(|i| event(i, &format!("connector-{i}"), What::Agent(AgentEvent::Installed { version: "1".into() })))
            .collect();
        let t = Timeline::of(&trace, 30);
        assert_eq!(t.lanes.len(), MAX_LANES);
        assert_eq!(t.lanes[MAX_LANES - 1].host, "21 other hosts");
        assert_eq!(t.lanes[MAX_LANES - 1].marks.iter().map(|m| m.n).sum::<u32>(), 21);
        assert!(!t.has_failure() && t.exchange.is_empty());
    }
}
