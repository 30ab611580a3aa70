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
//!
//! The HTTP/1.1 is the connector's own ([`h1`], sans-I/O), driven here in
//! the request's task: it writes the request, streams the rest of an upload
//! and reads the answer in one task, with no connection task beside it.

mod h1;
mod pool;
pub mod quick;
mod target;

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc::{self, UnboundedSender};

use crate::code::{self, EventId};
use crate::diag::Diagnostic;
use crate::env::Env;
use crate::event::AgentEvent;
use crate::inflight::{Held, Start};
use crate::net::ConnectFailure;
use crate::pace::Pace;
use crate::proto::{Headers, RequestHead};

use h1::H1Error;
use pool::Conn;
pub use pool::Pool;
use target::{parse_target, Target};

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
    /// The backend took `bytes` more of a streamed request body: the
    /// relay may send as much again (`Session::consumed`). Grants follow
    /// the backend's pace, so a backend that stops reading holds up its
    /// upload in the relay, not in the connector's memory.
    Consumed {
        id: u64,
        bytes: usize,
    },
}

impl Outbound {
    /// The request it belongs to.
    pub fn id(&self) -> u64 {
        match self {
            Outbound::Head { id, .. }
            | Outbound::Body { id, .. }
            | Outbound::Reset { id }
            | Outbound::Consumed { id, .. } => *id,
        }
    }
}

/// A request body for the backend: whole, or its start and then the
/// pieces the tunnel feeds as they arrive (see [`crate::inflight`]). A
/// feed that ends without its `fin` (the relay cancelled the request, or
/// the tunnel went down) ends the body in an error ([`BodyCut`]), so that
/// the backend's request is broken off instead of finished short.
#[derive(Debug)]
pub struct RequestBody {
    first: Bytes,
    /// Counts `first` against the agent's budget until the backend has it.
    first_held: Option<Held>,
    /// Bytes at the end of `first` the tunnel waits to hear were taken.
    first_untaken: usize,
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
        RequestBody { first: bytes, first_held: None, first_untaken: 0, feed: None, progress: None }
    }

    #[cfg(test)]
    fn fed(first: Bytes, feed: mpsc::UnboundedReceiver<(Bytes, bool)>) -> Self {
        RequestBody { feed: Some(feed), ..RequestBody::whole(first) }
    }

    /// A body that starts with what the tunnel held (`feed`: and goes on
    /// with what it feeds).
    pub fn started(start: Start, feed: Option<mpsc::UnboundedReceiver<(Bytes, bool)>>) -> Self {
        let Start { bytes, held, untaken } = start;
        RequestBody { first: bytes, first_held: Some(held), first_untaken: untaken, feed, progress: None }
    }

    /// The backend has the start: it leaves the budget, and the tunnel
    /// hears of what it has not counted as taken yet.
    fn first_sent(&mut self, reply: &Reply) {
        self.first_held = None;
        if self.first_untaken > 0 {
            reply.consumed(std::mem::take(&mut self.first_untaken));
        }
    }

    fn len(&self) -> h1::BodyLen {
        match self.feed {
            None => h1::BodyLen::Whole(self.first.len() as u64),
            Some(_) => h1::BodyLen::Streamed,
        }
    }

    /// The next piece fed after the start (never an empty one); `None` at
    /// the body's end.
    pub async fn next(&mut self) -> Option<Result<Bytes, BodyCut>> {
        while let Some(feed) = self.feed.as_mut() {
            let Some((data, fin)) = feed.recv().await else {
                self.feed = None;
                return Some(Err(BodyCut));
            };
            if let Some(p) = &self.progress {
                p.set(tokio::time::Instant::now());
            }
            if fin {
                self.feed = None;
            }
            if !data.is_empty() {
                return Some(Ok(data));
            }
        }
        None
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
    /// Whether the answer's last frame has gone.
    pub ended: Cell<bool>,
}

impl Reply {
    // The tunnel may already be gone: the relay then fails the user's
    // request, so a failed send needs no handling here.
    fn head(&self, status: u16, headers: Headers, fin: bool) {
        self.head_sent.set(true);
        self.ended.set(fin);
        let _ = self.out.send(Outbound::Head { id: self.id, status, headers, fin });
    }

