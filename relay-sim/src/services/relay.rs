//! A relay endpoint (`*.servicebus.windows.net`): accepts connectors' mTLS
//! tunnels, registers them in the cloud's routing table, and carries
//! dispatched requests down them and the answers back.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use connector::net::BoxStream;
use connector::outbox::Outbox;
use connector::pace::Pace;
use connector::proto::session::DEFAULT_MAX_STREAMS;
use connector::proto::{CancelReason, Event, GoAwayCode, Role, Session, SessionConfig, SessionError};
use connector::time::Timer;
use connector::turn::{self, Halves};
use connector::wakes::Wakes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::body::Delivery;
use crate::cloud::{Cloud, CloudError, Dispatch, ToTunnel, TunnelHandle};
use crate::event::CloudEvent;
use crate::pki::subject_cn;
use crate::server::{accept_tls, ConnInfo, Listener};

/// Serves the relay endpoint `host`.
pub async fn serve(cloud: Rc<Cloud>, host: String, listener: impl Listener) -> Result<(), CloudError> {
    let tls = cloud.tls_source(&host, true);
    accept_tls(listener, tls, move |info: ConnInfo, stream| tunnel(cloud.clone(), host.clone(), info, stream)).await;
    Ok(())
}

struct Pending {
    reply: crate::body::Reply,
    acked: bool,
}

/// Removes the tunnel from the routing table however the task ends
/// (including a host crash, which drops the task).
struct Registration {
    cloud: Rc<Cloud>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.cloud.remove_tunnel(self.id);
    }
}

/// The requests a tunnel carries, besides its session.
#[derive(Default)]
struct Carried {
    pending: BTreeMap<u64, Pending>,
    /// Uploads still arriving from the ingress, by request id: their pace
    /// is how much of them waits in the session.
    uploads: BTreeMap<u64, Rc<Pace>>,
}

impl Carried {
    /// Acts on one word from the ingress (`open`: the tunnel is routed,
    /// not drained).
    fn take(&mut self, session: &mut Session, open: bool, word: ToTunnel) -> Result<(), String> {
        match word {
            ToTunnel::Dispatch(d) => self.dispatch(session, open, d),
            ToTunnel::Body { id, data, fin } => {
                if let Some(pace) = self.uploads.get(&id) {
                    pace.taken(data.len());
                }
                if fin {
                    self.uploads.remove(&id);
                }
                match session.send_body(id, data, fin) {
                    // The stream ended meanwhile (cancelled, or answered
                    // and closed): the rest of the upload has nowhere to go.
                    Err(SessionError::UnknownStream { .. }) => Ok(()),
                    other => other.map_err(|e| e.to_string()),
                }
            }
            ToTunnel::Abandon { id } => {
                if let Some(pace) = self.uploads.remove(&id) {
                    pace.close();
                }
                self.pending.remove(&id);
                // Unknown to the session when it has already ended.
                let _ = session.send_cancel(id, CancelReason::Abandoned);
                Ok(())
            }
        }
    }

    /// Acts on every word from the ingress waiting now.
    fn take_ready(
        &mut self,
        session: &mut Session,
        open: bool,
        rx: &mut mpsc::UnboundedReceiver<ToTunnel>,
    ) -> Result<(), String> {
        while let Ok(word) = rx.try_recv() {
            self.take(session, open, word)?;
        }
        Ok(())
    }

