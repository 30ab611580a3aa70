//! Real mode's control API: act on the served cloud while a connector runs
//! against it, as a scenario's timeline does in the simulation (stop a
//! relay, block port 443, rotate the root, revoke a connector, move it to
//! another group).
//!
//! Plain HTTP on 127.0.0.1 only, every request authenticated with the
//! bearer token `relay-sim serve` prints at start (also in the manifest):
//!
//! - `GET /status`: connectors, live tunnels, every service host's gate,
//!   and what the backend served (totals and duplicated request marks);
//! - `POST /actions` with one [`Action`] as JSON, e.g.
//!   `{"action": "block-port", "port": 443, "mode": "drop"}`.
//!
//! `relay-sim control ACTION` sends one for you (it reads the token from
//! the state folder's manifest).

use std::rc::Rc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde::{Deserialize, Serialize};

use crate::backend::ServedLog;
use crate::cloud::Cloud;
use crate::event::CloudEvent;
use crate::gate::{Block, Flow, Gate};
use crate::pki::Generation;
use crate::server::{error, json, serve_plain, Body, ConnInfo, Listener};

/// One thing to do to the served cloud. The names follow the scenarios'
/// timeline (`stop relay`, `block port 443`, `rotate root`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// Crash a relay endpoint (every one without --host): its tunnels are
    /// cut and new connections refused until `start-relay`.
    StopRelay {
        #[arg(long)]
        host: Option<String>,
    },
    /// Start a stopped relay endpoint (every one without --host).
    StartRelay {
        #[arg(long)]
        host: Option<String>,
    },
    /// Cut every tunnel of a relay endpoint and keep serving (a crash and
    /// an immediate restart).
    RestartRelay {
        #[arg(long)]
        host: Option<String>,
    },
    /// A firewall rule in front of every service host on PORT (443: the
    /// service and relays; 80: CRL/OCSP and the trust list).
    BlockPort {
        #[arg(long)]
        port: u16,
        /// drop: connections hang; reject: refused at once.
        #[arg(long, value_enum, default_value = "drop")]
        #[serde(default = "drop_mode")]
        mode: Block,
    },
    /// Lift the rule on PORT.
    UnblockPort {
        #[arg(long)]
        port: u16,
    },
    /// Stop the CRL/OCSP and trust-list server.
    StopRevocationServers,
    /// Start it again.
    StartRevocationServers,
    /// Move every service host to the chains of a root generation.
    RotateRoot {
        /// baltimore or digicert-g2.
        #[arg(long, value_enum, default_value = "digicert-g2")]
        #[serde(default = "next_root")]
        to: Generation,
    },
    /// Revoke the relay endpoints' server certificates.
    RevokeRelayCertificate,
    /// Revoke a connector's client certificate (its tunnels end).
    RevokeConnector {
        #[arg(long)]
        connector: String,
    },
    /// Move a connector to another connector group: the apps of its old
    /// group are no longer routed to it.
    MoveConnector {
        #[arg(long)]
        connector: String,
        #[arg(long)]
        group: String,
    },
}

fn drop_mode() -> Block {
    Block::Drop
}

fn next_root() -> Generation {
    Generation::DigicertG2
}

/// Why an action could not be done.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("no relay endpoint is named {0:?}")]
    UnknownRelay(String),
    #[error("no service host listens on port {0} (443 and 80 do)")]
    UnknownPort(u16),
    #[error("no connector has the id {0:?}")]
    UnknownConnector(String),
}

/// What the control API acts on.
pub struct Control {
    pub cloud: Rc<Cloud>,
    /// One per service host, in the order they were started.
    pub gates: Vec<Rc<Gate>>,
    /// The relay endpoints' gates, by host name.
    pub relays: Vec<Rc<Gate>>,
    /// The CRL/OCSP server's gate.
    pub revocation: Rc<Gate>,
    pub served: ServedLog,
    pub token: String,
}