    fn body(&self, data: Bytes, fin: bool) {
        self.ended.set(fin);
        self.pace.sent(data.len());
        let _ = self.out.send(Outbound::Body { id: self.id, data, fin });
    }

    fn reset(&self) {
        let _ = self.out.send(Outbound::Reset { id: self.id });
    }

    fn consumed(&self, bytes: usize) {
        let _ = self.out.send(Outbound::Consumed { id: self.id, bytes });
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
    let progress: Progress = Rc::new(Cell::new(tokio::time::Instant::now()));
    body.progress = Some(progress.clone());
    let work = forward(&env, &pool, &head, body, &reply, &progress);
    // Pinned here, not moved into `conclude`: an async fn keeps what
    // it was given and what it pinned apart, and this future is the bulk
    // of the task's (memory copied at every spawn, per request).
    tokio::pin!(work);
    conclude(&env, &head.path, timeout, &reply, &progress, work).await;
}

/// Serves the rest of a request that the tunnel's loop began
/// ([`quick::Quick`]): its head is written (in part or whole), and its
/// answer is not one the loop takes whole. From here it goes as [`serve`]
/// would have taken it, with the backend timeout counted from the
/// request's start in the loop.
pub async fn serve_begun(env: Env, pool: std::rc::Rc<Pool>, begun: quick::Begun, timeout: Duration, reply: Reply) {
    let quick::Begun { head, mut conn, host, port, rest, framing, send_failed, started } = begun;
    let progress: Progress = Rc::new(Cell::new(started));
    let to_head = head.method == "HEAD";
    let work = async {
        let (outcome, sent) = match send_failed {
            // Sending failed in the loop: nothing more is sent, and the
            // answer, if one came, decides (as in `in_turn`).
            Some(e) => {
                let outcome = receive(&mut conn.stream, &mut conn.buf, to_head, &reply, &progress).await;
                (with_send_failure(outcome, Some(e)), false)
            }
            None => {
                let unsent = Unsent {
                    rest: std::io::Cursor::new(rest),
                    body: RequestBody::whole(Bytes::new()),
                    encoder: h1::BodyEncoder::new(framing),
                    to_head,
                };
                exchange(&mut conn, unsent, &reply, &progress).await
            }
        };
        settle(&env, &pool, (&host, port), conn, outcome, sent, &reply)
    };
    tokio::pin!(work);
    conclude(&env, &head.path, timeout, &reply, &progress, work).await;
}

/// Runs a request's `work` under the backend timeout, turns its failure
/// into a gateway error to the user, and reports the request served.
async fn conclude<F>(env: &Env, path: &str, timeout: Duration, reply: &Reply, progress: &Progress, work: Pin<&mut F>)
where
    F: std::future::Future<Output = Result<u16, (u16, Diagnostic)>>,
{
    let status = match until_stalled(work, progress, timeout).await {
        Some(Ok(status)) => status,
        Some(Err((status, diag))) => {
            env.emit(AgentEvent::Diagnostic(diag.clone()));
            gateway_error(status, &diag, reply);
            status
        }
        None => {
            let diag = stalled(path, timeout, reply.head_sent.get());
            env.emit(AgentEvent::Diagnostic(diag.clone()));
            gateway_error(504, &diag, reply);
            504
        }
    };
    let id = reply.id;
    env.emit_per_request(|| AgentEvent::RequestServed { id, status });
}

/// Why a request timed out: its backend made no progress for `timeout`,
/// before its answer's head (`mid_answer` false) or after it.
pub(crate) fn stalled(path: &str, timeout: Duration, mid_answer: bool) -> Diagnostic {
    let secs = timeout.as_secs();
    let text = if mid_answer {
        format!("backend for {path} stalled mid-answer for {secs}s")
    } else {
        format!("backend for {path} did not answer within {secs}s")
    };
    Diagnostic::new(
        code::BACKEND_TIMEOUT,
        Some(EventId::Backend),
        text,
        "check the backend's health, or raise the application's backend timeout",
    )
}

/// A backend that broke off an exchange (`what` says how).
pub(crate) fn broken(host: &str, port: u16, what: &str) -> Diagnostic {
    Diagnostic::new(
        code::BACKEND_BROKEN,
        Some(EventId::Backend),
        format!("backend {host}:{port} {what}"),
        "check the backend's logs",
    )
}

/// A request the connector cannot send as it is (`msg` says why).
fn bad_target(msg: String) -> (u16, Diagnostic) {
    (502, Diagnostic::new(code::BACKEND_BAD_TARGET, None, msg, "fix the application's internal URL"))
}

/// Runs `work` until it ends, or until `timeout` has passed since
/// `progress` was last stamped (None).
async fn until_stalled<F: std::future::Future>(
    mut work: std::pin::Pin<&mut F>,
    progress: &Progress,
    timeout: Duration,
) -> Option<F::Output> {
    loop {
        let deadline = progress.get() + timeout;
        match crate::time::timeout_at(deadline, work.as_mut()).await {
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
    if reply.ended.get() {
        return;
    }
    if reply.head_sent.get() {
        reply.reset();
        return;
    }
    let (headers, body) = gateway_answer(diag);
    reply.head(status, headers, false);
    reply.body(body, true);
}

/// A whole answer as a task's frames carry it: the head, with the end
/// when there is no body, then the body with the end.
pub fn whole_answer(id: u64, status: u16, headers: Headers, body: Bytes) -> (Outbound, Option<Outbound>) {
    let fin = body.is_empty();
    (Outbound::Head { id, status, headers, fin }, (!fin).then_some(Outbound::Body { id, data: body, fin: true }))
}

/// The head's headers and the body of a gateway error the connector
/// answers itself: the diagnostic's code in a header, its text as body.
pub(crate) fn gateway_answer(diag: &Diagnostic) -> (Headers, Bytes) {
    let headers = [("content-type", "text/plain"), ("x-connector-error", &diag.code)].into_iter().collect();
    (headers, Bytes::from(diag.message.clone()))
}

async fn forward(
    env: &Env,
    pool: &Pool,
    head: &RequestHead,
    mut body: RequestBody,
    reply: &Reply,
    progress: &Progress,
) -> Result<u16, (u16, Diagnostic)> {
    let target = parse_target(&head.path).map_err(bad_target)?;
    let (opening, framing) =
        h1::encode_head(&head.method, &target.path_and_query, &head.headers, (&*target.host, target.port), body.len())
            .map_err(|e| bad_target(format!("invalid request: {e}")))?;
    let mut encoder = h1::BodyEncoder::new(framing);
    // A body on a GET may be read by the backend as the next request.
    let reusable = !(h1::is_bodiless(&head.method) && body.len() != h1::BodyLen::Whole(0));
    let first = std::mem::take(&mut body.first);
    let (before, after) = encoder.piece(first.len()).map_err(|e| bad_target(format!("invalid request: {e}")))?;
    let mut opening = opening;
    opening.extend_from_slice(&before);
    // The head kept in its `Vec` (a `Bytes` made of it is an allocation
    // of its own), and owned, so that it goes once sent (see `send_rest`).
    let mut out = Buf::chain(std::io::Cursor::new(opening), first).chain(after);

    // A kept-alive connection first. One whose first write fails took none
    // of the request: try the next, then a new connection. Once a byte is
    // written, a failure is final: the request may have been served, and
    // at-most-once forbids sending it again.
    let mut conn = loop {
        match pool.take(&target.host, target.port) {
            Some(mut conn) => match conn.stream.write_buf(&mut out).await {
                Ok(n) if n > 0 => break conn,
                _ => continue,
            },
            None => {
                let mut conn = connect(env, &target).await.map_err(|diag| (502, diag))?;
                conn.stream
                    .write_buf(&mut out)
                    .await
                    .map_err(|e| (502, broken(&target.host, target.port, &format!("failed: {e}"))))?;
                break conn;
            }
        }
    };
    // Methods are case-sensitive: only "HEAD" is a HEAD to the backend.
    let to_head = head.method == "HEAD";
    let unsent = Unsent { rest: out, body, encoder, to_head };
    let (outcome, sent) = exchange(&mut conn, unsent, reply, progress).await;
    settle(env, pool, (&target.host, target.port), conn, outcome, sent && reusable, reply)
}

/// What an exchange's outcome means for the request and its connection:
/// kept for the next request when the answer allows it and `reusable`
/// (the request went out whole, and nothing of it can be taken for
/// another); a failure as the gateway error the user gets (or, once the
/// head has gone, a reset).
fn settle(
    env: &Env,
    pool: &Pool,
    (host, port): (&str, u16),
    conn: Conn,
    outcome: Result<Received, Failure>,
    reusable: bool,
    reply: &Reply,
) -> Result<u16, (u16, Diagnostic)> {
    match outcome {
        Ok(Received { status, keep_alive }) => {
            if keep_alive && reusable {
                pool.put(host, port, conn);
            }
            Ok(status)
        }
        Err(Failure::Request(e)) => Err(bad_target(format!("invalid request: {e}"))),
        Err(Failure::BeforeHead(what)) => Err((502, broken(host, port, &what))),
        Err(Failure::MidBody { status, why }) => {
            // Head already sent: reset the stream, so that the user gets a
            // gateway error rather than a short success.
            reply.reset();
            env.emit(AgentEvent::Diagnostic(broken(host, port, &format!("broke off mid-body: {why}"))));
            Ok(status)
        }
    }
}

/// How an exchange with the backend went wrong.
enum Failure {
    /// The request cannot be framed as its head said (a body longer or
    /// shorter than its content-length).
    Request(H1Error),
    /// Before the answer's head: the user gets a 502.
    BeforeHead(String),
    /// After the head went to the user: the stream is reset.
    MidBody { status: u16, why: String },
}

/// An answer forwarded to its end.
struct Received {
    status: u16,
    keep_alive: bool,
}

/// Sends the rest of the request and reads and forwards the answer, in
/// this task: in turn when nothing is left to stream ([`in_turn`]), else
/// side by side ([`together`]), since a backend may answer before it has
/// read the whole body (a 401 or 413 to an upload); an answer that ends
/// before the request was sent whole stops the upload. Also says whether
/// the request went out whole (else the connection cannot be reused).
async fn exchange(
    conn: &mut Conn,
    unsent: Unsent<impl Buf>,
    reply: &Reply,
    progress: &Progress,
) -> (Result<Received, Failure>, bool) {
    let (outcome, sent, send_failed) = if !unsent.rest.has_remaining() && unsent.body.feed.is_none() {
        in_turn(conn, unsent, reply, progress).await
    } else {
        // Boxed: its state would otherwise be part of every request's
        // task, which is copied into place at each spawn.
        Box::pin(together(conn, unsent, reply, progress)).await
    };
    (with_send_failure(outcome, send_failed), sent)
}

/// An exchange's outcome, told with why sending failed when it did and
/// no answer came either.
fn with_send_failure(
    outcome: Result<Received, Failure>,
    send_failed: Option<std::io::Error>,
) -> Result<Received, Failure> {
    match (outcome, send_failed) {
        (Err(Failure::BeforeHead(what)), Some(e)) => Err(Failure::BeforeHead(format!("{what} (sending: {e})"))),
        (outcome, _) => outcome,
    }
}

/// What is left of a request to send once its first write is done: the
/// rest of what was framed, the body still to be fed, its framing; and
/// whether it is a HEAD (whose answer has no body).
struct Unsent<B> {
    rest: B,
    body: RequestBody,
    encoder: h1::BodyEncoder,
    to_head: bool,
}

/// What [`exchange`] learnt: the answer, whether the request went out
/// whole, and why sending failed if it did (the answer may still decide).
type Exchanged = (Result<Received, Failure>, bool, Option<std::io::Error>);

/// The usual request: its first write took it whole and no body streams.
/// What is left to send (the body's end, a flush) goes first, then the
/// answer is read, on the connection itself: splitting it for
/// [`together`] cost an allocation and a lock on every read and write.
/// This relies on a flush that does not wait for the backend to read, as
/// a TCP stream's does not; a stream that buffers writes (TLS to a
/// backend) would need the answer read while flushing.
async fn in_turn(conn: &mut Conn, unsent: Unsent<impl Buf>, reply: &Reply, progress: &Progress) -> Exchanged {
    let Unsent { rest, body, encoder, to_head } = unsent;
    let (sent, send_failed) = match send_rest(&mut conn.stream, rest, body, encoder, progress, reply).await {
        Ok(()) => (true, None),
        Err(e) => match sent_whole_or(e) {
            Ok(e) => (false, Some(e)),
            Err(failure) => return (Err(failure), false, None),
        },
    };
    let outcome = receive(&mut conn.stream, &mut conn.buf, to_head, reply, progress).await;
    (outcome, sent, send_failed)
}

/// A request whose body is still to be sent: sending and reading the
/// answer run side by side.
async fn together(conn: &mut Conn, unsent: Unsent<impl Buf>, reply: &Reply, progress: &Progress) -> Exchanged {
    let Unsent { rest, body, encoder, to_head } = unsent;
    let (mut rd, mut wr) = tokio::io::split(&mut conn.stream);
    let send = send_rest(&mut wr, rest, body, encoder, progress, reply);
    let recv = receive(&mut rd, &mut conn.buf, to_head, reply, progress);
    tokio::pin!(send, recv);
    let (mut sent, mut sending, mut send_failed) = (false, true, None);
    let outcome = loop {
        tokio::select! {
            biased;
            r = &mut recv => break r,
            s = &mut send, if sending => {
                sending = false;
                match s {
                    Ok(()) => sent = true,
                    Err(e) => match sent_whole_or(e) {
                        Ok(e) => send_failed = Some(e),
                        Err(failure) => break Err(failure),
                    },
                }
            }
        }
    };
    (outcome, sent, send_failed)
}

/// How a failure to send ends the exchange: an I/O error leaves it to the
/// answer (the backend may have answered before it stopped reading);
/// a body cut short or framed wrong ends it at once.
fn sent_whole_or(e: Send) -> Result<std::io::Error, Failure> {
    match e {
        Send::Io(e) => Ok(e),
        Send::Cut(e) => Err(Failure::BeforeHead(format!(
            "was sent a request cut short: {e} (cancelled by the relay, or its tunnel ended)"
        ))),
        Send::Framing(e) => Err(Failure::Request(e)),
    }
}

enum Send {
    Io(std::io::Error),
    Cut(BodyCut),
    Framing(H1Error),
}

async fn send_rest<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut rest: impl Buf,
    mut body: RequestBody,
    mut encoder: h1::BodyEncoder,
    progress: &Progress,
    reply: &Reply,
) -> Result<(), Send> {
    wr.write_all_buf(&mut rest).await.map_err(Send::Io)?;
    // Emptied, it would still keep the start's buffer alive for as long
    // as the upload lasts.
    drop(rest);
    body.first_sent(reply);
    while let Some(piece) = body.next().await {
        let data = piece.map_err(Send::Cut)?;
        let len = data.len();
        let (before, after) = encoder.piece(len).map_err(Send::Framing)?;
        let mut out = Bytes::from(before).chain(data).chain(Bytes::from_static(after));
        wr.write_all_buf(&mut out).await.map_err(Send::Io)?;
        // The backend took it: an upload it keeps reading is progress,
        // and the relay may send as much again.
        progress.set(tokio::time::Instant::now());
        reply.consumed(len);
    }
    let end = encoder.finish().map_err(Send::Framing)?;
    wr.write_all(end).await.map_err(Send::Io)?;
    wr.flush().await.map_err(Send::Io)
}

/// Reads the answer's head (past any 1xx) and forwards it, then its body
/// as it arrives, never faster than the tunnel takes it.
async fn receive<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    to_head: bool,
    reply: &Reply,
    progress: &Progress,
) -> Result<Received, Failure> {
    let mut reads = Reads::default();
    let head = loop {
        // Nothing to parse yet (the usual case: the answer has not come).
        let parsed = if buf.is_empty() { Ok(None) } else { h1::parse_response(buf, to_head) };
        match parsed {
            Err(e) => return Err(Failure::BeforeHead(e.to_string())),
            Ok(Some((n, head))) => {
                buf.advance(n);
                progress.set(tokio::time::Instant::now());
                if !(100..200).contains(&head.status) {
                    break head;
                }
            }
            Ok(None) => {
                if let Some(what) = unanswered(&reads.more(rd, buf).await) {
                    return Err(Failure::BeforeHead(what));
                }
            }
        }
    };
    let status = head.status;
    let mid = |why: String| Failure::MidBody { status, why };
    let mut decoder = h1::BodyDecoder::new(head.body);
    // The last frame carries the end: a head alone for an empty body, the
    // last data when the body's end is in the buffer with it.
    reply.head(status, head.headers, decoder.is_done());
    loop {
        match decoder.next(buf).map_err(|e| mid(e.to_string()))? {
            h1::Piece::Data(data) => reply.body(data, decoder.is_done()),
            h1::Piece::Done if reply.ended.get() => break,
            h1::Piece::Done => {
                reply.body(Bytes::new(), true);
                break;
            }
            h1::Piece::NeedMore => {
                // Read on only as fast as the tunnel takes it.
                reply.pace.ready().await;
                match reads.more(rd, buf).await {
                    Ok(0) => decoder.at_eof().map_err(mid)?,
                    Ok(_) => progress.set(tokio::time::Instant::now()),
                    Err(e) => return Err(mid(format!("read failed: {e}"))),
                }
            }
        }
    }
    Ok(Received { status, keep_alive: head.keep_alive })
}

/// How a read made while waiting for an answer's head ends the wait, in
/// the words of the user's 502: the backend closed, or the read failed;
/// `None` when bytes came. (Shared with the tunnel loop's reads,
/// [`quick`].)
fn unanswered(read: &std::io::Result<usize>) -> Option<String> {
    match read {
        Ok(0) => Some("closed the connection before answering".into()),
        Ok(_) => None,
        Err(e) => Some(format!("failed: {e}")),
    }
}

/// Read sizes that grow while reads fill them: small answers take one
/// small buffer, large downloads come in pieces of up to [`Reads::MAX`].
///
/// The first read of an answer goes to the thread's scratch buffer, and
/// only what came is copied out. A pooled connection keeps no buffer
/// while idle (see [`Pool`]), so every answer made a 16 KiB one: the
/// connector's largest allocation (glibc serves blocks that large outside
/// its thread cache, merging its free lists for them), held for as long
/// as the answer was awaited (1,000 paused uploads: 57.8 -> 44.6 MiB).
#[derive(Default)]
struct Reads {
    /// Bytes the next read may bring; 0 until the first read (the one
    /// into the scratch buffer) is done.
    size: usize,
}

thread_local! {
    /// Where the first read of each answer lands (see [`Reads`]).
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; Reads::FIRST].into_boxed_slice());
}

