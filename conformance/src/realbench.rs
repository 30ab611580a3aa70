//! `connsim bench-real`: the connector's data path on real sockets, beside
//! its baselines, in one run. It starts the `relay-sim` and `connector`
//! binaries on 127.0.0.1 (and rathole, when given), then drives the same
//! backend three ways with [`crate::loadgen`]:
//!
//! - direct: load generator → backend;
//! - tunnel: load generator → relay-sim ingress → relay → TLS tunnel →
//!   connector → backend;
//! - rathole: load generator → rathole server → rathole client → backend;
//! - rathole (TLS): the same with rathole's TLS transport, a byte forwarder
//!   that encrypts its tunnel leg as the connector must (the spec's
//!   tunnels are TLS on 443).
//!
//! The backend is relay-sim's echo, which runs on a thread of its own: in
//! every path it is apart from the forwarder, as another machine would be
//! (on relay-sim's main thread it would share wake-ups with the tunnel's
//! relay and with no rathole process: BENCHMARKS.md, round five).
//!
//! Everything listens on 127.0.0.1 only, every load run is bounded in time,
//! and every process started is killed and reaped when the run ends, also
//! on an error.

#![allow(clippy::disallowed_methods, reason = "real sockets in real time: throughput and latency are wall time")]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use relay_sim::serve::Manifest;

use crate::loadgen::{self, Stats, Target};
use crate::plot::{Bar, Panel};
use crate::procs::{binary, Procs};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Folder holding the `relay-sim` and `connector` binaries.
    pub bin_dir: PathBuf,
    /// A rathole binary to compare with, if any.
    pub rathole: Option<PathBuf>,
    /// A rathole built with its `tls` feature, measured over TLS, if any.
    pub rathole_tls: Option<PathBuf>,
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
    /// Bytes of each large-body transfer (0: none), and transfers per run.
    pub large_bytes: usize,
    pub transfers: u32,
    /// Streams held open at once to weigh the connector's memory per open
    /// stream ([`crate::held`]); 0 skips it.
    pub open_streams: usize,
    /// The `connsim` binary whose `floor-end` runs the TLS floor
    /// ([`crate::realfloor`]) as its own path; `None` skips it.
    pub floor: Option<PathBuf>,
    /// Pins every path's sides the same way ([`crate::cores`]): the load
    /// generator and the client ends on one core, the server ends and the
    /// backend on another. Targets measured under load are not judged then.
    pub split_cores: bool,
}

/// The path through our tunnel (the others: `direct`, [`RATHOLE`],
/// [`RATHOLE_TLS`]).
pub const TUNNEL: &str = "connsim tunnel";
/// rathole over its default TCP transport.
pub const RATHOLE: &str = "rathole";
/// rathole over its TLS transport.
pub const RATHOLE_TLS: &str = "rathole (TLS)";
/// A TLS tunnel that does nothing else ([`crate::realfloor`]); closed
/// loops only. (Not `bench --all`'s simulated TLS floor.)
pub const FLOOR: &str = "TLS tunnel floor";

/// One path's figures.
#[derive(Debug, Clone)]
pub struct PathFigures {
    pub name: &'static str,
    /// (connections, median run, CPU time of that run).
    pub closed: Vec<(usize, Stats, Cpu)>,
    /// The open-loop run with the median p99 (none for [`FLOOR`], which
    /// is a floor for closed loops).
    pub open: Option<Stats>,
    /// Large bodies, bytes a second (median run): download, upload.
    pub large: Option<(f64, f64)>,
}

/// CPU time each process of the bench spent during one run, nanoseconds,
/// by label (`connsim` is the load generator), and the machine's own
/// count. On 2 cores a closed loop measures CPU per request: this says
/// whose, and how much of the cores nobody used.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    /// Nanoseconds on a CPU, every thread of each process, by label.
    pub by_process: Vec<(String, u64)>,
    /// The whole machine's CPU time, when `/proc/stat` can be read (off
    /// Linux it cannot, and the idle share is left out). Whole machine:
    /// anything else running during the bench hides idle cores.
    pub machine: Option<Jiffies>,
    /// Nanoseconds each process's threads were ready to run but waited
    /// for a core (the kernel's run delay), by label as `by_process`.
    /// Two single-threaded forwarders kept on one core wait for each
    /// other while the other core idles: neither the CPU figures nor the
    /// idle share show whose wait it was.
    pub waiting: Vec<(String, u64)>,
}

impl Cpu {
    /// Every process's CPU time so far.
    fn sample(pids: &[(String, u32)]) -> Cpu {
        let spent: Vec<(&String, Schedstat)> =
            pids.iter().map(|(label, pid)| (label, schedstat(*pid).unwrap_or_default())).collect();
        Cpu {
            by_process: spent.iter().map(|(label, s)| ((*label).clone(), s.on_cpu_ns)).collect(),
            machine: Jiffies::read(),
            waiting: spent.iter().map(|(label, s)| ((*label).clone(), s.waiting_ns)).collect(),
        }
    }

    /// What each process spent between `before` and `self`.
    fn since(&self, before: &Cpu) -> Cpu {
        let between = |after: &[(String, u64)], before: &[(String, u64)]| -> Vec<(String, u64)> {
            after.iter().zip(before).map(|((label, a), (_, b))| (label.clone(), a.saturating_sub(*b))).collect()
        };
        let by_process = between(&self.by_process, &before.by_process);
        let machine = match (self.machine, before.machine) {
            (Some(a), Some(b)) => {
                Some(Jiffies { idle: a.idle.saturating_sub(b.idle), all: a.all.saturating_sub(b.all) })
            }
            _ => None,
        };
        Cpu { by_process, machine, waiting: between(&self.waiting, &before.waiting) }
    }

    /// Microseconds of CPU, all processes, per answered request.
    pub fn per_request_us(&self, stats: &Stats) -> f64 {
        self.by_process_us(stats).map(|(_, us)| us).sum()
    }

