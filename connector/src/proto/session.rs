//! The tunnel session: a state machine with no I/O and no clock.
//!
//! Modelled on quinn-proto: the driver feeds received bytes with
//! [`Session::handle_input`] and the current time with
//! [`Session::handle_timeout`], then drains [`Session::poll_transmit`] (bytes to
//! write) and [`Session::poll_event`] (what happened). Time is a `Duration`
//! since an origin the driver chooses, so tests can run a session byte by byte.
//!
//! States: `AwaitHello` → `Open` → (`Draining` after a GoAway either way) →
//! `Closed`. Each request id is a stream; the state machine checks that frames
//! about a stream arrive in a legal order and refuses the session otherwise.
//!
//! Flow control per stream, as HTTP/2 does it: each side may have at most
//! [`STREAM_WINDOW`] body bytes of a stream on the wire before the receiver
//! grants more (`WindowUpdate`, sent once half the window was taken). Bodies
//! wait in their stream until window and turn allow, and `poll_transmit`
//! takes them round-robin in [`BODY_QUANTUM`] frames, at most
//! [`BATCH_BYTES`] at a time: a 16 MiB body no longer sits in front of
//! every other stream's answer, and a sender's queue shows how far each
//! stream is behind ([`Session::queued_body_bytes`]) so that its producer
//! can wait.
//!
//! The session as a whole has a window too ([`SESSION_WINDOW`], granted
//! with a `WindowUpdate` for [`SESSION_ID`]), as HTTP/2's connection
//! window: a consumer that reads at its own pace (`auto_grant` off) holds
//! at most that much of all its streams' bodies, however many are open.
//! Bytes of a stream that goes away unread are taken back at once.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use super::frame::{
    CancelReason, Decoder, Frame, FrameError, GoAwayCode, DEFAULT_MAX_FRAME_BYTES, MIN_MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use super::headers::Headers;

/// Which end of the tunnel this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dials out, receives requests, sends responses.
    Connector,
    /// Accepts tunnels, sends requests, receives responses.
    Relay,
}

/// Limits and timers of a session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Name sent in `Hello` (connector id or relay endpoint name).
    pub local_name: String,
    /// Largest frame this side accepts.
    pub max_frame_bytes: u32,
    /// The connector sends a `Ping` after this long without sending
    /// anything. The relay only answers: keepalives come from the side that
    /// dials out, whose NAT and firewall state they keep, and one pinging
    /// side makes one exchange per interval where two would race (each
    /// side's timer firing before the other's ping arrives).
    pub keepalive: Duration,
    /// The session fails when nothing was received for this long.
    pub idle_timeout: Duration,
    /// Most requests open at once on this session.
    pub max_streams: usize,
    /// Sent in `Hello`: the same for every session of one process.
    pub incarnation: u64,
    /// Body chunks count as taken as soon as they are received, and grants
    /// follow from that (true, the default: the relay hands each chunk at
    /// once to a channel toward its user, so what a slower user has not
    /// read waits there). False leaves grants to [`Session::consumed`], for
    /// a consumer that reads at its own pace: the connector's backends.
    pub auto_grant: bool,
    /// (Connector) How long an `Ack` for a request that arrived whole may
    /// wait for the answer's head, so that both leave in one write: one
    /// write, one TLS record and one wake-up of the relay fewer a request,
    /// as TCP's delayed ACK saves a segment. Counted from the first
    /// `poll_transmit` that holds it (a driver still writing an earlier
    /// batch asks later). Zero sends every `Ack` at once. Acks of requests
    /// whose body is still coming are never held (the relay sends the rest
    /// of an upload once it is accepted), and nothing else ever waits
    /// behind a held `Ack`.
    pub ack_hold: Duration,
}

/// Body bytes of one stream that may be on the wire, each way, before the
/// receiver grants more.
pub const STREAM_WINDOW: u32 = 512 << 10;
/// Body bytes of all streams of a session that may be on the wire, each
/// way, before the receiver grants more: what a receiver whose consumers
/// stall holds of their bodies at most (a tunnel with 200 stalled uploads
/// would hold 100 MiB with stream windows alone). Eight streams at full
/// window: as in HTTP/2, that many stalled consumers stop the session's
/// other bodies until one reads again (requests without bodies still go).
/// Twice this took the connector past 64 MiB with 1,000 paused uploads.
pub const SESSION_WINDOW: u32 = 4 << 20;
/// The id a `WindowUpdate` for the session as a whole names; no stream
/// has it (the relay numbers requests up from 1).
pub const SESSION_ID: u64 = u64::MAX;
/// Body bytes per frame: small enough for streams to interleave.
pub const BODY_QUANTUM: usize = 32 << 10;
/// Most bytes one `poll_transmit` hands over once bodies wait: what a
/// control frame or a small answer may have to queue behind.
pub const BATCH_BYTES: usize = 256 << 10;

/// Most requests open at once on a session, on both sides: the relay
/// dispatches no more (a connector's session fails a tunnel that exceeds
/// its limit).
pub const DEFAULT_MAX_STREAMS: usize = 200;

impl SessionConfig {
    pub fn new(local_name: impl Into<String>) -> Self {
        SessionConfig {
            local_name: local_name.into(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            keepalive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_streams: DEFAULT_MAX_STREAMS,
            incarnation: 0,
            auto_grant: true,
            ack_hold: Duration::ZERO,
        }
    }
}

/// The request half of a stream as seen by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Borrowed for the standard methods ([`super::frame::method`]).
    pub method: Cow<'static, str>,
    pub path: String,
    pub headers: Headers,
}

/// What the session reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Hello exchanged; the peer's name and version.
    Established { peer: String, version: u16, incarnation: u64 },
    /// (Connector) a new request arrived.
    Request { id: u64, head: RequestHead, fin: bool },
    /// A body chunk for a stream.
    Body { id: u64, data: Bytes, fin: bool },
    /// (Relay) the response head for a request.
    Response { id: u64, status: u16, headers: Headers, fin: bool },
    /// (Relay) the connector accepted the request.
    Acked { id: u64 },
    /// The peer cancelled or refused a request.
    Cancelled { id: u64, reason: CancelReason },
    /// The peer will take no new requests; `code` says what to do next.
    GoAway { code: GoAwayCode, reason: String },
}

