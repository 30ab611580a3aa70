//! One tunnel to one relay endpoint: the driver that connects the sans-I/O
//! [`Session`] to a TLS stream, and the reconnect loop around it.
//!
//! At-most-once: every request id the connector accepts goes into
//! [`SeenIds`], shared by all tunnels of the agent. A relay that redelivers an
//! id after a reconnect (because it never saw the outcome) gets a `Cancel
//! (Duplicate)` instead of a second execution.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::RelayEndpoint;
use crate::backend::quick::{self, Quick, Step};
use crate::backend::{self, Outbound, Reply, RequestBody};
use crate::backoff::Backoff;
use crate::code::{self, EventId};
use crate::env::Env;
use crate::event::AgentEvent;
use crate::https::open_tls;
use crate::inflight::{BodyStep, Requests, Slots};
use crate::outbox::Outbox;
use crate::pace::Pace;
use crate::pki::ServiceTls;
use crate::proto::{CancelReason, Event, GoAwayCode, RequestHead, Role, Session, SessionConfig, SessionError};
use crate::time::Timer;
use crate::tls_failure::TlsFailure;
use crate::turn::{self, Halves};
use crate::wakes::Wakes;

/// Request ids already accepted, bounded: the oldest are forgotten first.
/// Relay ids grow monotonically, so a redelivery is always recent.
///
/// A hash set, asked only whether it holds an id and never walked (its
/// `Debug` shows sizes only), so its order reaches nothing; its hasher has
/// a fixed seed, so it is the same in every run. A tree of 65,536 ids cost
/// ~500 instructions a request to insert into and trim, SipHash ~430
/// (callgrind, `wrk -c32` through the tunnel); foldhash's is a multiply.
/// A fixed seed lets whoever picks the ids make them collide; only the
/// relay does, an authenticated peer, and the set stays bounded either
/// way.
pub struct SeenIds {
    #[allow(clippy::disallowed_types, reason = "membership only, never iterated: no order reaches a trace")]
    set: std::collections::HashSet<u64, foldhash::fast::FixedState>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl std::fmt::Debug for SeenIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenIds").field("len", &self.order.len()).field("capacity", &self.capacity).finish()
    }
}

impl SeenIds {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Grown as ids come, up to the capacity: a tunnel that serves few
        // requests keeps a small set.
        SeenIds { set: Default::default(), order: VecDeque::new(), capacity }
    }

    /// Records `id`; false if it was already there.
    pub fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// How long the Ack of a request that arrived whole waits for its answer
/// to share a write (see [`SessionConfig::ack_hold`]). A backend on the
/// same network answers within it; one that takes longer gets its Ack
/// this late. The cost is in one race only: if the tunnel breaks during
/// the hold, the relay does not know the request was accepted, offers it
/// again to this connector (after a pause, waiting up to seconds for its
/// tunnel), which refuses it as a duplicate, and the user gets a 502 for
/// the refusal (or for the lost connector) instead of an immediate 502
/// "lost after accept". Never served twice either way.
pub const ACK_HOLD: Duration = Duration::from_millis(2);

/// Settings of the tunnels.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    pub connector_id: String,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    pub backend_timeout: Duration,
    pub max_inflight: usize,
    pub backoff: Backoff,
    /// How much of a request body is held before its handler starts and
    /// the rest streams to the backend: a body that ends within it reaches
    /// the backend whole or not at all.
    pub request_body_hold_bytes: usize,
}

