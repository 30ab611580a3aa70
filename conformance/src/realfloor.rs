//! The real data path's floor: a TLS tunnel that does nothing else, on
//! loopback (a floor for this shape of tunnel, measured, not a proven
//! lower bound).
//!
//! `bench-real` rates the tunnel against rathole, a byte forwarder whose
//! default transport is plain TCP. The spec's connector must carry its
//! traffic to the service over TLS, so a ratio under 1.0 raises a question
//! the tunnel's own figures cannot answer: could any TLS tunnel of this
//! shape reach rathole on this machine? This is one built to do nothing
//! else, measured with the same load in the same run.
//!
//! Two processes (`connsim floor-end relay` and `connsim floor-end
//! connector`), each one thread running one task, like relay-sim's ingress
//! and the connector. The relay end accepts users and one TLS 1.3 tunnel
//! from the connector end; every read from a user becomes one frame
//! (stream id, length, bytes) in the tunnel, and every turn of the loop
//! seals what it framed as one TLS record (several past 16 KiB). The
//! connector end opens a backend connection at a stream's first frame and
//! frames the backend's answers back. A zero-length frame closes a stream.
//! The TLS is the connector's own provider (ring, the same suites and key
//! exchange).
//!
//! What it leaves out, which is why it is a floor: HTTP (bytes pass as
//! read), half-closes (a stream's end either way closes it whole, after
//! what is already on its way), registration and client certificates,
//! keepalives, flow control (what a socket cannot take yet is kept without
//! limit, so it is a floor for request and answer loads, not for large
//! bodies), and a second thread. One thread at each end is also the
//! tunnel's shape today; a design with threads at both ends is not bounded
//! by this floor at many connections, only at one, where every hop runs
//! once a request whatever the threads.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::floor::tls::{connector_config, relay_config};
use connector::env::{OsEntropy, SystemClock};
use connector::tls::TlsContext;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The name the floor's certificate carries and the connector end checks.
pub const NAME: &str = "floor.relay.local";

/// Bytes read from a socket at a time.
const READ: usize = 64 * 1024;

/// A frame's header: stream id and payload length, both big-endian u32.
const HEADER: usize = 8;

