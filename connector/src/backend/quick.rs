//! The usual request served by the tunnel's own loop, without a task: it
//! came whole with no body, a kept-alive connection to its backend is
//! idle, and the answer's head and body have both arrived by the time its
//! head is whole (which it must be once [`QUICK_MAX`] bytes came). The
//! loop writes the request, polls
//! the connection among its other sources, and hands the whole answer to
//! its session.
//!
//! Why: a task per request (its cell, its spawn, the channel its answer
//! crossed, the wake-ups of both) was a quarter of the connector's
//! instructions a request under load (callgrind at 32 connections:
//! 24,724 a request with a task each, 18,810 with this path).
//!
//! Anything else leaves this path at the point where it stops fitting,
//! to the task that serves every other request ([`super::serve`]): before
//! a byte is written (no idle connection, a stale one, a full table) the
//! request starts over there; after, the connection goes on in
//! [`super::serve_begun`] with what has been read and what sending met, so
//! that a long, chunked, late or broken answer, a request the backend
//! does not take whole, pacing and the timeout after a head are read,
//! timed and reported by one implementation. What this path answers
//! itself (a whole answer, a backend that closes or fails before its
//! head, one that sends no head in time) it answers with the frames and
//! diagnostics a task gives: the tests run every kind of answer, a failed
//! send and a timeout both ways and compare the frames (a diagnostic's
//! text is in the body of the gateway error that carries it).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

use super::h1;
use super::pool::{Conn, Pool};
use super::target::parse_target;
use crate::diag::Diagnostic;
use crate::proto::{Headers, RequestHead};

/// How much of an answer this path reads without a whole head: once this
/// much came (the size of one read into the thread's scratch buffer, see
/// `Reads`), a head still incomplete goes on in a task. An answer taken
/// whole can so be up to one read longer.
pub const QUICK_MAX: usize = 16 * 1024;

/// The most requests one tunnel serves in its loop at once: each wake-up
/// of the table polls every one of them, so it is kept to about a
/// window's worth; requests past it are served by tasks.
pub const TABLE_MAX: usize = 64;

/// A request being served in the tunnel's loop.
pub struct Quick {
    head: RequestHead,
    conn: Conn,
    host: String,
    port: u16,
    /// The request as written to the backend, and how much of it went.
    out: Vec<u8>,
    written: usize,
    /// Whether it is written whole and flushed.
    sent: bool,
    framing: h1::Framing,
    /// When it started, for a task that goes on with it: its timeout
    /// counts from here too.
    started: tokio::time::Instant,
    /// When it times out, on the tunnel's clock (see [`Quick::deadline`]).
    deadline: Duration,
}

/// Where a request served in the loop went.
pub enum Step {
    /// The answer, whole; its connection went back to the pool.
    Answered { status: u16, headers: Headers, body: Bytes },
    /// The backend failed before its answer's head: the diagnostic for a
    /// 502.
    Broke(Diagnostic),
    /// Nothing was written (the kept-alive connection had gone stale):
    /// serve the request from the start, as any other.
    Unwritten(RequestHead),
    /// Written in part or whole, with an answer this path does not take
    /// whole: go on with [`super::serve_begun`].
    Begun(Begun),
}

/// A request the loop began: its head written (`rest` is what is still
/// unsent), its connection with what has been read of the answer (in its
/// buffer), and the error sending met, if it did (nothing more is sent
/// then, as a task sends nothing after a failed write).
pub struct Begun {
    pub head: RequestHead,
    pub conn: Conn,
    pub host: String,
    pub port: u16,
    pub rest: Vec<u8>,
    pub framing: h1::Framing,
    pub send_failed: Option<std::io::Error>,
    pub started: tokio::time::Instant,
}

/// What a poll found, before the request leaves the loop's table.
pub enum Polled {
    Answered { head_len: usize, head: h1::ResponseHead, body_len: usize },
    Broke(String),
    Unwritten,
    Begun(Option<std::io::Error>),
}