/// Why a session ended with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("peer speaks protocol version {peer}, this side speaks {ours}")]
    VersionMismatch { peer: u16, ours: u16 },
    #[error("peer announced a maximum frame size of {0} bytes, below the minimum")]
    PeerMaxFrameTooSmall(u32),
    #[error("{frame} frame received before Hello")]
    BeforeHello { frame: &'static str },
    #[error("second Hello received")]
    DuplicateHello,
    #[error("{frame} frame is not allowed from the {from:?} side")]
    WrongDirection { frame: &'static str, from: Role },
    #[error("Ack for request {id} after its response started")]
    AckAfterResponse { id: u64 },
    #[error("{frame} frame for unknown or finished request {id}")]
    UnknownStream { frame: &'static str, id: u64 },
    #[error("request id {id} reused while still open")]
    StreamReused { id: u64 },
    #[error("peer opened more than {max} concurrent requests")]
    TooManyStreams { max: usize },
    #[error("new request {id} after GoAway")]
    RequestAfterGoAway { id: u64 },
    #[error("nothing received for {0:?}: peer unresponsive")]
    IdleTimeout(Duration),
    #[error("session is closed")]
    Closed,
    /// The peer sent more of a stream's body than its window allowed, or
    /// granted a window past 4 GiB.
    #[error("flow control of request {id}: {what}")]
    FlowControl { id: u64, what: String },
    /// A request or response head that cannot be framed for this peer (a
    /// header list or string too long for its length field, or a frame
    /// over the peer's maximum). Only that request fails: nothing was
    /// queued and the session stays open.
    #[error("head of request {id} cannot be sent: {error}")]
    HeadTooLarge { id: u64, error: FrameError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitHello,
    Open,
    Closed,
}

#[derive(Debug, Clone)]
struct Stream {
    request_fin: bool,
    response_started: bool,
    response_fin: bool,
    /// Body bytes this side may still send before the peer grants more.
    send_window: u64,
    /// Body waiting for window and turn, oldest first; the flag is `fin`
    /// after that piece.
    pending: VecDeque<(Bytes, bool)>,
    pending_bytes: usize,
    /// Body bytes the peer may still send.
    recv_window: u64,
    /// Received since the last grant.
    recv_ungranted: u64,
    /// Received and not yet taken by the consumer: given back to the
    /// session's window when the stream goes.
    recv_unconsumed: u64,
    /// The consumer is gone ([`Session::discard_body`]): what arrives is
    /// taken at once.
    discarding: bool,
}

impl Stream {
    fn opened(request_fin: bool) -> Stream {
        Stream {
            request_fin,
            response_started: false,
            response_fin: false,
            send_window: STREAM_WINDOW.into(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            recv_window: STREAM_WINDOW.into(),
            recv_ungranted: 0,
            recv_unconsumed: 0,
            discarding: false,
        }
    }

    /// A body piece can go now: window for it in the stream and in the
    /// session (`session_window`), or only a bare `fin`.
    fn can_send(&self, session_window: u64) -> bool {
        self.pending.front().is_some_and(|(data, _)| data.is_empty() || (self.send_window > 0 && session_window > 0))
    }

    /// Takes a received body chunk against the window.
    fn receive(&mut self, id: u64, len: usize) -> Result<(), SessionError> {
        take_window(&mut self.recv_window, len, id, "its stream's")?;
        self.recv_unconsumed += len as u64;
        Ok(())
    }

    /// Counts `n` body bytes as taken by the consumer; the grant to send
    /// back once half a window is (none after the peer's `fin`: it sends
    /// no more).
    fn consume(&mut self, n: usize, peer_done: bool) -> Option<u32> {
        self.recv_unconsumed = self.recv_unconsumed.saturating_sub(n as u64);
        self.recv_ungranted += n as u64;
        if peer_done || self.recv_ungranted < u64::from(STREAM_WINDOW / 2) {
            return None;
        }
        let grant = std::mem::take(&mut self.recv_ungranted).min(u64::from(STREAM_WINDOW));
        self.recv_window += grant;
        // At most one window: fits a u32.
        Some(grant as u32)
    }

    /// Whether the peer has sent its last body byte of this stream.
    fn peer_done(&self, role: Role) -> bool {
        match role {
            Role::Connector => self.request_fin,
            Role::Relay => self.response_fin,
        }
    }
}

/// Takes `n` body bytes of stream `id` from a receive `window` (`whose`,
/// for the error); a peer past it breaks the protocol.
fn take_window(window: &mut u64, n: usize, id: u64, whose: &str) -> Result<(), SessionError> {
    let n = n as u64;
    if n > *window {
        let what = format!("{n} body bytes with {} of {whose} window left", *window);
        return Err(SessionError::FlowControl { id, what });
    }
    *window -= n;
    Ok(())
}

/// The session's own window, each way (see the module docs).
#[derive(Debug)]
struct SessionWindow {
    /// Body bytes this side may still send, all streams together.
    send: u64,
    /// Body bytes the peer may still send, all streams together.
    recv: u64,
    /// Taken by consumers (or dropped) since the last grant.
    ungranted: u64,
}

impl SessionWindow {
    fn new() -> Self {
        SessionWindow { send: SESSION_WINDOW.into(), recv: SESSION_WINDOW.into(), ungranted: 0 }
    }

    /// Takes `n` received body bytes against the window.
    fn receive(&mut self, id: u64, n: usize) -> Result<(), SessionError> {
        take_window(&mut self.recv, n, id, "the session's")
    }

    /// `n` (> 0) received bytes are taken; the grant to send back once half
    /// a window is, or at once while the peer has less than an eighth left:
    /// bytes its consumers keep unread (a stalled backend's) must not hold
    /// back what others took.
    fn consume(&mut self, n: u64) -> Option<u32> {
        self.ungranted += n;
        let low = self.recv < u64::from(SESSION_WINDOW / 8);
        if self.ungranted < u64::from(SESSION_WINDOW / 2) && !low {
            return None;
        }
        // Never more than was received: at most one window, fits a u32.
        let grant = std::mem::take(&mut self.ungranted).min(u64::from(SESSION_WINDOW));
        self.recv += grant;
        Some(grant as u32)
    }
}

/// One end of a tunnel.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    state: State,
    decoder: Decoder,
    out: BytesMut,
    /// Largest frame the peer accepts (from its Hello).
    peer_max_frame_bytes: u32,
    streams: BTreeMap<u64, Stream>,
    /// Streams this side cancelled, newest last: the peer's frames for them
    /// may already be on the wire and are dropped, not protocol errors.
    cancelled: CancelledIds,
    events: VecDeque<Event>,
    last_recv: Duration,
    last_send: Duration,
    next_nonce: u64,
    local_goaway: bool,
    peer_goaway: bool,
    /// The stream whose body went out last (round-robin).
    last_served: u64,
    /// Length of `out` while it holds only `Ack`s that may wait (see
    /// [`SessionConfig::ack_hold`]); anything queued after them makes
    /// `out` longer and releases them.
    held_acks: usize,
    /// When the held `Ack`s go anyway (set by the first `poll_transmit`
    /// that holds them).
    hold_until: Option<Duration>,
    window: SessionWindow,
}

impl Session {
    /// Starts a session at time `now`; both sides send `Hello` at once.
    pub fn new(role: Role, config: SessionConfig, now: Duration) -> Self {
        let max = config.max_frame_bytes.max(MIN_MAX_FRAME_BYTES);
        let mut s = Session {
            role,
            decoder: Decoder::new(max),
            config: SessionConfig { max_frame_bytes: max, ..config },
            state: State::AwaitHello,
            out: BytesMut::new(),
            peer_max_frame_bytes: MIN_MAX_FRAME_BYTES,
            streams: BTreeMap::new(),
            cancelled: CancelledIds::default(),
            events: VecDeque::new(),
            last_recv: now,
            last_send: now,
            next_nonce: 1,
            local_goaway: false,
            peer_goaway: false,
            last_served: 0,
            held_acks: 0,
            hold_until: None,
            window: SessionWindow::new(),
        };
        let hello = Frame::Hello {
            version: PROTOCOL_VERSION,
            max_frame_bytes: max,
            peer: s.config.local_name.clone(),
            incarnation: s.config.incarnation,
        };
        // A Hello with a local name under 64 KiB always fits MIN_MAX_FRAME_BYTES
        // only if the name is short; a too-long name is a configuration error
        // surfaced at the first transmit.
        if let Err(e) = hello.encode(MIN_MAX_FRAME_BYTES, &mut s.out) {
            s.state = State::Closed;
            tracing::error!("cannot encode Hello: {e}");
        }
        s
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// True once Hello was exchanged and the session is not closed.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Requests currently open on this session.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// True when the peer sent GoAway.
    pub fn peer_going_away(&self) -> bool {
        self.peer_goaway
    }

    /// Feeds bytes read from the transport. An error closes the session.
    pub fn handle_input(&mut self, data: &[u8], now: Duration) -> Result<(), SessionError> {
        if self.state == State::Closed {
            return Err(SessionError::Closed);
        }
        self.decoder.extend(data);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e.into())),
            };
            self.last_recv = now;
            if let Err(e) = self.on_frame(frame) {
                return Err(self.fail(e));
            }
        }
    }

    fn fail(&mut self, e: SessionError) -> SessionError {
        self.state = State::Closed;
        e
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), SessionError> {
        if self.state == State::AwaitHello {
            let Frame::Hello { version, max_frame_bytes, peer, incarnation } = frame else {
                return Err(SessionError::BeforeHello { frame: frame.kind_name() });
            };
            if version != PROTOCOL_VERSION {
                return Err(SessionError::VersionMismatch { peer: version, ours: PROTOCOL_VERSION });
            }
            if max_frame_bytes < MIN_MAX_FRAME_BYTES {
                return Err(SessionError::PeerMaxFrameTooSmall(max_frame_bytes));
            }
            self.peer_max_frame_bytes = max_frame_bytes;
            self.state = State::Open;
            self.events.push_back(Event::Established { peer, version, incarnation });
            return Ok(());
        }
        let from = match self.role {
            Role::Connector => Role::Relay,
            Role::Relay => Role::Connector,
        };
        let wrong = |frame: &Frame| SessionError::WrongDirection { frame: frame.kind_name(), from };
        match frame {
            Frame::Hello { .. } => return Err(SessionError::DuplicateHello),
            Frame::Request { id, method, path, headers, fin } => {
                if self.role != Role::Connector {
                    return Err(wrong(&Frame::Request { id, method, path, headers, fin }));
                }
                if self.peer_goaway {
                    return Err(SessionError::RequestAfterGoAway { id });
                }
                if self.streams.contains_key(&id) || id == SESSION_ID {
                    return Err(SessionError::StreamReused { id });
                }
                if self.streams.len() >= self.config.max_streams {
                    return Err(SessionError::TooManyStreams { max: self.config.max_streams });
                }
                self.streams.insert(id, Stream::opened(fin));
                self.events.push_back(Event::Request { id, head: RequestHead { method, path, headers }, fin });
            }
            Frame::Body { id, fin, data } => return self.on_body(id, fin, data),
            Frame::WindowUpdate { id: SESSION_ID, bytes } => {
                self.window.send += u64::from(bytes);
                if self.window.send > u64::from(u32::MAX) {
                    let what = format!("the session's window grown to {} bytes", self.window.send);
                    return Err(SessionError::FlowControl { id: SESSION_ID, what });
                }
            }
            Frame::WindowUpdate { id, bytes } => {
                // A grant can cross the stream's end on the wire.
                if let Some(st) = self.streams.get_mut(&id) {
                    st.send_window += u64::from(bytes);
                    if st.send_window > u64::from(u32::MAX) {
                        let what = format!("window grown to {} bytes", st.send_window);
                        return Err(SessionError::FlowControl { id, what });
                    }
                }
            }
            Frame::Response { id, status, headers, fin } => {
                if self.role != Role::Relay {
                    return Err(wrong(&Frame::Response { id, status, headers, fin }));
                }
                let Some(st) = self.streams.get_mut(&id) else {
                    return self.late_for_cancelled(id, "Response");
                };
                if st.response_started {
                    return Err(SessionError::UnknownStream { frame: "Response", id });
                }
                st.response_started = true;
                st.response_fin = fin;
                self.events.push_back(Event::Response { id, status, headers, fin });
                self.reap(id);
            }
            Frame::Ack { id } => {
                if self.role != Role::Relay {
                    return Err(wrong(&Frame::Ack { id }));
                }
                if !self.streams.contains_key(&id) {
                    return self.late_for_cancelled(id, "Ack");
                }
                self.events.push_back(Event::Acked { id });
            }
            Frame::Cancel { id, reason } => {
                // A cancel can cross a finished response on the wire: ignore
                // it for streams already gone rather than failing the tunnel.
                if self.forget(id) {
                    self.events.push_back(Event::Cancelled { id, reason });
                }
            }
            Frame::Ping { nonce } => self.queue(Frame::Pong { nonce }),
            Frame::Pong { .. } => {}
            Frame::GoAway { code, reason } => {
                self.peer_goaway = true;
                self.events.push_back(Event::GoAway { code, reason });
            }
        }
        Ok(())
    }

    /// A body chunk: in order for its stream and within its window.
    fn on_body(&mut self, id: u64, fin: bool, data: Bytes) -> Result<(), SessionError> {
        // The sender counted it against the session, whatever its stream.
        self.window.receive(id, data.len())?;
        let role = self.role;
        let Some(st) = self.streams.get_mut(&id) else {
            // Dropped unread: the session's window has it back at once.
            self.session_consumed(data.len() as u64);
            return self.late_for_cancelled(id, "Body");
        };
        match role {
            // Request body from the relay.
            Role::Connector if !st.request_fin => st.request_fin = fin,
            // Response body from the connector.
            Role::Relay if st.response_started && !st.response_fin => st.response_fin = fin,
            _ => return Err(SessionError::UnknownStream { frame: "Body", id }),
        }
        st.receive(id, data.len())?;
        if self.config.auto_grant || st.discarding {
            self.take_body(id, data.len() as u64);
        }
        self.events.push_back(Event::Body { id, data, fin });
        self.reap(id);
        Ok(())
    }

    /// A frame for a stream this side does not have: fine if this side
    /// cancelled it (the frame crossed the Cancel on the wire), a protocol
    /// error otherwise.
    fn late_for_cancelled(&self, id: u64, frame: &'static str) -> Result<(), SessionError> {
        if self.cancelled.contains(id) {
            Ok(())
        } else {
            Err(SessionError::UnknownStream { frame, id })
        }
    }

    /// Drops a stream once both directions are finished and its body has
    /// gone out.
    fn reap(&mut self, id: u64) {
        if let Some(st) = self.streams.get(&id) {
            if st.request_fin && st.response_fin && st.pending.is_empty() {
                self.forget(id);
            }
        }
    }

    /// Drops a stream; what it received and its consumer never took goes
    /// back to the session's window (the stream's consumer is done with
    /// it). False if there was no such stream.
    fn forget(&mut self, id: u64) -> bool {
        let Some(st) = self.streams.remove(&id) else { return false };
        self.session_consumed(st.recv_unconsumed);
        true
    }

    /// `n` received body bytes are taken or dropped: the session's window
    /// grows back, granted as `SessionWindow::consume` decides.
    fn session_consumed(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(bytes) = self.window.consume(n) {
            self.queue(Frame::WindowUpdate { id: SESSION_ID, bytes });
        }
    }

    fn queue(&mut self, frame: Frame) {
        if let Err(e) = frame.encode(self.peer_max_frame_bytes, &mut self.out) {
            // Frames we build ourselves are bounded (bodies are chunked below
            // the peer's limit); reaching this means a head too large for the
            // peer, which fails the session rather than sending garbage.
            tracing::warn!("dropping unsendable frame: {e}");
            self.state = State::Closed;
        }
    }

    /// Largest body chunk that fits in one frame to the peer.
    pub fn max_body_chunk(&self) -> usize {
        self.peer_max_frame_bytes as usize - super::frame::HEADER_BYTES - 9
    }

    fn check_open(&self) -> Result<(), SessionError> {
        if self.state == State::Open {
            Ok(())
        } else {
            Err(SessionError::Closed)
        }
    }

    /// (Relay) sends a request head (borrowed: the relay keeps it to offer
    /// the request elsewhere if this tunnel does not take it).
    pub fn send_request(&mut self, id: u64, head: &RequestHead, fin: bool) -> Result<(), SessionError> {
        self.check_open()?;
        if self.role != Role::Relay {
            return Err(SessionError::WrongDirection { frame: "Request", from: self.role });
        }
        if self.streams.contains_key(&id) || id == SESSION_ID {
            return Err(SessionError::StreamReused { id });
        }
        let parts = (&*head.method, &*head.path, &head.headers);
        Frame::encode_request(id, parts, fin, self.peer_max_frame_bytes, &mut self.out)
            .map_err(|error| SessionError::HeadTooLarge { id, error })?;
        self.streams.insert(id, Stream::opened(fin));
        Ok(())
    }

    /// Queues a body chunk of the stream's outgoing half; it goes out in
    /// frames as the stream's window and turn allow (see the module docs).
    pub fn send_body(&mut self, id: u64, data: Bytes, fin: bool) -> Result<(), SessionError> {
        self.check_open()?;
        let role = self.role;
        let Some(st) = self.streams.get_mut(&id) else {
            return Err(SessionError::UnknownStream { frame: "Body", id });
        };
        match role {
            Role::Relay if !st.request_fin => st.request_fin = fin,
            Role::Connector if st.response_started && !st.response_fin => st.response_fin = fin,
            _ => return Err(SessionError::UnknownStream { frame: "Body", id }),
        }
        if !data.is_empty() || fin {
            st.pending_bytes += data.len();
            st.pending.push_back((data, fin));
        }
        Ok(())
    }

    /// The consumer took `n` more bytes of stream `id`'s received body
    /// (only with `auto_grant` off): the peer may send as much again.
    /// Nothing happens for a stream already gone: its bytes went back to
    /// the session's window when it went.
    pub fn consumed(&mut self, id: u64, n: usize) {
        self.take_body(id, n as u64);
    }

    /// Stream `id`'s consumer is gone (its answer has ended, so it reads
    /// no more of the body): what it was handed and did not take, and all
    /// that arrives from now on, counts as taken at once. Otherwise the
    /// peer could run out of window before its `fin`, which is what ends
    /// the stream, and the session's window would stay short.
    pub fn discard_body(&mut self, id: u64) {
        let Some(st) = self.streams.get_mut(&id) else { return };
        st.discarding = true;
        let unread = st.recv_unconsumed;
        self.take_body(id, unread);
    }

    /// `n` of stream `id`'s received body bytes are taken, never more than
    /// it holds unread (a discarded stream's were all taken already): the
    /// stream's and the session's grants, as they fall due.
    fn take_body(&mut self, id: u64, n: u64) {
        let role = self.role;
        let Some(st) = self.streams.get_mut(&id) else { return };
        let taken = st.recv_unconsumed.min(n);
        let done = st.peer_done(role);
        if let Some(bytes) = st.consume(taken as usize, done) {
            self.queue(Frame::WindowUpdate { id, bytes });
        }
        self.session_consumed(taken);
    }

    /// Whether some of stream `id`'s body (or its bare `fin`) still waits
    /// to go out.
    pub fn unsent(&self, id: u64) -> bool {
        self.streams.get(&id).is_some_and(|st| !st.pending.is_empty())
    }

    /// Whether any stream's body still waits to go out.
    pub fn any_unsent(&self) -> bool {
        self.streams.values().any(|st| !st.pending.is_empty())
    }

    /// Body bytes of stream `id` still waiting to go out (None: no such
    /// stream). A producer that keeps this under a window's worth holds
    /// no more than that in memory, whatever the peer's pace.
    pub fn queued_body_bytes(&self, id: u64) -> Option<usize> {
        self.streams.get(&id).map(|st| st.pending_bytes)
    }

    /// Moves waiting body pieces into the output, round-robin over the
    /// streams that have window, until the batch is full.
    fn schedule_bodies(&mut self) {
        let quantum = self.max_body_chunk().min(BODY_QUANTUM);
        let mut budget = BATCH_BYTES.saturating_sub(self.out.len());
        while budget > 0 {
            let window = self.window.send;
            let ready: Vec<u64> =
                self.streams.iter().filter(|(_, st)| st.can_send(window)).map(|(id, _)| *id).collect();
            if ready.is_empty() {
                return;
            }
            let start = ready.partition_point(|id| *id <= self.last_served);
            for &id in ready[start..].iter().chain(&ready[..start]) {
                if budget == 0 {
                    break;
                }
                let sent = self.send_piece(id, quantum.min(budget));
                budget = budget.saturating_sub(sent.max(1));
                self.last_served = id;
                self.reap(id);
            }
        }
    }

    /// One frame of stream `id`'s waiting body, at most `max` bytes and
    /// within its window; the bytes sent.
    fn send_piece(&mut self, id: u64, max: usize) -> usize {
        let Some(st) = self.streams.get_mut(&id) else { return 0 };
        let Some((front, fin_after)) = st.pending.front_mut() else { return 0 };
        let window = st.send_window.min(self.window.send);
        let n = front.len().min(max).min(usize::try_from(window).unwrap_or(usize::MAX));
        if n == 0 && !front.is_empty() {
            // The session's window ran out during this round.
            return 0;
        }
        let data = front.split_to(n);
        let fin = *fin_after && front.is_empty();
        if front.is_empty() {
            st.pending.pop_front();
        }
        st.send_window -= n as u64;
        self.window.send -= n as u64;
        st.pending_bytes -= n;
        self.queue(Frame::Body { id, fin, data });
        n
    }

    /// (Connector) accepts a request: it will be served at most once. The
    /// Ack comes before the response: once the response has started the
    /// relay may finish the stream, and a late Ack would name an id it no
    /// longer knows.
    pub fn send_ack(&mut self, id: u64) -> Result<(), SessionError> {
        self.check_open()?;
        let whole = match self.streams.get(&id) {
            None => return Err(SessionError::UnknownStream { frame: "Ack", id }),
            Some(st) if st.response_started => return Err(SessionError::AckAfterResponse { id }),
            Some(st) => st.request_fin,
        };
        let only_acks = self.out.len() == self.held_acks;
        self.queue(Frame::Ack { id });
        if whole && only_acks && !self.config.ack_hold.is_zero() {
            self.held_acks = self.out.len();
        }
        Ok(())
    }

    /// (Connector) sends the response head.
    pub fn send_response(&mut self, id: u64, status: u16, headers: Headers, fin: bool) -> Result<(), SessionError> {
        self.check_open()?;
        let Some(st) = self.streams.get_mut(&id) else {
            return Err(SessionError::UnknownStream { frame: "Response", id });
        };
        if st.response_started {
            return Err(SessionError::UnknownStream { frame: "Response", id });
        }
        let frame = Frame::Response { id, status, headers, fin };
        frame
            .encode(self.peer_max_frame_bytes, &mut self.out)
            .map_err(|error| SessionError::HeadTooLarge { id, error })?;
        st.response_started = true;
        st.response_fin = fin;
        self.reap(id);
        Ok(())
    }

    /// Cancels or refuses a request; the stream is forgotten on this side.
    pub fn send_cancel(&mut self, id: u64, reason: CancelReason) -> Result<(), SessionError> {
        self.check_open()?;
        self.forget(id);
        self.cancelled.insert(id);
        self.queue(Frame::Cancel { id, reason });
        Ok(())
    }

    /// Announces that this side takes no new requests.
    pub fn send_goaway(&mut self, code: GoAwayCode, reason: &str) -> Result<(), SessionError> {
        self.check_open()?;
        if !self.local_goaway {
            self.local_goaway = true;
            self.queue(Frame::GoAway { code, reason: reason.to_string() });
        }
        Ok(())
    }

    /// Bytes to write to the transport, if any.
    pub fn poll_transmit(&mut self, now: Duration) -> Option<Bytes> {
        self.schedule_bodies();
        if self.out.is_empty() {
            return None;
        }
        if self.out.len() == self.held_acks {
            let until = *self.hold_until.get_or_insert(now + self.config.ack_hold);
            if now < until {
                return None;
            }
        }
        self.release_acks();
        self.last_send = now;
        Some(self.out.split().freeze())
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the driver must call [`Session::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.state == State::Closed {
            return None;
        }
        let idle_at = self.last_recv + self.config.idle_timeout;
        // The idle deadline, or the held Acks' if sooner.
        let next = self.hold_until.map_or(idle_at, |held| held.min(idle_at));
        if !self.pings() {
            return Some(next);
        }
        let ping_at = self.last_send + self.config.keepalive;
        Some(ping_at.min(next))
    }

    /// Held Acks go with the next transmit: nothing is held any more.
    fn release_acks(&mut self) {
        self.held_acks = 0;
        self.hold_until = None;
    }

    /// Whether this side sends keepalive pings now: only the connector
    /// (see `SessionConfig::keepalive`), and only on an open session
    /// (before that the only timer is the idle one; a past ping deadline
    /// would be a busy loop).
    fn pings(&self) -> bool {
        self.state == State::Open && self.role == Role::Connector
    }

    /// Advances timers: queues a keepalive or fails an idle session.
    pub fn handle_timeout(&mut self, now: Duration) -> Result<(), SessionError> {
        if self.state == State::Closed {
            return Err(SessionError::Closed);
        }
        if now >= self.last_recv + self.config.idle_timeout {
            return Err(self.fail(SessionError::IdleTimeout(self.config.idle_timeout)));
        }
        // Held Acks past their time go with the next transmit, whenever
        // the driver next asks (it may be busy writing): the deadline is
        // spent, and one left in the past would wake it in a busy loop.
        if self.hold_until.is_some_and(|until| now >= until) {
            self.release_acks();
        }
        if self.pings() && now >= self.last_send + self.config.keepalive {
            // Output still waiting (the driver is busy writing a batch)
            // keeps the peer's NAT state warm as well as a ping would.
            if self.out.is_empty() {
                let nonce = self.next_nonce;
                self.next_nonce += 1;
                self.queue(Frame::Ping { nonce });
            }
            // Either way the keepalive clock restarts: a deadline left in
            // the past would wake the driver in a busy loop.
            self.last_send = now;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump(from: &mut Session, to: &mut Session, now: Duration) -> Result<(), SessionError> {
        while let Some(b) = from.poll_transmit(now) {
            to.handle_input(&b, now)?;
        }
        Ok(())
    }

    /// After `handle_timeout`, the next deadline is in the future (or the
    /// session failed): a driver loop always makes progress.
    #[test]
    fn timers_always_move_forward_before_hello() {
        let mut r = Session::new(Role::Relay, SessionConfig::new("relay"), Duration::ZERO);
        let mut now = Duration::ZERO;
        while let Some(deadline) = r.poll_timeout() {
            assert!(deadline > now || r.handle_timeout(now).is_err(), "deadline {deadline:?} not after {now:?}");
            now = deadline;
            if r.handle_timeout(now).is_err() {
                break;
            }
            assert!(r.poll_timeout().is_none_or(|d| d > now), "stuck at {now:?}");
        }
    }

    fn pair() -> (Session, Session) {
        pair_with(SessionConfig::new("c1"))
    }

    /// A connector whose consumer says what it took (`auto_grant` off)
    /// and a relay, past their Hellos.
    fn paced_pair() -> (Session, Session) {
        let mut cfg = SessionConfig::new("c1");
        cfg.auto_grant = false;
        pair_with(cfg)
    }

    /// A connector with `cfg` and a relay, past their Hellos.
    fn pair_with(cfg: SessionConfig) -> (Session, Session) {
        let t = Duration::ZERO;
        let mut c = Session::new(Role::Connector, cfg, t);
        let mut r = Session::new(Role::Relay, SessionConfig::new("relay"), t);
        pump(&mut c, &mut r, t).unwrap();
        pump(&mut r, &mut c, t).unwrap();
        (c, r)
    }

    #[test]
    fn request_response_roundtrip() {
        let (mut c, mut r) = pair();
        let t = Duration::ZERO;
        assert!(matches!(c.poll_event(), Some(Event::Established { .. })));
        assert!(matches!(r.poll_event(), Some(Event::Established { .. })));
        let head = RequestHead { method: "GET".into(), path: "/".into(), headers: Headers::new() };
        r.send_request(1, &head, true).unwrap();
        pump(&mut r, &mut c, t).unwrap();
        assert_eq!(c.poll_event(), Some(Event::Request { id: 1, head, fin: true }));
        c.send_ack(1).unwrap();
        c.send_response(1, 200, Headers::new(), false).unwrap();
        c.send_body(1, Bytes::from_static(b"hi"), true).unwrap();
        pump(&mut c, &mut r, t).unwrap();
        assert_eq!(r.poll_event(), Some(Event::Acked { id: 1 }));
        assert!(matches!(r.poll_event(), Some(Event::Response { id: 1, status: 200, .. })));
        assert!(matches!(r.poll_event(), Some(Event::Body { id: 1, fin: true, .. })));
        assert_eq!(c.open_streams(), 0);
        assert_eq!(r.open_streams(), 0);
    }

    /// A connector that holds Acks for `hold`, with requests 1 (whole)
    /// and 2 (its body still to come) open.
    fn holding(hold: Duration) -> (Session, Session) {
        let t = Duration::ZERO;
        let mut cfg = SessionConfig::new("c1");
        cfg.ack_hold = hold;
        let (mut c, mut r) = pair_with(cfg);
        let head = RequestHead { method: "GET".into(), path: "/".into(), headers: Headers::new() };
        r.send_request(1, &head, true).unwrap();
        r.send_request(2, &head, false).unwrap();
        pump(&mut r, &mut c, t).unwrap();
        while c.poll_event().is_some() {}
        while r.poll_event().is_some() {}
        (c, r)
    }

    #[test]
    fn a_held_ack_leaves_with_the_answer_in_one_write() {
        let ms = Duration::from_millis;
        let (mut c, mut r) = holding(ms(2));
        c.send_ack(1).unwrap();
        assert_eq!(c.poll_transmit(ms(0)), None, "held");
        assert_eq!(c.poll_timeout(), Some(ms(2)), "the driver wakes when the hold ends");
        c.send_response(1, 200, Headers::new(), true).unwrap();
        let write = c.poll_transmit(ms(1)).expect("the answer releases the Ack");
        r.handle_input(&write, ms(1)).unwrap();
        assert_eq!(r.poll_event(), Some(Event::Acked { id: 1 }), "the Ack still comes first");
        assert!(matches!(r.poll_event(), Some(Event::Response { id: 1, status: 200, fin: true, .. })));
        assert_eq!(c.poll_transmit(ms(1)), None);
        assert!(c.poll_timeout().is_some_and(|d| d > ms(2)), "no hold left");
    }

    #[test]
    fn a_held_ack_goes_alone_when_its_time_is_up() {
        let ms = Duration::from_millis;
        let (mut c, mut r) = holding(ms(2));
        c.send_ack(1).unwrap();
        assert_eq!(c.poll_transmit(ms(1)), None);
        assert_eq!(c.poll_timeout(), Some(ms(3)), "the hold starts when the driver first asks");
        assert_eq!(c.poll_transmit(ms(2)), None);
        pump(&mut c, &mut r, ms(3)).unwrap();
        assert_eq!(r.poll_event(), Some(Event::Acked { id: 1 }));
        // A driver busy writing may miss the moment: the timeout releases
        // the hold, and no deadline stays in the past.
        let (mut c, mut r) = holding(ms(2));
        c.send_ack(1).unwrap();
        assert_eq!(c.poll_transmit(ms(0)), None);
        c.handle_timeout(ms(5)).unwrap();
        assert!(c.poll_timeout().is_some_and(|d| d > ms(5)));
        pump(&mut c, &mut r, ms(6)).unwrap();
        assert_eq!(r.poll_event(), Some(Event::Acked { id: 1 }));
    }

    #[test]
    fn only_acks_of_whole_requests_wait_and_nothing_waits_behind_them() {
        let ms = Duration::from_millis;
        // Request 2's body is still coming: the relay sends it once
        // accepted, so its Ack goes at once.
        let (mut c, mut r) = holding(ms(2));
        c.send_ack(2).unwrap();
        pump(&mut c, &mut r, ms(0)).unwrap();
        assert_eq!(r.poll_event(), Some(Event::Acked { id: 2 }));
        // A held Ack followed by anything else: all of it goes now.
        let (mut c, mut r) = holding(ms(2));
        c.send_ack(1).unwrap();
        c.send_cancel(2, CancelReason::Overloaded).unwrap();
        pump(&mut c, &mut r, ms(0)).unwrap();
        assert_eq!(r.poll_event(), Some(Event::Acked { id: 1 }));
        assert!(matches!(r.poll_event(), Some(Event::Cancelled { id: 2, .. })));
        // Without a hold, every Ack goes at once.
        let (mut c, mut r) = holding(Duration::ZERO);
        c.send_ack(1).unwrap();
        pump(&mut c, &mut r, ms(0)).unwrap();
        assert_eq!(r.poll_event(), Some(Event::Acked { id: 1 }));
    }

    #[test]
    fn request_before_hello_is_refused() {
        let t = Duration::ZERO;
        let mut c = Session::new(Role::Connector, SessionConfig::new("c1"), t);
        let mut bytes = BytesMut::new();
        Frame::Ack { id: 1 }.encode(4096, &mut bytes).unwrap();
        assert_eq!(c.handle_input(&bytes, t), Err(SessionError::BeforeHello { frame: "Ack" }));
        assert!(c.is_closed());
    }

    #[test]
    fn idle_peer_times_out_and_keepalive_pings() {
        let (mut c, mut r) = pair();
        let ka = Duration::from_secs(10);
        c.handle_timeout(ka).unwrap();
        let ping = c.poll_transmit(ka).unwrap();
        r.handle_input(&ping, ka).unwrap();
        assert!(r.poll_transmit(ka).is_some(), "pong expected");
        assert!(matches!(c.handle_timeout(Duration::from_secs(31)), Err(SessionError::IdleTimeout(_))));
    }

    /// Only the connector pings; the relay answers and, when the connector
    /// goes quiet, times the session out.
    /// While the driver has not taken the output yet (it is still writing
    /// the last batch), keepalive deadlines still move forward.
    #[test]
    fn keepalive_deadlines_move_while_output_waits() {
        let (mut c, _r) = pair();
        let mut now = Duration::ZERO;
        for _ in 0..5 {
            let deadline = c.poll_timeout().unwrap();
            assert!(deadline > now, "deadline {deadline:?} not after {now:?}");
            now = deadline;
            if c.handle_timeout(now).is_err() {
                return;
            }
        }
    }

    #[test]
    fn only_the_connector_pings() {
        let (mut c, mut r) = pair();
        let ka = Duration::from_secs(10);
        assert_eq!(r.poll_timeout(), Some(Duration::from_secs(30)), "the relay's only timer is the idle one");
        r.handle_timeout(ka).unwrap();
        assert!(r.poll_transmit(ka).is_none(), "the relay sent something on its own");
        c.handle_timeout(ka).unwrap();
        let ping = c.poll_transmit(ka).unwrap();
        r.handle_input(&ping, ka).unwrap();
        assert!(r.poll_transmit(ka).is_some(), "pong expected");
        assert!(matches!(r.handle_timeout(ka * 4), Err(SessionError::IdleTimeout(_))));
    }

    #[test]
    fn large_body_is_chunked_to_peer_limit() {
        let (mut c, mut r) = pair();
        let t = Duration::ZERO;
        let head = RequestHead { method: "GET".into(), path: "/".into(), headers: Headers::new() };
        r.send_request(9, &head, true).unwrap();
        pump(&mut r, &mut c, t).unwrap();
        c.send_response(9, 200, Headers::new(), false).unwrap();
        c.send_body(9, Bytes::from(vec![7u8; 1_000_000]), true).unwrap();
        both_ways(&mut c, &mut r, t);
        let mut total = 0;
        while let Some(ev) = r.poll_event() {
            if let Event::Body { data, .. } = ev {
                assert!(data.len() <= BODY_QUANTUM);
                total += data.len();
            }
        }
        assert_eq!(total, 1_000_000);
        assert_eq!((c.open_streams(), r.open_streams()), (0, 0));
    }

    /// Pumps both ways until neither side has anything to send (grants
    /// flow back while bodies flow forth).
    fn both_ways(a: &mut Session, b: &mut Session, t: Duration) {
        loop {
            let (mut quiet_a, mut quiet_b) = (true, true);
            while let Some(bytes) = a.poll_transmit(t) {
                quiet_a = false;
                b.handle_input(&bytes, t).unwrap();
            }
            while let Some(bytes) = b.poll_transmit(t) {
                quiet_b = false;
                a.handle_input(&bytes, t).unwrap();
            }
            if quiet_a && quiet_b {
                return;
            }
        }
    }

    fn body_bytes(s: &mut Session) -> BTreeMap<u64, usize> {
        let mut per_stream = BTreeMap::new();
        while let Some(ev) = s.poll_event() {
            if let Event::Body { id, data, .. } = ev {
                *per_stream.entry(id).or_insert(0) += data.len();
            }
        }
        per_stream
    }

    /// Without grants from the receiver, a sender stops at the window.
    #[test]
    fn a_sender_stops_at_the_stream_window() {
        let (mut c, mut r) = pair();
        let t = Duration::ZERO;
        let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
        r.send_request(1, &head, false).unwrap();
        r.send_body(1, Bytes::from(vec![1u8; 4 << 20]), true).unwrap();
        // Everything the relay will send without hearing back.
        let mut sent = Vec::new();
        while let Some(b) = r.poll_transmit(t) {
            sent.push(b);
        }
        for b in &sent {
            c.handle_input(b, t).unwrap();
        }
        assert_eq!(body_bytes(&mut c).get(&1), Some(&(STREAM_WINDOW as usize)));
        assert_eq!(r.queued_body_bytes(1), Some((4 << 20) - STREAM_WINDOW as usize));
        // The connector's grants let the rest through.
        both_ways(&mut c, &mut r, t);
        assert_eq!(body_bytes(&mut c).get(&1), Some(&((4 << 20) - STREAM_WINDOW as usize)));
        assert_eq!(r.queued_body_bytes(1), Some(0));
    }

    /// A small answer queued after a large one leaves in the first batch:
    /// streams take turns, so no stream waits behind another's body.
    #[test]
    fn streams_take_turns() {
        let (mut c, mut r) = pair();
        let t = Duration::ZERO;
        for id in [1, 2] {
            let head = RequestHead { method: "GET".into(), path: "/".into(), headers: Headers::new() };
            r.send_request(id, &head, true).unwrap();
        }
        pump(&mut r, &mut c, t).unwrap();
        while c.poll_event().is_some() {}
        c.send_response(1, 200, Headers::new(), false).unwrap();
        c.send_body(1, Bytes::from(vec![1u8; 16 << 20]), true).unwrap();
        c.send_response(2, 200, Headers::new(), false).unwrap();
        c.send_body(2, Bytes::from(vec![2u8; 1000]), true).unwrap();
        let first = c.poll_transmit(t).unwrap();
        assert!(first.len() <= BATCH_BYTES + 1024, "batch of {} bytes", first.len());
        r.handle_input(&first, t).unwrap();
        let got = body_bytes(&mut r);
        assert_eq!(got.get(&2), Some(&1000), "{got:?}");
    }

    /// A peer that ignores the window fails the session (one that waits
    /// for grants: `grants_follow_the_consumer`).
    #[test]
    fn a_peer_past_its_window_is_refused() {
        let t = Duration::ZERO;
        let (mut c, mut r) = paced_pair();
        let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
        r.send_request(1, &head, false).unwrap();
        pump(&mut r, &mut c, t).unwrap();
        let mut wire = BytesMut::new();
        let chunk = Bytes::from(vec![0u8; BODY_QUANTUM]);
        for _ in 0..=(STREAM_WINDOW as usize / BODY_QUANTUM) {
            Frame::Body { id: 1, fin: false, data: chunk.clone() }.encode(DEFAULT_MAX_FRAME_BYTES, &mut wire).unwrap();
        }
        let err = c.handle_input(&wire, t).unwrap_err();
        assert!(matches!(err, SessionError::FlowControl { id: 1, .. }), "{err}");
    }

    /// With grants left to the consumer, a body moves only as fast as the
    /// consumer takes it, and all of it arrives.
    #[test]
    fn grants_follow_the_consumer() {
        let t = Duration::ZERO;
        let mut cfg = SessionConfig::new("c1");
        cfg.auto_grant = false;
        let mut c = Session::new(Role::Connector, cfg, t);
        let mut r = Session::new(Role::Relay, SessionConfig::new("relay"), t);
        both_ways(&mut c, &mut r, t);
        let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
        r.send_request(1, &head, false).unwrap();
        r.send_body(1, Bytes::from(vec![5u8; 3 << 20]), true).unwrap();
        let mut total = 0;
        for _ in 0..100 {
            both_ways(&mut c, &mut r, t);
            let got = body_bytes(&mut c).get(&1).copied().unwrap_or(0);
            assert!(got <= STREAM_WINDOW as usize, "{got} bytes past a window without grants");
            total += got;
            if total == 3 << 20 {
                break;
            }
            c.consumed(1, got);
        }
        assert_eq!(total, 3 << 20);
        assert_eq!(r.queued_body_bytes(1), Some(0));
    }

    /// A connector whose consumers take nothing holds at most one session
    /// window of all its streams' bodies, however many streams are open;
    /// what it takes (or drops with a stream) is granted back, and every
    /// body arrives whole in the end.
    #[test]
    fn the_session_window_bounds_all_streams_together() {
        let t = Duration::ZERO;
        let (mut c, mut r) = paced_pair();
        let streams = 2 * (SESSION_WINDOW / STREAM_WINDOW) as u64;
        for id in 1..=streams {
            let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
            r.send_request(id, &head, false).unwrap();
            r.send_body(id, Bytes::from(vec![1u8; STREAM_WINDOW as usize]), true).unwrap();
        }
        both_ways(&mut c, &mut r, t);
        let got = body_bytes(&mut c);
        assert_eq!(got.values().sum::<usize>(), SESSION_WINDOW as usize, "{got:?}");
        // One stream goes away unread, the others are taken as they
        // come: the rest moves, never more than a window at a time.
        let (&dropped, &dropped_got) = got.iter().next().unwrap();
        c.send_cancel(dropped, CancelReason::Overloaded).unwrap();
        let mut got = got;
        got.remove(&dropped);
        let mut total: usize = got.values().sum();
        for _ in 0..100 {
            for (&id, &n) in &got {
                c.consumed(id, n);
            }
            both_ways(&mut c, &mut r, t);
            got = body_bytes(&mut c);
            assert!(got.values().sum::<usize>() <= SESSION_WINDOW as usize);
            total += got.values().sum::<usize>();
            if got.is_empty() {
                break;
            }
        }
        assert_eq!(total, (streams as usize - 1) * STREAM_WINDOW as usize);
        assert!(dropped_got > 0);
        for id in 1..=streams {
            assert_eq!(r.queued_body_bytes(id).unwrap_or(0), 0, "stream {id} still waits");
        }
    }

    /// A connector that answers an upload before reading it (a 401) and
    /// discards the body lets the relay send the rest, which ends the
    /// stream on both sides, and gets its session's window back: without
    /// that the relay would wait for grants that never come.
    #[test]
    fn a_discarded_body_flows_to_its_end() {
        let t = Duration::ZERO;
        let (mut c, mut r) = paced_pair();
        let total = 2 * SESSION_WINDOW as usize;
        let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
        r.send_request(1, &head, false).unwrap();
        r.send_body(1, Bytes::from(vec![3u8; total]), true).unwrap();
        both_ways(&mut c, &mut r, t);
        let first = body_bytes(&mut c).values().sum::<usize>();
        assert_eq!(first, STREAM_WINDOW as usize, "a stream's window, then nothing without grants");
        c.send_ack(1).unwrap();
        c.send_response(1, 401, Headers::new(), true).unwrap();
        c.discard_body(1);
        // A late report from the consumer changes nothing.
        c.consumed(1, first);
        both_ways(&mut c, &mut r, t);
        assert_eq!(first + body_bytes(&mut c).values().sum::<usize>(), total);
        assert_eq!(c.open_streams(), 0);
        assert_eq!(r.open_streams(), 0);
        // The whole session window is there for the next upload.
        let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
        for id in 2..=(SESSION_WINDOW / STREAM_WINDOW + 1) as u64 {
            r.send_request(id, &head, false).unwrap();
            r.send_body(id, Bytes::from(vec![4u8; STREAM_WINDOW as usize]), false).unwrap();
        }
        both_ways(&mut c, &mut r, t);
        assert_eq!(body_bytes(&mut c).values().sum::<usize>(), SESSION_WINDOW as usize);
    }

    /// Stalled consumers that keep most of the session's window unread do
    /// not stop a stream whose consumer reads: what it takes is granted
    /// back at once while the window is low.
    #[test]
    fn stalled_streams_leave_the_rest_of_the_window_moving() {
        let t = Duration::ZERO;
        let (mut c, mut r) = paced_pair();
        let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
        let stalled = u64::from(SESSION_WINDOW / STREAM_WINDOW - 2);
        for id in 1..=stalled {
            r.send_request(id, &head, false).unwrap();
            r.send_body(id, Bytes::from(vec![5u8; STREAM_WINDOW as usize]), false).unwrap();
        }
        both_ways(&mut c, &mut r, t);
        let _ = body_bytes(&mut c);
        let reader = 1_000;
        let total = 2 * SESSION_WINDOW as usize;
        r.send_request(reader, &head, false).unwrap();
        r.send_body(reader, Bytes::from(vec![6u8; total]), true).unwrap();
        let mut got = 0;
        for _ in 0..1_000 {
            both_ways(&mut c, &mut r, t);
            let n = body_bytes(&mut c).get(&reader).copied().unwrap_or(0);
            if n == 0 {
                break;
            }
            got += n;
            c.consumed(reader, n);
        }
        assert_eq!(got, total, "the reading stream stopped with {got} of {total} bytes");
    }

    /// Body frames for a stream this side cancelled still count against
    /// the session, and are granted back: a relay that keeps sending
    /// into cancelled streams never runs the session's window dry.
    #[test]
    fn bytes_for_a_cancelled_stream_are_given_back() {
        let t = Duration::ZERO;
        let (mut c, mut r) = paced_pair();
        let quarter = STREAM_WINDOW as usize / 2;
        for id in 1..=(2 * SESSION_WINDOW as u64 / quarter as u64) {
            let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
            r.send_request(id, &head, false).unwrap();
            pump(&mut r, &mut c, t).unwrap();
            c.send_cancel(id, CancelReason::Overloaded).unwrap();
            // The body was on its way before the cancel arrived.
            r.send_body(id, Bytes::from(vec![2u8; quarter]), true).unwrap();
            pump(&mut r, &mut c, t).unwrap();
            pump(&mut c, &mut r, t).unwrap();
            assert!(c.is_open() && r.is_open());
            assert_eq!(r.queued_body_bytes(id), None, "stream {id}'s body did not go");
        }
    }

    /// A relay past the session's window fails the session, as one past
    /// a stream's does.
    #[test]
    fn a_peer_past_the_session_window_is_refused() {
        let t = Duration::ZERO;
        let (mut c, mut r) = paced_pair();
        let mut wire = BytesMut::new();
        let chunk = Bytes::from(vec![0u8; BODY_QUANTUM]);
        let per_stream = STREAM_WINDOW as usize / BODY_QUANTUM;
        for id in 1..=(SESSION_WINDOW / STREAM_WINDOW + 1) as u64 {
            let head = RequestHead { method: "PUT".into(), path: "/".into(), headers: Headers::new() };
            r.send_request(id, &head, false).unwrap();
            for _ in 0..per_stream {
                Frame::Body { id, fin: false, data: chunk.clone() }.encode(DEFAULT_MAX_FRAME_BYTES, &mut wire).unwrap();
            }
        }
        pump(&mut r, &mut c, t).unwrap();
        let err = c.handle_input(&wire, t).unwrap_err();
        assert!(matches!(err, SessionError::FlowControl { .. }), "{err}");
        assert!(err.to_string().contains("session"), "{err}");
    }

    /// The connector refuses a request (overloaded) while its body is still
    /// arriving; the relay gives up on a request while its response is on
    /// the wire. Frames crossing a Cancel are dropped, the tunnel lives on;
    /// a frame for an id never seen is still a protocol error.
    #[test]
    fn frames_crossing_a_cancel_do_not_kill_the_tunnel() {
        let (mut c, mut r) = pair();
        let t = Duration::ZERO;
        let head = RequestHead { method: "POST".into(), path: "/".into(), headers: Headers::new() };
        while c.poll_event().is_some() {}
        while r.poll_event().is_some() {}
        r.send_request(1, &head, false).unwrap();
        let first = r.poll_transmit(t).unwrap();
        r.send_body(1, Bytes::from_static(b"part"), true).unwrap();
        let rest = r.poll_transmit(t).unwrap();
        // The connector sees the head, refuses, then the body arrives.
        c.handle_input(&first, t).unwrap();
        assert!(matches!(c.poll_event(), Some(Event::Request { id: 1, .. })));
        c.send_cancel(1, CancelReason::Overloaded).unwrap();
        c.handle_input(&rest, t).expect("a body crossing the refusal is dropped");
        assert_eq!(c.open_streams(), 0);

        r.send_request(2, &head, true).unwrap();
        pump(&mut r, &mut c, t).unwrap();
        c.send_ack(2).unwrap();
        c.send_response(2, 200, Headers::new(), true).unwrap();
        r.send_cancel(2, CancelReason::Abandoned).unwrap();
        pump(&mut c, &mut r, t).expect("an ack and response crossing the relay's cancel are dropped");
        assert!(r.is_open());

        let mut bytes = BytesMut::new();
        Frame::Ack { id: 77 }.encode(4096, &mut bytes).unwrap();
        assert_eq!(r.handle_input(&bytes, t), Err(SessionError::UnknownStream { frame: "Ack", id: 77 }));
    }
}

/// The most recent ids a side cancelled (bounded: a peer gets one round
/// trip's worth of grace, not a licence to send frames for any old id).
#[derive(Debug, Default)]
struct CancelledIds {
    order: VecDeque<u64>,
    set: std::collections::BTreeSet<u64>,
}

impl CancelledIds {
    const KEEP: usize = 4096;

    fn insert(&mut self, id: u64) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::KEEP {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.set.contains(&id)
    }
}