    /// Puts a user's request on the session. A head that cannot be framed
    /// fails that request alone; any other refusal fails it (unacknowledged)
    /// and ends the tunnel.
    fn dispatch(&mut self, session: &mut Session, open: bool, d: Dispatch) -> Result<(), String> {
        // Draining, or as many open at once as a connector takes (its session
        // would fail the whole tunnel): the ingress offers it to another tunnel.
        // The session's count, not `pending`: a stream whose answer is done
        // still counts on both sides until the rest of its upload has gone.
        if !open || session.open_streams() >= DEFAULT_MAX_STREAMS {
            let _ = d.reply.send(Delivery::Cancelled(CancelReason::Overloaded));
            return Ok(());
        }
        let more = d.upload.is_some();
        let fin = d.body.is_empty() && !more;
        let mut res = session.send_request(d.id, &d.head, fin);
        if res.is_ok() && !d.body.is_empty() {
            res = session.send_body(d.id, d.body, !more);
        }
        match res {
            Ok(()) => {
                self.pending.insert(d.id, Pending { reply: d.reply, acked: false });
                if let Some(pace) = d.upload {
                    self.uploads.insert(d.id, pace);
                }
                Ok(())
            }
            Err(e @ SessionError::HeadTooLarge { .. }) => {
                let _ = d.reply.send(Delivery::Unsendable(e.to_string()));
                Ok(())
            }
            Err(e) => {
                let _ = d.reply.send(Delivery::Lost { acked: false, reason: e.to_string() });
                Err(e.to_string())
            }
        }
    }

    /// Tells each upload how much of it still waits in the session; one
    /// whose stream is gone is told to stop.
    fn pace(&mut self, session: &Session) {
        connector::pace::follow(&mut self.uploads, session);
    }
}

impl Drop for Carried {
    /// The tunnel ended: no upload it carried can go on.
    fn drop(&mut self) {
        self.uploads.values().for_each(|pace| pace.close());
    }
}

/// Passes the connector's answer to a request on to the user waiting for it.
fn deliver(pending: &mut BTreeMap<u64, Pending>, ev: Event) {
    match ev {
        Event::Acked { id } => {
            if let Some(p) = pending.get_mut(&id) {
                p.acked = true;
                let _ = p.reply.send(Delivery::Acked);
            }
        }
        Event::Response { id, status, headers, fin } => {
            if let Some(p) = pending.get(&id) {
                let _ = p.reply.send(Delivery::Head { status, headers });
                if fin {
                    let _ = p.reply.send(Delivery::Body { data: bytes::Bytes::new(), fin: true });
                    pending.remove(&id);
                }
            }
        }
        Event::Body { id, data, fin } => {
            if let Some(p) = pending.get(&id) {
                let _ = p.reply.send(Delivery::Body { data, fin });
            }
            if fin {
                pending.remove(&id);
            }
        }
        Event::Cancelled { id, reason } => {
            if let Some(p) = pending.remove(&id) {
                let _ = p.reply.send(Delivery::Cancelled(reason));
            }
        }
        Event::Established { .. } | Event::GoAway { .. } | Event::Request { .. } => {}
    }
}

/// The tunnel's place in the cloud.
struct Here<'a> {
    cloud: &'a Rc<Cloud>,
    connector_id: &'a str,
    endpoint: &'a str,
    tx: &'a mpsc::UnboundedSender<ToTunnel>,
    /// The session's open requests, for the ingress's choice of tunnel.
    open: Rc<std::cell::Cell<usize>>,
}