impl Reads {
    const FIRST: usize = 16 * 1024;
    const MAX: usize = 256 * 1024;

    async fn more<R: AsyncRead + Unpin>(&mut self, rd: &mut R, buf: &mut BytesMut) -> std::io::Result<usize> {
        if self.size == 0 {
            self.size = Self::FIRST;
            if buf.capacity() == buf.len() {
                if let Some(read) = std::future::poll_fn(|cx| poll_scratch(Pin::new(&mut *rd), cx, buf)).await {
                    if matches!(read, Ok(n) if n == Self::FIRST) {
                        self.size = Self::FIRST * 2;
                    }
                    return read;
                }
            }
        }
        buf.reserve(self.size);
        let room = buf.capacity() - buf.len();
        let n = rd.read_buf(buf).await?;
        if n == room {
            self.size = (self.size * 2).min(Self::MAX);
        }
        Ok(n)
    }
}

/// One read into the thread's scratch buffer, what came appended to
/// `buf`; `None` if the scratch buffer is not to be had (taken, or the
/// thread is ending): the caller reads into `buf` itself.
fn poll_scratch<R: AsyncRead>(
    rd: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<Option<std::io::Result<usize>>> {
    let polled = SCRATCH.try_with(|scratch| {
        let mut scratch = scratch.try_borrow_mut().ok()?;
        let mut read = ReadBuf::new(&mut scratch);
        Some(match rd.poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        })
    });
    match polled {
        Ok(Some(Poll::Ready(n))) => Poll::Ready(Some(n)),
        Ok(Some(Poll::Pending)) => Poll::Pending,
        _ => Poll::Ready(None),
    }
}