/// State shared by all tunnels of one agent.
pub struct Shared {
    /// Drawn when the agent starts serving and sent in every tunnel's
    /// `Hello`: `seen` lives in memory, so the relay may redeliver an
    /// unacknowledged request only to tunnels of the same incarnation.
    pub incarnation: u64,
    pub seen: RefCell<SeenIds>,
    /// Requests in flight on every tunnel (each holds a slot).
    pub slots: Rc<Slots>,
    /// The TLS client with the current client certificate.
    pub tls: RefCell<ServiceTls>,
    /// Tunnels up right now.
    pub up: RefCell<usize>,
    /// Kept-alive backend connections.
    pub backends: Rc<backend::Pool>,
    /// True while the agent drains (before an upgrade): every tunnel tells
    /// its relay GoAway, so that no new request is sent down it while the
    /// ones in flight finish. Set it with [`Shared::drain`].
    pub draining: std::cell::Cell<bool>,
    /// Wakes the tunnels when `draining` is set. (A `Notify` wakes its
    /// waiters in the order they wait; a `watch` channel picks among its
    /// waiter lists at random, which reordered the tunnels' GoAways from
    /// one run to the next.)
    pub drain_wake: tokio::sync::Notify,
    /// Endpoints whose relay said it does not serve this connector (GoAway
    /// `Moved`: the tenant or its group now lives elsewhere), while their
    /// tunnels drain: the agent leaves them to finish rather than cut the
    /// requests in flight when the next bootstrap no longer names them.
    pub moved: RefCell<BTreeSet<String>>,
    /// Set with `moved`; cleared by the bootstrap that learns where to go.
    pub moved_pending: std::cell::Cell<bool>,
    /// Wakes the agent to bootstrap at once (`notify_waiters` stores no
    /// permit: `moved_pending` says whether a bootstrap is still owed).
    pub moved_wake: tokio::sync::Notify,
    /// Woken when a tunnel is established (a relay said Hello): the network
    /// works, so a heartbeat that failed is retried at once instead of at
    /// the end of its backoff.
    pub network_back: tokio::sync::Notify,
}

impl Shared {
    /// The relay of `endpoint` said GoAway `Moved`.
    fn moved_away(&self, endpoint: &str) {
        self.moved.borrow_mut().insert(endpoint.to_string());
        self.moved_pending.set(true);
        self.moved_wake.notify_waiters();
    }

    /// Whether `endpoint`'s tunnel is draining after GoAway `Moved`.
    pub fn is_moving(&self, endpoint: &str) -> bool {
        self.moved.borrow().contains(endpoint)
    }

    /// Starts (or ends) draining: see [`Shared::draining`].
    pub fn drain(&self, on: bool) {
        self.draining.set(on);
        if on {
            self.drain_wake.notify_waiters();
        }
    }
}

/// Counts a tunnel as up for as long as it lives (also when its task is
/// aborted).
struct UpGuard(Rc<Shared>);

impl UpGuard {
    fn new(shared: &Rc<Shared>) -> Self {
        *shared.up.borrow_mut() += 1;
        UpGuard(shared.clone())
    }
}

impl Drop for UpGuard {
    fn drop(&mut self) {
        let mut n = self.0.up.borrow_mut();
        *n = n.saturating_sub(1);
    }
}

/// Why a tunnel session ended.
#[derive(Debug)]
enum End {
    /// The relay drained the tunnel (GoAway) and all requests finished.
    Drained,
    /// The transport or the protocol failed; the TLS failure, if that is
    /// what it was (a refused client certificate arrives as an alert on
    /// the first read under TLS 1.3).
    Failed(String, Option<TlsFailure>),
}

/// Keeps a tunnel to `endpoint` open for as long as the task lives,
/// reconnecting with jittered exponential backoff.
pub async fn run(env: Env, cfg: TunnelConfig, shared: Rc<Shared>, endpoint: RelayEndpoint) {
    let name = endpoint.to_string();
    let mut attempt: u32 = 0;
    let mut reported = false;
    loop {
        // The current client certificate (renewal replaces it).
        let tls = shared.tls.borrow().clone();
        match open_tls(&env, &tls, &endpoint.host, endpoint.port, cfg.connect_timeout).await {
            Ok(stream) => {
                let end = drive(&env, &cfg, &shared, &name, stream).await;
                // Sent away (drained, or broken off while draining): the
                // agent's bootstrap names the relays that serve it; this one
                // is not dialled again.
                if shared.is_moving(&name) {
                    let reason = match end.0 {
                        End::Failed(r, _) => format!("{r} (after GoAway: moved)"),
                        End::Drained => "this relay no longer serves the connector (GoAway: moved)".into(),
                    };
                    env.emit(AgentEvent::TunnelDown { endpoint: name.clone(), reason });
                    shared.moved.borrow_mut().remove(&name);
                    return;
                }
                let (reason, tls_failure, healthy) = match end {
                    (End::Drained, _) => ("drained after GoAway".to_string(), None, true),
                    (End::Failed(r, t), was_up) => (r, t, was_up),
                };
                // Refused before Hello: under TLS 1.3 a rejected client
                // certificate shows up here, as an alert on the first read.
                if let (false, false, Some(t)) = (healthy, reported, &tls_failure) {
                    if let Some(d) = crate::diag::client_cert_alert(&endpoint.host, endpoint.port, t) {
                        env.emit(AgentEvent::Diagnostic(d));
                        reported = true;
                    }
                }
                env.emit(AgentEvent::TunnelDown { endpoint: name.clone(), reason });
                if healthy {
                    attempt = 0;
                    reported = false;
                }
            }
            Err(e) => {
                // One diagnostic per failure streak, not one per retry.
                if !reported {
                    env.emit(AgentEvent::Diagnostic(e.diagnostic()));
                    reported = true;
                }
                env.emit(AgentEvent::TunnelDown { endpoint: name.clone(), reason: e.to_string() });
            }
        }
        let delay = cfg.backoff.delay(attempt, env.entropy.unit_f64());
        attempt = attempt.saturating_add(1);
        crate::time::sleep(delay).await;
    }
}