impl Quick {
    /// Takes `head` into the loop if it can be served here: it has no
    /// body (the caller's to know), its target is well formed and its
    /// backend has an idle kept-alive connection. Else it comes back, to
    /// be served by a task, which reports a bad target as before.
    /// `deadline` is when it times out.
    #[allow(
        clippy::result_large_err,
        reason = "the Ok variant is the larger; boxing either costs an allocation a request"
    )]
    pub fn start(pool: &Pool, head: RequestHead, deadline: Duration) -> Result<Quick, RequestHead> {
        let Ok(target) = parse_target(&head.path) else { return Err(head) };
        let encoded = h1::encode_head(
            &head.method,
            &target.path_and_query,
            &head.headers,
            (&*target.host, target.port),
            h1::BodyLen::Whole(0),
        );
        let Ok((out, framing)) = encoded else { return Err(head) };
        let Some(conn) = pool.take(&target.host, target.port) else { return Err(head) };
        let (host, port) = (target.host.into_owned(), target.port);
        let started = tokio::time::Instant::now();
        Ok(Quick { head, conn, host, port, out, written: 0, sent: false, framing, started, deadline })
    }

    /// When the backend timeout ends it: it counts from the start, as a
    /// task's does until the answer's head; this path leaves to a task
    /// once a head came without its whole body.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The diagnostic for a request that timed out here.
    pub fn timed_out(&self, timeout: Duration) -> Diagnostic {
        super::stalled(&self.head.path, timeout, false)
    }

    /// Writes what is left of the request, then reads until the answer
    /// is whole or leaves this path.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Polled> {
        if let Some(out) = std::task::ready!(self.poll_send(cx)) {
            return Poll::Ready(out);
        }
        let to_head = self.head.method == "HEAD";
        loop {
            if !self.conn.buf.is_empty() {
                match h1::parse_response(&self.conn.buf, to_head) {
                    // A final answer whose body came with it; anything
                    // else (a 1xx, a body still to come, chunked or to
                    // the close, a malformed or long head) is a task's to
                    // read, pace and report.
                    Ok(Some((n, head))) => {
                        let body_len = match head.body {
                            h1::BodyKind::Empty => Some(0),
                            h1::BodyKind::Length(len) => usize::try_from(len).ok(),
                            h1::BodyKind::Chunked | h1::BodyKind::UntilClose => None,
                        };
                        return Poll::Ready(match body_len {
                            Some(len) if head.status >= 200 && self.conn.buf.len() - n >= len => {
                                Polled::Answered { head_len: n, head, body_len: len }
                            }
                            _ => Polled::Begun(None),
                        });
                    }
                    Ok(None) if self.conn.buf.len() < QUICK_MAX => {}
                    _ => return Poll::Ready(Polled::Begun(None)),
                }
            }
            match std::task::ready!(super::poll_scratch(Pin::new(&mut self.conn.stream), cx, &mut self.conn.buf)) {
                Some(read) => {
                    if let Some(what) = super::unanswered(&read) {
                        return Poll::Ready(Polled::Broke(what));
                    }
                }
                // No scratch buffer to read into: a task reads.
                None => return Poll::Ready(Polled::Begun(None)),
            }
        }
    }

    /// Writes the rest of the request and flushes it: `None` once it is
    /// all out, else where the request goes.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Option<Polled>> {
        if self.sent {
            return Poll::Ready(None);
        }
        let mut stream = Pin::new(&mut self.conn.stream);
        while self.written < self.out.len() {
            match stream.as_mut().poll_write(cx, &self.out[self.written..]) {
                Poll::Ready(Ok(n)) if n > 0 => self.written += n,
                // A kept-alive connection that takes none of the request
                // went stale: the request is served anew (as a task tries
                // the next one). Once a byte is out, a failure is final
                // (at most once), and a task reports it.
                Poll::Ready(_) if self.written == 0 => return Poll::Ready(Some(Polled::Unwritten)),
                Poll::Ready(Ok(_)) => {
                    return Poll::Ready(Some(Polled::Begun(Some(std::io::ErrorKind::WriteZero.into()))))
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Polled::Begun(Some(e)))),
                // Part of a long head is out and the backend does not take
                // the rest yet: it may answer first (a 431), which a task
                // reads while it sends.
                Poll::Pending if self.written > 0 => return Poll::Ready(Some(Polled::Begun(None))),
                Poll::Pending => return Poll::Pending,
            }
        }
        match std::task::ready!(stream.poll_flush(cx)) {
            Ok(()) => {
                self.sent = true;
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Polled::Begun(Some(e)))),
        }
    }

    /// Where the request goes after `polled`: an answer taken whole gives
    /// its connection back to `pool` (when the backend keeps it).
    pub fn step(mut self, polled: Polled, pool: &Pool) -> Step {
        match polled {
            Polled::Answered { head_len, head, body_len } => {
                self.conn.buf.advance(head_len);
                let body = self.conn.buf.split_to(body_len).freeze();
                if head.keep_alive {
                    // Bytes past the answer keep it out of the pool.
                    pool.put(&self.host, self.port, self.conn);
                }
                Step::Answered { status: head.status, headers: head.headers, body }
            }
            Polled::Broke(what) => Step::Broke(super::broken(&self.host, self.port, &what)),
            Polled::Unwritten => Step::Unwritten(self.head),
            Polled::Begun(send_failed) => {
                let rest = self.out.split_off(self.written);
                let Quick { head, conn, host, port, framing, started, .. } = self;
                Step::Begun(Begun { head, conn, host, port, rest, framing, send_failed, started })
            }
        }
    }
}