    /// Microseconds of CPU per answered request, process by process.
    pub fn by_process_us<'a>(&'a self, stats: &Stats) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        per_request_us(&self.by_process, stats)
    }

    /// Microseconds a process waited for a core per answered request,
    /// process by process.
    pub fn waiting_us<'a>(&'a self, stats: &Stats) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        per_request_us(&self.waiting, stats)
    }

    /// The share of the machine's cores left idle (a difference of two
    /// samples). A closed loop whose processes wait on each other leaves
    /// cores idle that no CPU-per-request figure shows: requests/s is then
    /// less than cores over CPU per request (BENCHMARKS.md, round twelve).
    pub fn idle_share(&self) -> Option<f64> {
        self.machine.filter(|m| m.all > 0).map(|m| m.idle as f64 / m.all as f64)
    }
}

/// The machine's CPU time from the first line of `/proc/stat`, in clock
/// ticks: idle (idle and I/O wait) and all (its first eight fields; guest
/// time is counted in user time already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jiffies {
    /// Ticks no task used (idle and I/O wait), all cores.
    pub idle: u64,
    /// Every tick counted, all cores.
    pub all: u64,
}

impl Jiffies {
    /// The machine's count so far; `None` where there is no `/proc/stat`.
    fn read() -> Option<Jiffies> {
        Jiffies::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The first (all-cores) line of a `/proc/stat` text; `None` if it is
    /// not one, rather than a wrong figure.
    fn parse(stat: &str) -> Option<Jiffies> {
        let mut fields = stat.lines().next()?.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
        // user nice system idle iowait: older kernels stop there.
        let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
        Some(Jiffies { idle: idle + iowait, all: ticks.iter().sum() })
    }
}

/// Nanoseconds per answered request, as microseconds, by label.
fn per_request_us<'a>(ns: &'a [(String, u64)], stats: &Stats) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    let answered = stats.ok.max(1) as f64;
    ns.iter().map(move |(label, ns)| (label.as_str(), *ns as f64 / 1000.0 / answered))
}

/// What the kernel counted for a process's threads so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Schedstat {
    /// On a CPU.
    on_cpu_ns: u64,
    /// Ready to run, waiting for a CPU.
    waiting_ns: u64,
}

impl Schedstat {
    /// A thread's `schedstat` line: time on a CPU, time waiting for one
    /// (nanoseconds), and how many times it ran.
    fn parse(line: &str) -> Option<Schedstat> {
        let mut fields = line.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some(Schedstat { on_cpu_ns: fields.next()??, waiting_ns: fields.next()?? })
    }
}

/// Every thread of `pid` so far (`/proc/PID/task/*/schedstat`); `None`
/// off Linux or once the process is gone.
fn schedstat(pid: u32) -> Option<Schedstat> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = Schedstat::default();
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        let thread = Schedstat::parse(&text).unwrap_or_default();
        total.on_cpu_ns += thread.on_cpu_ns;
        total.waiting_ns += thread.waiting_ns;
    }
    Some(total)
}

/// The whole measurement.
#[derive(Debug, Clone)]
pub struct Figures {
    pub paths: Vec<PathFigures>,
    /// The connector's resident memory with its tunnels up and idle, KiB.
    pub connector_idle_rss_kib: Option<u64>,
    /// The connector's memory with `open_streams` streams held open.
    pub held: Option<crate::held::Held>,
    pub tunnels: usize,
}

/// `N` distinct ports free on 127.0.0.1 right now, for rathole's and the
/// floor's listeners (each probe is held until all are found, so no port
/// is given twice).
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let fail = |e: std::io::Error| format!("finding a free port: {e}");
    let mut held = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let l = TcpListener::bind("127.0.0.1:0").map_err(fail)?;
        *port = l.local_addr().map_err(fail)?.port();
        held.push(l);
    }
    Ok(ports)
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
    // A lost answer is a no, asked again by `wait_for` (which gives up in
    // time), never a wait without end.
    // (The timer is made inside the runtime `block_on` starts.)
    let one = async {
        tokio::time::timeout(PROBE_LIMIT, loadgen::each_once(target, 1, Duration::ZERO, Duration::ZERO)).await
    };
    let Ok(answers) = block_on(one)? else { return Ok(false) };
    Ok(answers.iter().any(|a| matches!(a, Ok(s) if (200..300).contains(s))))
}

/// How long a readiness probe waits for its answer.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

