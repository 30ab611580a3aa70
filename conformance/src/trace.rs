//! The trace of a run: typed events stamped with simulated time and the
//! host they happened on, in the order they happened. Its SHA-256 over the
//! canonical JSON lines is the trace hash that proves determinism.

use std::cell::RefCell;
use std::rc::Rc;

use connector::event::AgentEvent;
use relay_sim::event::{CloudEvent, CloudSink};
use serde::Serialize;

/// What the simulated users saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum UserEvent {
    Sent {
        mark: String,
    },
    Answered {
        mark: String,
        status: u16,
        relay_error: Option<String>,
    },
    Failed {
        mark: String,
        error: String,
    },
    /// A success whose body is not what was sent or announced: an upload
    /// that arrived changed, or a download cut short.
    Corrupted {
        mark: String,
        status: u16,
        what: String,
    },
    /// An answer with the status its load expects (`expect_status`).
    Expected {
        mark: String,
        status: u16,
        relay_error: Option<String>,
    },
    /// An answer with another status than its load expects.
    Unexpected {
        mark: String,
        status: u16,
        expected: u16,
    },
}

/// What the runner did to the world (timeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorldEvent {
    Applied { what: String },
}

/// Any event of the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    Agent(AgentEvent),
    Cloud(CloudEvent),
    User(UserEvent),
    World(WorldEvent),
}

/// One trace line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceEvent {
    /// Simulated milliseconds since the start of the run.
    pub t_ms: u64,
    pub host: String,
    pub what: What,
}

impl TraceEvent {
    /// The canonical JSON line of this event.
    pub fn json_line(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"unserializable\":\"{e}\"}}"))
    }
}

/// The trace being recorded; cheap to clone into every host.
#[derive(Debug, Clone, Default)]
pub struct Trace(Rc<RefCell<Vec<TraceEvent>>>);

impl Trace {
    /// Records `what` at the simulation's time; outside a step (a
    /// timeline event applied between steps), at the time of the event
    /// recorded last, which is that timeline event's.
    pub fn record(&self, host: &str, what: What) {
        let last = || self.0.borrow().last().map_or(0, |e| e.t_ms);
        let t_ms = turmoil::sim_elapsed().map_or_else(last, |d| d.as_millis() as u64);
        self.record_at(t_ms, host, what);
    }

    pub fn record_at(&self, t_ms: u64, host: &str, what: What) {
        self.0.borrow_mut().push(TraceEvent { t_ms, host: host.to_string(), what });
    }

    pub fn events(&self) -> Vec<TraceEvent> {
        self.0.borrow().clone()
    }
}

/// SHA-256 of the trace's JSON lines, hex.
pub fn hash(events: &[TraceEvent]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for e in events {
        ctx.update(e.json_line().as_bytes());
        ctx.update(b"\n");
    }
    ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects an agent on `host` to the trace.
pub struct AgentSink {
    pub trace: Trace,
    pub host: String,
}

impl connector::env::EventSink for AgentSink {
    fn emit(&self, event: AgentEvent) {
        self.trace.record(&self.host, What::Agent(event));
    }
}

/// Connects the cloud to the trace. Cloud events carry the host of the
/// service that emitted them implicitly; they are stamped `cloud`.
pub struct CloudTraceSink {
    pub trace: Trace,
}

impl CloudSink for CloudTraceSink {
    fn emit(&self, event: CloudEvent) {
        self.trace.record("cloud", What::Cloud(event));
    }
}
