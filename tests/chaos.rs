//! Chaos on real sockets: 32 users upload and download bodies of 0 to
//! 8 MiB (each checked by SHA-256) through relay-sim's cloud and the real
//! connector binary while the connector is killed with SIGKILL and started
//! again, a relay restarts, and the service's root rotates under live
//! tunnels. Every request must succeed with the right body or get a clean
//! error from the ingress (a status with `x-relay-error`); none may hang
//! past its time limit, none may run twice at the backend, and the
//! restarted connector must serve again within [`RECOVERY_MAX`].

#![allow(clippy::disallowed_methods, reason = "real processes on real sockets: their deadlines are wall time")]

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connsim_tests::real_world::{binaries, connector_command, control, start_cloud, try_exchange, Reply};
use relay_sim::backend::sha256_hex;
use relay_sim::control::Action;
use relay_sim::pattern::pattern;
use relay_sim::serve::Manifest;

/// Users at once.
const USERS: usize = 32;
/// Largest body, either way.
const BODY_MAX: usize = 8 << 20;
/// A user gives up on an answer after this long: past it, a request hangs.
/// (Above the ingress's own 90 s limit on an exchange: the ingress must
/// answer first.)
const REQUEST_LIMIT: Duration = Duration::from_secs(100);
/// A connector started again serves within this (ARCHITECTURE.md, data-path
/// limits: identity from disk, bootstrap, revocation checks, tunnels).
const RECOVERY_MAX: Duration = Duration::from_secs(10);

/// What happened to the users' requests.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    clean_errors: Vec<String>,
    /// A 200 with the wrong body, an answer without a relay error code, a
    /// hang, a broken connection: each a failure of the test.
    bad: Vec<String>,
    bytes: u64,
}

/// xorshift64*: a user's sizes and kinds, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 0 one time in eight, else log-uniform up to [`BODY_MAX`]: mostly
    /// small bodies, some large.
    fn size(&mut self) -> usize {
        if self.next().is_multiple_of(8) {
            return 0;
        }
        let bits = self.next() % 24;
        ((1u64 << bits) + self.next() % (1u64 << bits)).min(BODY_MAX as u64) as usize
    }
}

/// One user's request and the verdict on its answer.
fn one_request(manifest: &Manifest, user: usize, n: u64, rng: &mut Rng, tally: &Mutex<Tally>) {
    let size = rng.size();
    let upload = rng.next().is_multiple_of(2);
    let mark = format!("x-user-request: u{user}-{n}\r\n");
    let (method, path, body) = if upload {
        ("POST", format!("/up/{user}/{n}"), pattern(size))
    } else {
        ("GET", format!("/down/{user}/{n}?size={size}"), bytes::Bytes::new())
    };
    let started = Instant::now();
    let result = try_exchange(manifest.ingress, &manifest.apps[0], method, &path, &mark, &body, REQUEST_LIMIT);
    let verdict = match &result {
        Ok(r) if r.status == 200 => check_body(r, upload, &body, size),
        Ok(r) => match r.header("x-relay-error") {
            Some(code) if [502, 503, 504].contains(&r.status) => Err(Ok(format!("{} {code}", r.status))),
            _ => Err(Err(format!("{method} {path}: {} without a relay error code: {}", r.status, r.text()))),
        },
        Err(e) => Err(Err(format!("{method} {path}: {e} after {:?}", started.elapsed()))),
    };
    let mut t = tally.lock().unwrap();
    match verdict {
        Ok(()) => {
            t.ok += 1;
            t.bytes += size as u64;
        }
        Err(Ok(clean)) => t.clean_errors.push(clean),
        Err(Err(bad)) => t.bad.push(bad),
    }
}

/// A 200 must carry the whole body, byte for byte. One whose connection
/// closed before the length it announced is an error any HTTP client sees
/// (a download cut after its head went out), not a success.
fn check_body(r: &Reply, upload: bool, sent: &[u8], size: usize) -> Result<(), Result<String, String>> {
    let announced = r.header("content-length").and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| r.body.len() < n) {
        return Err(Ok("200 cut before its announced length".into()));
    }
    let fine = if upload {
        r.header("x-body-sha256") == Some(sha256_hex(sent).as_str())
    } else {
        r.body.len() == size && r.header("x-response-sha256") == Some(sha256_hex(&r.body).as_str())
    };
    if fine {
        Ok(())
    } else {
        Err(Err(format!("a 200 with a changed or cut body ({size} bytes, upload: {upload})")))
    }
}

