//! relay-sim: the cloud the connector talks to (login, registration,
//! bootstrap, relay endpoints, user ingress, PKI) and the world in between
//! (firewalls, backends). Used by the simulator on turmoil hosts and by
//! `relay-sim serve` on loopback; the service code is the same.

// Libraries report through return values, events and `tracing`; only the
// binaries print.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod backend;
pub mod body;
pub mod cloud;
pub mod control;
pub mod directory;
pub mod event;
pub mod feed;
pub mod gate;
pub mod inspector;
pub mod network;
pub mod pattern;
pub mod pki;
pub mod placement;
pub mod proxy;
pub mod releases;
pub mod serve;
pub mod server;
pub mod services;
pub mod sessions;
pub mod world;

pub use cloud::{Cloud, CloudConfig};