/// How long a started process has to stop after Ctrl-C before it is
/// killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs the whole measurement; `progress` gets a line per step.
pub fn measure(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Figures, String> {
    let relay_sim = binary(&opts.bin_dir, "relay-sim")?;
    let connector = binary(&opts.bin_dir, "connector")?;
    // Before anything starts: a machine that cannot split fails at once.
    let cores = if opts.split_cores { Some(crate::cores::two()?) } else { None };
    let dir = tempfile::tempdir().map_err(|e| format!("scratch folder: {e}"))?;
    let mut procs = Procs::new(dir.path());
    // Whose CPU time each run counts: this process (the load generator)
    // and every process it starts.
    let mut pids: Vec<(String, u32)> = vec![("connsim".into(), std::process::id())];

    progress("starting relay-sim");
    let (relay_sim_pid, manifest) = start_relay_sim(&mut procs, &relay_sim, dir.path(), opts)?;
    pids.push(("relay-sim".into(), relay_sim_pid));
    let app = manifest.apps.first().cloned().ok_or("relay-sim's manifest lists no application")?;

    progress("starting the connector");
    let connector_pid = start_connector(&mut procs, &connector, dir.path(), &manifest, concurrency(opts))?;
    pids.push(("connector".into(), connector_pid));
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
    let connector_idle_rss_kib = crate::held::rss_kib(connector_pid);
    let held = match opts.open_streams {
        0 => None,
        n => {
            progress(&format!("holding {n} streams open through the tunnel, twice"));
            Some(block_on(crate::held::measure(&tunnel, connector_pid, n))??)
        }
    };

    let mut paths: Vec<(&'static str, Target)> = vec![("direct", direct.clone()), (TUNNEL, tunnel)];
    paths.extend(start_peers(&mut procs, &mut pids, dir.path(), manifest.backend, opts, progress)?);
    if let Some(cores) = cores {
        split_cores(&pids, cores, progress)?;
    }

    progress("warming up");
    for (_, target) in &paths {
        block_on(loadgen::closed_loop(target, opts.conns.first().copied().unwrap_or(1), Duration::from_secs(1)))?;
    }
    let mut runs: Vec<Vec<Vec<(Stats, Cpu)>>> = vec![vec![Vec::new(); opts.conns.len()]; paths.len()];
    for run in 0..opts.runs.max(1) {
        for (ci, &c) in opts.conns.iter().enumerate() {
            for (pi, (name, target)) in paths.iter().enumerate() {
                progress(&format!("run {}/{}: {name}, {c} connections", run + 1, opts.runs.max(1)));
                let before = Cpu::sample(&pids);
                let s = block_on(loadgen::closed_loop(target, c, opts.duration))?;
                let cpu = Cpu::sample(&pids).since(&before);
                procs.check_alive()?;
                runs[pi][ci].push((s, cpu));
            }
        }
    }
    let mut figures = Vec::new();
    for (pi, (name, target)) in paths.iter().enumerate() {
        let (open, large) = if *name == FLOOR {
            (None, None)
        } else {
            let open = open_loops(target, opts, &mut |line| progress(&format!("{name}: {line}")))?;
            (Some(open), transfers(target, opts, &mut |line| progress(&format!("{name}: {line}")))?)
        };
        let closed = opts
            .conns
            .iter()
            .zip(std::mem::take(&mut runs[pi]))
            .map(|(&c, mut rs)| {
                rs.sort_by(|a, b| a.0.per_second().total_cmp(&b.0.per_second()));
                let (median, cpu) = rs.swap_remove(rs.len() / 2);
                (c, median, cpu)
            })
            .collect();
        figures.push(PathFigures { name, closed, open, large });
    }
    procs.check_alive()?;
    if crate::netns::events(&procs.log("connector")).iter().any(|e| e["event"] == "stopped") {
        return Err("the connector stopped during the run; see its log".into());
    }
    // Stopped as by Ctrl-C, not killed: an instrumented build writes its
    // profile on the way out (`connsim pgo` trains on this run).
    let killed = procs.interrupt(STOP_GRACE);
    if !killed.is_empty() {
        progress(&format!("killed after {}s without stopping: {}", STOP_GRACE.as_secs(), killed.join(", ")));
    }
    Ok(Figures { paths: figures, connector_idle_rss_kib, held, tunnels })
}

/// Pins each started process, and this one, to the core of its side
/// (`--split-cores`; see [`crate::cores`]).
fn split_cores(pids: &[(String, u32)], cores: [usize; 2], progress: &mut dyn FnMut(&str)) -> Result<(), String> {
    let [client, server] = cores;
    for (label, pid) in pids {
        let core = match Side::of(label) {
            Some(Side::Client) => client,
            Some(Side::Server) => server,
            None => return Err(format!("--split-cores: no side known for process {label:?}")),
        };
        crate::cores::pin(*pid, core)?;
    }
    progress(&format!(
        "split cores: the load generator and the client ends on core {client}, the server ends and the backend on core {server}"
    ));
    Ok(())
}

/// The paths measured beside the tunnel on the same backend, started and
/// answering: rathole (over TCP, over TLS) and the TLS tunnel floor, as
/// asked for.
fn start_peers(
    procs: &mut Procs,
    pids: &mut Vec<(String, u32)>,
    dir: &Path,
    backend: SocketAddr,
    opts: &Options,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<(&'static str, Target)>, String> {
    let mut paths = Vec::new();
    for (name, bin, tls) in [(RATHOLE, &opts.rathole, false), (RATHOLE_TLS, &opts.rathole_tls, true)] {
        let Some(bin) = bin else { continue };
        progress(&format!("starting {name}"));
        let target = start_rathole(procs, pids, bin, dir, backend, tls)?;
        wait_for(procs, &format!("{name} path"), Duration::from_secs(30), || answers(&target))?;
        paths.push((name, target));
    }
    if let Some(exe) = &opts.floor {
        progress(&format!("starting the {FLOOR} ({})", exe.display()));
        let target = start_floor(procs, pids, exe, dir, backend)?;
        wait_for(procs, &format!("{FLOOR} path"), Duration::from_secs(30), || answers(&target))?;
        paths.push((FLOOR, target));
    }
    Ok(paths)
}

/// The open loop, `opts.runs` times; the run with the median p99.
fn open_loops(target: &Target, opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Stats, String> {
    let mut runs = Vec::new();
    for run in 0..opts.runs.max(1) {
        progress(&format!("{} requests/s for {}s, run {}", opts.rate, opts.rate_duration.as_secs(), run + 1));
        runs.push(block_on(loadgen::open_loop(target, opts.rate, 32, opts.rate_duration))?);
    }
    runs.sort_by_key(|s| s.percentile_us(0.99));
    Ok(runs.swap_remove(runs.len() / 2))
}

/// Large-body download and upload rates (median of `opts.runs` runs), if asked for.
fn transfers(target: &Target, opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Option<(f64, f64)>, String> {
    if opts.large_bytes == 0 {
        return Ok(None);
    }
    let mut rates = [Vec::new(), Vec::new()];
    for run in 0..opts.runs.max(1) {
        for (i, way) in [loadgen::Direction::Down, loadgen::Direction::Up].into_iter().enumerate() {
            progress(&format!("{way:?} {} x {} MiB, run {}", opts.transfers, opts.large_bytes >> 20, run + 1));
            rates[i].push(block_on(loadgen::transfer(target, opts.large_bytes, way, opts.transfers))??);
        }
    }
    let [down, up] = rates.map(crate::bench::median);
    // At least one run each way (`runs.max(1)` above).
    down.zip(up).map(Some).ok_or_else(|| "no transfer was measured".to_string())
}

/// relay-sim serving the tunnel's cloud and the backend; its pid and
/// manifest, once written.
fn start_relay_sim(procs: &mut Procs, bin: &Path, dir: &Path, opts: &Options) -> Result<(u32, Manifest), String> {
    let state = dir.join("state");
    let pid = procs.spawn(
        "relay-sim",
        Command::new(bin)
            .arg("serve")
            .arg("--state-dir")
            .arg(&state)
            .arg("--relays")
            .arg(opts.relays.to_string())
            .arg("--connection-limit")
            .arg(concurrency(opts).to_string()),
    )?;
    let path = state.join("manifest.json");
    wait_for(procs, "relay-sim", Duration::from_secs(20), || Ok(path.is_file()))?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let manifest = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((pid, manifest))
}

/// Requests the connector serves at once: its default, or more for the
/// held streams.
fn concurrency(opts: &Options) -> usize {
    opts.open_streams.max(connector::agent::MAX_INFLIGHT)
}

/// The connector, registering with relay-sim's administrator and serving
/// up to `max_inflight` requests at once; its pid.
fn start_connector(
    procs: &mut Procs,
    bin: &Path,
    dir: &Path,
    manifest: &Manifest,
    max_inflight: usize,
) -> Result<u32, String> {
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--max-inflight")
        .arg(max_inflight.to_string())
        .arg("--tenant")
        .arg(&manifest.tenant_id)
        .arg("--install-dir")
        .arg(dir.join("connector"))
        .arg("--trust-root")
        .arg(&manifest.root_pem)
        .arg("--user")
        .arg(&manifest.admin)
        // Not on the command line, where `ps` shows it.
        .env("CONNECTOR_PASSWORD", &manifest.password);
    for r in &manifest.resolve {
        cmd.arg("--resolve").arg(r);
    }
    procs.spawn("connector", &mut cmd)
}

/// rathole forwarding a public port to `backend`, over its default TCP
/// transport or (`tls`) its TLS transport. Its processes are labelled
/// `rathole-server` and `rathole-client`, or `rathole-tls-…`.
fn start_rathole(
    procs: &mut Procs,
    pids: &mut Vec<(String, u32)>,
    bin: &Path,
    dir: &Path,
    backend: SocketAddr,
    tls: bool,
) -> Result<Target, String> {
    let [control, public] = free_ports()?;
    let label = rathole_label(tls);
    let (server_transport, client_transport) = if tls { rathole_tls_identity(dir)? } else { Default::default() };
    let server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control}\"\n{server_transport}\n[server.services.echo]\ntoken = \"connsim-bench\"\nbind_addr = \"127.0.0.1:{public}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control}\"\n{client_transport}\n[client.services.echo]\ntoken = \"connsim-bench\"\nlocal_addr = \"{backend}\"\n"
    );
    let (sp, cp) = (dir.join(format!("{label}-server.toml")), dir.join(format!("{label}-client.toml")));
    std::fs::write(&sp, server).map_err(|e| format!("{}: {e}", sp.display()))?;
    std::fs::write(&cp, client).map_err(|e| format!("{}: {e}", cp.display()))?;
    for (role, flag, config) in [("server", "--server", &sp), ("client", "--client", &cp)] {
        let name = format!("{label}-{role}");
        pids.push((name.clone(), procs.spawn(&name, Command::new(bin).arg(flag).arg(config))?));
    }
    Ok(Target {
        addr: SocketAddr::from(([127, 0, 0, 1], public)),
        host: "echo.corp.local".into(),
        path: "/bench".into(),
    })
}

/// The TLS floor's two ends (`floor-relay`, `floor-connector`), started
/// from `exe` (connsim) with a fresh self-signed identity.
fn start_floor(
    procs: &mut Procs,
    pids: &mut Vec<(String, u32)>,
    exe: &Path,
    dir: &Path,
    backend: SocketAddr,
) -> Result<Target, String> {
    let (cert, key) = crate::realfloor::identity().map_err(|e| e.to_string())?;
    let (cert_path, key_path) = (dir.join("floor-cert.der"), dir.join("floor-key.der"));
    std::fs::write(&cert_path, cert).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    std::fs::write(&key_path, key).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let [ingress, tunnel] = free_ports()?.map(addr);
    let mut relay = Command::new(exe);
    relay.args(["floor-end", "relay", "--ingress", &ingress.to_string(), "--tunnel", &tunnel.to_string()]);
    relay.arg("--cert").arg(&cert_path).arg("--key").arg(&key_path);
    pids.push(("floor-relay".into(), procs.spawn("floor-relay", &mut relay)?));
    wait_for(procs, "the floor's relay end", Duration::from_secs(20), || {
        Ok(std::net::TcpStream::connect(ingress).is_ok())
    })?;
    let mut connector = Command::new(exe);
    connector.args(["floor-end", "connector", "--tunnel", &tunnel.to_string(), "--backend", &backend.to_string()]);
    connector.arg("--cert").arg(&cert_path);
    pids.push(("floor-connector".into(), procs.spawn("floor-connector", &mut connector)?));
    Ok(Target { addr: ingress, host: "echo.corp.local".into(), path: "/bench".into() })
}

/// Where a measured process goes under `--split-cores`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The load generator, and the end that dials the backend (connsim;
    /// the connector, rathole's client, the floor's connector end).
    Client,
    /// The end the users' traffic reaches, and the backend (relay-sim, which
    /// serves both; rathole's server; the floor's relay end).
    Server,
}

impl Side {
    /// The side of the process labelled `label` (as [`measure`],
    /// [`start_rathole`] and [`start_floor`] label them); `None` for a
    /// label of neither, which is to fail loudly rather than be placed by
    /// a guess.
    fn of(label: &str) -> Option<Side> {
        let rathole = |role: &str| [false, true].iter().any(|&tls| label == format!("{}-{role}", rathole_label(tls)));
        match label {
            "relay-sim" | "floor-relay" => Some(Side::Server),
            "connsim" | "connector" | "floor-connector" => Some(Side::Client),
            _ if rathole("server") => Some(Side::Server),
            _ if rathole("client") => Some(Side::Client),
            _ => None,
        }
    }
}

/// How a rathole path's processes are labelled (`LABEL-server`,
/// `LABEL-client`) in the CPU figures.
fn rathole_label(tls: bool) -> &'static str {
    if tls {
        "rathole-tls"
    } else {
        "rathole"
    }
}

/// A self-signed identity for rathole's TLS transport (a PKCS#12 file, as
/// its native-tls backend takes: rathole 0.5.0's `tls` feature), made with
/// the `openssl` command; the server's and client's transport sections.
fn rathole_tls_identity(dir: &Path) -> Result<(String, String), String> {
    let (key, cert, p12) = (dir.join("rathole-key.pem"), dir.join("rathole-cert.pem"), dir.join("rathole-id.p12"));
    let openssl = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("openssl (needed for rathole's TLS identity): {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    };
    openssl(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    openssl(
        Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:connsim-bench"])
            .arg("-inkey")
            .arg(&key)
            .arg("-in")
            .arg(&cert)
            .arg("-out")
            .arg(&p12),
    )?;
    // Paths as TOML strings, quoted and escaped by the toml crate.
    let quoted = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let server = format!(
        "\n[server.transport]\ntype = \"tls\"\n[server.transport.tls]\npkcs12 = {}\npkcs12_password = \"connsim-bench\"\n",
        quoted(&p12)
    );
    let client = format!(
        "\n[client.transport]\ntype = \"tls\"\n[client.transport.tls]\ntrusted_root = {}\nhostname = \"localhost\"\n",
        quoted(&cert)
    );
    Ok((server, client))
}

fn ms(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", f64::from(us) / 1000.0)
    } else {
        format!("{:.2} ms", f64::from(us) / 1000.0)
    }
}

/// The figures as chart panels ([`crate::plot`]): closed-loop requests/s
/// per path and connection count, open-loop p50 and p99 per path, and
/// large bodies' MB/s; the tunnel's bars dark, the others light.
pub fn panels(f: &Figures, opts: &Options) -> Vec<Panel> {
    let bar = |p: &PathFigures, label: String, value: f64| {
        if p.name == TUNNEL {
            Bar::measured(label, value)
        } else {
            Bar::baseline(label, value)
        }
    };
    let mut closed = Vec::new();
    for (ci, c) in opts.conns.iter().enumerate() {
        for p in &f.paths {
            if let Some((_, s, _)) = p.closed.get(ci) {
                let conns = if *c == 1 { "1 connection".to_string() } else { format!("{c} connections") };
                closed.push(bar(p, format!("{}, {conns}", p.name), s.per_second()));
            }
        }
    }
    let mut open = Vec::new();
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        for p in &f.paths {
            if let Some(o) = &p.open {
                open.push(bar(p, format!("{}, {name}", p.name), f64::from(o.percentile_us(q)) / 1000.0));
            }
        }
    }
    // A chart of a run on split cores says so (it lands where a default
    // run's chart would).
    let split = if opts.split_cores { " (split cores)" } else { "" };
    let mut panels = vec![
        Panel {
            title: format!("Closed loop: requests per second{split}"),
            unit: "requests/s (more is better)".into(),
            bars: closed,
        },
        Panel {
            title: format!("Open loop, {} requests/s: latency{split}", opts.rate),
            unit: "milliseconds (less is better)".into(),
            bars: open,
        },
    ];
    let mut large = Vec::new();
    for p in &f.paths {
        if let Some((down, up)) = p.large {
            large.push(bar(p, format!("{}, download", p.name), down / 1e6));
            large.push(bar(p, format!("{}, upload", p.name), up / 1e6));
        }
    }
    if !large.is_empty() {
        let title = format!("Large bodies, {} MiB each{split}", opts.large_bytes >> 20);
        panels.push(Panel { title, unit: "MB/s (more is better)".into(), bars: large });
    }
    panels
}

/// The table, each figure beside its baseline and target.
pub fn render(f: &Figures, opts: &Options) -> String {
    let mut out = String::new();
    let direct = f.paths.iter().find(|p| p.name == "direct");
    if opts.split_cores {
        out.push_str(SPLIT_CORES_NOTE);
    }
    out.push_str(&format!(
        "closed loop: median of {} runs of {}s per point\n\n",
        opts.runs.max(1),
        opts.duration.as_secs()
    ));
    out.push_str(&format!(
        "{:<16} {:>5} {:>10} {:>9} {:>10} {:>10} {:>7} {:>12}\n",
        "path", "conns", "req/s", "x direct", "p50", "p99", "errors", "CPU/request"
    ));
    for (ci, &c) in opts.conns.iter().enumerate() {
        let base = direct.and_then(|d| d.closed.get(ci)).map(|(_, s, _)| s.per_second());
        for p in &f.paths {
            let Some((_, s, cpu)) = p.closed.get(ci) else { continue };
            let ratio = base.map(|b| format!("{:.2}x", s.per_second() / b.max(1e-9))).unwrap_or_default();
            out.push_str(&format!(
                "{:<16} {:>5} {:>10.0} {:>9} {:>10} {:>10} {:>7} {:>9.1} us\n",
                p.name,
                c,
                s.per_second(),
                ratio,
                ms(s.percentile_us(0.5)),
                ms(s.percentile_us(0.99)),
                s.errors,
                cpu.per_request_us(s)
            ));
        }
    }
    // Whose CPU each path's requests cost: with every core busy,
    // requests/s is cores over CPU per request; with one connection, the
    // CPU on the request's way is its latency.
    // Cores idle: what the CPU figures leave out when the processes of a
    // path wait on each other.
    out.push_str("\nCPU per request by process (us), and the machine's cores left idle:\n");
    for ci in 0..opts.conns.len() {
        for p in &f.paths {
            let Some((c, s, cpu)) = p.closed.get(ci) else { continue };
            let parts: Vec<String> = cpu
                .by_process_us(s)
                .filter(|(_, us)| *us >= 0.05)
                .map(|(label, us)| format!("{label} {us:.1}"))
                .collect();
            let idle = cpu.idle_share().map(|i| format!("; cores idle {:.0} %", i * 100.0)).unwrap_or_default();
            out.push_str(&format!("  {:<16} c{c}: {}{idle}\n", p.name, parts.join(", ")));
        }
    }
    out.push_str(&waiting_lines(f, opts));
    out.push_str(&format!(
        "\nopen loop: {} requests/s for {}s (latency from when each request was due)\n\n",
        opts.rate,
        opts.rate_duration.as_secs()
    ));
    out.push_str(&format!("{:<16} {:>10} {:>10} {:>14} {:>7}\n", "path", "p50", "p99", "p99 added", "errors"));
    let direct_p99 = direct.and_then(|d| d.open.as_ref()).map(|o| o.percentile_us(0.99));
    for p in &f.paths {
        let Some(open) = &p.open else { continue };
        let added = match direct_p99 {
            Some(d) if p.name != "direct" => ms(open.percentile_us(0.99).saturating_sub(d)),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<16} {:>10} {:>10} {:>14} {:>7}\n",
            p.name,
            ms(open.percentile_us(0.5)),
            ms(open.percentile_us(0.99)),
            added,
            open.errors
        ));
    }
    for p in &f.paths {
        let first = p
            .open
            .as_ref()
            .and_then(|o| o.first_error.as_ref())
            .or_else(|| p.closed.iter().find_map(|(_, s, _)| s.first_error.as_ref()));
        if let Some(e) = first {
            out.push_str(&format!("{}: first error: {e}\n", p.name));
        }
    }
    out.push_str(&large_table(f, opts));
    out.push_str(&memory_lines(f));
    out.push_str(&floor_lines(f));
    out.push_str(&verdicts(f, opts));
    out
}

