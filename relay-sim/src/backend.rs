//! Private backends the connector publishes: small hyper servers with a
//! behaviour (echo, slow, failing) and a log of every request they served,
//! which is how scenarios prove that no request ran twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::{Deserialize, Serialize};

use crate::pattern::{pattern, pattern_digest, BodyDigest};
use crate::server::{respond, serve_plain, Body, ConnInfo, Listener};

/// Header a load generator sets to a unique id per user request.
pub const REQUEST_MARK: &str = "x-user-request";

/// How a backend answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Behaviour {
    /// Reads the whole request body, then answers 200 with a line naming
    /// the backend, method, path and request mark, and the body's length
    /// and SHA-256 (also as `x-body-bytes` / `x-body-sha256`), so that a
    /// test can check an upload arrived intact. `?size=N` makes the
    /// response body N bytes of a fixed pattern instead (its SHA-256 in
    /// `x-response-sha256`), for large downloads. `?delay_ms=N` (at most
    /// ten minutes) holds the answer that long once the body is read: a
    /// request kept open. Each `x-echo-set-cookie` request header comes
    /// back as a `set-cookie`.
    Echo,
    /// Like echo, after a delay.
    Slow {
        /// How long the backend waits before answering, in ms.
        delay_ms: u64,
    },
    /// Always this status.
    Status {
        /// The HTTP status every answer has.
        code: u16,
    },
    /// Answers `code` at once, before reading the request body (a 401 or
    /// 413 to an upload, as real servers do), then reads and discards the
    /// body so the connection closes cleanly (a lingering close).
    Early {
        /// The HTTP status answered before the body is read.
        code: u16,
    },
    /// Starts a 200 that announces twice `bytes` and closes the connection
    /// after sending `bytes`: a backend that dies mid-response.
    CloseMidBody {
        /// How much of the body is sent before the connection closes.
        bytes: usize,
        /// Send the body chunked (one chunk announced as twice `bytes`)
        /// instead of with a Content-Length: the answer has no length to
        /// fall short of, only a last chunk that never comes.
        #[serde(default)]
        chunked: bool,
    },
}

/// The echo backend's answer header naming the user single sign-on
/// handed it ([`crate::directory::PRINCIPAL_HEADER`]), when there was one.
pub const SEEN_PRINCIPAL: &str = "x-seen-principal";

/// Largest response `?size=` asks for.
pub const ECHO_SIZE_MAX: usize = 256 << 20;

/// Longest hold `?delay_ms=` asks for: ten minutes.
pub const ECHO_DELAY_MAX_MS: u64 = 600_000;

/// The value of `name=` in a request's query, if there is one.
fn query_value<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// How many times each request mark was served (BTreeMap: ordered), and
/// how many request bodies an echoing backend read to their end or lost
/// midway. Shared across threads: in real mode the backends run on a
/// thread of their own (see [`crate::serve`]) and the control API reads
/// this from the cloud's.
#[derive(Debug, Default, Clone)]
pub struct ServedLog {
    marks: Arc<Mutex<BTreeMap<String, u32>>>,
    /// A body cut short by the connector's side but ended cleanly would
    /// count here: how a test tells a request broken off from one
    /// finished short.
    completed: Arc<AtomicU64>,
    /// Request bodies that ended in an error (the connection went before
    /// their end): how a test tells a request broken off from one left
    /// hanging.
    broken: Arc<AtomicU64>,
}

impl ServedLog {
    /// The marks; a thread that panicked holding them left whole counts
    /// (each update is one insert or increment).
    fn marks(&self) -> MutexGuard<'_, BTreeMap<String, u32>> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self, mark: &str) {
        *self.marks().entry(mark.to_string()).or_default() += 1;
    }

    /// Marks served more than once, with their counts.
    pub fn duplicates(&self) -> Vec<(String, u32)> {
        self.marks().iter().filter(|(_, n)| **n > 1).map(|(k, n)| (k.clone(), *n)).collect()
    }

    pub fn total(&self) -> u64 {
        self.marks().values().map(|n| u64::from(*n)).sum()
    }

    /// A request body was read to its end.
    pub fn complete(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Request bodies read to their end.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// A request body ended in an error.
    pub fn break_off(&self) {
        self.broken.fetch_add(1, Ordering::Relaxed);
    }

    /// Request bodies that ended in an error.
    pub fn broken(&self) -> u64 {
        self.broken.load(Ordering::Relaxed)
    }
}

/// Serves a backend named `name` on `listener`.
pub async fn serve(name: String, behaviour: Behaviour, log: ServedLog, listener: impl Listener) {
    if let Behaviour::CloseMidBody { bytes, chunked } = behaviour {
        return serve_dying(bytes, chunked, log, listener).await;
    }
    serve_plain(listener, move |_info: ConnInfo, req| handle(name.clone(), behaviour.clone(), log.clone(), req)).await;
}

/// Largest request head the dying backend reads.
const DYING_HEAD_BYTES_MAX: usize = 64 << 10;