impl Here<'_> {
    /// Routes requests down the tunnel once the connector said Hello (if
    /// this relay serves it: see [`Here::send_away`]), stops after its
    /// GoAway, and passes its answers on.
    fn on_event(
        &self,
        ev: Event,
        session: &mut Session,
        registration: &mut Option<Registration>,
        pending: &mut BTreeMap<u64, Pending>,
    ) {
        match ev {
            Event::Established { .. } if !self.cloud.serves_here(self.connector_id, self.endpoint) => {
                self.send_away(session, registration);
            }
            Event::Established { incarnation, .. } => {
                let id = self.cloud.add_tunnel(TunnelHandle {
                    open: self.open.clone(),
                    connector_id: self.connector_id.into(),
                    incarnation,
                    endpoint: self.endpoint.into(),
                    tx: self.tx.clone(),
                });
                *registration = Some(Registration { cloud: self.cloud.clone(), id });
                self.cloud.emit(CloudEvent::TunnelOpened {
                    connector_id: self.connector_id.to_string(),
                    endpoint: self.endpoint.to_string(),
                });
            }
            // The connector drains: no new request goes down this tunnel;
            // those in flight finish.
            Event::GoAway { .. } => drop(registration.take()),
            other => deliver(pending, other),
        }
    }

    /// The routing changed: a revoked connector's tunnel ends; one this
    /// relay no longer serves is sent away.
    fn look_again(&self, session: &mut Session, registration: &mut Option<Registration>) -> Result<(), String> {
        if self.cloud.is_revoked(self.connector_id) {
            return Err("connector certificate revoked".to_string());
        }
        if registration.is_some() && !self.cloud.serves_here(self.connector_id, self.endpoint) {
            self.send_away(session, registration);
        }
        Ok(())
    }

    /// This relay does not serve the connector (its tenant moved to
    /// another instance, or its group is pinned elsewhere): no request is
    /// routed here any more, those in flight finish, and GoAway `Moved`
    /// tells the connector to ask bootstrap where to go.
    fn send_away(&self, session: &mut Session, registration: &mut Option<Registration>) {
        drop(registration.take());
        let reason = "this relay does not serve the connector's tenant or group; bootstrap names the ones that do";
        if session.send_goaway(GoAwayCode::Moved, reason).is_ok() {
            self.cloud.emit(CloudEvent::TunnelMovedAway {
                connector_id: self.connector_id.to_string(),
                endpoint: self.endpoint.to_string(),
            });
        }
    }
}

async fn tunnel(cloud: Rc<Cloud>, endpoint: String, info: ConnInfo, stream: TlsStream<BoxStream>) {
    let Some(connector_id) = info.client_certs.first().and_then(subject_cn) else { return };
    if !cloud.is_registered(&connector_id) || cloud.is_revoked(&connector_id) {
        return;
    }
    let mut seen_routing = cloud.routing_generation();
    // When a pin set earlier changes the routing: reckoned again each time
    // the routing changes (setting a pin is such a change), not per frame.
    let pin_at = |cloud: &Cloud| cloud.until_next_pin().map(|d| tokio::time::Instant::now() + d);
    let mut next_pin = pin_at(&cloud);
    let origin = tokio::time::Instant::now();
    let now = || origin.elapsed();
    let mut cfg = SessionConfig::new(endpoint.clone());
    cfg.keepalive = Duration::from_secs(cloud.config.keepalive_s.max(1));
    cfg.idle_timeout = cfg.keepalive * 3;
    let mut session = Session::new(Role::Relay, cfg, now());
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<ToTunnel>();
    let mut carried = Carried::default();
    let mut registration: Option<Registration> = None;
    let mut buf = vec![0u8; 16 * 1024];
    // Written while the loop keeps reading: see `Outbox`.
    let mut outbox = Outbox::default();
    let open = Rc::new(std::cell::Cell::new(0));
    // The session's next deadline, kept across turns (see `Timer`).
    let mut timer = Timer::new(origin + Duration::from_secs(3600));
    let here = Here { cloud: &cloud, connector_id: &connector_id, endpoint: &endpoint, tx: &tx, open: open.clone() };
    // Which sources woke the loop: only those are polled (see `turn::poll`).
    let wakes = Wakes::<SOURCES>::new();

    let reason = loop {
        // Everything queued comes as one buffer: one write, one TLS record.
        if outbox.is_idle() {
            if let Some(bytes) = session.poll_transmit(now()) {
                outbox.load(bytes);
                wakes.mark(turn::Source::Outbox as usize);
            }
            carried.pace(&session);
        }
        let deadline = origin + session.poll_timeout().unwrap_or(Duration::from_secs(3600));
        if timer.set(deadline) {
            wakes.mark(turn::Source::Timer as usize);
        }
        let mut io = Halves { outbox: &mut outbox, writer: &mut writer, reader: &mut reader, buf: &mut buf };
        let turn = next_turn(&cloud, next_pin, &wakes, &mut io, &mut rx, &mut timer).await;
        let look_again = matches!(turn, Turn::Signal(Signal::Pin));
        let step = take_turn(turn, &mut session, &mut carried, registration.is_some(), &mut rx, &buf, now).await;
        if let Err(r) = step {
            break r;
        }
        if look_again || cloud.routing_generation() != seen_routing {
            seen_routing = cloud.routing_generation();
            next_pin = pin_at(&cloud);
            if let Err(r) = here.look_again(&mut session, &mut registration) {
                break r;
            }
        }
        while let Some(ev) = session.poll_event() {
            here.on_event(ev, &mut session, &mut registration, &mut carried.pending);
        }
        open.set(session.open_streams());
    };
    drop(registration);
    for (_, p) in std::mem::take(&mut carried.pending) {
        let _ = p.reply.send(Delivery::Lost { acked: p.acked, reason: reason.clone() });
    }
    cloud.emit(CloudEvent::TunnelClosed { connector_id, endpoint, reason });
}

