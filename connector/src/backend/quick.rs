//! The usual request served by the tunnel's own loop, without a task: it
//! came whole with no body, a kept-alive connection to its backend is
//! idle, and the answer is short enough to arrive in one buffer
//! ([`QUICK_MAX`]). The loop writes the request, polls the connection
//! among its other sources, and hands the whole answer to its session.
//!
//! Why: a task per request (its cell, its spawn, the channel its answer
//! crossed, the wake-ups of both) was a quarter of the connector's
//! instructions a request under load (callgrind at 32 connections:
//! 24,724 a request with a task each, 18,810 with this path).
//!
//! Anything else leaves this path at the point where it stops fitting,
//! to the task that serves every other request ([`super::serve`]): before
//! a byte is written (no idle connection, a stale one) the request starts
//! over there; after, the written connection goes on in
//! [`super::serve_begun`] with what has been read, so that a long, chunked
//! or broken answer is read, paced, timed and reported by the same code
//! as always. What this path answers itself (a short answer, a backend
//! that closes or fails before the head, one that does not answer in
//! time) it answers with the same frames and diagnostics as that code.

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

/// The most an answer (head and body) may take to be served here: one
/// read into the thread's scratch buffer (see `Reads`). Larger answers go
/// on in a task, which streams them at the tunnel's pace; and no head
/// this short can exceed what a frame carries.
pub const QUICK_MAX: usize = 16 * 1024;

/// A request being served in the tunnel's loop.
pub struct Quick {
    head: RequestHead,
    conn: Conn,
    host: String,
    port: u16,
    /// The request as written to the backend, and how much of it went.
    out: Vec<u8>,
    written: usize,
    framing: h1::Framing,
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

/// A request whose head the loop wrote (`rest` is what is still unsent),
/// with its connection and what has been read of the answer (in its
/// buffer).
pub struct Begun {
    pub head: RequestHead,
    pub conn: Conn,
    pub host: String,
    pub port: u16,
    pub rest: Vec<u8>,
    pub framing: h1::Framing,
}

/// What a poll found, before the exchange leaves the loop's table.
pub enum Polled {
    Answered { head_len: usize, head: h1::ResponseHead, body_len: usize },
    Broke(String),
    Unwritten,
    Begun,
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
        Ok(Quick { head, conn, host, port, out, written: 0, framing, deadline })
    }

    /// When the backend timeout ends it: it counts from the start, as a
    /// task's does until the answer's head, which this path never gets
    /// without the whole answer.
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
        if let Some(out) = std::task::ready!(self.poll_write(cx)) {
            return Poll::Ready(out);
        }
        let to_head = self.head.method == "HEAD";
        loop {
            let mut head_done = false;
            if !self.conn.buf.is_empty() {
                match h1::parse_response(&self.conn.buf, to_head) {
                    // Anything but a final answer (a 1xx, a malformed or
                    // long head) is the task's to read and report.
                    Ok(Some((n, head))) if head.status >= 200 => {
                        let body_len = match head.body {
                            h1::BodyKind::Empty => Some(0),
                            h1::BodyKind::Length(len) => usize::try_from(len).ok(),
                            h1::BodyKind::Chunked | h1::BodyKind::UntilClose => None,
                        };
                        match body_len {
                            Some(len) if self.conn.buf.len() - n >= len => {
                                return Poll::Ready(Polled::Answered { head_len: n, head, body_len: len })
                            }
                            Some(len) if n.saturating_add(len) <= QUICK_MAX => head_done = true,
                            _ => return Poll::Ready(Polled::Begun),
                        }
                    }
                    Ok(None) if self.conn.buf.len() < QUICK_MAX => {}
                    _ => return Poll::Ready(Polled::Begun),
                }
            }
            match super::poll_scratch(Pin::new(&mut self.conn.stream), cx, &mut self.conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(n))) if n > 0 => {}
                // The end of a body cut short is the task's to report
                // (it resets the stream after the head).
                _ if head_done => return Poll::Ready(Polled::Begun),
                Poll::Ready(Some(Ok(_))) => {
                    return Poll::Ready(Polled::Broke("closed the connection before answering".into()))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Polled::Broke(format!("failed: {e}"))),
                // No scratch buffer to read into: the task reads.
                Poll::Ready(None) => return Poll::Ready(Polled::Begun),
            }
        }
    }

    /// Writes the rest of the request: `None` once it is all out and
    /// flushed, else where the exchange goes.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Option<Polled>> {
        let mut stream = Pin::new(&mut self.conn.stream);
        while self.written < self.out.len() {
            match std::task::ready!(stream.as_mut().poll_write(cx, &self.out[self.written..])) {
                Ok(n) if n > 0 => self.written += n,
                // A kept-alive connection that takes none of the request
                // went stale: the request is served anew (as a task tries
                // the next one). Once a byte is out, a failure is final
                // (at most once), and the task reports it.
                _ if self.written == 0 => return Poll::Ready(Some(Polled::Unwritten)),
                _ => return Poll::Ready(Some(Polled::Begun)),
            }
        }
        match std::task::ready!(stream.poll_flush(cx)) {
            Ok(()) => Poll::Ready(None),
            Err(_) => Poll::Ready(Some(Polled::Begun)),
        }
    }

    /// Where the exchange goes after `polled`: an answer taken whole gives
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
            Polled::Begun => {
                let rest = self.out.split_off(self.written);
                let Quick { head, conn, host, port, framing, .. } = self;
                Step::Begun(Begun { head, conn, host, port, rest, framing })
            }
        }
    }
}

