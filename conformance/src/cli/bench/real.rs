//! `connsim bench-real`: the real data path on loopback, beside direct
//! and rathole in the same run.

use crate::cli::exe_dir;
use std::path::PathBuf;
use std::process::ExitCode;

/// The loads `connsim bench-real` puts on the real data path.
#[derive(clap::Args)]
pub struct BenchRealArgs {
    /// Closed-loop connection counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "32,1")]
    pub conns: Vec<usize>,
    /// Seconds per closed-loop run.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Closed-loop runs per point (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Open-loop rate, requests a second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Seconds of open-loop load.
    #[arg(long, default_value_t = 10)]
    pub rate_duration: u64,
    /// Relay endpoints, and so tunnels the connector keeps.
    #[arg(long, default_value_t = 8)]
    pub relays: usize,
    /// MiB moved by each large-body transfer (download and upload); 0
    /// skips them.
    #[arg(long, default_value_t = 100)]
    pub large_mib: usize,
    /// Large-body transfers per run, one after the other on one connection.
    #[arg(long, default_value_t = 3)]
    pub transfers: u32,
    /// Streams held open at once to weigh the connector's memory per open
    /// stream (requests the backend holds, then paused uploads); 0 skips.
    /// At most 200 a relay endpoint (what the relay opens on a tunnel).
    #[arg(long, default_value_t = 1000)]
    pub open_streams: usize,
    /// A rathole binary to measure on the same backend.
    #[arg(long)]
    pub rathole: Option<PathBuf>,
    /// A rathole built with its `tls` feature (`cargo install rathole
    /// --no-default-features --features server,client,tls`), measured over
    /// its TLS transport too: a byte forwarder that encrypts its tunnel, as
    /// the connector must. Needs the `openssl` command (for rathole's
    /// PKCS#12 identity).
    #[arg(long)]
    pub rathole_tls: Option<PathBuf>,
    /// Leave out the TLS tunnel floor: a TLS tunnel that does nothing
    /// else (two one-thread processes of connsim, from --bin-dir when it
    /// holds one, framing bytes through TLS 1.3), measured in closed loops
    /// beside the tunnel and rathole, so that a tunnel ÷ rathole ratio can
    /// be read against what a bare TLS tunnel reaches.
    #[arg(long)]
    pub no_floor: bool,
    /// Pin every path's processes the same way: the load generator and the
    /// end that dials the backend (connector, rathole's client, the floor's
    /// connector end) on one core, the end the users reach and the backend
    /// (relay-sim, rathole's server, the floor's relay end) on another.
    /// Left to the scheduler, two single-threaded ends that wake each other
    /// tend to share a core; this shows how much of a ratio is that
    /// placement rather than cost. Linux, two cores or more; targets
    /// measured under load are not judged in such a run (memory is).
    #[arg(long)]
    pub split_cores: bool,
    /// Where relay-sim and connector are (default: next to connsim).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where to draw the figures as an SVG chart (plotters): requests/s and
    /// latency percentiles per path, and large bodies' MB/s.
    #[arg(long, default_value = "bench-real.svg")]
    pub plot: PathBuf,
}

/// Most held streams: what the relay may open on `relays` tunnels (each
/// takes three sockets in relay-sim and two in the connector).
fn max_open_streams(relays: usize) -> usize {
    relays * connector::proto::session::DEFAULT_MAX_STREAMS
}

/// The connsim whose `floor-end` runs the TLS tunnel floor: the one in
/// `bin_dir` when there is one, so that the floor is the same build as
/// the tunnel it is read against; else this one.
fn floor_binary(bin_dir: &std::path::Path) -> Result<PathBuf, String> {
    let beside = bin_dir.join(format!("connsim{}", std::env::consts::EXE_SUFFIX));
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::current_exe().map_err(|e| format!("cannot tell where connsim is (for the TLS tunnel floor): {e}"))
}

/// The real binaries on loopback, beside direct (and rathole).
pub fn bench_real(args: BenchRealArgs) -> Result<ExitCode, String> {
    let BenchRealArgs {
        conns,
        duration,
        runs,
        rate,
        rate_duration,
        relays,
        large_mib,
        transfers,
        open_streams,
        rathole,
        rathole_tls,
        no_floor,
        split_cores,
        bin_dir,
        plot,
    } = args;
    super::check_plot_path(&plot)?;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => exe_dir()?,
    };
    if conns.is_empty() || conns.contains(&0) {
        return Err("--conns: give one or more counts above zero, e.g. 32,1".into());
    }
    let floor = if no_floor { None } else { Some(floor_binary(&bin_dir)?) };
    let opts = conformance::realbench::Options {
        bin_dir,
        rathole,
        rathole_tls,
        relays: relays.clamp(1, 64),
        conns,
        duration: std::time::Duration::from_secs(duration.max(1)),
        runs,
        rate: rate.max(1),
        rate_duration: std::time::Duration::from_secs(rate_duration.max(1)),
        large_bytes: large_mib.min(relay_sim::backend::ECHO_SIZE_MAX >> 20) << 20,
        transfers: transfers.max(1),
        open_streams: open_streams.min(max_open_streams(relays.clamp(1, 64))),
        floor,
        split_cores,
    };
    let figures = conformance::realbench::measure(&opts, &mut |line| eprintln!("[bench-real] {line}"))?;
    print!("{}", conformance::realbench::render(&figures, &opts));
    conformance::plot::write_svg(&plot, &conformance::realbench::panels(&figures, &opts)).map_err(|e| e.to_string())?;
    println!("chart: {}", plot.display());
    Ok(ExitCode::SUCCESS)
}