/// The requests one tunnel serves in its loop, by relay request id.
#[derive(Default)]
pub struct Table {
    map: BTreeMap<u64, Quick>,
    /// The deadlines of the requests in `map`, in the order they fall,
    /// with their ids (each pair is unique).
    deadlines: VecDeque<(Duration, u64)>,
    /// Taken out of `map` by the last poll, in id order, with what ended
    /// them there.
    finished: VecDeque<(u64, Quick, Polled)>,
    /// Ids of the last poll's finished ones (kept to reuse its memory).
    ids: Vec<(u64, Polled)>,
    fresh: bool,
}

impl Table {
    /// Whether the table takes another request ([`TABLE_MAX`]).
    pub fn has_room(&self) -> bool {
        self.map.len() < TABLE_MAX
    }

    pub fn insert(&mut self, id: u64, quick: Quick) {
        // Deadlines come in order (one timeout, a clock that does not go
        // back): this is the end, unless one did not.
        let key = (quick.deadline, id);
        let at = self.deadlines.partition_point(|e| *e < key);
        self.deadlines.insert(at, key);
        if let Some(old) = self.map.insert(id, quick) {
            self.forget(id, &old);
        }
        self.fresh = true;
    }

    /// Takes `id`'s deadline out of the order (its request left).
    fn forget(&mut self, id: u64, quick: &Quick) {
        let key = (quick.deadline, id);
        let at = self.deadlines.partition_point(|e| *e < key);
        if self.deadlines.get(at) == Some(&key) {
            self.deadlines.remove(at);
        }
    }

    /// Takes request `id` out of the table.
    fn take(&mut self, id: u64) -> Option<Quick> {
        let quick = self.map.remove(&id)?;
        self.forget(id, &quick);
        Some(quick)
    }

    /// Whether a request came in since the last call: it has not been
    /// polled, so the loop polls the table whatever woke it.
    pub fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Request `id` was cancelled: its connection closes (the backend may
    /// still be answering it).
    pub fn cancel(&mut self, id: u64) {
        self.take(id);
    }

    /// Polls every request in the table; ready when one finished here
    /// ([`Table::pop_finished`]).
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for (id, quick) in self.map.iter_mut() {
            if let Poll::Ready(polled) = quick.poll(cx) {
                self.ids.push((*id, polled));
            }
        }
        let mut ids = std::mem::take(&mut self.ids);
        for (id, polled) in ids.drain(..) {
            if let Some(quick) = self.take(id) {
                self.finished.push_back((id, quick, polled));
            }
        }
        self.ids = ids;
        if self.finished.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// The next request the last poll finished, in id order.
    pub fn pop_finished(&mut self) -> Option<(u64, Quick, Polled)> {
        self.finished.pop_front()
    }

    /// The earliest deadline in the table.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadlines.front().map(|&(deadline, _)| deadline)
    }

    /// Takes out the request whose deadline is earliest, if it is past at
    /// `now`.
    pub fn pop_expired(&mut self, now: Duration) -> Option<(u64, Quick)> {
        let &(deadline, id) = self.deadlines.front()?;
        if deadline > now {
            return None;
        }
        self.take(id).map(|quick| (id, quick))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream, ReadBuf};
    use tokio::sync::mpsc;

    use super::super::{Outbound, Reply, RequestBody};
    use super::*;
    use crate::pace::Pace;

    const HOST: &str = "app.corp";
    const TIMEOUT: Duration = Duration::from_secs(85);