/// A new connection to the backend.
async fn connect(env: &Env, target: &Target<'_>) -> Result<Conn, Diagnostic> {
    let net = env.net.proxy().map_or(env.net.as_ref(), |hop| hop.inner);
    let (_, stream) = crate::net::connect(net, &target.host, target.port).await.map_err(|e| {
        let failure = ConnectFailure::from_io(&e.error);
        Diagnostic::new(
            code::BACKEND_UNREACHABLE,
            Some(EventId::Backend),
            format!("cannot reach backend {}:{} ({failure})", target.host, target.port),
            "check that the backend runs and that the connector host can reach it",
        )
    })?;
    Ok(Conn::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one exchange against a scripted backend that answers `wire`
    /// (then closes when `close`), and returns what went to the tunnel.
    /// Runs the exchange both ways a request may take it: sent whole by
    /// its first write (`in_turn`), or with the request still to send
    /// (`together`). Both must give the same frames and verdicts.
    async fn exchange_with(
        request: &'static [u8],
        wire: &'static [u8],
        close: bool,
        to_head: bool,
    ) -> (Vec<Outbound>, bool, bool) {
        let (frames, sent, keep) = exchange_via(request, wire, close, to_head, true).await;
        let other = exchange_via(request, wire, close, to_head, false).await;
        assert_eq!(format!("{:?}", (&frames, sent, keep)), format!("{other:?}"), "in turn, then together");
        (frames, sent, keep)
    }

    async fn exchange_via(
        request: &'static [u8],
        wire: &'static [u8],
        close: bool,
        to_head: bool,
        written_first: bool,
    ) -> (Vec<Outbound>, bool, bool) {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let backend = tokio::spawn(async move {
            let mut got = vec![0u8; request.len()];
            theirs.read_exact(&mut got).await.unwrap();
            assert_eq!(got, request);
            theirs.write_all(wire).await.unwrap();
            if !close {
                // Keep the connection open until the exchange is over.
                let _ = theirs.read(&mut [0u8; 1]).await;
            }
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reply = Reply {
            id: 7,
            out: tx,
            pace: Rc::new(Pace::default()),
            head_sent: Cell::new(false),
            ended: Cell::new(false),
        };
        let progress: Progress = Rc::new(Cell::new(tokio::time::Instant::now()));
        let mut conn = Conn::new(Box::new(ours));
        let mut rest = Bytes::from_static(request);
        if written_first {
            conn.stream.write_all_buf(&mut rest).await.unwrap();
        }
        let unsent = Unsent {
            rest,
            body: RequestBody::whole(Bytes::new()),
            encoder: h1::BodyEncoder::new(h1::Framing::Length(0)),
            to_head,
        };
        let (outcome, sent) = exchange(&mut conn, unsent, &reply, &progress).await;
        let keep = outcome.as_ref().is_ok_and(|r| r.keep_alive);
        assert!(outcome.is_ok() || !close, "exchange failed");
        drop(conn);
        backend.await.unwrap();
        let mut frames = Vec::new();
        while let Ok(f) = rx.try_recv() {
            frames.push(f);
        }
        (frames, sent, keep)
    }

    fn body_of(frames: &[Outbound]) -> (u16, Vec<u8>, usize) {
        let mut status = 0;
        let mut body = Vec::new();
        let mut fins = 0;
        for f in frames {
            match f {
                Outbound::Head { status: s, fin, .. } => {
                    status = *s;
                    fins += usize::from(*fin);
                }
                Outbound::Body { data, fin, .. } => {
                    body.extend_from_slice(data);
                    fins += usize::from(*fin);
                }
                Outbound::Reset { .. } => panic!("reset"),
                Outbound::Consumed { .. } => {}
            }
        }
        (status, body, fins)
    }

    /// A 100 Continue is skipped, a chunked answer with trailers arrives
    /// whole with exactly one end, and the connection may be reused.
    #[tokio::test(flavor = "current_thread")]
    async fn a_continue_then_a_chunked_answer_ends_once() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n";
        let (frames, sent, keep) = exchange_with(b"GET / HTTP/1.1\r\n\r\n", wire, false, false).await;
        assert_eq!(body_of(&frames), (200, b"abcde".to_vec(), 1));
        assert!(sent && keep);
    }

    /// An HTTP/1.0 answer with no length runs to the close and is complete
    /// there; the connection is not reused.
    #[tokio::test(flavor = "current_thread")]
    async fn a_close_delimited_answer_ends_at_the_close() {
        let wire = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
        let (frames, _, keep) = exchange_with(b"GET / HTTP/1.1\r\n\r\n", wire, true, false).await;
        assert_eq!(body_of(&frames), (200, b"all of it".to_vec(), 1));
        assert!(!keep);
    }

    /// A HEAD's answer has no body whatever its length says: the head
    /// alone ends it, with its content-length passed on.
    #[tokio::test(flavor = "current_thread")]
    async fn a_head_answer_is_its_head() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n";
        let (frames, _, keep) = exchange_with(b"HEAD / HTTP/1.1\r\n\r\n", wire, false, true).await;
        assert_eq!(body_of(&frames), (200, Vec::new(), 1));
        assert!(
            matches!(&frames[0], Outbound::Head { headers, fin: true, .. } if headers.iter().any(|h| h == ("content-length", "42")))
        );
        assert!(keep);
    }

    /// An answer's first read goes through the scratch buffer: what came
    /// is appended to what the buffer held, a full scratch buffer doubles
    /// the next read, later reads go to the buffer itself, and the end of
    /// the stream reads as 0.
    #[tokio::test(flavor = "current_thread")]
    async fn first_reads_keep_what_came() {
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let mut buf = BytesMut::from(&b"ab"[..]);
        let mut reads = Reads::default();
        theirs.write_all(b"cd").await.unwrap();
        assert_eq!(reads.more(&mut ours, &mut buf).await.unwrap(), 2);
        assert_eq!((&buf[..], reads.size), (&b"abcd"[..], Reads::FIRST));
        assert!(buf.capacity() < Reads::FIRST, "what came was copied out, not read into a 16 KiB buffer");

        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let (mut buf, mut reads) = (BytesMut::new(), Reads::default());
        let sent: Vec<u8> = (0..Reads::FIRST + 4096).map(|i| i as u8).collect();
        theirs.write_all(&sent).await.unwrap();
        drop(theirs);
        assert_eq!(reads.more(&mut ours, &mut buf).await.unwrap(), Reads::FIRST);
        assert_eq!(reads.size, 2 * Reads::FIRST, "a full first read doubles the next");
        assert_eq!(reads.more(&mut ours, &mut buf).await.unwrap(), 4096);
        assert_eq!(reads.more(&mut ours, &mut buf).await.unwrap(), 0);
        assert_eq!(buf, sent);
    }

    /// With the scratch buffer taken (never so across a read; the check is
    /// what keeps a re-entered read from panicking), the read is left to
    /// the caller and nothing is consumed.
    #[test]
    fn a_taken_scratch_buffer_leaves_the_read_to_the_caller() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut theirs).poll_write(&mut cx, b"x").is_ready());
        let mut buf = BytesMut::new();
        let polled = SCRATCH.with(|s| {
            let _held = s.borrow_mut();
            poll_scratch(Pin::new(&mut ours), &mut cx, &mut buf)
        });
        assert!(matches!(polled, Poll::Ready(None)));
        assert!(buf.is_empty());
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        assert!(Pin::new(&mut ours).poll_read(&mut cx, &mut read).is_ready());
        assert_eq!(read.filled(), b"x", "the byte is still there for the caller");
    }

    /// A body fed to its end ends cleanly; one whose feed stops before its
    /// `fin` ends in an error, so the backend's request is broken off.
    #[tokio::test(flavor = "current_thread")]
    async fn a_fed_body_cut_before_its_end_is_an_error() {
        let (sink, feed) = mpsc::unbounded_channel();
        sink.send((Bytes::from_static(b"bc"), false)).unwrap();
        sink.send((Bytes::from_static(b"d"), true)).unwrap();
        let mut body = RequestBody::fed(Bytes::from_static(b"a"), feed);
        let mut whole = body.first.to_vec();
        while let Some(piece) = body.next().await {
            whole.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(&whole[..], b"abcd");
        let (sink, feed) = mpsc::unbounded_channel();
        sink.send((Bytes::from_static(b"bc"), false)).unwrap();
        drop(sink);
        let mut body = RequestBody::fed(Bytes::from_static(b"a"), feed);
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.unwrap().is_err());
    }
}
