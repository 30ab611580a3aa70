//! The connector: an outbound-only agent that registers with the cloud,
//! pulls its configuration, keeps tunnels to relay endpoints and serves the
//! requests pushed down them to private backends.
//!
//! It reaches the world only through [`env::Env`]; the same code runs on real
//! sockets and inside the turmoil simulation.

// Libraries report through return values, events and `tracing`; only the
// binaries print.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod agent;
pub mod allowlist;
pub mod api;
pub mod backend;
pub mod backoff;
pub mod classify;
pub mod code;
pub mod diag;
pub mod diagnose;
pub mod env;
pub mod event;
pub mod evidence;
pub mod gather;
pub mod health;
pub mod host;
pub mod http;
pub mod https;
pub mod identity;
pub mod inflight;
pub mod install;
pub mod net;
pub mod outbox;
pub mod pace;
pub mod package;
pub mod pki;
pub mod proto;
pub mod proxy;
pub mod reach;
pub mod service;
pub mod signatures;
pub mod time;
pub mod tls;
pub mod tls_failure;
pub mod tunnel;
pub mod turn;
pub mod wakes;

pub use agent::{Agent, AgentConfig, AgentError, Credentials, ServiceNames};
pub use env::Env;