    fn request(method: &'static str, path: &str) -> RequestHead {
        RequestHead { method: method.into(), path: format!("http://{HOST}:8080{path}"), headers: Headers::default() }
    }

    /// A pool holding one kept-alive connection to the backend, and the
    /// backend's end of it.
    fn pool_with_one() -> (Rc<Pool>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let pool = Pool::default();
        pool.put(HOST, 8080, Conn::new(Box::new(ours)));
        assert_eq!(pool.idle(), 1);
        (Rc::new(pool), theirs)
    }

    /// Reads one request head, then answers `wire` (and closes if
    /// `close`); gives back the request and its end of the connection.
    async fn backend(mut theirs: DuplexStream, wire: &'static [u8], close: bool) -> (String, DuplexStream) {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            // The connector's end stays open until its request is read.
            assert_eq!(theirs.read(&mut byte).await.expect("the connector's end is open"), 1);
            got.push(byte[0]);
        }
        theirs.write_all(wire).await.expect("the connector's end is open and the answer fits the pipe");
        if close {
            theirs.shutdown().await.expect("shutting a duplex end down cannot fail");
        }
        (String::from_utf8(got).expect("request heads are written in ASCII (`h1::encode_head`)"), theirs)
    }

    fn env() -> crate::env::Env {
        crate::env::Env {
            net: Rc::new(crate::net::TokioNet::new(Vec::new())),
            clock: std::sync::Arc::new(crate::env::SystemClock),
            entropy: std::sync::Arc::new(crate::env::OsEntropy),
            events: Rc::new(crate::env::LogSink),
            evidence: Rc::default(),
        }
    }

    fn new_reply() -> (Reply, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pace = Rc::new(Pace::default());
        (Reply { id: 7, out: tx, pace, head_sent: Cell::new(false), ended: Cell::new(false) }, rx)
    }

    fn frames(mut rx: mpsc::UnboundedReceiver<Outbound>) -> Vec<Outbound> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Serves `method` against a backend answering `wire` through the
    /// loop, and where it went; with the frames the tunnel gets (as
    /// `Link::answer` hands them on, or from the task it goes on in) and
    /// the connections left in the pool.
    async fn through_the_loop(method: &'static str, wire: &'static [u8], close: bool) -> (&'static str, String, usize) {
        let (pool, theirs) = pool_with_one();
        let backend = tokio::spawn(backend(theirs, wire, close));
        let Ok(mut quick) = Quick::start(&pool, request(method, "/a"), TIMEOUT) else { panic!("not taken") };
        let polled = std::future::poll_fn(|cx| quick.poll(cx)).await;
        let (way, out) = match quick.step(polled, &pool) {
            Step::Answered { status, headers, body } => ("answered", as_link_answers(status, headers, body)),
            Step::Broke(diag) => {
                let (headers, body) = super::super::gateway_answer(&diag);
                ("broke", as_link_answers(502, headers, body))
            }
            Step::Unwritten(_) => panic!("unwritten"),
            Step::Begun(begun) => {
                let (reply, rx) = new_reply();
                super::super::serve_begun(env(), pool.clone(), begun, TIMEOUT, reply).await;
                ("begun", frames(rx))
            }
        };
        let _theirs = backend.await.expect("the backend task does not panic unless an assertion in it failed");
        (way, format!("{out:?}"), pool.idle())
    }

    /// The frames `Link::answer` hands the session for a whole answer.
    fn as_link_answers(status: u16, headers: Headers, body: Bytes) -> Vec<Outbound> {
        let (head, body) = super::super::whole_answer(7, status, headers, body);
        std::iter::once(head).chain(body).collect()
    }

    /// The same through a task, as every request went before.
    async fn through_a_task(method: &'static str, wire: &'static [u8], close: bool) -> (String, usize) {
        let (pool, theirs) = pool_with_one();
        let backend = tokio::spawn(backend(theirs, wire, close));
        let (reply, rx) = new_reply();
        let body = RequestBody::whole(Bytes::new());
        super::super::serve(env(), pool.clone(), request(method, "/a"), body, TIMEOUT, reply).await;
        let _theirs = backend.await.expect("the backend task does not panic unless an assertion in it failed");
        (format!("{:?}", frames(rx)), pool.idle())
    }

    /// Answers of every kind give the tunnel the same frames, and leave
    /// the same connections in the pool, through the loop as through a
    /// task; and each goes the way this path means it to.
    #[tokio::test(flavor = "current_thread")]
    async fn every_answer_is_forwarded_as_a_task_forwards_it() {
        let long: &'static [u8] = Box::leak(
            [&b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n"[..], &[b'x'; 20_000][..]].concat().into_boxed_slice(),
        );
        let cases: [(&str, &'static [u8], bool, &str); 13] = [
            ("GET", b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 5\r\n\r\nhello", false, "answered"),
            ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, "answered"),
            ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", false, "answered"),
            ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false, "answered"),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", false, "answered"),
            ("GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true, "answered"),
            ("GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, "begun"),
            ("GET", b"HTTP/1.0 200 OK\r\n\r\nall of it", true, "begun"),
            ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false, "begun"),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true, "begun"),
            ("GET", long, false, "begun"),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Le", true, "broke"),
            ("GET", b"", true, "broke"),
        ];
        for (method, wire, close, expected_way) in cases {
            let what = String::from_utf8_lossy(&wire[..wire.len().min(60)]).into_owned();
            let (way, looped, idle) = through_the_loop(method, wire, close).await;
            assert_eq!(way, expected_way, "{method} {what}");
            assert_eq!((looped, idle), through_a_task(method, wire, close).await, "{method} {what}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_request_goes_out_as_a_task_writes_it() {
        let (pool, theirs) = pool_with_one();
        let served = tokio::spawn(backend(theirs, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false));
        let Ok(mut quick) = Quick::start(&pool, request("GET", "/x?y=1"), TIMEOUT) else { panic!("not taken") };
        assert_eq!(pool.idle(), 0, "taken from the pool");
        let polled = std::future::poll_fn(|cx| quick.poll(cx)).await;
        assert!(matches!(quick.step(polled, &pool), Step::Answered { status: 200, .. }));
        let (request, _theirs) =
            served.await.expect("the backend task does not panic unless an assertion in it failed");
        assert!(request.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("host: app.corp:8080\r\n"), "{request}");
        assert_eq!(pool.idle(), 1, "kept alive for the next request");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_idle_connection_or_a_bad_target_leaves_the_request_to_a_task() {
        assert!(Quick::start(&Pool::default(), request("GET", "/"), TIMEOUT).is_err());
        let (pool, _theirs) = pool_with_one();
        let mut bad = request("GET", "/");
        bad.path = "ftp://app.corp/".into();
        let back = Quick::start(&pool, bad, TIMEOUT).err().map(|h| h.path);
        assert_eq!(back.as_deref(), Some("ftp://app.corp/"));
        assert_eq!(pool.idle(), 1, "the connection stays in the pool");
    }

    /// A kept-alive connection that looks open but takes nothing.
    struct Stale;

    impl AsyncRead for Stale {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Stale {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Nothing written, nothing lost: the request comes back whole, to be
    /// served from the start (at most once holds: no byte went out).
    #[tokio::test(flavor = "current_thread")]
    async fn a_stale_connection_gives_the_request_back_unwritten() {
        let pool = Pool::default();
        pool.put(HOST, 8080, Conn::new(Box::new(Stale)));
        let Ok(mut quick) = Quick::start(&pool, request("GET", "/s"), TIMEOUT) else { panic!("not taken") };
        let polled = std::future::poll_fn(|cx| quick.poll(cx)).await;
        let Step::Unwritten(head) = quick.step(polled, &pool) else { panic!("not given back") };
        assert!(head.path.ends_with("/s"));
        assert_eq!(pool.idle(), 0, "the stale connection is dropped");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_table_times_out_by_deadline_and_keeps_a_bound() {
        let mut table = Table::default();
        let mut conns = Vec::new();
        // Ids and deadlines in different orders.
        for (id, secs) in [(1, 90), (2, 85), (3, 88)] {
            let (pool, theirs) = pool_with_one();
            conns.push(theirs);
            let Ok(quick) = Quick::start(&pool, request("GET", &format!("/{id}")), Duration::from_secs(secs)) else {
                panic!("not taken")
            };
            table.insert(id, quick);
        }
        assert!(table.take_fresh() && !table.take_fresh());
        assert_eq!(table.deadline(), Some(Duration::from_secs(85)));
        assert!(table.pop_expired(Duration::from_secs(84)).is_none());
        let expired: Vec<u64> =
            std::iter::from_fn(|| table.pop_expired(Duration::from_secs(89)).map(|(id, _)| id)).collect();
        assert_eq!(expired, [2, 3]);
        table.cancel(1);
        assert_eq!(table.deadline(), None, "a cancelled request's deadline goes with it");
        assert!(table.has_room());
    }

    /// A backend that sends nothing: a request times out in the loop with
    /// the frames a task sends when its timeout ends it.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_timeout_is_answered_as_a_task_answers_it() {
        let (pool, _theirs) = pool_with_one();
        let Ok(quick) = Quick::start(&pool, request("GET", "/held"), TIMEOUT) else { panic!("not taken") };
        let (headers, body) = super::super::gateway_answer(&quick.timed_out(TIMEOUT));
        let looped = format!("{:?}", as_link_answers(504, headers, body));
        let (pool, _theirs) = pool_with_one();
        let (reply, rx) = new_reply();
        let body = RequestBody::whole(Bytes::new());
        super::super::serve(env(), pool, request("GET", "/held"), body, TIMEOUT, reply).await;
        assert_eq!(looped, format!("{:?}", frames(rx)));
        assert!(looped.contains("/held did not answer within 85s"), "{looped}");
    }

    /// A connection that takes the first `took` bytes of a request, then
    /// fails; it reads as open until then, and as closed after.
    struct HalfWay {
        took: usize,
        failed: bool,
    }

    impl AsyncRead for HalfWay {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            if self.failed {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    impl AsyncWrite for HalfWay {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = std::mem::take(&mut self.took).min(buf.len());
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            self.failed = true;
            Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn pool_half_way() -> Rc<Pool> {
        let pool = Rc::new(Pool::default());
        pool.put(HOST, 8080, Conn::new(Box::new(HalfWay { took: 10, failed: false })));
        assert_eq!(pool.idle(), 1);
        pool
    }

    /// Part of the request went out, then sending failed: the loop hands
    /// it to a task, which sends nothing more and reports the failure as a
    /// task that met it itself does.
    #[tokio::test(flavor = "current_thread")]
    async fn a_send_that_fails_half_way_is_reported_as_a_tasks() {
        let pool = pool_half_way();
        let Ok(mut quick) = Quick::start(&pool, request("GET", "/h"), TIMEOUT) else { panic!("not taken") };
        let polled = std::future::poll_fn(|cx| quick.poll(cx)).await;
        let Step::Begun(begun) = quick.step(polled, &pool) else { panic!("not handed on") };
        assert!(begun.send_failed.is_some() && !begun.rest.is_empty());
        let (reply, rx) = new_reply();
        super::super::serve_begun(env(), pool.clone(), begun, TIMEOUT, reply).await;
        let looped = format!("{:?}", frames(rx));
        assert_eq!(pool.idle(), 0);

        let pool = pool_half_way();
        let (reply, rx) = new_reply();
        let body = RequestBody::whole(Bytes::new());
        super::super::serve(env(), pool.clone(), request("GET", "/h"), body, TIMEOUT, reply).await;
        assert_eq!(looped, format!("{:?}", frames(rx)));
        assert!(looped.contains("closed the connection before answering (sending: "), "{looped}");
        assert_eq!(pool.idle(), 0);
    }

    /// Requests that leave the table take their deadlines with them, in
    /// whatever order they leave: the order holds what the table holds.
    #[tokio::test(flavor = "current_thread")]
    async fn deadlines_leave_with_their_requests() {
        let mut table = Table::default();
        let mut ends = Vec::new();
        for id in 0..200u64 {
            let (pool, theirs) = pool_with_one();
            ends.push(theirs);
            let deadline = Duration::from_secs(85 + id / 3);
            let Ok(quick) = Quick::start(&pool, request("GET", "/d"), deadline) else { panic!("not taken") };
            table.insert(id, quick);
            if id % 2 == 1 {
                table.cancel(id - 1);
            }
            assert_eq!(table.deadlines.len(), table.map.len());
        }
        assert_eq!(table.map.len(), 100);
        assert_eq!(table.deadline(), Some(Duration::from_secs(85)));
        let mut last = Duration::ZERO;
        while let Some((_, quick)) = table.pop_expired(Duration::MAX) {
            assert!(quick.deadline >= last);
            last = quick.deadline;
        }
        assert!(table.deadlines.is_empty() && table.map.is_empty());
    }
}
