//! The floor's users: a scenario's requests carried over the floor's
//! tunnel, with nothing of HTTP, the tunnel protocol or the agent.
//!
//! A user host connects to the relay over TCP, sends one 16-byte message
//! and waits for the answer; the relay hands it down the connector's
//! tunnel, whose host sends it to a backend over a kept-alive TCP
//! connection and returns the echo the same way. The hops and hosts are a
//! scenario's (user → relay → tunnel → connector → backend and back); the
//! messages are the smallest that make the trip.
//!
//! On the tunnel every message is 16 bytes, the first saying what it is:
//! the connector opens with [`HELLO`], pings with [`PING`] (the relay
//! answers with it), and the relay sends [`REQUEST`]s that the connector
//! answers with [`ANSWER`]s carrying the same 4-byte id. A connection that
//! does not open with [`HELLO`] is echoed, as the keepalive-only floor's
//! relays do (bootstraps).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{echo, tls::Tls, Counts, KEEPALIVE, PING};

/// What a message on the floor's tunnel is (its first byte).
const HELLO: u8 = b'H';
const REQUEST: u8 = b'R';
const ANSWER: u8 = b'A';
/// The port users reach the relay on, and the backend's.
const USERS_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// The backend host's name.
pub(super) const BACKEND: &str = "backend";

type Message = [u8; 16];

/// When the users send, as a scenario's `[[load]]` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub start: Duration,
    pub interval: Duration,
    pub count: u32,
}

impl Requests {
    /// When the `i`th request is sent, from the start (saturating: a
    /// scenario's durations are bounded, but a sum of them need not be).
    pub fn at(&self, i: u32) -> Duration {
        self.start.saturating_add(self.interval.saturating_mul(i))
    }
}

/// A request on its way to the tunnel, and where its answer goes.
type Pending = (Message, oneshot::Sender<Message>);

/// A relay host that takes users on port 80 and hands their requests to
/// the connector's tunnel (the last connection that opened with
/// [`HELLO`]) on port 443.
pub(super) fn relay_host(sim: &mut turmoil::Sim<'_>, name: &str, tls: Option<Tls>) {
    sim.host(name, move || {
        let tls = tls.clone();
        async move {
            let tunnel: Rc<RefCell<Option<mpsc::UnboundedSender<Pending>>>> = Rc::default();
            let users = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, USERS_PORT)).await?;
            let to_tunnel = tunnel.clone();
            tokio::task::spawn_local(async move {
                while let Ok((stream, _)) = users.accept().await {
                    tokio::task::spawn_local(user_at_relay(stream, to_tunnel.clone()));
                }
            });
            let listener = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 443)).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                let (tls, tunnel) = (tls.clone(), tunnel.clone());
                tokio::task::spawn_local(async move {
                    match tls {
                        None => relay_connection(stream, tunnel).await,
                        Some(tls) => {
                            if let Ok(stream) = tokio_rustls::TlsAcceptor::from(tls.server).accept(stream).await {
                                relay_connection(stream, tunnel).await;
                            }
                        }
                    }
                });
            }
        }
    });
}

/// One user's request at the relay: read, sent down the tunnel open then,
/// answered. (Without a tunnel it is dropped, and the floor reports it
/// unanswered.)
async fn user_at_relay(
    mut stream: turmoil::net::TcpStream,
    tunnel: Rc<RefCell<Option<mpsc::UnboundedSender<Pending>>>>,
) {
    let mut request: Message = [0; 16];
    if stream.read_exact(&mut request).await.is_err() {
        return;
    }
    let (back, answer) = oneshot::channel();
    let Some(tunnel) = tunnel.borrow().clone() else { return };
    if tunnel.send((request, back)).is_err() {
        return;
    }
    if let Ok(answer) = answer.await {
        let _ = stream.write_all(&answer).await;
    }
}

/// A connection to the relay's port 443: the connector's tunnel when it
/// opens with [`HELLO`], else echoed.
async fn relay_connection(
    mut stream: impl AsyncRead + AsyncWrite + Unpin + 'static,
    tunnel: Rc<RefCell<Option<mpsc::UnboundedSender<Pending>>>>,
) {
    let mut first: Message = [0; 16];
    if stream.read_exact(&mut first).await.is_err() {
        return;
    }
    if first[0] != HELLO {
        if stream.write_all(&first).await.is_ok() && stream.flush().await.is_ok() {
            echo(stream).await;
        }
        return;
    }
    let (pending, mut requests) = mpsc::unbounded_channel();
    *tunnel.borrow_mut() = Some(pending);
    let (read, mut write) = tokio::io::split(stream);
    let mut incoming = messages(read);
    let mut waiting: BTreeMap<[u8; 4], oneshot::Sender<Message>> = BTreeMap::new();
    let mut next_id = 0u32;
    loop {
        // In a fixed order: tokio's own pick among ready branches is not
        // drawn from the scenario's seed.
        let out = tokio::select! {
            biased;
            Some(m) = incoming.recv() => match m[0] {
                ANSWER => {
                    if let Some(back) = waiting.remove(&id(&m)) {
                        let _ = back.send(m);
                    }
                    continue;
                }
                _ => m,
            },
            Some((mut m, back)) = requests.recv() => {
                next_id = next_id.wrapping_add(1);
                m[0] = REQUEST;
                m[1..5].copy_from_slice(&next_id.to_be_bytes());
                waiting.insert(id(&m), back);
                m
            }
            else => return,
        };
        if write.write_all(&out).await.is_err() || write.flush().await.is_err() {
            return;
        }
    }
}

