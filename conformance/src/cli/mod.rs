//! The `connsim` subcommands that have grown beyond a few lines, one
//! module each: `main` parses and dispatches.

pub mod explain;
