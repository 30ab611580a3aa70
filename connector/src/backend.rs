//! Calls a private backend for a request the relay pushed, streaming the
//! response back as it arrives. The relay sends the internal URL of the
//! published application in absolute form (`http://app.corp:8080/path`); the
//! connector only dials what the cloud's application table maps to.
//!
//! Backend connections are kept alive and reused ([`Pool`]): opening a TCP
//! connection per request cost more than everything else on the data path
//! together (measured: connect and TIME_WAIT bookkeeping led the connector's
//! profile under load), and a real connector keeps its backend connections
//! too.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc::{self, UnboundedSender};

use crate::code::{self, EventId};
use crate::diag::Diagnostic;
use crate::env::Env;
use crate::event::AgentEvent;
use crate::net::ConnectFailure;
use crate::pace::Pace;
use crate::proto::{Headers, RequestHead};

/// What a request handler sends back to its tunnel.
#[derive(Debug)]
pub enum Outbound {
    Head {
        id: u64,
        status: u16,
        headers: Headers,
        fin: bool,
    },
    Body {
        id: u64,
        data: Bytes,
        fin: bool,
    },
    /// The answer cannot be completed (the backend broke off mid-body):
    /// the stream is cancelled so the relay fails it instead of passing
    /// on a short success.
    Reset {
        id: u64,
    },
}

/// A request body for the backend: whole, or its start and then the
/// pieces the tunnel feeds as they arrive (see [`crate::inflight`]). A
/// feed that ends without its `fin` (the relay cancelled the request, or
/// the tunnel went down) ends the body in an error, so that hyper breaks
/// off the backend's request instead of finishing it short.
#[derive(Debug)]
pub struct RequestBody {
    first: Option<Bytes>,
    feed: Option<mpsc::UnboundedReceiver<(Bytes, bool)>>,
    /// Stamped with each piece fed: an upload in progress is progress.
    progress: Option<Progress>,
}

/// When a request last made progress (a piece of its upload went to the
/// backend, or a piece of the answer came back): the backend timeout
/// counts from there, so a long transfer that keeps moving is never cut.
pub type Progress = Rc<Cell<tokio::time::Instant>>;

/// The tunnel stopped feeding a request body before its end.
#[derive(Debug, thiserror::Error)]
#[error("the request body was cut short before its end")]
pub struct BodyCut;

impl RequestBody {
    pub fn whole(bytes: Bytes) -> Self {
        RequestBody { first: Some(bytes), feed: None, progress: None }
    }

    pub fn fed(first: Bytes, feed: mpsc::UnboundedReceiver<(Bytes, bool)>) -> Self {
        RequestBody { first: Some(first), feed: Some(feed), progress: None }
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BodyCut>>> {
        use std::task::Poll;
        let this = self.get_mut();
        if let Some(bytes) = this.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes))));
        }
        while let Some(feed) = this.feed.as_mut() {
            match std::task::ready!(feed.poll_recv(cx)) {
                Some((data, fin)) => {
                    if let Some(p) = &this.progress {
                        p.set(tokio::time::Instant::now());
                    }
                    if fin {
                        this.feed = None;
                    }
                    if !data.is_empty() {
                        return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
                    }
                }
                None => {
                    this.feed = None;
                    return Poll::Ready(Some(Err(BodyCut)));
                }
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.feed.is_none() && self.first.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match (&self.feed, &self.first) {
            (None, first) => hyper::body::SizeHint::with_exact(first.as_ref().map_or(0, |b| b.len() as u64)),
            (Some(_), _) => hyper::body::SizeHint::default(),
        }
    }
}

/// Where a handler's answer goes: its tunnel, paced.
#[derive(Debug)]
pub struct Reply {
    pub id: u64,
    pub out: UnboundedSender<Outbound>,
    pub pace: Rc<Pace>,
    /// Whether the head has gone: after it, a failure can only reset.
    pub head_sent: Cell<bool>,
}

impl Reply {
    // The tunnel may already be gone: the relay then fails the user's
    // request, so a failed send needs no handling here.
    fn head(&self, status: u16, headers: Headers) {
        self.head_sent.set(true);
        let _ = self.out.send(Outbound::Head { id: self.id, status, headers, fin: false });
    }

    fn body(&self, data: Bytes, fin: bool) {
        self.pace.sent(data.len());
        let _ = self.out.send(Outbound::Body { id: self.id, data, fin });
    }

    fn reset(&self) {
        let _ = self.out.send(Outbound::Reset { id: self.id });
    }
}

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn forwardable(name: &str) -> bool {
    !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Where a backend lives, parsed from the absolute request target.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    path_and_query: String,
}

