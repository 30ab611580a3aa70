//! Hostile input on real sockets: relay-sim's cloud on loopback, the agent
//! with two tunnels, and raw-socket clients sending what real users, bots
//! and broken proxies send. Each input has its expected answer, and after
//! each, ordinary requests through the same tunnels still get 200 and no
//! tunnel has gone down (nothing one user sends may hurt another).

#![allow(clippy::disallowed_methods, reason = "real processes on real sockets: their deadlines are wall time")]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use connector::event::AgentEvent;
use connsim_tests::real_world::{
    control, exchange, parse_reply, start_cloud, start_cloud_with, start_connector, wait_tunnels, Reply,
};
use relay_sim::control::Status;
use relay_sim::serve::{Manifest, ServeOptions};

/// A cloud, a connector with its tunnels up, and the events since.
struct World {
    manifest: Manifest,
    events: mpsc::Receiver<AgentEvent>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl World {
    fn start() -> World {
        let state = tempfile::tempdir().unwrap();
        let install = tempfile::tempdir().unwrap();
        let manifest = start_cloud(state.path().to_path_buf());
        World::with(manifest, (state, install))
    }

    /// With the ingress refusing uploads over `limit` bytes.
    fn with_upload_limit(limit: u64) -> World {
        let state = tempfile::tempdir().unwrap();
        let install = tempfile::tempdir().unwrap();
        let mut opts = ServeOptions::loopback(state.path().to_path_buf());
        opts.upload_bytes_max = limit;
        World::with(start_cloud_with(opts), (state, install))
    }

    fn with(manifest: Manifest, dirs: (tempfile::TempDir, tempfile::TempDir)) -> World {
        let events = start_connector(&manifest, dirs.1.path().to_path_buf(), true);
        wait_tunnels(&events, 2);
        World { manifest, events, _dirs: dirs }
    }

    /// Sends `bytes` on a fresh connection (then closes its sending side
    /// when `half_close`) and reads what comes back until the server
    /// closes or `limit` passes.
    fn raw(&self, bytes: &[u8], half_close: bool, limit: Duration) -> Vec<u8> {
        let mut s = TcpStream::connect(self.manifest.ingress).unwrap();
        s.set_read_timeout(Some(limit)).unwrap();
        // The server may answer and close before it has read everything:
        // what it answered is what counts.
        let _ = s.write_all(bytes);
        if half_close {
            let _ = s.shutdown(Shutdown::Write);
        }
        read_all(&mut s)
    }

    fn app(&self) -> &str {
        &self.manifest.apps[0]
    }

    /// `n` concurrent ordinary requests all get 200, and no tunnel went
    /// down since the world started: the input hurt no one else.
    fn others_unharmed(&self, n: usize) {
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let (ingress, app) = (self.manifest.ingress, self.app().to_string());
                std::thread::spawn(move || exchange(ingress, &app, "GET", &format!("/ordinary/{i}"), "", b""))
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            let r = c.join().unwrap();
            assert_eq!(r.status, 200, "ordinary request {i}: {}", r.text());
        }
        let downs: Vec<AgentEvent> =
            self.events.try_iter().filter(|e| matches!(e, AgentEvent::TunnelDown { .. })).collect();
        assert!(downs.is_empty(), "a tunnel went down: {downs:?}");
    }

    /// What the backend has served so far.
    fn served(&self) -> u64 {
        control(&self.manifest, None).served
    }

    /// The backend's counts so far (served, bodies read to their end,
    /// bodies broken off), from one status call.
    fn backend(&self) -> Status {
        control(&self.manifest, None)
    }