/// One live session's state, besides the transport.
struct Link<'a> {
    env: &'a Env,
    cfg: &'a TunnelConfig,
    shared: &'a Rc<Shared>,
    name: &'a str,
    session: Session,
    /// Dropped with the link: running handlers stop (their answers cannot
    /// be delivered, and the relay fails them to the user, never retried)
    /// and every slot goes back.
    requests: Requests<JoinHandle<()>>,
    tx: mpsc::UnboundedSender<Outbound>,
    up: bool,
    _up_guard: Option<UpGuard>,
    /// Requests whose last frame is queued but not yet written: their slots
    /// go back once it is (a drain that waits for no slot in use then
    /// cuts no answer short).
    written_then_done: Vec<u64>,
    /// Running handlers' pace, by request id.
    paces: BTreeMap<u64, Rc<Pace>>,
    /// Requests served by this loop, without a task ([`quick`]).
    quick: quick::Table,
}

/// Runs one session over an open stream until it ends. The flag says
/// whether the session got as far as `Hello` (resets the backoff).
async fn drive<S>(env: &Env, cfg: &TunnelConfig, shared: &Rc<Shared>, name: &str, stream: S) -> (End, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let origin = tokio::time::Instant::now();
    let now = || origin.elapsed();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
    let mut link = Link::new(env, cfg, shared, name, tx, now());
    let mut buf = vec![0u8; 16 * 1024];
    let mut goaway_sent = false;
    // The batch going out, and the requests whose last frame is in it.
    let mut outbox = Outbox::default();
    let mut in_batch: Vec<u64> = Vec::new();
    // The session's next deadline (set at each turn; an hour when none).
    let no_deadline = Duration::from_secs(3600);
    let mut timer = Timer::new(origin + no_deadline);
    // Which sources woke the loop: only those are polled (see `turn::poll`).
    let wakes = Wakes::<SOURCES>::new();

    let end = loop {
        // The session hands over everything queued as one buffer: one
        // write, one TLS record (see the `rx` branch, which queues all
        // ready answers before coming back here). It goes out in steps
        // while the loop keeps reading (see `Outbox`).
        if outbox.is_idle() {
            if let Some(bytes) = link.session.poll_transmit(now()) {
                outbox.load(bytes);
                wakes.mark(turn::Source::Outbox as usize);
                // Requests whose last frame is in this batch; the others
                // still have body waiting for window or turn.
                let session = &link.session;
                let (out, waiting) = link.written_then_done.drain(..).partition(|id| !session.unsent(*id));
                in_batch = out;
                link.written_then_done = waiting;
            }
            link.pace();
        }
        let quiet = outbox.is_idle() && !link.session.any_unsent();
        if link.session.peer_going_away() && link.requests.is_empty() && quiet {
            // No deadline to announce while the close goes out.
            drop(timer);
            let _ = writer.shutdown().await;
            break End::Drained;
        }
        // Draining began while this loop was not waiting: say GoAway now.
        if shared.draining.get() && link.up && !goaway_sent {
            goaway_sent = true;
            env.emit(AgentEvent::GoAwaySent { endpoint: name.to_string() });
            if let Err(e) = link.session.send_goaway(GoAwayCode::Draining, "connector draining") {
                break End::Failed(e.to_string(), None);
            }
            continue;
        }
        if timer.set(origin + link.next_deadline().unwrap_or(no_deadline)) {
            wakes.mark(turn::Source::Timer as usize);
        }
        let drain_on = link.up && !goaway_sent;
        wakes.mark(DRAIN);
        if link.quick.take_fresh() {
            wakes.mark(QUICK);
        }
        let turn = {
            // A new wait each turn, dropped once it is taken, as `select!`
            // made it: the tunnels then stand in the signal's list in the
            // order they last turned, which is the order it wakes them in
            // (and they say GoAway).
            let mut drain = std::pin::pin!(shared.drain_wake.notified());
            let table = &mut link.quick;
            let mut quick = std::pin::pin!(std::future::poll_fn(|cx| table.poll(cx)));
            std::future::poll_fn(|cx| {
                let mut io = Halves { outbox: &mut outbox, writer: &mut writer, reader: &mut reader, buf: &mut buf };
                let quick = (Signal::Quick, quick.as_mut() as Pin<&mut dyn Future<Output = ()>>);
                let drain = drain_on.then_some((Signal::Drain, drain.as_mut() as Pin<&mut dyn Future<Output = ()>>));
                turn::poll(cx, &wakes, &mut io, &mut rx, &mut timer, std::iter::once(quick).chain(drain))
            })
            .await
        };
        let step = link.take_turn(turn, &buf, &mut in_batch, &mut rx, now).await;
        if let Err((reason, tls)) = step {
            break End::Failed(reason, tls);
        }
        while let Some(ev) = link.session.poll_event() {
            link.on_event(ev, now());
        }
    };
    (end, link.up)
}