fn parse_target(raw: &str) -> Result<Target, String> {
    let uri: http::Uri = raw.parse().map_err(|e| format!("request target {raw:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("request target {raw:?}: scheme {other} not supported")),
        None => return Err(format!("request target {raw:?} is not an absolute http:// URL")),
    }
    let host = uri.host().ok_or_else(|| format!("request target {raw:?} has no host"))?;
    Ok(Target {
        host: host.to_string(),
        port: uri.port_u16().unwrap_or(80),
        path_and_query: uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
    })
}

/// Idle keep-alive connections per backend (host, port), shared by every
/// tunnel of one agent. A connection goes back only after its response was
/// read to the end; one the backend closed in the meantime, or one idle for
/// longer than [`IDLE_KEEP`], is dropped when taken.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<BTreeMap<(String, u16), Vec<Idle>>>,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: tokio::time::Instant,
}

/// Idle connections kept per backend; more are closed when they finish.
const IDLE_PER_BACKEND_MAX: usize = 64;

/// How long an idle backend connection is reused. Shorter than the
/// shortest common server keep-alive timeout (Apache's 5 s): a request sent
/// just as the server closes an idle connection fails after it was written,
/// and at-most-once forbids sending it again (the simulation's backends
/// close after 30 s; requests 30 s apart met that race exactly).
pub const IDLE_KEEP: Duration = Duration::from_secs(4);

impl Pool {
    fn take(&self, host: &str, port: u16) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&(host.to_string(), port))?;
        let now = tokio::time::Instant::now();
        // Newest last: once one is too old, all before it are too.
        while let Some(Idle { sender, since }) = list.pop() {
            if now.duration_since(since) >= IDLE_KEEP {
                list.clear();
                break;
            }
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, host: &str, port: u16, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry((host.to_string(), port)).or_default();
        if list.len() < IDLE_PER_BACKEND_MAX {
            list.push(Idle { sender, since: tokio::time::Instant::now() });
        }
    }

    /// Idle connections held right now (all backends).
    pub fn idle(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

/// Serves one request against its backend and streams the answer to `out`.
/// Failures become gateway errors to the user, never a panic or a hang:
/// 502 when the backend cannot be reached or breaks off, 504 when it makes
/// no progress for `timeout` (no answer, or a stalled upload or answer).
/// Once the answer's head has gone, a failure resets the stream instead.
pub async fn serve(
    env: Env,
    pool: std::rc::Rc<Pool>,
    head: RequestHead,
    mut body: RequestBody,
    timeout: Duration,
    reply: Reply,
) {
    let id = reply.id;
    let progress: Progress = Rc::new(Cell::new(tokio::time::Instant::now()));
    body.progress = Some(progress.clone());
    let work = forward(&env, &pool, &head, body, &reply, &progress);
    let status = match until_stalled(work, &progress, timeout).await {
        Some(Ok(status)) => status,
        Some(Err((status, diag))) => {
            env.emit(AgentEvent::Diagnostic(diag.clone()));
            gateway_error(status, &diag, &reply);
            status
        }
        None => {
            let (path, secs) = (&head.path, timeout.as_secs());
            let text = if reply.head_sent.get() {
                format!("backend for {path} stalled mid-answer for {secs}s")
            } else {
                format!("backend for {path} did not answer within {secs}s")
            };
            let diag = Diagnostic::new(
                code::BACKEND_TIMEOUT,
                Some(EventId::Backend),
                text,
                "check the backend's health, or raise the application's backend timeout",
            );
            env.emit(AgentEvent::Diagnostic(diag.clone()));
            gateway_error(504, &diag, &reply);
            504
        }
    };
    env.emit(AgentEvent::RequestServed { id, status });
}

/// Runs `work` until it ends, or until `timeout` has passed since
/// `progress` was last stamped (None).
async fn until_stalled<F: std::future::Future>(work: F, progress: &Progress, timeout: Duration) -> Option<F::Output> {
    tokio::pin!(work);
    loop {
        let deadline = progress.get() + timeout;
        match crate::time::timeout_at(deadline, &mut work).await {
            Ok(out) => return Some(out),
            // Progress since the deadline was set: wait on from there.
            Err(_) if progress.get() + timeout > deadline => continue,
            Err(_) => return None,
        }
    }
}

fn gateway_error(status: u16, diag: &Diagnostic, reply: &Reply) {
    // The user already has a head: a second one cannot follow, and text
    // appended to the body would pass for the end of the answer.
    if reply.head_sent.get() {
        reply.reset();
        return;
    }
    let headers = vec![
        ("content-type".to_string(), "text/plain".to_string()),
        ("x-connector-error".to_string(), diag.code.clone()),
    ];
    reply.head(status, headers);
    reply.body(Bytes::from(diag.message.clone()), true);
}

async fn forward(
    env: &Env,
    pool: &Pool,
    head: &RequestHead,
    body: RequestBody,
    reply: &Reply,
    progress: &Progress,
) -> Result<u16, (u16, Diagnostic)> {
    let bad =
        |msg: String| (502, Diagnostic::new(code::BACKEND_BAD_TARGET, None, msg, "fix the application's internal URL"));
    let target = parse_target(&head.path).map_err(bad)?;
    let broke = |what: String| {
        (
            502,
            Diagnostic::new(
                code::BACKEND_BROKEN,
                Some(EventId::Backend),
                format!("backend {}:{} {what}", target.host, target.port),
                "check the backend's logs",
            ),
        )
    };
    let method = http::Method::from_bytes(head.method.as_bytes())
        .map_err(|_| bad(format!("invalid method {:?}", head.method)))?;
    let mut req = http::Request::builder().method(method).uri(target.path_and_query.as_str());
    let mut has_host = false;
    for (name, value) in head.headers.iter().filter(|(n, _)| forwardable(n)) {
        has_host |= name.eq_ignore_ascii_case("host");
        req = req.header(name.as_str(), value.as_str());
    }
    if !has_host {
        req = req.header(http::header::HOST, format!("{}:{}", target.host, target.port));
    }
    let req = req.body(body).map_err(|e| bad(format!("invalid request: {e}")))?;

    // A kept-alive connection first. One the backend closed before the
    // request was written hands the request back; try the next, then a new
    // connection. Once written, a failure is final: the request may have
    // been served, and at-most-once forbids sending it again.
    let mut unsent = req;
    let (sender, resp) = loop {
        let Some(mut sender) = pool.take(&target.host, target.port) else {
            let mut sender = connect(env, &target).await.map_err(|e| match e {
                Connect::Unreachable(diag) => (502, diag),
                Connect::Handshake(e) => broke(format!("handshake failed: {e}")),
            })?;
            let resp = sender.send_request(unsent).await.map_err(|e| broke(format!("failed: {e}")))?;
            break (sender, resp);
        };
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(unsent).await {
            Ok(resp) => break (sender, resp),
            Err(mut e) => match e.take_message() {
                Some(req) => unsent = req,
                None => return Err(broke(format!("failed: {}", e.into_error()))),
            },
        }
    };
    let status = resp.status().as_u16();
    let headers: Headers = resp
        .headers()
        .iter()
        .filter(|(n, _)| forwardable(n.as_str()))
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let mut body = resp.into_body();
    reply.head(status, headers);
    loop {
        // Read on only as fast as the tunnel takes it.
        reply.pace.ready().await;
        match body.frame().await {
            Some(Ok(frame)) => {
                progress.set(tokio::time::Instant::now());
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        reply.body(data, false);
                    }
                }
            }
            Some(Err(e)) => {
                // Head already sent: reset the stream, so that the user
                // gets a gateway error rather than a short success.
                reply.reset();
                let (status, diag) = broke(format!("broke off mid-body: {e}"));
                env.emit(AgentEvent::Diagnostic(diag));
                return Ok(status);
            }
            None => break,
        }
    }
    reply.body(Bytes::new(), true);
    pool.put(&target.host, target.port, sender);
    Ok(status)
}