    /// Waits until the backend has seen `n` request bodies end in an error
    /// (broken off, not left hanging), and that no body was read to its
    /// end beyond `completed`.
    fn broken_off(&self, n: u64, completed: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = control(&self.manifest, None);
            assert_eq!(status.completed, completed, "the backend read a cut upload to a clean end");
            if status.broken >= n {
                return;
            }
            assert!(Instant::now() < deadline, "the backend's request was left hanging: {status:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads until the peer closes, a timeout, or an error (a reset after an
/// answer is still an answer).
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Err(e) => {
                // What was read before a reset or the time limit is what
                // counts; say which, so a short answer can be explained.
                eprintln!("read ended after {} bytes: {e}", out.len());
                return out;
            }
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[track_caller]
fn reply(raw: &[u8]) -> Reply {
    match parse_reply(raw) {
        Some(reply) => reply,
        None => panic!("no HTTP answer: {:?}", String::from_utf8_lossy(raw)),
    }
}

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn oversized_heads_are_refused_alone() {
    let w = World::start();
    let before = w.served();
    // Over the ingress's 32 KiB header block: 431 from the ingress.
    let cookie = format!("Cookie: c={}\r\n", "x".repeat(100 << 10));
    let r = exchange(w.manifest.ingress, w.app(), "GET", "/big", &cookie, b"");
    assert_eq!((r.status, r.header("x-relay-error")), (431, Some("headers-too-large")), "{}", r.text());
    // Over the HTTP parser's buffer (1 MiB of header): 431 all the same.
    let huge = format!("GET / HTTP/1.1\r\nHost: {}\r\nCookie: c={}\r\n\r\n", w.app(), "x".repeat(1 << 20));
    assert_eq!(reply(&w.raw(huge.as_bytes(), false, LIMIT)).status, 431);
    // A header flood: 1,000 small fields (the parser takes 100).
    let flood: String = (0..1000).map(|i| format!("x-f{i}: v\r\n")).collect();
    let r = exchange(w.manifest.ingress, w.app(), "GET", "/flood", &flood, b"");
    assert_eq!(r.status, 431, "{}", r.text());
    // A request target over 16 KiB: 414.
    let long = format!("/{}", "p".repeat(20 << 10));
    let r = exchange(w.manifest.ingress, w.app(), "GET", &long, "", b"");
    assert_eq!((r.status, r.header("x-relay-error")), (414, Some("uri-too-long")), "{}", r.text());
    // One over 64 KiB, past what the parser takes at all: 414 from it.
    let longer = format!("GET /{} HTTP/1.1\r\nHost: {}\r\n\r\n", "p".repeat(70 << 10), w.app());
    assert_eq!(reply(&w.raw(longer.as_bytes(), false, LIMIT)).status, 414);
    assert_eq!(w.served(), before, "a refused request reached the backend");
    w.others_unharmed(16);
}

#[test]
fn oversized_and_cut_bodies_never_reach_the_backend() {
    let w = World::with_upload_limit(16 << 20);
    let before = w.served();
    // Declared over 16 MiB: 413 before a byte of it is read.
    let big = format!("POST /up HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", w.app(), 17 << 20);
    let r = reply(&w.raw(big.as_bytes(), false, LIMIT));
    assert_eq!((r.status, r.header("x-relay-error")), (413, Some("body-too-large")), "{}", r.text());
    // A truncated chunked body (the client gives up mid-chunk): 400, and
    // the backend never sees a cut request.
    let cut = format!(
        "POST /cut HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1000\r\npartial",
        w.app()
    );
    let r = reply(&w.raw(cut.as_bytes(), true, LIMIT));
    assert_eq!((r.status, r.header("x-relay-error")), (400, Some("bad-request-body")), "{}", r.text());
    // A Content-Length body cut short the same way.
    let short = format!("POST /short HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\nonly-half", w.app());
    assert_eq!(reply(&w.raw(short.as_bytes(), true, LIMIT)).status, 400);
    // A user who disconnects mid-upload (1 MiB of a declared 5 MiB).
    let mut s = TcpStream::connect(w.manifest.ingress).unwrap();
    write!(s, "POST /gone HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", w.app(), 5 << 20).unwrap();
    s.write_all(&vec![b'u'; 1 << 20]).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.served(), before, "a cut or refused body reached the backend");
    // Chunked, growing past 16 MiB: 413 once the limit is crossed. Past
    // its first MiB the upload was streaming, so the backend has its head
    // and a part of it: that request is broken off, never completed.
    let _ = w.events.try_iter().count();
    let before = w.backend();
    let mut chunked =
        format!("POST /up HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n", w.app()).into_bytes();
    for _ in 0..17 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1 << 20).as_bytes());
        chunked.extend(std::iter::repeat_n(b'z', 1 << 20));
        chunked.extend_from_slice(b"\r\n");
    }
    let r = reply(&w.raw(&chunked, false, LIMIT));
    assert_eq!((r.status, r.header("x-relay-error")), (413, Some("body-too-large")), "{}", r.text());
    std::thread::sleep(Duration::from_millis(300));
    let served: Vec<AgentEvent> =
        w.events.try_iter().filter(|e| matches!(e, AgentEvent::RequestServed { .. })).collect();
    assert!(served.is_empty(), "an upload over the limit was completed: {served:?}");
    // The backend got the head (the upload streamed), and its body was
    // broken off, never ended short.
    assert_eq!(w.served(), before.served + 1, "the streaming upload never reached the backend");
    w.broken_off(before.broken + 1, before.completed);
    w.others_unharmed(16);
}