/// The tunnel's own signals, after the sources both ends share
/// ([`turn::Source`]), in the order a turn polls them: the requests it
/// serves itself, then the drain.
const QUICK: usize = turn::Source::COUNT;
const DRAIN: usize = QUICK + 1;
/// The sources the tunnel's loop waits on.
const SOURCES: usize = DRAIN + 1;
// `turn::poll` numbers the signals by their place in what it is given:
// `drive` gives the quick table first, then the drain.
const _: () = assert!(QUICK == turn::Source::COUNT && DRAIN == QUICK + 1);

/// The tunnel's own signals.
#[derive(Clone, Copy)]
enum Signal {
    /// A request served in the loop finished there ([`quick::Table`]).
    Quick,
    Drain,
}

/// What a turn of the tunnel's loop took.
type Turn = turn::Turn<Outbound, Signal>;

impl<'a> Link<'a> {
    fn new(
        env: &'a Env,
        cfg: &'a TunnelConfig,
        shared: &'a Rc<Shared>,
        name: &'a str,
        tx: mpsc::UnboundedSender<Outbound>,
        now: Duration,
    ) -> Self {
        let mut scfg = SessionConfig::new(cfg.connector_id.clone());
        scfg.keepalive = cfg.keepalive;
        scfg.idle_timeout = cfg.keepalive * 3;
        scfg.incarnation = shared.incarnation;
        scfg.ack_hold = ACK_HOLD;
        // Grants follow what the backends take (`Outbound::Consumed`).
        scfg.auto_grant = false;
        Link {
            env,
            cfg,
            shared,
            name,
            session: Session::new(Role::Connector, scfg, now),
            requests: Requests::default(),
            tx,
            up: false,
            _up_guard: None,
            written_then_done: Vec::new(),
            paces: BTreeMap::new(),
            quick: quick::Table::default(),
        }
    }

    /// Where request `id`'s handler sends its answer, paced by the session.
    fn reply(&mut self, id: u64) -> Reply {
        let pace = Rc::new(Pace::default());
        self.paces.insert(id, pace.clone());
        Reply {
            id,
            out: self.tx.clone(),
            pace,
            head_sent: std::cell::Cell::new(false),
            ended: std::cell::Cell::new(false),
        }
    }

    /// Tells each handler how much of its answer still waits in the
    /// session: see [`crate::pace::follow`].
    fn pace(&mut self) {
        crate::pace::follow(&mut self.paces, &self.session);
    }

