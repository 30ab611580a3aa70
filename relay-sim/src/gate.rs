//! Real mode's network faults, on the cloud's side of the socket: each
//! service host listens through a [`Gate`] that the control API opens,
//! blocks or shuts, so that real-mode tests tell the stories the
//! simulation's timeline tells (a relay that crashes and comes back, a
//! firewall that starts dropping or refusing port 443).
//!
//! What each state does to a connector on loopback:
//!
//! | state | new connections | established connections |
//! |---|---|---|
//! | open | served | flow |
//! | dropping (`block port N`) | accepted, then nothing passes | frozen: reads and writes wait |
//! | refusing (`reject port N`, relay stopped) | refused (the port stays bound but does not listen: `ECONNREFUSED`) | cut |
//!
//! A dropping firewall on a real path swallows the SYN, so the dial itself
//! times out; on loopback the kernel completes the handshake before any
//! code here runs, so the connector sees its TLS handshake time out
//! instead. The netns world (nftables) gives the true SYN drop.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use connector::net::{BoxStream, LocalBoxFuture};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::Listener;

/// A firewall rule's action, as in the scenarios' timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Block {
    /// Silently drop: connections hang.
    Drop,
    /// Refuse at once.
    Reject,
}

/// What a gate lets through right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    Open,
    Dropping,
    Refusing,
}

/// The switch in front of one service host's listener.
#[derive(Debug)]
pub struct Gate {
    /// The host names it serves (one for a relay; six for revocation).
    pub hosts: Vec<String>,
    /// The service port the connector dials (443 or 80), which a port
    /// block matches, whatever loopback port the listener really has.
    pub port: u16,
    pub addr: SocketAddr,
    stopped: Cell<bool>,
    block: Cell<Option<Block>>,
    /// Raised to cut every connection accepted before.
    epoch: Cell<u64>,
    /// Every served stream's wakers, so that a change reaches a stream
    /// whose task waits on its socket (to be cut) or on the gate (frozen).
    streams: RefCell<Vec<Weak<Wakers>>>,
    changed: tokio::sync::Notify,
    /// Connections accepted while dropping, held unanswered.
    held: RefCell<Vec<tokio::net::TcpStream>>,
}

impl Gate {
    pub fn new(hosts: Vec<String>, port: u16, addr: SocketAddr) -> Rc<Gate> {
        Rc::new(Gate {
            hosts,
            port,
            addr,
            stopped: Cell::new(false),
            block: Cell::new(None),
            epoch: Cell::new(0),
            streams: RefCell::default(),
            changed: tokio::sync::Notify::new(),
            held: RefCell::default(),
        })
    }