struct Connector {
    child: Option<Child>,
    cmd_log: std::path::PathBuf,
}

impl Connector {
    fn start(bin: &std::path::Path, manifest: &Manifest, install: &std::path::Path, log: std::path::PathBuf) -> Self {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = connector_command(bin, manifest, install)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Connector { child: Some(child), cmd_log: log }
    }

    /// SIGKILL: no drain, no goodbye.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.cmd_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until a request gets 200; how long that took.
fn until_served(manifest: &Manifest, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let r = try_exchange(manifest.ingress, &manifest.apps[0], "GET", "/probe", "", b"", Duration::from_secs(10));
        if r.is_ok_and(|r| r.status == 200) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn wait_tunnels(manifest: &Manifest, n: usize, limit: Duration) {
    let start = Instant::now();
    while control(manifest, None).tunnels.len() < n {
        assert!(start.elapsed() < limit, "{n} tunnels not up in {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn users_survive_kills_restarts_and_rotation() {
    let bins = binaries().unwrap();
    let state = tempfile::tempdir().unwrap();
    let install = tempfile::tempdir().unwrap();
    let manifest = Arc::new(start_cloud(state.path().to_path_buf()));
    let log = state.path().join("connector.log");
    let mut connector = Connector::start(&bins.connector, &manifest, install.path(), log.clone());
    wait_tunnels(&manifest, 2, Duration::from_secs(30));

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let users: Vec<_> = (0..USERS)
        .map(|u| {
            let (manifest, stop, tally) = (manifest.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (u as u64 + 1).wrapping_mul(0x1000_0000_01b3));
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    one_request(&manifest, u, n, &mut rng, &tally);
                    n += 1;
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(4));
    connector.kill();
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    connector = Connector::start(&bins.connector, &manifest, install.path(), log);
    let recovery = until_served(&manifest, Duration::from_secs(60));
    let recovery = recovery.unwrap_or_else(|| panic!("not served after a restart; log:\n{}", connector.log_tail()));
    assert!(recovery <= RECOVERY_MAX, "served again {recovery:?} after the restart (at {restarted:?})");

    std::thread::sleep(Duration::from_secs(4));
    let relay = control(&manifest, None).tunnels[0].1.clone();
    control(&manifest, Some(Action::RestartRelay { host: Some(relay) }));
    std::thread::sleep(Duration::from_secs(5));
    control(&manifest, Some(Action::RotateRoot { to: relay_sim::pki::Generation::DigicertG2 }));
    control(&manifest, Some(Action::RestartRelay { host: None }));
    std::thread::sleep(Duration::from_secs(6));

    stop.store(true, Ordering::Relaxed);
    for u in users {
        u.join().unwrap();
    }
    let t = tally.lock().unwrap();
    let status = control(&manifest, None);
    eprintln!(
        "chaos: {} requests, {} ok ({} MiB of bodies), {} clean errors {:?}, {} bad; recovery after SIGKILL {:?}",
        t.ok + t.clean_errors.len() as u64 + t.bad.len() as u64,
        t.ok,
        t.bytes >> 20,
        t.clean_errors.len(),
        summary(&t.clean_errors),
        t.bad.len(),
        recovery
    );
    assert!(t.bad.is_empty(), "bad answers: {:?}\nconnector log:\n{}", t.bad, connector.log_tail());
    assert!(status.duplicates.is_empty(), "requests served twice: {:?}", status.duplicates);
    assert!(t.ok >= 100, "only {} requests succeeded", t.ok);
    assert!(until_served(&manifest, RECOVERY_MAX).is_some(), "not serving at the end");
}

/// Clean errors counted by kind.
fn summary(errors: &[String]) -> Vec<(String, usize)> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in errors {
        *kinds.entry(e.clone()).or_insert(0) += 1;
    }
    kinds.into_iter().collect()
}