/// The requests one tunnel serves in its loop, by relay request id.
#[derive(Default)]
pub struct Table {
    map: BTreeMap<u64, Quick>,
    /// Taken out of `map` by the last poll, in id order, with what ended
    /// them there.
    finished: VecDeque<(u64, Quick, Polled)>,
    /// Ids of the last poll's finished ones (kept to reuse its memory).
    ids: Vec<(u64, Polled)>,
    fresh: bool,
}

impl Table {
    pub fn insert(&mut self, id: u64, quick: Quick) {
        self.map.insert(id, quick);
        self.fresh = true;
    }

    /// Whether a request came in since the last call: it has not been
    /// polled, so the loop polls the table whatever woke it.
    pub fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Request `id` was cancelled: its connection closes (the backend may
    /// still be answering it).
    pub fn cancel(&mut self, id: u64) {
        self.map.remove(&id);
    }

    /// Polls every request in the table; ready when one finished here
    /// ([`Table::pop_finished`]).
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for (id, quick) in self.map.iter_mut() {
            if let Poll::Ready(polled) = quick.poll(cx) {
                self.ids.push((*id, polled));
            }
        }
        for (id, polled) in self.ids.drain(..) {
            if let Some(quick) = self.map.remove(&id) {
                self.finished.push_back((id, quick, polled));
            }
        }
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
        self.map.values().map(Quick::deadline).min()
    }

    /// Takes out the next request whose deadline is past at `now`.
    pub fn pop_expired(&mut self, now: Duration) -> Option<(u64, Quick)> {
        let id = self.map.iter().find(|(_, q)| q.deadline <= now).map(|(id, _)| *id)?;
        self.map.remove(&id).map(|q| (id, q))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::mpsc;

    use super::super::{Outbound, Reply};
    use super::*;
    use crate::pace::Pace;

    const HOST: &str = "app.corp";

    fn get(path: &str) -> RequestHead {
        RequestHead { method: "GET".into(), path: format!("http://{HOST}:8080{path}"), headers: Headers::default() }
    }

    /// A pool holding one kept-alive connection to the backend, and the
    /// backend's end of it.
    fn pool_with_one() -> (Pool, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let pool = Pool::default();
        pool.put(HOST, 8080, Conn::new(Box::new(ours)));
        assert_eq!(pool.idle(), 1);
        (pool, theirs)
    }

    /// Reads one request head, then answers `wire` (and closes if `close`).
    async fn backend(mut theirs: DuplexStream, wire: &'static [u8], close: bool) -> (String, DuplexStream) {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(theirs.read(&mut byte).await.unwrap(), 1);
            got.push(byte[0]);
        }
        theirs.write_all(wire).await.unwrap();
        if close {
            theirs.shutdown().await.unwrap();
        }
        (String::from_utf8(got).unwrap(), theirs)
    }

