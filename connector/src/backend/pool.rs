//! Kept-alive backend connections, shared by every tunnel of one agent.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

use crate::net::BoxStream;

/// One HTTP/1.1 connection to a backend and the bytes read from it but not
/// yet parsed.
pub struct Conn {
    pub stream: BoxStream,
    pub buf: BytesMut,
}

impl Conn {
    pub fn new(stream: BoxStream) -> Self {
        Conn { stream, buf: BytesMut::new() }
    }

    /// Whether the backend closed the connection (or sent bytes nobody
    /// asked for) while it sat idle: looked at without waiting.
    fn is_closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        !matches!(std::pin::Pin::new(&mut self.stream).poll_read(&mut cx, &mut read), Poll::Pending)
    }
}

/// Idle keep-alive connections per backend (host, port). A connection goes
/// back only after its response was read to the end and the request sent
/// whole; one the backend closed in the meantime, or one idle for longer
/// than [`IDLE_KEEP`], is dropped when taken.
#[derive(Default)]
pub struct Pool {
    /// By port, then host: found from a `&str` host, with no key to
    /// allocate on every request.
    idle: RefCell<BTreeMap<u16, BTreeMap<String, Vec<Idle>>>>,
}

struct Idle {
    conn: Conn,
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
    pub(super) fn take(&self, host: &str, port: u16) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&port)?.get_mut(host)?;
        let now = tokio::time::Instant::now();
        // Newest last: once one is too old, all before it are too.
        while let Some(Idle { mut conn, since }) = list.pop() {
            if now.duration_since(since) >= IDLE_KEEP {
                list.clear();
                break;
            }
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn put(&self, host: &str, port: u16, mut conn: Conn) {
        if !conn.buf.is_empty() || conn.is_closed() {
            return;
        }
        // An idle connection holds no read buffer.
        conn.buf = BytesMut::new();
        let mut idle = self.idle.borrow_mut();
        let by_host = idle.entry(port).or_default();
        let fresh = Idle { conn, since: tokio::time::Instant::now() };
        match by_host.get_mut(host) {
            Some(list) if list.len() < IDLE_PER_BACKEND_MAX => list.push(fresh),
            Some(_) => {}
            None => {
                by_host.insert(host.to_string(), vec![fresh]);
            }
        }
    }

    /// Idle connections held right now (all backends).
    pub fn idle(&self) -> usize {
        self.idle.borrow().values().flat_map(BTreeMap::values).map(Vec::len).sum()
    }
}