/// How long each process was ready to run but waited for a core, per
/// request: with a core idle beside it, the wait is where the scheduler
/// put the process, not what the machine could do.
fn waiting_lines(f: &Figures, opts: &Options) -> String {
    let mut out = String::from("\nwaiting for a core per request (us), ready to run but not running:\n");
    for ci in 0..opts.conns.len() {
        for p in &f.paths {
            let Some((c, s, cpu)) = p.closed.get(ci) else { continue };
            let parts: Vec<String> =
                cpu.waiting_us(s).filter(|(_, us)| *us >= 0.05).map(|(label, us)| format!("{label} {us:.1}")).collect();
            let parts = if parts.is_empty() { "none".to_string() } else { parts.join(", ") };
            out.push_str(&format!("  {:<16} c{c}: {parts}\n", p.name));
        }
    }
    out
}

/// The targets table: each figure with a target, and whether it is met
/// (figures measured under load are not judged on split cores).
fn verdicts(f: &Figures, opts: &Options) -> String {
    let rows = targets(f, opts);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{:<68} {:>9} {:>9}  verdict\n", "target (same run)", "measured", "target");
    for r in rows {
        let verdict = match (opts.split_cores && r.placed, r.met) {
            (true, _) => "not judged (split cores)",
            (false, true) => "met",
            (false, false) => "NOT met",
        };
        out.push_str(&format!("{:<68} {:>9} {:>9}  {verdict}\n", r.what, r.value, r.target));
    }
    out
}

