//! `connsim bench-real`: the connector's data path on real sockets, beside
//! its baselines, in one run. It starts the `relay-sim` and `connector`
//! binaries on 127.0.0.1 (and rathole, when given), then drives the same
//! backend three ways with [`crate::loadgen`]:
//!
//! - direct: load generator → backend;
//! - tunnel: load generator → relay-sim ingress → relay → TLS tunnel →
//!   connector → backend;
//! - rathole: load generator → rathole server → rathole client → backend.
//!
//! Everything listens on 127.0.0.1 only, every load run is bounded in time,
//! and every process started is killed and reaped when the run ends, also
//! on an error.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use relay_sim::serve::Manifest;

use crate::loadgen::{self, Stats, Target};
use crate::procs::{binary, Procs};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder holding the `relay-sim` and `connector` binaries.
    pub bin_dir: PathBuf,
    /// A rathole binary to compare with, if any.
    pub rathole: Option<PathBuf>,
    /// Relay endpoints served, and so tunnels the connector keeps.
    pub relays: usize,
    /// Closed-loop connection counts.
    pub conns: Vec<usize>,
    /// Length of each closed-loop run.
    pub duration: Duration,
    /// Closed-loop runs per point (the median by requests/s is kept).
    pub runs: u32,
    /// Open-loop rate, requests a second, and its length.
    pub rate: u32,
    pub rate_duration: Duration,
}

/// One path's figures.
#[derive(Debug, Clone)]
pub struct PathFigures {
    pub name: &'static str,
    /// (connections, median run).
    pub closed: Vec<(usize, Stats)>,
    pub open: Stats,
}

/// The whole measurement.
#[derive(Debug, Clone)]
pub struct Figures {
    pub paths: Vec<PathFigures>,
    /// The connector's resident memory with its tunnels up and idle, KiB.
    pub connector_idle_rss_kib: Option<u64>,
    pub tunnels: usize,
}

/// A port free on 127.0.0.1 right now (for rathole's listeners).
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("finding a free port: {e}"))
}