    /// Acts on what one turn of the loop took (see [`turn::poll`]); `buf`
    /// holds what a read brought, `in_batch` the requests whose last frame
    /// the batch going out carries.
    async fn take_turn(
        &mut self,
        turn: Turn,
        buf: &[u8],
        in_batch: &mut Vec<u64>,
        rx: &mut mpsc::UnboundedReceiver<Outbound>,
        now: impl Fn() -> Duration,
    ) -> Result<(), (String, Option<TlsFailure>)> {
        match turn {
            Turn::Sent(Ok(true)) => {
                // The batch is out: its finished requests' slots go back.
                in_batch.drain(..).for_each(|id| self.requests.finished(id));
                Ok(())
            }
            Turn::Sent(Ok(false)) => Ok(()),
            Turn::Sent(Err(e)) => Err((format!("write: {e}"), Some(TlsFailure::from_io(&e)))),
            Turn::Read(Ok(0)) => Err(("closed by relay".to_string(), None)),
            Turn::Read(Ok(n)) => self.session.handle_input(&buf[..n], now()).map_err(|e| (e.to_string(), None)),
            Turn::Read(Err(e)) => {
                let failure = TlsFailure::from_io(&e);
                Err((format!("read: {failure}"), Some(failure)))
            }
            Turn::Item(out) => self.outbound_turn(out, rx).await.map_err(|e| (e, None)),
            Turn::Timeout => {
                self.expire_quick(now()).map_err(|e| (e, None))?;
                self.session.handle_timeout(now()).map_err(|e| (e.to_string(), None))
            }
            Turn::Signal(Signal::Quick) => self.quick_finished().map_err(|e| (e, None)),
            // The GoAway itself goes out at the top of the loop.
            Turn::Signal(Signal::Drain) => Ok(()),
        }
    }