/// A user gone in the middle of an upload long enough to stream (its
/// head and first MiBs already on their way to the backend): the request
/// is abandoned, the backend's request is broken off rather than finished
/// short, and the connector blames no one (the backend did nothing wrong).
#[test]
fn a_user_gone_mid_upload_is_abandoned_without_a_finding() {
    let w = World::start();
    let before = w.backend();
    let mut s = TcpStream::connect(w.manifest.ingress).unwrap();
    write!(s, "POST /gone HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n", w.app(), 8 << 20).unwrap();
    s.write_all(&vec![b'u'; 3 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.served(), before.served + 1, "the upload should have been streaming to the backend");
    w.broken_off(before.broken + 1, before.completed);
    let findings: Vec<AgentEvent> = w
        .events
        .try_iter()
        .filter(|e| matches!(e, AgentEvent::Diagnostic(_) | AgentEvent::TunnelDown { .. }))
        .collect();
    assert!(findings.is_empty(), "a user going away is no finding: {findings:?}");
    w.others_unharmed(16);
}

/// The tunnel carrying a chunked upload is cut while the upload streams:
/// the backend's request is broken off, never ended as if the body were
/// whole (a backend would take the short upload for the real one).
#[test]
fn a_tunnel_cut_mid_upload_breaks_the_backends_request_off() {
    let w = World::start();
    let before = w.backend();
    let mut s = TcpStream::connect(w.manifest.ingress).unwrap();
    write!(s, "POST /cut-tunnel HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n", w.app()).unwrap();
    for _ in 0..3 {
        write!(s, "{:x}\r\n", 1 << 20).unwrap();
        s.write_all(&vec![b'c'; 1 << 20]).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.served(), before.served + 1, "the upload should have been streaming to the backend");
    control(&w.manifest, Some(relay_sim::control::Action::RestartRelay { host: None }));
    w.broken_off(before.broken + 1, before.completed);
    drop(s);
}

#[test]
fn garbage_and_tls_to_the_plain_port_get_400() {
    let w = World::start();
    let garbage: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let r = reply(&w.raw(&garbage, false, LIMIT));
    assert_eq!(r.status, 400, "{}", r.text());
    // The start of a TLS 1.2/1.3 ClientHello, as `openssl s_client` sends.
    let hello = [0x16, 0x03, 0x01, 0x00, 0xc4, 0x01, 0x00, 0x00, 0xc0, 0x03, 0x03, 0x11, 0x22];
    assert_eq!(reply(&w.raw(&hello, false, LIMIT)).status, 400);
    // No Host: 400 from the ingress. Not half-closed: the end of a user's
    // input while its request is in flight means the user gave up.
    let r = reply(&w.raw(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false, LIMIT));
    assert_eq!((r.status, r.header("x-relay-error")), (400, Some("no-host")), "{}", r.text());
    // Two Hosts (RFC 9112 §3.2): 400, whichever app either names.
    let two = format!("GET / HTTP/1.1\r\nHost: {}\r\nHost: other.example\r\nConnection: close\r\n\r\n", w.app());
    let r = reply(&w.raw(two.as_bytes(), false, LIMIT));
    assert_eq!((r.status, r.header("x-relay-error")), (400, Some("many-hosts")), "{}", r.text());
    // A bare newline storm, then closed: no answer owed, nothing breaks.
    w.raw(&[b'\n'; 10_000], true, Duration::from_secs(5));
    w.others_unharmed(16);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let w = World::start();
    let mut pipeline = String::new();
    for i in 0..5 {
        let close = if i == 4 { "Connection: close\r\n" } else { "" };
        pipeline.push_str(&format!("GET /pipe/{i} HTTP/1.1\r\nHost: {}\r\n{close}\r\n", w.app()));
    }
    let raw = w.raw(pipeline.as_bytes(), false, LIMIT);
    let text = String::from_utf8_lossy(&raw);
    let order: Vec<usize> = (0..5).map(|i| text.find(&format!("GET /pipe/{i} ")).unwrap_or(usize::MAX)).collect();
    assert!(order.windows(2).all(|p| p[0] < p[1]), "answers out of order or missing: {text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 5, "{text}");
    w.others_unharmed(8);
}

/// A slowloris client (a header line every 200 ms, never finished) holds
/// its connection no longer than the ingress's header-read timeout, and
/// while 64 of them trickle, ordinary users are served.
#[test]
fn slowloris_is_cut_at_the_header_timeout() {
    let w = World::start();
    let start = Instant::now();
    let trickle: Vec<_> = (0..64)
        .map(|i| {
            let (ingress, app) = (w.manifest.ingress, w.app().to_string());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(ingress).unwrap();
                write!(s, "GET /slow/{i} HTTP/1.1\r\nHost: {app}\r\n").unwrap();
                let give_up = Instant::now() + relay_sim::server::HEADER_READ_TIMEOUT + Duration::from_secs(15);
                let mut n = 0;
                while Instant::now() < give_up {
                    if write!(s, "x-slow-{n}: 1\r\n").is_err() {
                        break;
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(200));
                }
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                (Instant::now(), read_all(&mut s))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    w.others_unharmed(16);
    for t in trickle {
        let (ended, answer) = t.join().unwrap();
        let held = ended - start;
        assert!(held < relay_sim::server::HEADER_READ_TIMEOUT + Duration::from_secs(10), "held for {held:?}");
        assert!(held >= relay_sim::server::HEADER_READ_TIMEOUT - Duration::from_secs(1), "cut after {held:?}");
        // Cut, with at most a 408, never a forwarded request.
        let text = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    w.others_unharmed(8);
}

/// A download the user abandons after its first bytes, and a slow reader
/// of a large answer: the others are served meanwhile and the slow reader
/// gets every byte. (The ingress holds answers whole, so a slow user never
/// pushes back into the tunnel; the tunnel's own flow control is tested
/// on the session: `grants_follow_the_consumer`, `streams_take_turns`.)
#[test]
fn users_who_leave_or_read_slowly_hurt_no_one() {
    let w = World::start();
    for _ in 0..4 {
        let mut s = TcpStream::connect(w.manifest.ingress).unwrap();
        write!(s, "GET /dl?size={} HTTP/1.1\r\nHost: {}\r\n\r\n", 8 << 20, w.app()).unwrap();
        let mut first = [0u8; 100];
        s.read_exact(&mut first).unwrap();
        drop(s);
    }
    let mut slow = TcpStream::connect(w.manifest.ingress).unwrap();
    write!(slow, "GET /dl?size={} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", 8 << 20, w.app()).unwrap();
    let mut some = [0u8; 4096];
    slow.read_exact(&mut some).unwrap();
    w.others_unharmed(16);
    // The slow reader still gets every byte.
    let mut rest = some.to_vec();
    rest.extend(read_all(&mut slow));
    let r = reply(&rest);
    assert_eq!(r.body.len(), 8 << 20);
    assert_eq!(r.header("x-response-sha256"), Some(relay_sim::backend::sha256_hex(&r.body).as_str()));
}

/// 10,000 idle connections to the ingress (relay-sim in its own process,
/// so each side has its own file-descriptor budget): ordinary requests
/// are served while they are open.
#[test]
fn ten_thousand_idle_connections() {
    const IDLE: usize = 10_000;
    let bins = connsim_tests::real_world::binaries().unwrap();
    let state = tempfile::tempdir().unwrap();
    let install = tempfile::tempdir().unwrap();
    let (_cloud, manifest) = connsim_tests::real_world::spawn_cloud(&bins.relay_sim, state.path());
    let w = World::with(manifest, (state, install));
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        match TcpStream::connect(w.manifest.ingress) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {i} of {IDLE}: {e} (raise the open-files limit: ulimit -n)"),
        }
    }
    w.others_unharmed(32);
    // Still open, not answered (they sent nothing).
    idle[IDLE - 1].set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(idle[IDLE - 1].read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    drop(idle);
    w.others_unharmed(8);
}

/// Backends that never succeed, on real sockets: a 401 given before a
/// 5 MiB upload was read reaches its user as the backend's answer; a
/// backend that dies mid-answer gives its user a 502, never a short 200;
/// neither touches the tunnel the others use.
#[test]
fn failing_backends_fail_alone() {
    let w = World::start();
    let (early, broken) = (w.manifest.apps[1].clone(), w.manifest.apps[2].clone());
    assert!(early.starts_with("early-") && broken.starts_with("broken-"), "{:?}", w.manifest.apps);
    let upload = vec![b'e'; 5 << 20];
    for i in 0..3 {
        let r = exchange(w.manifest.ingress, &early, "POST", &format!("/early/{i}"), "", &upload);
        assert_eq!((r.status, r.header("x-relay-error")), (401, None), "{}", r.text());
        let r = exchange(w.manifest.ingress, &broken, "GET", &format!("/broken/{i}"), "", b"");
        assert_eq!((r.status, r.header("x-relay-error")), (502, Some("backend-broke-off")), "{}", r.text());
    }
    w.others_unharmed(16);
}