    pub fn flow(&self) -> Flow {
        match (self.stopped.get(), self.block.get()) {
            (true, _) | (_, Some(Block::Reject)) => Flow::Refusing,
            (false, Some(Block::Drop)) => Flow::Dropping,
            (false, None) => Flow::Open,
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    pub fn blocked(&self) -> Option<Block> {
        self.block.get()
    }

    /// Stops the host (its connections cut, new ones refused) or starts it.
    pub fn set_stopped(&self, stopped: bool) {
        self.stopped.set(stopped);
        self.apply();
    }

    /// Cuts every connection and keeps serving (a crash and a restart).
    pub fn restart(&self) {
        self.epoch.set(self.epoch.get() + 1);
        self.apply();
    }

    /// Puts a firewall rule in front of the host, or lifts it.
    pub fn set_block(&self, block: Option<Block>) {
        self.block.set(block);
        self.apply();
    }

    fn apply(&self) {
        if self.flow() == Flow::Refusing {
            self.epoch.set(self.epoch.get() + 1);
        }
        if self.flow() != Flow::Dropping {
            self.held.borrow_mut().clear();
        }
        self.streams.borrow_mut().retain(|s| match s.upgrade() {
            Some(s) => {
                s.wake();
                true
            }
            None => false,
        });
        self.changed.notify_waiters();
    }
}

/// The listener's socket: listening, or only bound while the gate
/// refuses (the kernel answers a connect to a bound, non-listening port
/// with a reset, and nothing else can take the port meanwhile: an
/// outgoing connection might otherwise get it as its ephemeral port).
enum Socket {
    Listening(Rc<tokio::net::TcpListener>),
    Bound(tokio::net::TcpSocket),
    /// Between the two, or after an error.
    None,
}

/// A listener behind a gate: refusing connections while the gate refuses,
/// listening on the same address again when it opens.
pub struct GatedListener {
    gate: Rc<Gate>,
    socket: RefCell<Socket>,
}

/// Connections a reopened listener queues before accepting them.
const BACKLOG: u32 = 1024;

impl GatedListener {
    pub fn new(gate: Rc<Gate>, listener: tokio::net::TcpListener) -> GatedListener {
        GatedListener { gate, socket: RefCell::new(Socket::Listening(Rc::new(listener))) }
    }

    /// Stops listening, keeping the port.
    fn refuse(&self) {
        let mut socket = self.socket.borrow_mut();
        if matches!(*socket, Socket::Bound(_)) {
            return;
        }
        // Close the listener first: the new socket binds the same address.
        *socket = Socket::None;
        match bound(self.gate.addr) {
            Ok(s) => *socket = Socket::Bound(s),
            Err(e) => tracing::warn!("keeping {} while refusing: {e}", self.gate.addr),
        }
    }

    /// The listening socket, listening again on the kept port if needed.
    async fn listening(&self) -> Rc<tokio::net::TcpListener> {
        loop {
            let current = std::mem::replace(&mut *self.socket.borrow_mut(), Socket::None);
            let next = match current {
                Socket::Listening(l) => Ok(l),
                Socket::Bound(s) => s.listen(BACKLOG).map(Rc::new),
                Socket::None => bound(self.gate.addr).and_then(|s| s.listen(BACKLOG)).map(Rc::new),
            };
            match next {
                Ok(l) => {
                    *self.socket.borrow_mut() = Socket::Listening(l.clone());
                    return l;
                }
                Err(e) => {
                    tracing::warn!("listening again on {}: {e}", self.gate.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A socket bound to `addr` (address reuse on, as listeners have it).
fn bound(addr: SocketAddr) -> io::Result<tokio::net::TcpSocket> {
    let s = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    Ok(s)
}

impl Listener for GatedListener {
    fn accept(&self) -> LocalBoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            loop {
                let changed = self.gate.changed.notified();
                if self.gate.flow() == Flow::Refusing {
                    self.refuse();
                    changed.await;
                    continue;
                }
                let socket = self.listening().await;
                let (tcp, _) = tokio::select! {
                    r = socket.accept() => r?,
                    () = changed => continue,
                };
                tcp.set_nodelay(true)?;
                match self.gate.flow() {
                    Flow::Open => return Ok(Box::new(GatedStream::new(tcp, self.gate.clone())) as BoxStream),
                    Flow::Dropping => self.gate.held.borrow_mut().push(tcp),
                    Flow::Refusing => drop(tcp),
                }
            }
        })
    }
}

/// The last wakers of a stream's reading and writing side.
#[derive(Debug, Default)]
struct Wakers {
    read: RefCell<Option<Waker>>,
    write: RefCell<Option<Waker>>,
}

impl Wakers {
    fn wake(&self) {
        for slot in [&self.read, &self.write] {
            if let Some(w) = slot.borrow_mut().take() {
                w.wake();
            }
        }
    }
}

fn remember(slot: &RefCell<Option<Waker>>, cx: &Context<'_>) {
    let mut slot = slot.borrow_mut();
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// A served connection that the gate can freeze or cut.
struct GatedStream {
    inner: tokio::net::TcpStream,
    gate: Rc<Gate>,
    epoch: u64,
    wakers: Rc<Wakers>,
}

impl GatedStream {
    fn new(inner: tokio::net::TcpStream, gate: Rc<Gate>) -> GatedStream {
        let epoch = gate.epoch.get();
        let wakers = Rc::new(Wakers::default());
        let mut streams = gate.streams.borrow_mut();
        // Forget closed streams now and then, not on every accept.
        if streams.len() % 256 == 255 {
            streams.retain(|s| s.strong_count() > 0);
        }
        streams.push(Rc::downgrade(&wakers));
        drop(streams);
        GatedStream { inner, gate, epoch, wakers }
    }

    /// Ready to pass bytes, or why not. Either way the task is woken when
    /// the gate changes.
    fn check(&self, slot: &RefCell<Option<Waker>>, cx: &Context<'_>) -> Poll<io::Result<()>> {
        if self.gate.epoch.get() != self.epoch {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut by the control API")));
        }
        remember(slot, cx);
        if self.gate.flow() == Flow::Dropping {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.check(&this.wakers.read, cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_read(cx, buf),
            other => other,
        }
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.check(&this.wakers.write, cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_write(cx, data),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.check(&this.wakers.write, cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.check(&this.wakers.write, cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