/// Where the floor went wrong: which step, and the error.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("{what}: {source}")]
    Io { what: &'static str, source: io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Setup(String),
    #[error("the tunnel sent a frame of {0} bytes (at most {READ})")]
    Frame(u32),
    #[error("the tunnel closed")]
    TunnelClosed,
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> FloorError {
    move |source| FloorError::Io { what, source }
}

/// A self-signed certificate for [`NAME`] and its key, DER: what the relay
/// end serves and the connector end trusts.
pub fn identity() -> Result<(Vec<u8>, Vec<u8>), FloorError> {
    let key = rcgen::KeyPair::generate().map_err(|e| FloorError::Setup(format!("floor key: {e}")))?;
    let cert = rcgen::CertificateParams::new(vec![NAME.to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| FloorError::Setup(format!("floor certificate: {e}")))?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// The connector's real-mode TLS provider (OS randomness, the wall clock).
fn context() -> TlsContext {
    TlsContext::new(Arc::new(OsEntropy), Arc::new(SystemClock))
}

fn read_file(path: &Path) -> Result<Vec<u8>, FloorError> {
    std::fs::read(path).map_err(|e| FloorError::Setup(format!("{}: {e}", path.display())))
}

/// The relay end: users on `ingress`, the connector end's tunnel on
/// `tunnel` (TLS 1.3 with the certificate and key in `cert` and `key`).
/// Returns when the tunnel fails or closes.
pub async fn relay(ingress: SocketAddr, tunnel: SocketAddr, cert: &Path, key: &Path) -> Result<(), FloorError> {
    // The tunnel's port first: once the ingress answers, the connector
    // end may dial.
    let relays = std::net::TcpListener::bind(tunnel).map_err(io_err("binding the tunnel port"))?;
    let users = std::net::TcpListener::bind(ingress).map_err(io_err("binding the ingress"))?;
    relay_on(users, relays, cert, key).await
}

/// [`relay`] on listeners already bound.
pub async fn relay_on(
    users: std::net::TcpListener,
    relays: std::net::TcpListener,
    cert: &Path,
    key: &Path,
) -> Result<(), FloorError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(read_file(key)?));
    let config = relay_config(&context(), CertificateDer::from(read_file(cert)?), key)?;
    let listen = |l: std::net::TcpListener| l.set_nonblocking(true).and_then(|()| TcpListener::from_std(l));
    let users = listen(users).map_err(io_err("the ingress"))?;
    let relays = listen(relays).map_err(io_err("the tunnel port"))?;
    let (tcp, _) = relays.accept().await.map_err(io_err("accepting the tunnel"))?;
    tcp.set_nodelay(true).map_err(io_err("tunnel nodelay"))?;
    let stream = tokio_rustls::TlsAcceptor::from(Arc::new(config))
        .accept(tcp)
        .await
        .map_err(io_err("the tunnel's TLS handshake"))?;
    let (tcp, conn) = stream.into_inner();
    Mux::new(tcp, conn.into(), Ends::Users(users)).run().await
}

/// The connector end: dials the relay end's `tunnel` (trusting `cert`) and
/// opens a connection to `backend` for each stream.
pub async fn connector(tunnel: SocketAddr, backend: SocketAddr, cert: &Path) -> Result<(), FloorError> {
    let config = connector_config(&context(), CertificateDer::from(read_file(cert)?)).map_err(FloorError::Setup)?;
    let tcp = TcpStream::connect(tunnel).await.map_err(io_err("dialling the tunnel"))?;
    tcp.set_nodelay(true).map_err(io_err("tunnel nodelay"))?;
    let name = ServerName::try_from(NAME).map_err(|e| FloorError::Setup(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(io_err("the tunnel's TLS handshake"))?;
    let (tcp, conn) = stream.into_inner();
    Mux::new(tcp, conn.into(), Ends::Backend { addr: backend, highest: 0 }).run().await
}

/// Where a tunnel's streams come from.
enum Ends {
    /// The relay end: users connect here. A user gets its id when it
    /// first sends, so ids reach the tunnel in order (given at accept, a
    /// user who connected first and spoke second would arrive below a
    /// later one's id, and be taken for closed).
    Users(TcpListener),
    /// The connector end: a stream's first frame dials `addr`. Ids come
    /// in order, so an unknown id at or below `highest` is one already
    /// closed, not a new stream.
    Backend { addr: SocketAddr, highest: u32 },
}

/// One user's (or backend's) connection, and what it could not take yet.
struct Stream {
    tcp: TcpStream,
    pending: Vec<u8>,
    /// The other end has closed it: what is pending is written, then the
    /// stream is dropped.
    closing: bool,
}

impl Stream {
    fn new(tcp: TcpStream, pending: Vec<u8>) -> Self {
        Stream { tcp, pending, closing: false }
    }
}

/// One end of the floor's tunnel: the TLS connection, its streams, and the
/// plaintext going each way.
///
/// Every source is polled in one place ([`Mux::poll_turn`]), reads
/// through tokio's `poll_read`, which takes a short read as the socket
/// drained (as rathole's copies do) instead of reading again to see
/// `EAGAIN`.
struct Mux {
    tcp: TcpStream,
    tls: rustls::Connection,
    ends: Ends,
    streams: BTreeMap<u32, Stream>,
    /// Users accepted who have sent nothing yet (so have no id).
    silent: Vec<TcpStream>,
    next_id: u32,
    /// Backend connections to dial, with what their streams sent first.
    dials: BTreeMap<u32, Vec<u8>>,
    /// Frames made this turn, sealed at its end as one record (several
    /// past 16 KiB).
    out: Vec<u8>,
    /// Plaintext from the tunnel not yet a whole frame.
    inbound: Vec<u8>,
    buf: Vec<u8>,
    ids: Vec<u32>,
}

impl Mux {
    fn new(tcp: TcpStream, mut tls: rustls::Connection, ends: Ends) -> Self {
        // A floor keeps what it cannot send yet (see the module's doc).
        tls.set_buffer_limit(None);
        Mux {
            tcp,
            tls,
            ends,
            streams: BTreeMap::new(),
            silent: Vec::new(),
            next_id: 1,
            dials: BTreeMap::new(),
            out: Vec::new(),
            inbound: Vec::new(),
            buf: vec![0; READ],
            ids: Vec::new(),
        }
    }

    async fn run(mut self) -> Result<(), FloorError> {
        // Records that came with the handshake's last flight.
        self.take_plaintext()?;
        self.dispatch()?;
        loop {
            // Whatever the last turn framed, as one record; the turn
            // below writes it (and what the handshake left to send).
            self.seal()?;
            std::future::poll_fn(|cx| self.poll_turn(cx)).await?;
            while let Some((id, first)) = self.dials.pop_first() {
                self.dial(id, first).await;
            }
        }
    }

    /// One pass over every source: accepts, the tunnel's records, one
    /// read from each stream, what a stream could not take before, and
    /// last every sealed record the tunnel's socket takes. Ready when
    /// anything came or was framed; pending (every source's interest
    /// registered) when nothing did.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FloorError>> {
        let mut moved = false;
        if let Ends::Users(listener) = &self.ends {
            // A user who cannot be accepted or set up is left out; the
            // others go on.
            while let Poll::Ready(accepted) = listener.poll_accept(cx) {
                if let Ok((tcp, _)) = accepted {
                    if tcp.set_nodelay(true).is_ok() {
                        self.silent.push(tcp);
                    }
                }
                moved = true;
            }
        }
        moved |= self.poll_silent(cx);
        moved |= self.poll_tunnel(cx)?;
        self.ids.clear();
        self.ids.extend(self.streams.keys());
        for i in 0..self.ids.len() {
            moved |= self.poll_stream(self.ids[i], cx);
        }
        // Last, so that records this pass made (rustls' own answers to
        // what it read) leave too. A write gives `run` nothing to do.
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut Polled(&mut self.tcp, cx)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Poll::Ready(Err(FloorError::Io { what: "writing the tunnel", source: e })),
            }
        }
        if moved || !self.dials.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    /// A first read from each user who has not spoken: one who does gets
    /// the next id and its bytes are framed; one who leaves is dropped
    /// unannounced. Whether anything moved.
    fn poll_silent(&mut self, cx: &mut Context<'_>) -> bool {
        let mut moved = false;
        let mut i = 0;
        while i < self.silent.len() {
            let mut buf = tokio::io::ReadBuf::new(&mut self.buf);
            match std::pin::Pin::new(&mut self.silent[i]).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    i += 1;
                    continue;
                }
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    let n = buf.filled().len();
                    let tcp = self.silent.swap_remove(i);
                    // Past u32::MAX users the relay end takes no more
                    // (the connector end would take id 0 for closed).
                    let Some(next) = self.next_id.checked_add(1) else { continue };
                    let id = std::mem::replace(&mut self.next_id, next);
                    self.frame(id, n);
                    self.streams.insert(id, Stream::new(tcp, Vec::new()));
                }
                Poll::Ready(_) => drop(self.silent.swap_remove(i)),
            }
            moved = true;
        }
        moved
    }

    /// The first `n` bytes of the read buffer as a frame of stream `id`.
    fn frame(&mut self, id: u32, n: usize) {
        self.out.extend_from_slice(&id.to_be_bytes());
        self.out.extend_from_slice(&(n as u32).to_be_bytes());
        self.out.extend_from_slice(&self.buf[..n]);
    }

    /// Everything the tunnel's socket holds, decrypted and dispatched;
    /// whether anything came.
    fn poll_tunnel(&mut self, cx: &mut Context<'_>) -> Result<bool, FloorError> {
        let mut came = false;
        loop {
            match self.tls.read_tls(&mut Polled(&mut self.tcp, cx)) {
                Ok(0) => return Err(FloorError::TunnelClosed),
                Ok(_) => came = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(FloorError::Io { what: "reading the tunnel", source: e }),
            }
            self.take_plaintext()?;
        }
        self.dispatch()?;
        Ok(came)
    }

    /// The records rustls holds, decrypted onto `inbound`.
    fn take_plaintext(&mut self) -> Result<(), FloorError> {
        let state = self.tls.process_new_packets()?;
        let n = state.plaintext_bytes_to_read();
        if n > 0 {
            let start = self.inbound.len();
            self.inbound.resize(start + n, 0);
            self.tls.reader().read_exact(&mut self.inbound[start..]).map_err(io_err("the tunnel's plaintext"))?;
        }
        if state.peer_has_closed() {
            return Err(FloorError::TunnelClosed);
        }
        Ok(())
    }

    /// Every whole frame on `inbound`, delivered.
    fn dispatch(&mut self) -> Result<(), FloorError> {
        let inbound = std::mem::take(&mut self.inbound);
        let mut at = 0;
        while let Some(header) = inbound.get(at..at + HEADER) {
            let id = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            if len as usize > READ {
                return Err(FloorError::Frame(len));
            }
            let Some(payload) = inbound.get(at + HEADER..at + HEADER + len as usize) else { break };
            self.deliver(id, payload);
            at += HEADER + len as usize;
        }
        self.inbound = inbound;
        self.inbound.drain(..at);
        Ok(())
    }

    /// One frame from the tunnel: bytes for stream `id`, or its close.
    fn deliver(&mut self, id: u32, payload: &[u8]) {
        if payload.is_empty() {
            self.dials.remove(&id);
            // What it could not take yet still goes out (an answer sent
            // just before its backend closed), then the stream goes.
            match self.streams.get_mut(&id) {
                Some(s) if !s.pending.is_empty() => s.closing = true,
                _ => drop(self.streams.remove(&id)),
            }
            return;
        }
        if let Some(first) = self.dials.get_mut(&id) {
            first.extend_from_slice(payload);
            return;
        }
        let Some(s) = self.streams.get_mut(&id).filter(|s| !s.closing) else {
            if let Ends::Backend { highest, .. } = &mut self.ends {
                // A new stream, unless one already closed.
                if id > *highest {
                    *highest = id;
                    self.dials.insert(id, payload.to_vec());
                }
            }
            return;
        };
        if s.pending.is_empty() {
            match s.tcp.try_write(payload) {
                Ok(n) => s.pending.extend_from_slice(&payload[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.pending.extend_from_slice(payload),
                Err(_) => self.close(id),
            }
        } else {
            s.pending.extend_from_slice(payload);
        }
    }

    /// A backend connection for stream `id`, given what it sent first; a
    /// backend that cannot be reached closes the stream, not the floor.
    async fn dial(&mut self, id: u32, first: Vec<u8>) {
        let Ends::Backend { addr, .. } = &self.ends else { return };
        match TcpStream::connect(*addr).await {
            Ok(tcp) if tcp.set_nodelay(true).is_ok() => {
                self.streams.insert(id, Stream::new(tcp, first));
            }
            _ => self.announce_close(id),
        }
    }

    /// One read from stream `id`, framed for the tunnel (its end closes
    /// it), and what it could not take before; whether anything moved.
    fn poll_stream(&mut self, id: u32, cx: &mut Context<'_>) -> bool {
        let Some(s) = self.streams.get_mut(&id) else { return false };
        let mut moved = false;
        if !s.pending.is_empty() {
            match std::pin::Pin::new(&mut s.tcp).poll_write(cx, &s.pending) {
                Poll::Ready(Ok(n)) => {
                    s.pending.drain(..n);
                    moved = true;
                }
                Poll::Ready(Err(_)) => {
                    self.close(id);
                    return true;
                }
                Poll::Pending => {}
            }
        }
        if s.closing {
            if s.pending.is_empty() {
                self.streams.remove(&id);
            }
            return moved;
        }
        let mut buf = tokio::io::ReadBuf::new(&mut self.buf);
        match std::pin::Pin::new(&mut s.tcp).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => self.close(id),
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                self.frame(id, n);
            }
            Poll::Ready(Err(_)) => self.close(id),
            Poll::Pending => return moved,
        }
        true
    }

    /// Stream `id` is gone at this end: the other end is told (unless it
    /// closed it first).
    fn close(&mut self, id: u32) {
        if let Some(s) = self.streams.remove(&id) {
            if !s.closing {
                self.announce_close(id);
            }
        }
    }

    /// A zero-length frame: stream `id` is closed.
    fn announce_close(&mut self, id: u32) {
        self.out.extend_from_slice(&id.to_be_bytes());
        self.out.extend_from_slice(&0u32.to_be_bytes());
    }

    /// The last turn's frames, sealed as one record (several past 16 KiB).
    fn seal(&mut self) -> Result<(), FloorError> {
        if !self.out.is_empty() {
            self.tls.writer().write_all(&self.out).map_err(io_err("sealing the tunnel's frames"))?;
            self.out.clear();
        }
        Ok(())
    }
}