/// Heads a run with `--split-cores`.
const SPLIT_CORES_NOTE: &str = "cores split: every path's load generator and client end on one core, its \
server end and the backend on another (a diagnosis of placement; load targets are judged without it)\n\n";

/// The connector's resident memory: idle, and with streams held open.
fn memory_lines(f: &Figures) -> String {
    let mut out = String::new();
    if let Some(kib) = f.connector_idle_rss_kib {
        out.push_str(&format!(
            "\nconnector resident memory, {} tunnels idle: {:.1} MiB\n",
            f.tunnels,
            kib as f64 / 1024.0
        ));
    }
    if let Some(h) = &f.held {
        for (shape, w) in held_shapes(h) {
            out.push_str(&format!(
                "connector resident memory, {} {shape}: peak {:.1} MiB ({:.1} MiB before, {:.0} KiB a stream)\n",
                h.streams,
                w.peak_kib as f64 / 1024.0,
                w.before_kib as f64 / 1024.0,
                w.per_stream_kib(h.streams)
            ));
        }
    }
    out
}

/// The TLS floor against rathole and the tunnel against the floor, at
/// each connection count: where a tunnel ÷ rathole target stands against
/// the least a TLS tunnel does (not targets themselves).
fn floor_lines(f: &Figures) -> String {
    let path = |name: &str| f.paths.iter().find(|p| p.name == name);
    let Some(floor) = path(FLOOR) else { return String::new() };
    let mut out = format!("\nagainst the {FLOOR} (requests/s, same run):\n");
    // "n/a" where either side answered nothing.
    let ratio = |a: &Stats, b: &Stats| match (a.ok, b.ok) {
        (0, _) | (_, 0) => "n/a".to_string(),
        _ => format!("{:.2}", a.per_second() / b.per_second()),
    };
    for (i, (c, s, _)) in floor.closed.iter().enumerate() {
        let mut parts = Vec::new();
        for peer in [RATHOLE, RATHOLE_TLS] {
            if let Some((_, r, _)) = path(peer).and_then(|p| p.closed.get(i)) {
                parts.push(format!("floor / {peer} {}", ratio(s, r)));
            }
        }
        if let Some((_, t, _)) = path(TUNNEL).and_then(|p| p.closed.get(i)) {
            parts.push(format!("tunnel / floor {}", ratio(t, s)));
        }
        out.push_str(&format!("  c{c}: {}\n", parts.join(", ")));
    }
    out
}