    /// Hands `out` and whatever else the handlers produce this turn to the
    /// session, so that it all leaves in the same write, at the end of the
    /// turn (see [`crate::outbox::end_of_turn`]).
    async fn outbound_turn(&mut self, out: Outbound, rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Result<(), String> {
        let first = out.id();
        self.outbound(out)?;
        // One request's answer alone (one connection's load): nothing to
        // gather, and the wait would cost a look at the sockets.
        if self.outbound_ready(rx, first)? {
            crate::outbox::end_of_turn().await;
        }
        self.outbound_ready(rx, first).map(drop)
    }

    /// Hands the session what the handlers have produced so far; whether
    /// any of it was for another request than `first`.
    fn outbound_ready(&mut self, rx: &mut mpsc::UnboundedReceiver<Outbound>, first: u64) -> Result<bool, String> {
        let mut others = false;
        while let Ok(more) = rx.try_recv() {
            others |= more.id() != first;
            self.outbound(more)?;
        }
        Ok(others)
    }

    fn on_event(&mut self, ev: Event, now: Duration) {
        let (env, cfg, shared, name) = (self.env, self.cfg, self.shared, self.name);
        match ev {
            Event::Established { .. } => {
                self.up = true;
                self._up_guard = Some(UpGuard::new(shared));
                // A relay took the tunnel: the network works, so a
                // heartbeat that failed need not wait out its backoff.
                shared.network_back.notify_waiters();
                env.emit(AgentEvent::TunnelUp { endpoint: name.to_string() });
            }
            Event::Request { id, head, fin } => {
                if !shared.seen.borrow_mut().insert(id) {
                    env.emit(AgentEvent::DuplicateRefused { id, endpoint: name.to_string() });
                    let _ = self.session.send_cancel(id, CancelReason::Duplicate);
                    return;
                }
                let Some(slot) = shared.slots.try_take(cfg.max_inflight) else {
                    let _ = self.session.send_cancel(id, CancelReason::Overloaded);
                    return;
                };
                let _ = self.session.send_ack(id);
                env.emit_per_request(|| AgentEvent::RequestAccepted { id, endpoint: name.to_string() });
                if let Some(head) = self.requests.accept(id, slot, head, fin) {
                    // Whole and bodiless: served in this loop when its
                    // backend has a kept-alive connection idle.
                    if !self.quick.has_room() {
                        return self.spawn_whole(id, head);
                    }
                    match Quick::start(&shared.backends, head, now + cfg.backend_timeout) {
                        Ok(quick) => self.quick.insert(id, quick),
                        Err(head) => self.spawn_whole(id, head),
                    }
                }
            }
            Event::Body { id, data, fin } => self.on_body(id, data, fin),
            Event::Cancelled { id, .. } => {
                self.quick.cancel(id);
                self.requests.cancel(id);
            }
            Event::GoAway { code, reason } => {
                env.emit(AgentEvent::GoAwayReceived { endpoint: name.to_string(), code, reason });
                if code == GoAwayCode::Moved {
                    shared.moved_away(name);
                }
            }
            Event::Response { .. } | Event::Acked { .. } => {}
        }
    }

    /// A piece of a request's body. What the agent holds (bounded by
    /// `inflight::HELD_BYTES_MAX`) or drops is taken at once; a piece
    /// that starts a handler or is fed to one is taken when its backend
    /// has it.
    fn on_body(&mut self, id: u64, data: Bytes, fin: bool) {
        let (env, cfg, shared) = (self.env, self.cfg, self.shared);
        let len = data.len();
        match self.requests.body(id, data, fin, cfg.request_body_hold_bytes) {
            BodyStep::Ready(head, start) => {
                let reply = self.reply(id);
                let body = RequestBody::started(start, None);
                self.requests.running(id, spawn_handler(env, cfg, shared, head, body, reply));
            }
            BodyStep::Stream(head, start) => {
                let reply = self.reply(id);
                let (sink, feed) = mpsc::unbounded_channel();
                let body = RequestBody::started(start, Some(feed));
                self.requests.feeding(id, spawn_handler(env, cfg, shared, head, body, reply), sink);
            }
            BodyStep::Fed => {}
            BodyStep::Partial | BodyStep::Unknown => self.session.consumed(id, len),
        }
    }

    /// Hands one piece of a handler's answer to the session. The last
    /// frame (or a reset) ends the request: its slot goes back once the
    /// frame is written.
    fn outbound(&mut self, out: Outbound) -> Result<(), String> {
        let (id, res) = match out {
            Outbound::Head { id, status, headers, fin } => {
                if fin {
                    self.answer_ended(id);
                }
                (id, self.session.send_response(id, status, headers, fin))
            }
            Outbound::Body { id, data, fin } => {
                if fin {
                    self.answer_ended(id);
                }
                if let Some(pace) = self.paces.get(&id) {
                    pace.taken(data.len());
                }
                (id, self.session.send_body(id, data, fin))
            }
            Outbound::Reset { id } => {
                self.written_then_done.push(id);
                (id, self.session.send_cancel(id, CancelReason::BackendBrokeOff))
            }
            Outbound::Consumed { id, bytes } => {
                self.session.consumed(id, bytes);
                return Ok(());
            }
        };
        match res {
            // The relay cancelled the stream meanwhile: drop the rest.
            Err(SessionError::UnknownStream { .. }) => {
                tracing::debug!("dropping output for cancelled request {id}");
                Ok(())
            }
            // The backend's head does not fit a frame: that request alone
            // fails (502), its handler stops, the tunnel carries on.
            Err(SessionError::HeadTooLarge { id, error }) => {
                self.requests.cancel(id);
                // Its handler is stopped: what it was fed is dropped.
                self.session.discard_body(id);
                let d = crate::diag::Diagnostic::new(
                    code::BACKEND_RESPONSE_HEAD_TOO_LARGE,
                    Some(EventId::Backend),
                    format!("the backend's response head for request {id} cannot be relayed: {error}"),
                    "make the backend send fewer or shorter response headers (each under 64 KiB, all under 256 KiB)",
                );
                self.env.emit(AgentEvent::Diagnostic(d.clone()));
                let headers = [("x-connector-error", d.code)].into_iter().collect();
                self.session.send_response(id, 502, headers, true).map_err(|e| e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }

    /// The session's next deadline, or a request served in the loop
    /// timing out, whichever is first.
    fn next_deadline(&self) -> Option<Duration> {
        match (self.session.poll_timeout(), self.quick.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Serves bodiless request `id` with a task.
    fn spawn_whole(&mut self, id: u64, head: RequestHead) {
        let reply = self.reply(id);
        let body = RequestBody::whole(Bytes::new());
        self.requests.running(id, spawn_handler(self.env, self.cfg, self.shared, head, body, reply));
    }

    /// Hands the session the answers of requests the loop finished
    /// serving, and to tasks those that leave it (see [`quick`]).
    fn quick_finished(&mut self) -> Result<(), String> {
        while let Some((id, quick, polled)) = self.quick.pop_finished() {
            self.quick_step(id, quick, polled)?;
        }
        Ok(())
    }

    /// Hands on request `id`, which `polled` took out of the loop.
    fn quick_step(&mut self, id: u64, quick: Quick, polled: quick::Polled) -> Result<(), String> {
        match quick.step(polled, &self.shared.backends) {
            Step::Answered { status, headers, body } => return self.answer(id, status, headers, body),
            Step::Broke(diag) => return self.gateway_error(id, 502, diag),
            Step::Unwritten(head) => self.spawn_whole(id, head),
            Step::Begun(begun) => {
                let reply = self.reply(id);
                let (env, pool) = (self.env.clone(), self.shared.backends.clone());
                let task = backend::serve_begun(env, pool, begun, self.cfg.backend_timeout, reply);
                // Boxed, as `spawn_handler`'s.
                self.requests.running(id, tokio::task::spawn_local(Box::pin(task)));
            }
        }
        Ok(())
    }

    /// Answers the requests served in the loop whose backend has not
    /// answered by `now` with a 504, as a task's timeout does.
    fn expire_quick(&mut self, now: Duration) -> Result<(), String> {
        while let Some((id, mut quick)) = self.quick.pop_expired(now) {
            // An answer that came as the deadline passed wins, as a task's
            // work is polled before its timeout: polled once more, outside
            // the task's budget (spent, it would read as nothing there).
            let once = tokio::task::unconstrained(std::future::poll_fn(|cx| Poll::Ready(quick.poll(cx))));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::pin::pin!(once).poll(&mut cx) {
                Poll::Ready(Poll::Ready(polled)) if !matches!(polled, quick::Polled::Unwritten) => {
                    self.quick_step(id, quick, polled)?
                }
                _ => self.gateway_error(id, 504, quick.timed_out(self.cfg.backend_timeout))?,
            }
        }
        Ok(())
    }

    /// Reports `diag` and answers request `id` with it (see
    /// [`backend::gateway_answer`]).
    fn gateway_error(&mut self, id: u64, status: u16, diag: crate::diag::Diagnostic) -> Result<(), String> {
        let (headers, body) = backend::gateway_answer(&diag);
        self.env.emit(AgentEvent::Diagnostic(diag));
        self.answer(id, status, headers, body)
    }

    /// Request `id`'s whole answer, as a task sends it
    /// ([`backend::whole_answer`]), and the request reported served. (A
    /// head the session refuses is answered 502 by `outbound`; the body
    /// then finds its stream ended, as a task's does.)
    fn answer(&mut self, id: u64, status: u16, headers: crate::proto::Headers, body: Bytes) -> Result<(), String> {
        let (head, body) = backend::whole_answer(id, status, headers, body);
        self.outbound(head)?;
        if let Some(body) = body {
            self.outbound(body)?;
        }
        self.env.emit_per_request(|| AgentEvent::RequestServed { id, status });
        Ok(())
    }

    /// Request `id`'s last answer frame is handed over: its slot goes back
    /// once that is written, and its handler reads no more of the body.
    fn answer_ended(&mut self, id: u64) {
        self.written_then_done.push(id);
        self.session.discard_body(id);
    }
}

fn spawn_handler(
    env: &Env,
    cfg: &TunnelConfig,
    shared: &Shared,
    head: RequestHead,
    body: RequestBody,
    reply: Reply,
) -> JoinHandle<()> {
    // Boxed: tokio moves a task's future into its cell and writes the
    // cell's stage whole when the task ends, so a future of kilobytes
    // stored inline was copied several times a request.
    tokio::task::spawn_local(Box::pin(backend::serve(
        env.clone(),
        shared.backends.clone(),
        head,
        body,
        cfg.backend_timeout,
        reply,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ids_refuse_repeats_and_stay_bounded() {
        let mut s = SeenIds::new(2);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(2));
        assert!(s.insert(3));
        assert_eq!(s.set.len(), 2);
        assert!(s.insert(1), "oldest id forgotten past capacity");
    }
}
