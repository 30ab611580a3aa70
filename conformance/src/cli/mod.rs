//! The `connsim` subcommands, one module each (with its arguments):
//! `main` parses and dispatches.

pub mod bench;
pub mod bundle;
pub mod catalogue;
pub mod explain;
pub mod matrix;
pub mod repro;
pub mod run;
pub mod users;
