//! Real-mode helpers: relay-sim's cloud in a thread on loopback ports, the
//! agent in another (or the connector binary as a child process), raw
//! HTTP/1.1 exchanges with the ingress, and the control API.

#![allow(clippy::disallowed_methods, reason = "real processes on real sockets: their deadlines are wall time")]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use connector::env::{Env, EventSink, OsEntropy, SystemClock};
use connector::event::AgentEvent;
use connector::net::{ResolveEntry, TokioNet};
use connector::{Agent, AgentConfig, Credentials};
use relay_sim::control::{Action, Status};
use relay_sim::serve::{Manifest, ServeOptions};

struct ChannelSink(mpsc::Sender<AgentEvent>);

impl EventSink for ChannelSink {
    fn emit(&self, event: AgentEvent) {
        let _ = self.0.send(event);
    }
}

/// Serves relay-sim's cloud on loopback from a thread of its own; returns
/// its manifest (ingress, `--resolve` entries, control API and token).
pub fn start_cloud(state_dir: PathBuf) -> Manifest {
    start_cloud_with(ServeOptions::loopback(state_dir))
}

/// relay-sim's cloud with `opts`, on a thread of its own.
pub fn start_cloud_with(opts: ServeOptions) -> Manifest {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let served = relay_sim::serve::start(opts).await.unwrap();
            tx.send(served.manifest).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(30)).expect("relay-sim did not start")
}

/// Real sockets with `--resolve` overrides, events into `tx`.
pub fn real_env(resolve: Vec<ResolveEntry>, tx: mpsc::Sender<AgentEvent>) -> Env {
    Env {
        net: Rc::new(TokioNet::new(resolve)),
        clock: Arc::new(SystemClock),
        entropy: Arc::new(OsEntropy),
        events: Rc::new(ChannelSink(tx)),
        evidence: Rc::default(),
    }
}

/// Runs the agent in a thread of its own against `manifest`'s cloud
/// (registering first when `register`); its events come on the receiver.
pub fn start_connector(manifest: &Manifest, install_dir: PathBuf, register: bool) -> mpsc::Receiver<AgentEvent> {
    let (tx, rx) = mpsc::channel();
    let resolve: Vec<ResolveEntry> = manifest.resolve.iter().map(|r| r.parse().unwrap()).collect();
    let root_pem = std::fs::read_to_string(&manifest.root_pem).unwrap();
    let mut cfg = AgentConfig::new(&manifest.tenant_id, "test-host", install_dir);
    cfg.trusted_roots = connector::identity::parse_pem_certs(&root_pem).unwrap();
    if register {
        cfg.credentials = Some(Credentials {
            username: manifest.admin.clone(),
            password: manifest.password.clone(),
            directory: None,
            interactive: false,
        });
    }
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let _ = Agent::new(real_env(resolve, tx), cfg).run().await;
        });
    });
    rx
}

/// Waits until `n` tunnels are up, returning every event seen.
pub fn wait_tunnels(rx: &mpsc::Receiver<AgentEvent>, n: usize) -> Vec<AgentEvent> {
    wait_for(rx, n, Duration::from_secs(30), |e| matches!(e, AgentEvent::TunnelUp { .. }))
}

/// Waits until `n` events match `pred` (panicking after `limit` without
/// one, or when the agent stops), returning every event seen.
pub fn wait_for(
    rx: &mpsc::Receiver<AgentEvent>,
    n: usize,
    limit: Duration,
    pred: impl Fn(&AgentEvent) -> bool,
) -> Vec<AgentEvent> {
    let mut seen = Vec::new();
    let mut matched = 0;
    while matched < n {
        let ev = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("waited {limit:?} in vain; events: {seen:?}"));
        if pred(&ev) {
            matched += 1;
        }
        if let AgentEvent::Stopped { reason } = &ev {
            panic!("connector stopped: {reason}; events: {seen:?}");
        }
        seen.push(ev);
    }
    seen
}

/// The control API: one action (`GET /status` without one).
pub fn control(manifest: &Manifest, action: Option<Action>) -> Status {
    let reply = relay_sim::control::call(manifest.control, &manifest.control_token, action.as_ref()).unwrap();
    assert_eq!(reply.status, 200, "{action:?}: {}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

/// One HTTP/1.1 answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits a raw answer (read to its end) into a [`Reply`]; None if it has
/// no complete head.
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok())?;
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))).collect();
    Some(Reply { status, headers, body: raw[end + 4..].to_vec() })
}

/// One exchange on a fresh connection (`Connection: close`).
pub fn exchange(addr: SocketAddr, host: &str, method: &str, path: &str, extra: &str, body: &[u8]) -> Reply {
    try_exchange(addr, host, method, path, extra, body, Duration::from_secs(60)).unwrap()
}

/// [`exchange`], with a time limit for the whole answer and the error
/// instead of a panic.
pub fn try_exchange(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    extra: &str,
    body: &[u8],
    limit: Duration,
) -> std::io::Result<Reply> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    // A server may answer before it has read the whole body (an error for
    // a request it gave up on) and close: the answer is what counts.
    let sent = s.write_all(head.as_bytes()).and_then(|()| s.write_all(body));
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    match (parse_reply(&raw), sent, read) {
        (Some(reply), _, _) => Ok(reply),
        (None, Err(e), _) | (None, Ok(()), Err(e)) => Err(e),
        (None, Ok(()), Ok(_)) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "no complete response head")),
    }
}

/// target/<profile>, from this test binary's place (target/<profile>/deps).
fn bin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

/// The workspace's binaries (`cargo test` builds only the test targets:
/// they are built here when missing, in this test's profile).
pub fn binaries() -> Result<conformance::netns::Binaries, String> {
    let dir = bin_dir().ok_or("cannot tell where the test binary is")?;
    if let Ok(b) = conformance::netns::Binaries::in_dir(&dir) {
        return Ok(b);
    }
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--workspace", "--bins", "--locked"]).current_dir(crate::workspace_root());
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| format!("building the binaries: {e}"))?;
    if !out.status.success() {
        return Err(format!("building the binaries failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    conformance::netns::Binaries::in_dir(&dir)
}

/// The connector binary's command line for `manifest`'s cloud.
pub fn connector_command(bin: &Path, manifest: &Manifest, install_dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["run", "--tenant", &manifest.tenant_id, "--install-dir"])
        .arg(install_dir)
        .arg("--trust-root")
        .arg(&manifest.root_pem)
        .args(["--user", &manifest.admin, "--password", &manifest.password]);
    for r in &manifest.resolve {
        cmd.args(["--resolve", r]);
    }
    cmd
}

/// A `relay-sim serve` child process, killed and reaped when dropped.
pub struct CloudProcess(std::process::Child);

impl Drop for CloudProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `relay-sim serve` as a child process (its log in the state folder)
/// and waits for its manifest.
pub fn spawn_cloud(bin: &Path, state_dir: &Path) -> (CloudProcess, Manifest) {
    let log = std::fs::File::create(state_dir.join("relay-sim.log")).unwrap();
    let child = CloudProcess(
        std::process::Command::new(bin)
            .args(["serve", "--state-dir"])
            .arg(state_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let path = state_dir.join("manifest.json");
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Written whole once serving; a read may catch it half-written.
        if let Some(m) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            return (child, m);
        }
        assert!(std::time::Instant::now() < give_up, "relay-sim wrote no manifest to {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}