/// The next turn of a tunnel's loop: the first ready source among those
/// woken. The routing signal and the pin's end are waited for anew each
/// turn and dropped once it is taken, as `select!` made them: the tunnels
/// then stand in the routing signal's list in the order they last turned.
async fn next_turn<R, W>(
    cloud: &Cloud,
    next_pin: Option<tokio::time::Instant>,
    wakes: &Wakes<SOURCES>,
    io: &mut Halves<'_, R, W>,
    rx: &mut mpsc::UnboundedReceiver<ToTunnel>,
    timer: &mut Timer,
) -> Turn
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    wakes.mark(Signal::Routing.source());
    wakes.mark(Signal::Pin.source());
    let mut routing = std::pin::pin!(cloud.routing_changes());
    let mut pin = std::pin::pin!(async move {
        match next_pin {
            Some(at) => connector::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    });
    std::future::poll_fn(|cx| {
        let routing: Pin<&mut dyn Future<Output = ()>> = routing.as_mut();
        turn::poll(cx, wakes, io, rx, timer, [(Signal::Routing, routing), (Signal::Pin, pin.as_mut())])
    })
    .await
}

/// Acts on what one turn took; `buf` holds what a read brought, `open`
/// whether the tunnel is still routed to (registered).
async fn take_turn(
    turn: Turn,
    session: &mut Session,
    carried: &mut Carried,
    open: bool,
    rx: &mut mpsc::UnboundedReceiver<ToTunnel>,
    buf: &[u8],
    now: impl Fn() -> Duration,
) -> Result<(), String> {
    match turn {
        Turn::Sent(sent) => sent.map(drop).map_err(|e| format!("write: {e}")),
        Turn::Read(Ok(0)) => Err("closed by connector".into()),
        Turn::Read(Ok(n)) => session.handle_input(&buf[..n], now()).map_err(|e| e.to_string()),
        Turn::Read(Err(e)) => Err(format!("read: {e}")),
        Turn::Item(d) => {
            // And every other request of this turn, so they share the
            // write, which goes last in the turn (see `end_of_turn`).
            // After the connector's GoAway (no longer routed here), what
            // was already on its way is offered to another tunnel.
            // One word alone (one connection's load): nothing to gather,
            // and the wait would cost a look at the sockets.
            let more = !rx.is_empty();
            let res = carried.take(session, open, d).and_then(|()| carried.take_ready(session, open, rx));
            if more && res.is_ok() {
                connector::outbox::end_of_turn().await;
            }
            res.and_then(|()| carried.take_ready(session, open, rx))
        }
        Turn::Timeout => session.handle_timeout(now()).map_err(|e| e.to_string()),
        Turn::Signal(_) => Ok(()),
    }
}

/// The relay's own signals, after the sources both ends share
/// ([`turn::Source`]), in the order a turn takes them: a change of
/// routing, the next pin's end.
#[derive(Clone, Copy)]
enum Signal {
    Routing,
    Pin,
}

impl Signal {
    /// Its number among the loop's sources.
    const fn source(self) -> usize {
        turn::Source::COUNT + self as usize
    }
}

/// The sources the relay's loop waits on.
const SOURCES: usize = Signal::Pin.source() + 1;

/// What a turn of the relay's loop took.
type Turn = turn::Turn<ToTunnel, Signal>;