/// The `close_mid_body` backend, below HTTP: it reads a request head,
/// starts a 200 announcing twice `bytes` (as its Content-Length, or as the
/// size of its one chunk), sends `bytes` and closes the connection, as a
/// process that dies mid-answer. (An HTTP server would keep the connection
/// open after a short body, until its idle timer.)
async fn serve_dying(bytes: usize, chunked: bool, log: ServedLog, listener: impl Listener) {
    loop {
        let mut stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                connector::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let log = log.clone();
        tokio::task::spawn_local(async move {
            use tokio::io::AsyncWriteExt;
            let Some(mark) = read_head_mark(&mut stream).await else { return };
            log.record(&mark);
            let framing = match chunked {
                true => format!("transfer-encoding: chunked\r\n\r\n{:x}\r\n", bytes.saturating_mul(2)),
                false => format!("content-length: {}\r\n\r\n", bytes.saturating_mul(2)),
            };
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n{framing}");
            if stream.write_all(head.as_bytes()).await.is_ok() && stream.write_all(&pattern(bytes)).await.is_ok() {
                let _ = stream.shutdown().await;
            }
        });
    }
}

/// Reads a request head and returns its request mark (or its path); None
/// if the connection ends first or the head is too large.
async fn read_head_mark(stream: &mut connector::net::BoxStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        head.extend_from_slice(&chunk[..n]);
        if head.len() > DYING_HEAD_BYTES_MAX {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.lines();
    let target = lines.next()?.split_whitespace().nth(1)?;
    let path = target.split('?').next().unwrap_or(target).to_string();
    let mark = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(REQUEST_MARK))
        .map(|(_, v)| v.trim().to_string());
    Some(mark.unwrap_or(path))
}

/// Lowercase hex of the SHA-256 of `data`.
pub use connector::pki::cert::sha256_hex;

thread_local! {
    /// The last `?size=N` body: a benchmark downloading the same 100 MiB
    /// again and again measures the path, not the backend making it each
    /// time. (Its digest is remembered by `pattern_digest`.)
    static LAST_DOWNLOAD: std::cell::RefCell<Option<Bytes>> = const { std::cell::RefCell::new(None) };
}

/// The `?size=n` body and its SHA-256.
fn download(n: usize) -> (Bytes, String) {
    let bytes = LAST_DOWNLOAD.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref().filter(|b| b.len() == n) {
            Some(bytes) => bytes.clone(),
            None => last.insert(pattern(n)).clone(),
        }
    });
    (bytes, pattern_digest(n))
}

fn header(resp: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
        resp.headers_mut().append(name, v);
    }
}

async fn handle(name: String, behaviour: Behaviour, log: ServedLog, req: Request<Incoming>) -> Response<Body> {
    let mark = req
        .headers()
        .get(REQUEST_MARK)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| req.uri().path().to_string());
    log.record(&mark);
    let text = format!("{name}: {} {} mark={mark}\n", req.method(), req.uri());
    match behaviour {
        Behaviour::Echo => echo(text, req, &log).await,
        Behaviour::Slow { delay_ms } => {
            connector::time::sleep(Duration::from_millis(delay_ms)).await;
            echo(text, req, &log).await
        }
        Behaviour::Status { code } => respond(code, "text/plain", format!("{name}: status {code}\n")),
        Behaviour::Early { code } => {
            let body = req.into_body();
            tokio::task::spawn_local(async move {
                // Read and dropped piece by piece: never held.
                let mut body = body;
                while let Some(Ok(_)) = body.frame().await {}
            });
            respond(code, "text/plain", format!("{name}: status {code} before reading the body\n"))
        }
        // Served below HTTP by `serve_dying`; an HTTP server cannot die.
        Behaviour::CloseMidBody { .. } => respond(500, "text/plain", format!("{name}: not served over HTTP\n")),
    }
}

async fn echo(text: String, req: Request<Incoming>, log: &ServedLog) -> Response<Body> {
    let size = query_value(&req, "size").and_then(|n| n.parse::<usize>().ok());
    let delay = query_value(&req, "delay_ms").and_then(|n| n.parse::<u64>().ok());
    let cookies: Vec<String> =
        req.headers().get_all("x-echo-set-cookie").iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect();
    // The identity single sign-on handed over, for the user to check.
    let principal =
        req.headers().get(crate::directory::PRINCIPAL_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    // Hashed as it arrives, never held: uploads of any size.
    let mut body = req.into_body();
    let mut hash = BodyDigest::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    hash.update(&data);
                }
            }
            Err(e) => {
                log.break_off();
                return respond(400, "text/plain", format!("request body: {e}\n"));
            }
        }
    }
    log.complete();
    if let Some(ms) = delay {
        connector::time::sleep(Duration::from_millis(ms.min(ECHO_DELAY_MAX_MS))).await;
    }
    let received = hash.len();
    let digest = hash.finish();
    let mut resp = match size {
        Some(n) if n > ECHO_SIZE_MAX => {
            return respond(400, "text/plain", format!("size {n} is over {ECHO_SIZE_MAX}\n"))
        }
        Some(n) => {
            let (out, digest) = download(n);
            let mut resp = respond(200, "application/octet-stream", out);
            header(&mut resp, "x-response-sha256", &digest);
            resp
        }
        None => respond(200, "text/plain", format!("{text}bytes={received} sha256={digest}\n")),
    };
    header(&mut resp, "x-body-bytes", &received.to_string());
    header(&mut resp, "x-body-sha256", &digest);
    for c in &cookies {
        header(&mut resp, "set-cookie", c);
    }
    if let Some(p) = principal {
        header(&mut resp, SEEN_PRINCIPAL, &p);
    }
    resp
}