/// The large-body rates, if measured.
fn large_table(f: &Figures, opts: &Options) -> String {
    if !f.paths.iter().any(|p| p.large.is_some()) {
        return String::new();
    }
    let mut out = format!(
        "\nlarge bodies: {} x {} MiB each way on one connection (median of {} runs)\n\n{:<16} {:>14} {:>14}\n",
        opts.transfers,
        opts.large_bytes >> 20,
        opts.runs.max(1),
        "path",
        "download MB/s",
        "upload MB/s"
    );
    for p in &f.paths {
        if let Some((down, up)) = p.large {
            out.push_str(&format!("{:<16} {:>14.0} {:>14.0}\n", p.name, down / 1e6, up / 1e6));
        }
    }
    out
}

/// One line of the verdict table.
struct Judged {
    what: String,
    value: String,
    target: &'static str,
    met: bool,
    /// Measured under load, where the cores' placement shapes it (not
    /// judged under `--split-cores`); memory is weighed before any
    /// pinning.
    placed: bool,
}

/// Microseconds of CPU per answered request spent by process `label`.
fn cpu_of(run: &(usize, Stats, Cpu), label: &str) -> Option<f64> {
    let (_, stats, cpu) = run;
    cpu.by_process_us(stats).find(|(l, _)| *l == label).map(|(_, us)| us)
}

