//! The hidden `connsim floor-end`: one end of `bench-real`'s TLS floor
//! ([`conformance::realfloor`]), started by `bench-real` as its own
//! process, as relay-sim and the connector are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Which end, and where it listens or dials.
#[derive(clap::Subcommand)]
pub enum FloorEndArgs {
    /// Users on --ingress, the connector end's tunnel on --tunnel.
    Relay {
        #[arg(long)]
        ingress: SocketAddr,
        #[arg(long)]
        tunnel: SocketAddr,
        /// The relay's certificate, DER.
        #[arg(long)]
        cert: PathBuf,
        /// Its key, PKCS#8 DER.
        #[arg(long)]
        key: PathBuf,
    },
    /// Dials --tunnel, trusting --cert; a backend connection to --backend
    /// for each stream.
    Connector {
        #[arg(long)]
        tunnel: SocketAddr,
        #[arg(long)]
        backend: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
    },
}

/// Runs one end on one thread until its tunnel closes.
pub fn floor_end(args: FloorEndArgs) -> Result<ExitCode, String> {
    use conformance::realfloor;
    // Sockets only: a floor pays for no timer wheel or signal driver
    // (tokio's time driver reads the clock at every park).
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| format!("runtime: {e}"))?;
    let result = match args {
        FloorEndArgs::Relay { ingress, tunnel, cert, key } => {
            rt.block_on(realfloor::relay(ingress, tunnel, &cert, &key))
        }
        FloorEndArgs::Connector { tunnel, backend, cert } => rt.block_on(realfloor::connector(tunnel, backend, &cert)),
    };
    result.map(|()| ExitCode::SUCCESS).map_err(|e| format!("floor end: {e}"))
}