/// `GET /status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub connectors: Vec<ConnectorStatus>,
    /// Live tunnels: (connector id, relay endpoint).
    pub tunnels: Vec<(String, String)>,
    pub hosts: Vec<HostStatus>,
    /// Requests the backend served.
    pub served: u64,
    /// Request bodies the backend read to their end.
    #[serde(default)]
    pub completed: u64,
    /// Request bodies that ended in an error at the backend.
    #[serde(default)]
    pub broken: u64,
    /// Request marks the backend served more than once.
    pub duplicates: Vec<(String, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectorStatus {
    pub id: String,
    pub machine: String,
    pub group: String,
    pub version: String,
    pub revoked: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HostStatus {
    pub hosts: Vec<String>,
    pub port: u16,
    pub addr: std::net::SocketAddr,
    pub flow: Flow,
}

impl Control {
    pub fn status(&self) -> Status {
        Status {
            connectors: self
                .cloud
                .connectors()
                .into_iter()
                .map(|c| ConnectorStatus {
                    revoked: self.cloud.is_revoked(&c.id),
                    id: c.id,
                    machine: c.machine,
                    group: c.group,
                    version: c.version,
                })
                .collect(),
            tunnels: self.cloud.live_tunnels(),
            hosts: self
                .gates
                .iter()
                .map(|g| HostStatus { hosts: g.hosts.clone(), port: g.port, addr: g.addr, flow: g.flow() })
                .collect(),
            served: self.served.total(),
            completed: self.served.completed(),
            broken: self.served.broken(),
            duplicates: self.served.duplicates(),
        }
    }

    /// The relays an action names (all of them without a name).
    fn relays(&self, host: &Option<String>) -> Result<Vec<&Rc<Gate>>, ActionError> {
        let chosen: Vec<&Rc<Gate>> =
            self.relays.iter().filter(|g| host.as_ref().is_none_or(|h| g.hosts.iter().any(|x| x == h))).collect();
        match (chosen.is_empty(), host) {
            (true, Some(h)) => Err(ActionError::UnknownRelay(h.clone())),
            _ => Ok(chosen),
        }
    }

    fn on_port(&self, port: u16) -> Result<Vec<&Rc<Gate>>, ActionError> {
        let chosen: Vec<&Rc<Gate>> = self.gates.iter().filter(|g| g.port == port).collect();
        if chosen.is_empty() {
            return Err(ActionError::UnknownPort(port));
        }
        Ok(chosen)
    }

    fn connector(&self, id: &str) -> Result<(), ActionError> {
        if self.cloud.is_registered(id) {
            Ok(())
        } else {
            Err(ActionError::UnknownConnector(id.to_string()))
        }
    }

    /// Does `action`.
    pub fn act(&self, action: &Action) -> Result<(), ActionError> {
        match action {
            Action::StopRelay { host } => self.relays(host)?.iter().for_each(|g| g.set_stopped(true)),
            Action::StartRelay { host } => self.relays(host)?.iter().for_each(|g| g.set_stopped(false)),
            Action::RestartRelay { host } => self.relays(host)?.iter().for_each(|g| g.restart()),
            Action::BlockPort { port, mode } => self.on_port(*port)?.iter().for_each(|g| g.set_block(Some(*mode))),
            Action::UnblockPort { port } => self.on_port(*port)?.iter().for_each(|g| g.set_block(None)),
            Action::StopRevocationServers => self.revocation.set_stopped(true),
            Action::StartRevocationServers => self.revocation.set_stopped(false),
            Action::RotateRoot { to } => self.cloud.rotate_root(*to),
            Action::RevokeRelayCertificate => {
                let now = self.cloud.now();
                for host in self.relays.iter().flat_map(|g| &g.hosts) {
                    if self.cloud.with_pki(|p| p.revoke_server(host, now)) {
                        self.cloud.emit(CloudEvent::ServerRevoked { host: host.clone() });
                    }
                }
            }
            Action::RevokeConnector { connector } => {
                self.connector(connector)?;
                self.cloud.revoke_connector(connector);
            }
            Action::MoveConnector { connector, group } => {
                self.connector(connector)?;
                self.cloud.move_connector(connector, group);
            }
        }
        Ok(())
    }
}

/// Serves the control API on `listener` (bind it to loopback).
pub async fn serve(control: Rc<Control>, listener: impl Listener) {
    serve_plain(listener, move |_info: ConnInfo, req| handle(control.clone(), req)).await;
}

/// Largest action accepted.
const ACTION_BYTES_MAX: usize = 4096;

async fn handle(control: Rc<Control>, req: Request<Incoming>) -> Response<Body> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(control.token.as_str()) {
        return error(
            401,
            "unauthorized",
            "send 'Authorization: Bearer TOKEN' with the token relay-sim serve printed (also in its manifest.json)",
        );
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/status") => json(200, &control.status()),
        (Method::POST, "/actions") => {
            let body = match http_body_util::Limited::new(req.into_body(), ACTION_BYTES_MAX).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(400, "invalid_request", &format!("body: {e}")),
            };
            let action: Action = match serde_json::from_slice(&body) {
                Ok(a) => a,
                Err(e) => return error(400, "invalid_action", &format!("{e}")),
            };
            tracing::info!("control: {action:?}");
            match control.act(&action) {
                Ok(()) => json(200, &control.status()),
                Err(e) => error(404, "not_found", &e.to_string()),
            }
        }
        (m, p) => error(404, "not_found", &format!("{m} {p}: the control API has GET /status and POST /actions")),
    }
}

/// The control API's answer to [`call`].
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// A blocking client: `GET /status` (no action) or `POST /actions`.
/// For tools and tests, outside any runtime.
pub fn call(addr: std::net::SocketAddr, token: &str, action: Option<&Action>) -> std::io::Result<Reply> {
    use std::io::{Read, Write};
    let body = action.map(serde_json::to_string).transpose()?.unwrap_or_default();
    let method = if action.is_some() { "POST /actions" } else { "GET /status" };
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        s,
        "{method} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an HTTP answer: {raw:.80}"));
    let status = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).ok_or_else(bad)?;
    Ok(Reply { status, body })
}