/// The tunnel's rows against one peer `r` whose processes are labelled
/// `label-server` and `label-client`.
fn against_peer(
    t: &PathFigures,
    r: &PathFigures,
    label: &str,
    opts: &Options,
    row: &mut dyn FnMut(String, f64, &'static str, bool),
) {
    let peer = r.name;
    for (tc, rc) in t.closed.iter().zip(&r.closed) {
        let ratio = tc.1.per_second() / rc.1.per_second().max(1e-9);
        row(format!("tunnel / {peer} requests/s, {} connections", tc.0), ratio, ">= 1.00", ratio >= 1.0);
    }
    if let (Some(tc), Some(rc)) = (t.closed.first(), r.closed.first()) {
        if let (Some(conn), Some(client)) = (cpu_of(tc, "connector"), cpu_of(rc, &format!("{label}-client"))) {
            let ratio = conn / client.max(1e-9);
            row(format!("connector / {peer} client CPU per request, c{}", tc.0), ratio, "<= 1.00", ratio <= 1.0);
        }
        if let (Some(rs), Some(backend), Some(server)) =
            (cpu_of(tc, "relay-sim"), cpu_of(rc, "relay-sim"), cpu_of(rc, &format!("{label}-server")))
        {
            let ratio = (rs - backend).max(0.0) / server.max(1e-9);
            let what = format!("relay-sim less backend / {peer} server CPU per request, c{}", tc.0);
            row(what, ratio, "<= 1.50", ratio <= 1.5);
        }
    }
    if let (Some((td, tu)), Some((rd, ru))) = (t.large, r.large) {
        let mib = opts.large_bytes >> 20;
        let (down, up) = (td / rd.max(1e-9), tu / ru.max(1e-9));
        row(format!("tunnel / {peer} MB/s, {mib} MiB download"), down, ">= 1.00", down >= 1.0);
        row(format!("tunnel / {peer} MB/s, {mib} MiB upload"), up, ">= 1.00", up >= 1.0);
    }
}

/// Every figure with a target, judged. Against rathole when it ran: its
/// requests/s at each connection count, each end's CPU per request
/// (relay-sim's less what its backend costs, read from the rathole run,
/// where relay-sim serves only the backend), and large-body rates.
fn targets(f: &Figures, opts: &Options) -> Vec<Judged> {
    let path = |name: &str| f.paths.iter().find(|p| p.name == name);
    let mut rows = Vec::new();
    let mut row = |what: String, value: f64, target: &'static str, met: bool| {
        rows.push(Judged { what, value: format!("{value:.2}"), target, met, placed: true });
    };
    for (peer, tls) in [(RATHOLE, false), (RATHOLE_TLS, true)] {
        if let (Some(t), Some(r)) = (path(TUNNEL), path(peer)) {
            against_peer(t, r, rathole_label(tls), opts, &mut row);
        }
    }
    if let (Some(d), Some(t)) =
        (path("direct").and_then(|p| p.open.as_ref()), path(TUNNEL).and_then(|p| p.open.as_ref()))
    {
        let added = t.percentile_us(0.99).saturating_sub(d.percentile_us(0.99));
        let what = format!("p99 added at {} requests/s (median of {} runs)", opts.rate, opts.runs.max(1));
        rows.push(Judged { what, value: ms(added), target: "<= 0.5 ms", met: added <= 500, placed: true });
    }
    if let Some(kib) = f.connector_idle_rss_kib {
        let what = format!("connector resident memory, {} tunnels idle", f.tunnels);
        let value = format!("{:.1} MiB", kib as f64 / 1024.0);
        rows.push(Judged { what, value, target: "<= 10 MiB", met: kib <= 10 * 1024, placed: false });
    }
    if let Some(h) = &f.held {
        for (shape, w) in held_shapes(h) {
            let what = format!("connector resident memory, {} {shape}, peak", h.streams);
            let value = format!("{:.1} MiB", w.peak_kib as f64 / 1024.0);
            rows.push(Judged { what, value, target: "<= 64 MiB", met: w.peak_kib <= 64 * 1024, placed: false });
        }
    }
    rows
}