    async fn run(quick: &mut Quick) -> Polled {
        std::future::poll_fn(|cx| quick.poll(cx)).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_short_answer_comes_whole_and_its_connection_goes_back() {
        let (pool, theirs) = pool_with_one();
        let served =
            tokio::spawn(backend(theirs, b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 5\r\n\r\nhello", false));
        let Ok(mut quick) = Quick::start(&pool, get("/x?y=1"), Duration::from_secs(85)) else { panic!("not taken") };
        assert_eq!(pool.idle(), 0);
        let polled = run(&mut quick).await;
        let Step::Answered { status, headers, body } = quick.step(polled, &pool) else { panic!("not answered") };
        assert_eq!((status, &body[..]), (200, &b"hello"[..]));
        assert_eq!(headers.get("x-a"), Some("b"));
        let (request, _theirs) = served.await.unwrap();
        assert!(request.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("host: app.corp:8080\r\n"), "{request}");
        assert_eq!(pool.idle(), 1, "kept alive for the next request");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_idle_connection_or_a_bad_target_leaves_the_request_to_a_task() {
        let pool = Pool::default();
        assert!(Quick::start(&pool, get("/"), Duration::ZERO).is_err());
        let (pool, _theirs) = pool_with_one();
        let mut bad = get("/");
        bad.path = "ftp://app.corp/".into();
        let back = Quick::start(&pool, bad, Duration::ZERO).err().map(|h| h.path);
        assert_eq!(back.as_deref(), Some("ftp://app.corp/"));
        assert_eq!(pool.idle(), 1, "the connection stays in the pool");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_backend_that_closes_before_answering_broke_as_a_task_reports_it() {
        let (pool, theirs) = pool_with_one();
        let served = tokio::spawn(backend(theirs, b"", true));
        let Ok(mut quick) = Quick::start(&pool, get("/"), Duration::from_secs(85)) else { panic!("not taken") };
        let polled = run(&mut quick).await;
        let Step::Broke(diag) = quick.step(polled, &pool) else { panic!("not broken") };
        assert_eq!(diag.code, crate::code::BACKEND_BROKEN.to_string());
        assert_eq!(diag.message, "backend app.corp:8080 closed the connection before answering");
        drop(served.await.unwrap());
        assert_eq!(pool.idle(), 0);
    }

    /// A chunked answer leaves the loop once its head is read, and the task
    /// that goes on with it forwards it whole, with one end.
    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_it_cannot_take_whole_goes_on_in_a_task() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (pool, theirs) = pool_with_one();
        let served = tokio::spawn(backend(theirs, wire, false));
        let Ok(mut quick) = Quick::start(&pool, get("/"), Duration::from_secs(85)) else { panic!("not taken") };
        let polled = run(&mut quick).await;
        let pool = Rc::new(pool);
        let Step::Begun(begun) = quick.step(polled, &pool) else { panic!("not handed on") };
        assert!(begun.rest.is_empty(), "the request went out whole");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reply = Reply {
            id: 3,
            out: tx,
            pace: Rc::new(Pace::default()),
            head_sent: Cell::new(false),
            ended: Cell::new(false),
        };
        let env = crate::env::Env {
            net: Rc::new(crate::net::TokioNet::new(Vec::new())),
            clock: std::sync::Arc::new(crate::env::SystemClock),
            entropy: std::sync::Arc::new(crate::env::OsEntropy),
            events: Rc::new(crate::env::LogSink),
            evidence: Rc::default(),
        };
        super::super::serve_begun(env, pool.clone(), begun, Duration::from_secs(85), reply).await;
        let (mut body, mut fins, mut status) = (Vec::new(), 0, 0);
        while let Ok(out) = rx.try_recv() {
            match out {
                Outbound::Head { status: s, fin, .. } => (status, fins) = (s, fins + usize::from(fin)),
                Outbound::Body { data, fin, .. } => {
                    body.extend_from_slice(&data);
                    fins += usize::from(fin);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((status, &body[..], fins), (200, &b"abcde"[..], 1));
        drop(served.await.unwrap());
        assert_eq!(pool.idle(), 1, "kept alive by the task");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_table_times_out_the_earliest_first() {
        let mut table = Table::default();
        let (pool, _a) = pool_with_one();
        let (pool2, _b) = pool_with_one();
        let Ok(late) = Quick::start(&pool, get("/late"), Duration::from_secs(90)) else { panic!() };
        let Ok(early) = Quick::start(&pool2, get("/early"), Duration::from_secs(85)) else { panic!() };
        table.insert(1, late);
        table.insert(2, early);
        assert!(table.take_fresh() && !table.take_fresh());
        assert_eq!(table.deadline(), Some(Duration::from_secs(85)));
        assert!(table.pop_expired(Duration::from_secs(84)).is_none());
        let (id, quick) = table.pop_expired(Duration::from_secs(86)).unwrap();
        assert_eq!(id, 2);
        assert!(quick.timed_out(Duration::from_secs(85)).message.contains("/early did not answer within 85s"));
        table.cancel(1);
        assert_eq!(table.deadline(), None);
    }
}
