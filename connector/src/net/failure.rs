//! How an outbound connection failed: one type, [`ConnectFailure`], for a
//! direct attempt and for one through a proxy ([`ProxyError`], with the
//! proxy's report of its own onward attempt, [`Onward`]). The classifier
//! and the diagnostics read it; only the transport makes it.

use std::io;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// How an outbound connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectFailure {
    /// Refused at once (a reject rule, or nothing listening).
    Refused,
    /// No answer within the connect timeout (a drop rule, a blackhole).
    TimedOut,
    /// The name did not resolve.
    Unresolved,
    /// Through an outbound proxy: its refusal, its report of the onward
    /// connection's failure, or the proxy itself not answering.
    Proxy(Box<ProxyError>),
    /// Anything else the OS reported.
    Other(String),
}

impl ConnectFailure {
    pub fn from_io(e: &io::Error) -> Self {
        if let Some(p) = e.get_ref().and_then(|inner| inner.downcast_ref::<ProxyError>()) {
            return ConnectFailure::Proxy(Box::new(p.clone()));
        }
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            io::ErrorKind::NotFound => ConnectFailure::Unresolved,
            _ => ConnectFailure::Other(e.to_string()),
        }
    }
}

impl ConnectFailure {
    /// The failure on the way to the destination, whoever made the attempt:
    /// a proxy's report of its own failed connection counts as that
    /// failure, so the classifier locates it as it would a direct one.
    /// Refusals by the proxy itself, and a sinkhole seen at the proxy, stay
    /// the proxy's.
    pub fn onward(&self) -> ConnectFailure {
        let ConnectFailure::Proxy(p) = self else { return self.clone() };
        let ProxyError::Onward { onward, .. } = p.as_ref() else { return self.clone() };
        match onward {
            Onward::Unresolved => ConnectFailure::Unresolved,
            Onward::Refused => ConnectFailure::Refused,
            Onward::TimedOut => ConnectFailure::TimedOut,
            Onward::Failed(_) => ConnectFailure::Other(self.to_string()),
            Onward::Sinkhole(_) => self.clone(),
        }
    }
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Refused => f.write_str("connection refused"),
            ConnectFailure::TimedOut => f.write_str("connection timed out (packets dropped?)"),
            ConnectFailure::Unresolved => f.write_str("name did not resolve"),
            ConnectFailure::Proxy(p) => write!(f, "{p}"),
            ConnectFailure::Other(s) => f.write_str(s),
        }
    }
}

/// What a proxy answered instead of opening the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProxyError {
    #[error("proxy {proxy} requires authentication (407), which the connector does not support")]
    AuthRequired { proxy: String },
    #[error("proxy {proxy} refused CONNECT {target} with {status}")]
    Refused { proxy: String, target: String, status: String },
    #[error("proxy {proxy} answered something that is not HTTP: {what}")]
    Garbled { proxy: String, what: String },
    /// The proxy itself did not answer: its name did not resolve, or it
    /// refused the connection.
    #[error("the outbound proxy {proxy} cannot be reached ({what})")]
    Down { proxy: String, what: String },
    /// The proxy tried the destination itself and failed: the fault lies
    /// beyond the proxy, and is located as a direct failure would be.
    #[error("proxy {proxy} could not reach {target}: {onward} (it answered {status})")]
    Onward { proxy: String, target: String, status: String, onward: Onward },
}

/// How the proxy's own connection to the destination failed, from its
/// status and RFC 9209 `Proxy-Status` header. Without the header only 504
/// (a gateway timeout) says which; 502 and 503 say only "could not".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Onward {
    /// `dns_error`, `dns_timeout`, `destination_not_found`.
    Unresolved,
    /// The name resolved to a sinkhole address at the proxy (`next-hop` of
    /// `destination_ip_prohibited` or `destination_ip_unroutable`).
    Sinkhole(IpAddr),
    /// `connection_refused`.
    Refused,
    /// `connection_timeout`, or a 504 without the header.
    TimedOut,
    /// Another error type, or none given.
    Failed(String),
}

impl std::fmt::Display for Onward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Onward::Unresolved => f.write_str("the name did not resolve at the proxy"),
            Onward::Sinkhole(a) => write!(f, "the name resolved to {a} at the proxy"),
            Onward::Refused => f.write_str("connection refused"),
            Onward::TimedOut => f.write_str("connection timed out"),
            Onward::Failed(e) if e.is_empty() => f.write_str("no reason given"),
            Onward::Failed(e) => f.write_str(e),
        }
    }
}

/// Whether `addr` is a sinkhole answer (what DNS filters return for names
/// they block). Loopback is not counted: `--resolve` to 127.0.0.1 is how
/// tests and local setups point names at a local server.
pub fn is_sinkhole(addr: IpAddr) -> bool {
    addr.is_unspecified()
}