/// A tokio socket as `Read` and `Write` for rustls inside a poll:
/// `Pending` is `WouldBlock`, with the task's interest registered.
struct Polled<'a, 'b>(&'a mut TcpStream, &'a mut Context<'b>);

impl Read for Polled<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = tokio::io::ReadBuf::new(buf);
        match std::pin::Pin::new(&mut *self.0).poll_read(self.1, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Polled<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::pin::Pin::new(&mut *self.0).poll_write(self.1, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match std::pin::Pin::new(&mut *self.0).poll_write_vectored(self.1, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// A TCP echo server on its own thread; its address.
    fn echo() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let l = listen(l);
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    tokio::spawn(async move {
                        let mut buf = vec![0; 4096];
                        while let Ok(n @ 1..) = s.read(&mut buf).await {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            })
        });
        addr
    }

    fn listen(l: std::net::TcpListener) -> TcpListener {
        l.set_nonblocking(true).unwrap();
        TcpListener::from_std(l).unwrap()
    }

    /// Both ends on their threads, forwarding to `backend`; the ingress.
    fn floor(backend: SocketAddr, dir: &Path) -> SocketAddr {
        let (cert, key) = identity().unwrap();
        let (cert_path, key_path) = (dir.join("cert.der"), dir.join("key.der"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let users = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let relays = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (ingress, tunnel) = (users.local_addr().unwrap(), relays.local_addr().unwrap());
        let (c, k) = (cert_path.clone(), key_path);
        std::thread::spawn(move || runtime().block_on(relay_on(users, relays, &c, &k)));
        std::thread::spawn(move || runtime().block_on(connector(tunnel, backend, &cert_path)));
        ingress
    }

    /// `users` connections at once, each sending `rounds` messages of
    /// its own bytes and reading each echo back whole before the next.
    async fn wave(ingress: SocketAddr, users: u8, rounds: usize, size: usize) {
        let mut tasks = Vec::new();
        for u in 0..users {
            tasks.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(ingress).await.unwrap();
                let msg: Vec<u8> = (0..size).map(|i| u.wrapping_add(i as u8)).collect();
                let mut back = vec![0; size];
                for _ in 0..rounds {
                    s.write_all(&msg).await.unwrap();
                    s.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, msg, "user {u} got another's bytes");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// A backend that answers a connection's first byte with `size` bytes
    /// and closes.
    fn answer_and_close(size: usize) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let (mut s, _) = listen(l).accept().await.unwrap();
                let mut first = [0; 1];
                s.read_exact(&mut first).await.unwrap();
                s.write_all(&vec![7; size]).await.unwrap();
            })
        });
        addr
    }

    #[test]
    fn an_answer_sent_just_before_its_backend_closes_arrives_whole() {
        let dir = tempfile::tempdir().unwrap();
        let size = 4 << 20;
        let ingress = floor(answer_and_close(size), dir.path());
        runtime().block_on(async {
            let mut user = tokio::net::TcpStream::connect(ingress).await.unwrap();
            user.write_all(b"?").await.unwrap();
            // The user reads late: most of the answer waits in the relay
            // end when the backend's close arrives.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(30), user.read_to_end(&mut got)).await.unwrap().unwrap();
            assert_eq!(got.len(), size, "bytes lost at the close");
        });
    }

    #[test]
    fn a_user_who_connected_first_and_speaks_last_is_still_served() {
        let dir = tempfile::tempdir().unwrap();
        let ingress = floor(echo(), dir.path());
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(30), async {
                let mut users = Vec::new();
                for _ in 0..8 {
                    users.push(tokio::net::TcpStream::connect(ingress).await.unwrap());
                    // Accepted in this order.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                for (i, user) in users.iter_mut().enumerate().rev() {
                    let msg = [i as u8; 16];
                    user.write_all(&msg).await.unwrap();
                    let mut back = [0; 16];
                    user.read_exact(&mut back).await.unwrap();
                    assert_eq!(back, msg);
                }
            })
            .await
            .expect("a user's bytes were dropped");
        });
    }

    #[test]
    fn every_byte_comes_back_to_its_own_user_across_waves_of_connections() {
        let dir = tempfile::tempdir().unwrap();
        let ingress = floor(echo(), dir.path());
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(60), async {
                // Small messages at many connections, as the bench's loads;
                // then a second wave on new streams (the connector end
                // must dial again for ids past the first wave's); then
                // messages larger than one read and one TLS record.
                wave(ingress, 32, 300, 100).await;
                wave(ingress, 32, 300, 100).await;
                wave(ingress, 4, 5, 200_000).await;
            })
            .await
            .expect("the floor stalled: a message was lost or never forwarded");
        });
    }
}