/// The held streams' two shapes, named for the tables.
fn held_shapes(h: &crate::held::Held) -> [(&'static str, crate::held::Weighed); 2] {
    [("requests waiting", h.waiting), ("uploads paused", h.uploading)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_per_request_is_the_spend_between_samples_over_answers() {
        let cpu = |a: u64, b: u64, machine| Cpu {
            by_process: vec![("connsim".into(), a), ("relay-sim".into(), b)],
            machine: Some(machine),
            waiting: vec![("connsim".into(), a / 10), ("relay-sim".into(), b / 10)],
        };
        let before = cpu(1_000, 5_000, Jiffies { idle: 100, all: 1_000 });
        let after = cpu(41_000, 65_000, Jiffies { idle: 150, all: 1_200 });
        let spent = after.since(&before);
        assert_eq!(spent.by_process, vec![("connsim".to_string(), 40_000), ("relay-sim".to_string(), 60_000)]);
        let mut stats = Stats::default();
        stats.ok = 10;
        assert!((spent.per_request_us(&stats) - 10.0).abs() < 1e-9);
        assert_eq!(spent.idle_share(), Some(0.25));
        // A process gone between samples reads 0, which never goes negative.
        assert_eq!(before.since(&after).by_process[0].1, 0);
        // No machine count on either side, or no time between: no share.
        assert_eq!(Cpu { machine: None, ..after.clone() }.since(&before).idle_share(), None);
        assert_eq!(after.since(&after).idle_share(), None);
    }

    /// A path answering `ok` requests in one second at each of c32 and c1.
    fn path(name: &'static str, ok: [u64; 2], open: bool) -> PathFigures {
        let stats = |ok| {
            let mut s = Stats::default();
            (s.ok, s.elapsed) = (ok, Duration::from_secs(1));
            s
        };
        PathFigures {
            name,
            closed: ok.iter().zip([32, 1]).map(|(&n, c)| (c, stats(n), Cpu::default())).collect(),
            open: open.then(|| stats(1_000)),
            large: None,
        }
    }

    /// Short loads at c32 and c1, no transfers, no peers.
    fn options() -> Options {
        Options {
            bin_dir: PathBuf::new(),
            rathole: None,
            rathole_tls: None,
            relays: 8,
            conns: vec![32, 1],
            duration: Duration::from_secs(1),
            runs: 1,
            rate: 1_000,
            rate_duration: Duration::from_secs(1),
            large_bytes: 0,
            transfers: 1,
            open_streams: 0,
            floor: None,
            split_cores: false,
        }
    }

    #[test]
    fn the_floor_is_read_against_rathole_and_the_tunnel_against_the_floor() {
        let opts = options();
        let figures = |paths| Figures { paths, connector_idle_rss_kib: None, held: None, tunnels: 8 };
        let f = figures(vec![
            path("direct", [100_000, 10_000], true),
            path(TUNNEL, [30_000, 4_500], true),
            path(RATHOLE, [36_000, 6_000], true),
            path(FLOOR, [45_000, 5_700], false),
        ]);
        let text = render(&f, &opts);
        assert!(text.contains("  c32: floor / rathole 1.25, tunnel / floor 0.67\n"), "{text}");
        assert!(text.contains("  c1: floor / rathole 0.95, tunnel / floor 0.79\n"), "{text}");
        // Closed loops only: no open-loop row, no latency bar for the floor.
        let open_table = text.split("open loop:").nth(1).unwrap_or_default();
        assert!(!open_table.split("against the").next().unwrap_or_default().contains(FLOOR), "{text}");
        assert!(panels(&f, &opts)[1].bars.iter().all(|b| !b.label.starts_with(FLOOR)));
        // The floor is no target, and without it there is no floor block.
        assert!(targets(&f, &opts).iter().all(|r| !r.what.contains("floor")));
        let without = figures(f.paths.iter().filter(|p| p.name != FLOOR).cloned().collect());
        assert!(!render(&without, &opts).contains(FLOOR));
        // Nothing answered: no ratio to print.
        let silent = figures(vec![path(TUNNEL, [30_000, 4_500], true), path(FLOOR, [0, 5_700], false)]);
        assert!(render(&silent, &opts).contains("  c32: tunnel / floor n/a\n"));
    }

    #[test]
    fn each_run_says_who_waited_for_a_core() {
        let mut tunnel = path(TUNNEL, [30_000, 4_500], true);
        // 30,000 answers; the connector waited 90 ms in all, 3 us each.
        tunnel.closed[0].2.waiting = vec![("connector".into(), 90_000_000), ("relay-sim".into(), 0)];
        let f = Figures { paths: vec![tunnel], connector_idle_rss_kib: None, held: None, tunnels: 8 };
        let text = render(&f, &options());
        let lines = text.split("waiting for a core").nth(1).unwrap_or_default();
        assert!(lines.contains("\n  connsim tunnel   c32: connector 3.0\n"), "{text}");
        assert!(lines.contains("\n  connsim tunnel   c1: none\n"), "{text}");
    }

    #[test]
    fn a_schedstat_line_is_time_on_a_cpu_then_waiting() {
        let line = "1234567 890 42\n";
        assert_eq!(Schedstat::parse(line), Some(Schedstat { on_cpu_ns: 1_234_567, waiting_ns: 890 }));
        assert_eq!(Schedstat::parse("12"), None);
        assert_eq!(Schedstat::parse("x 1 2"), None);
    }

    #[test]
    fn a_run_on_split_cores_says_so_and_judges_only_memory() {
        let mut opts = options();
        let f = Figures {
            paths: vec![path(TUNNEL, [30_000, 4_500], true), path(RATHOLE, [36_000, 6_000], true)],
            // Weighed before any pinning: judged either way.
            connector_idle_rss_kib: Some(12 * 1024),
            held: None,
            tunnels: 8,
        };
        let left = render(&f, &opts);
        assert!(!left.contains("cores split") && left.contains("NOT met"), "{left}");
        assert!(panels(&f, &opts).iter().all(|p| !p.title.contains("split cores")));
        opts.split_cores = true;
        let split = render(&f, &opts);
        assert!(split.starts_with("cores split:"), "{split}");
        assert!(split.contains("requests/s, 32 connections") && split.contains("not judged (split cores)"), "{split}");
        let memory =
            split.lines().find(|l| l.contains("8 tunnels idle") && l.contains("<= 10 MiB")).unwrap_or_default();
        assert!(memory.ends_with("NOT met"), "memory is judged on split cores too: {split}");
        assert!(!split.lines().any(|l| l.contains("requests/s") && l.ends_with("NOT met")), "{split}");
        assert!(panels(&f, &opts).iter().all(|p| p.title.ends_with("(split cores)")));
    }

    #[test]
    fn each_label_has_its_side() {
        for server in ["relay-sim", "rathole-server", "rathole-tls-server", "floor-relay"] {
            assert_eq!(Side::of(server), Some(Side::Server), "{server}");
        }
        for client in ["connsim", "connector", "rathole-client", "rathole-tls-client", "floor-connector"] {
            assert_eq!(Side::of(client), Some(Side::Client), "{client}");
        }
        assert_eq!(Side::of("backend"), None, "a process of no known side");
        assert_eq!(Side::of("rathole-sidecar-server"), None, "only the labels start_rathole gives");
    }

    #[test]
    fn a_probe_with_nobody_answering_is_a_no_not_a_wait() {
        // A listener that accepts (the kernel's backlog) and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target { addr: silent.local_addr().unwrap(), host: "x".into(), path: "/".into() };
        assert_eq!(answers(&target), Ok(false));
        drop(silent);
        assert_eq!(answers(&target), Ok(false), "refused");
    }

    #[test]
    fn machine_time_is_read_from_proc_stat() {
        let stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\n";
        assert_eq!(Jiffies::parse(stat), Some(Jiffies { idle: 820, all: 990 }));
        // Old kernels: five fields.
        assert_eq!(Jiffies::parse("cpu 1 2 3 4 5\n"), Some(Jiffies { idle: 9, all: 15 }));
        for bad in ["", "cpu0 1 2 3 4 5", "cpu 1 2 3", "cpu 1 2 x 4 5", "intr 1 2 3 4 5"] {
            assert_eq!(Jiffies::parse(bad), None, "{bad:?}");
        }
        if cfg!(target_os = "linux") {
            assert!(Jiffies::read().is_some_and(|j| j.all > 0));
        }
    }

    #[test]
    fn this_process_has_spent_cpu() {
        if cfg!(target_os = "linux") {
            let mut x = 0u64;
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            assert!(std::hint::black_box(x) != 1);
            assert!(schedstat(std::process::id()).is_some_and(|s| s.on_cpu_ns > 0));
            assert_eq!(schedstat(u32::MAX), None);
        }
    }
}