/// The connector's tunnel to `relay` that serves requests: pings 10 s after
/// its last send, and answers each request with the backend's echo.
pub(super) async fn tunnel(
    mut stream: impl AsyncRead + AsyncWrite + Unpin + 'static,
    counted: Counts,
) -> turmoil::Result {
    let mut hello = PING;
    hello[0] = HELLO;
    stream.write_all(&hello).await?;
    stream.flush().await?;
    let (read, mut write) = tokio::io::split(stream);
    let mut incoming = messages(read);
    let (to_backend, mut answers) = backend_caller();
    let mut due = connector::time::Instant::now() + KEEPALIVE;
    loop {
        let out = tokio::select! {
            biased;
            Some(m) = incoming.recv() => {
                match m[0] {
                    REQUEST => { let _ = to_backend.send(m); }
                    _ => { counted.exchanges.fetch_add(1, Ordering::Relaxed); }
                }
                continue;
            }
            Some(mut m) = answers.recv() => {
                m[0] = ANSWER;
                m
            }
            () = connector::time::sleep_until(due) => PING,
            else => return Ok(()),
        };
        write.write_all(&out).await?;
        write.flush().await?;
        due = connector::time::Instant::now() + KEEPALIVE;
    }
}

/// A task that sends each request to the backend over one kept-alive
/// connection and hands back the echo.
fn backend_caller() -> (mpsc::UnboundedSender<Message>, mpsc::UnboundedReceiver<Message>) {
    let (to_backend, mut requests) = mpsc::unbounded_channel::<Message>();
    let (answer, answers) = mpsc::unbounded_channel();
    tokio::task::spawn_local(async move {
        let mut conn: Option<turmoil::net::TcpStream> = None;
        while let Some(m) = requests.recv().await {
            if conn.is_none() {
                conn = turmoil::net::TcpStream::connect((BACKEND, BACKEND_PORT)).await.ok();
            }
            let Some(stream) = conn.as_mut() else { continue };
            let mut back: Message = [0; 16];
            if stream.write_all(&m).await.is_err() || stream.read_exact(&mut back).await.is_err() {
                conn = None;
                continue;
            }
            let _ = answer.send(back);
        }
    });
    (to_backend, answers)
}

/// Messages read from `read` by a task of their own (a read cut short by
/// `select!` would lose bytes).
fn messages(mut read: impl AsyncRead + Unpin + 'static) -> mpsc::UnboundedReceiver<Message> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::task::spawn_local(async move {
        let mut m: Message = [0; 16];
        while read.read_exact(&mut m).await.is_ok() && tx.send(m).is_ok() {}
    });
    rx
}

fn id(m: &Message) -> [u8; 4] {
    [m[1], m[2], m[3], m[4]]
}

/// The backend host: echoes on port 8080.
pub(super) fn backend_host(sim: &mut turmoil::Sim<'_>) {
    sim.host(BACKEND, || async {
        let listener = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, BACKEND_PORT)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::task::spawn_local(echo(stream));
        }
    });
}

/// The users' host: `requests.count` requests to `relay`, one connection
/// each, counted when answered.
pub(super) fn users_host(sim: &mut turmoil::Sim<'_>, relay: String, requests: Requests, answered: &Arc<AtomicU64>) {
    let answered = answered.clone();
    sim.host("users", move || {
        let (relay, answered) = (relay.clone(), answered.clone());
        async move {
            let start = connector::time::Instant::now();
            for i in 0..requests.count {
                let Some(when) = start.checked_add(requests.at(i)) else { break };
                connector::time::sleep_until(when).await;
                let (relay, answered) = (relay.clone(), answered.clone());
                tokio::task::spawn_local(async move {
                    let mut stream = turmoil::net::TcpStream::connect((relay.as_str(), USERS_PORT)).await?;
                    let mut m = PING;
                    m[0] = REQUEST;
                    stream.write_all(&m).await?;
                    stream.read_exact(&mut m).await?;
                    answered.fetch_add(1, Ordering::Relaxed);
                    turmoil::Result::Ok(())
                });
            }
            // Stays up, as every host of the floor does.
            std::future::pending::<()>().await;
            turmoil::Result::Ok(())
        }
    });
}