enum Connect {
    Unreachable(Diagnostic),
    Handshake(hyper::Error),
}

/// A new HTTP/1.1 connection to the backend, its driver on the local set.
async fn connect(env: &Env, target: &Target) -> Result<SendRequest<RequestBody>, Connect> {
    let net = env.net.proxy().map_or(env.net.as_ref(), |hop| hop.inner);
    let (_, stream) = crate::net::connect(net, &target.host, target.port).await.map_err(|e| {
        let failure = ConnectFailure::from_io(&e.error);
        Connect::Unreachable(Diagnostic::new(
            code::BACKEND_UNREACHABLE,
            Some(EventId::Backend),
            format!("cannot reach backend {}:{} ({failure})", target.host, target.port),
            "check that the backend runs and that the connector host can reach it",
        ))
    })?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(Connect::Handshake)?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body fed to its end ends cleanly; one whose feed stops before its
    /// `fin` ends in an error, so the backend's request is broken off.
    #[tokio::test(flavor = "current_thread")]
    async fn a_fed_body_cut_before_its_end_is_an_error() {
        let (sink, feed) = mpsc::unbounded_channel();
        sink.send((Bytes::from_static(b"bc"), false)).unwrap();
        sink.send((Bytes::from_static(b"d"), true)).unwrap();
        let whole = RequestBody::fed(Bytes::from_static(b"a"), feed).collect().await.unwrap().to_bytes();
        assert_eq!(&whole[..], b"abcd");
        let (sink, feed) = mpsc::unbounded_channel();
        sink.send((Bytes::from_static(b"bc"), false)).unwrap();
        drop(sink);
        assert!(RequestBody::fed(Bytes::from_static(b"a"), feed).collect().await.is_err());
    }

    #[test]
    fn targets_parse_and_bad_ones_are_named() {
        let t = parse_target("http://app.corp:8080/a?b=1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path_and_query.as_str()), ("app.corp", 8080, "/a?b=1"));
        assert_eq!(parse_target("http://app.corp").unwrap().port, 80);
        assert!(parse_target("/relative").unwrap_err().contains("absolute"));
        assert!(parse_target("ftp://x/").unwrap_err().contains("ftp"));
    }
}