/// Polls `ready` every 100 ms until it says yes, the processes die, or
/// `limit` passes.
fn wait_for(
    procs: &mut Procs,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let give_up = Instant::now() + limit;
    loop {
        procs.check_alive()?;
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(format!("{what}: not ready after {}s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn block_on<F: std::future::Future>(fut: F) -> Result<F::Output, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    Ok(tokio::task::LocalSet::new().block_on(&rt, fut))
}

/// One request; true on a 2xx.
fn answers(target: &Target) -> Result<bool, String> {
    let answers = block_on(loadgen::each_once(target, 1, Duration::ZERO, Duration::ZERO))?;
    Ok(answers.iter().any(|a| matches!(a, Ok(s) if (200..300).contains(s))))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the whole measurement; `progress` gets a line per step.
pub fn measure(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Figures, String> {
    let relay_sim = binary(&opts.bin_dir, "relay-sim")?;
    let connector = binary(&opts.bin_dir, "connector")?;
    let dir = tempfile::tempdir().map_err(|e| format!("scratch folder: {e}"))?;
    let mut procs = Procs::new(dir.path());

    progress("starting relay-sim");
    let state = dir.path().join("state");
    procs.spawn(
        "relay-sim",
        Command::new(&relay_sim)
            .arg("serve")
            .arg("--state-dir")
            .arg(&state)
            .arg("--relays")
            .arg(opts.relays.to_string()),
    )?;
    let manifest_path = state.join("manifest.json");
    wait_for(&mut procs, "relay-sim", Duration::from_secs(20), || Ok(manifest_path.is_file()))?;
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let app = manifest.apps.first().cloned().ok_or("relay-sim's manifest lists no application")?;

    progress("starting the connector");
    let mut cmd = Command::new(&connector);
    cmd.arg("run")
        .arg("--tenant")
        .arg(&manifest.tenant_id)
        .arg("--install-dir")
        .arg(dir.path().join("connector"))
        .arg("--trust-root")
        .arg(&manifest.root_pem)
        .arg("--user")
        .arg(&manifest.admin)
        .arg("--password")
        .arg(&manifest.password);
    for r in &manifest.resolve {
        cmd.arg("--resolve").arg(r);
    }
    let connector_pid = procs.spawn("connector", &mut cmd)?;
    let tunnels = opts.relays.max(1);
    let log = dir.path().join("connector.log");
    wait_for(&mut procs, "connector tunnels", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Ok(crate::netns::events(&text).iter().filter(|e| e["event"] == "tunnel_up").count() >= tunnels)
    })?;
    let direct = Target { addr: manifest.backend, host: "echo.corp.local".into(), path: "/bench".into() };
    let tunnel = Target { addr: manifest.ingress, host: app, path: "/bench".into() };
    wait_for(&mut procs, "tunnel path", Duration::from_secs(30), || answers(&tunnel))?;
    // Idle memory: tunnels up, nothing in flight, after the start-up burst.
    std::thread::sleep(Duration::from_secs(2));
    let connector_idle_rss_kib = rss_kib(connector_pid);

    let mut paths: Vec<(&'static str, Target)> = vec![("direct", direct.clone()), ("connsim tunnel", tunnel)];
    if let Some(rathole) = &opts.rathole {
        progress("starting rathole");
        let target = start_rathole(&mut procs, rathole, dir.path(), manifest.backend)?;
        wait_for(&mut procs, "rathole path", Duration::from_secs(30), || answers(&target))?;
        paths.push(("rathole", target));
    }

    progress("warming up");
    for (_, target) in &paths {
        block_on(loadgen::closed_loop(target, opts.conns.first().copied().unwrap_or(1), Duration::from_secs(1)))?;
    }
    let mut runs: Vec<Vec<Vec<Stats>>> = vec![vec![Vec::new(); opts.conns.len()]; paths.len()];
    for run in 0..opts.runs.max(1) {
        for (ci, &c) in opts.conns.iter().enumerate() {
            for (pi, (name, target)) in paths.iter().enumerate() {
                progress(&format!("run {}/{}: {name}, {c} connections", run + 1, opts.runs.max(1)));
                let s = block_on(loadgen::closed_loop(target, c, opts.duration))?;
                procs.check_alive()?;
                runs[pi][ci].push(s);
            }
        }
    }
    let mut figures = Vec::new();
    for (pi, (name, target)) in paths.iter().enumerate() {
        progress(&format!("{name}: {} requests/s for {}s", opts.rate, opts.rate_duration.as_secs()));
        let open = block_on(loadgen::open_loop(target, opts.rate, 32, opts.rate_duration))?;
        let closed = opts
            .conns
            .iter()
            .zip(std::mem::take(&mut runs[pi]))
            .map(|(&c, mut rs)| {
                rs.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
                let median = rs.swap_remove(rs.len() / 2);
                (c, median)
            })
            .collect();
        figures.push(PathFigures { name, closed, open });
    }
    procs.check_alive()?;
    if crate::netns::events(&procs.log("connector")).iter().any(|e| e["event"] == "stopped") {
        return Err("the connector stopped during the run; see its log".into());
    }
    Ok(Figures { paths: figures, connector_idle_rss_kib, tunnels })
}

/// rathole (default TCP transport) forwarding a public port to `backend`.
fn start_rathole(procs: &mut Procs, bin: &Path, dir: &Path, backend: SocketAddr) -> Result<Target, String> {
    let control = free_port()?;
    let public = free_port()?;
    let server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\n\n[server.services.echo]\ntoken = \"connsim-bench\"\nbind_addr = \"127.0.0.1:{public}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\n\n[client.services.echo]\ntoken = \"connsim-bench\"\nlocal_addr = \"{backend}\"\n"
    );
    let (sp, cp) = (dir.join("rathole-server.toml"), dir.join("rathole-client.toml"));
    std::fs::write(&sp, server).map_err(|e| format!("{}: {e}", sp.display()))?;
    std::fs::write(&cp, client).map_err(|e| format!("{}: {e}", cp.display()))?;
    procs.spawn("rathole-server", Command::new(bin).arg("--server").arg(&sp))?;
    procs.spawn("rathole-client", Command::new(bin).arg("--client").arg(&cp))?;
    Ok(Target {
        addr: SocketAddr::from(([127, 0, 0, 1], public)),
        host: "echo.corp.local".into(),
        path: "/bench".into(),
    })
}

fn ms(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", f64::from(us) / 1000.0)
    } else {
        format!("{:.2} ms", f64::from(us) / 1000.0)
    }
}

/// The table, each figure beside its baseline and target.
pub fn render(f: &Figures, opts: &Options) -> String {
    let mut out = String::new();
    let direct = f.paths.iter().find(|p| p.name == "direct");
    out.push_str(&format!(
        "closed loop: median of {} runs of {}s per point\n\n",
        opts.runs.max(1),
        opts.duration.as_secs()
    ));
    out.push_str(&format!(
        "{:<16} {:>5} {:>10} {:>9} {:>10} {:>10} {:>7}\n",
        "path", "conns", "req/s", "x direct", "p50", "p99", "errors"
    ));
    for (ci, &c) in opts.conns.iter().enumerate() {
        let base = direct.and_then(|d| d.closed.get(ci)).map(|(_, s)| s.per_second());
        for p in &f.paths {
            let Some((_, s)) = p.closed.get(ci) else { continue };
            let ratio = base.map(|b| format!("{:.2}x", s.per_second() / b.max(1e-9))).unwrap_or_default();
            out.push_str(&format!(
                "{:<16} {:>5} {:>10.0} {:>9} {:>10} {:>10} {:>7}\n",
                p.name,
                c,
                s.per_second(),
                ratio,
                ms(s.percentile_us(0.5)),
                ms(s.percentile_us(0.99)),
                s.errors
            ));
        }
    }
    out.push_str(&format!(
        "\nopen loop: {} requests/s for {}s (latency from when each request was due)\n\n",
        opts.rate,
        opts.rate_duration.as_secs()
    ));
    out.push_str(&format!("{:<16} {:>10} {:>10} {:>14} {:>7}\n", "path", "p50", "p99", "p99 added", "errors"));
    let direct_p99 = direct.map(|d| d.open.percentile_us(0.99));
    for p in &f.paths {
        let added = match direct_p99 {
            Some(d) if p.name != "direct" => ms(p.open.percentile_us(0.99).saturating_sub(d)),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<16} {:>10} {:>10} {:>14} {:>7}\n",
            p.name,
            ms(p.open.percentile_us(0.5)),
            ms(p.open.percentile_us(0.99)),
            added,
            p.open.errors
        ));
    }
    for p in &f.paths {
        let first = p.open.first_error.as_ref().or_else(|| p.closed.iter().find_map(|(_, s)| s.first_error.as_ref()));
        if let Some(e) = first {
            out.push_str(&format!("{}: first error: {e}\n", p.name));
        }
    }
    if let Some(kib) = f.connector_idle_rss_kib {
        out.push_str(&format!(
            "\nconnector resident memory, {} tunnels idle: {:.1} MiB (target < 25 MiB)\n",
            f.tunnels,
            kib as f64 / 1024.0
        ));
    }
    // The targets, judged on the first (highest) connection count.
    if let (Some(d), Some(t)) = (direct, f.paths.iter().find(|p| p.name == "connsim tunnel")) {
        if let (Some((c, ds)), Some((_, ts))) = (d.closed.first(), t.closed.first()) {
            let r = ts.per_second() / ds.per_second().max(1e-9);
            let verdict = if r >= 0.5 { "met" } else { "NOT met" };
            out.push_str(&format!("throughput, {c} connections: {r:.2}x direct (target >= 0.5x): {verdict}\n"));
        }
        let added = t.open.percentile_us(0.99).saturating_sub(d.open.percentile_us(0.99));
        let verdict = if added < 2000 { "met" } else { "NOT met" };
        out.push_str(&format!("p99 added at {} requests/s: {} (target < 2 ms): {verdict}\n", opts.rate, ms(added)));
        if let Some(r) = f.paths.iter().find(|p| p.name == "rathole") {
            if let (Some((c, rs)), Some((_, ts))) = (r.closed.first(), t.closed.first()) {
                out.push_str(&format!(
                    "against rathole, {c} connections: {:.2}x its throughput\n",
                    ts.per_second() / rs.per_second().max(1e-9)
                ));
            }
        }
    }
    out
}
