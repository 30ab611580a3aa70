//! Property tests of the tunnel protocol, without a network: the codec
//! round-trips every frame, arbitrary bytes never panic the decoder or the
//! session, and how bytes are chunked never changes what is decoded.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use connector::proto::frame::{Decoder, DEFAULT_MAX_FRAME_BYTES};
use connector::proto::{CancelReason, Event, Frame, GoAwayCode, Headers, RequestHead, Role, Session, SessionConfig};
use proptest::prelude::*;

fn headers() -> impl Strategy<Value = Headers> {
    prop::collection::vec(("[a-z-]{1,12}", "[ -~]{0,24}"), 0..12).prop_map(|pairs| pairs.into_iter().collect())
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), "[a-z0-9-]{0,20}", any::<u64>()).prop_map(
            |(version, max_frame_bytes, peer, incarnation)| Frame::Hello {
                version,
                max_frame_bytes,
                peer,
                incarnation
            }
        ),
        (any::<u64>(), prop_oneof!["[A-Z]{1,7}", Just("GET".to_string())], "[ -~]{0,60}", headers(), any::<bool>())
            .prop_map(|(id, method, path, headers, fin)| Frame::Request {
                id,
                method: method.into(),
                path,
                headers,
                fin
            }),
        (any::<u64>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(id, fin, d)| Frame::Body { id, fin, data: Bytes::from(d) }),
        (any::<u64>(), 100u16..1000, headers(), any::<bool>()).prop_map(|(id, status, headers, fin)| Frame::Response {
            id,
            status,
            headers,
            fin
        }),
        any::<u64>().prop_map(|id| Frame::Ack { id }),
        (
            any::<u64>(),
            prop_oneof![
                Just(CancelReason::Duplicate),
                Just(CancelReason::Abandoned),
                Just(CancelReason::Draining),
                Just(CancelReason::Overloaded),
                Just(CancelReason::BackendBrokeOff)
            ]
        )
            .prop_map(|(id, reason)| Frame::Cancel { id, reason }),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        (prop_oneof![Just(GoAwayCode::Draining), Just(GoAwayCode::Moved)], "[ -~]{0,40}")
            .prop_map(|(code, reason)| Frame::GoAway { code, reason }),
    ]
}

fn decode_in_chunks(bytes: &[u8], chunk: usize) -> Result<Vec<Frame>, String> {
    let mut d = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
    let mut out = Vec::new();
    for part in bytes.chunks(chunk.max(1)) {
        d.extend(part);
        while let Some(f) = d.next_frame().map_err(|e| e.to_string())? {
            out.push(f);
        }
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frames_roundtrip_whatever_the_chunking(frames in prop::collection::vec(frame(), 1..12), chunk in 1usize..64) {
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        }
        prop_assert_eq!(decode_in_chunks(&buf, chunk).unwrap(), frames.clone());
        prop_assert_eq!(decode_in_chunks(&buf, buf.len()).unwrap(), frames);
    }

    #[test]
    fn garbage_decodes_the_same_however_it_arrives(bytes in prop::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..128) {
        // Frames and errors depend on the bytes, never on how the network
        // cut them: a decoder that kept state wrongly across reads would
        // answer differently here.
        prop_assert_eq!(decode_in_chunks(&bytes, chunk), decode_in_chunks(&bytes, bytes.len()));
    }

    #[test]
    fn a_session_fed_garbage_fails_for_good(bytes in prop::collection::vec(any::<u8>(), 0..2048), role_is_relay in any::<bool>(), cut in any::<prop::sample::Index>()) {
        let role = if role_is_relay { Role::Relay } else { Role::Connector };
        let feed = |parts: &[&[u8]]| {
            let mut s = Session::new(role, SessionConfig::new("x"), Duration::ZERO);
            let result = parts.iter().try_for_each(|p| s.handle_input(p, Duration::ZERO)).map_err(|e| e.to_string());
            let events: Vec<String> = std::iter::from_fn(|| s.poll_event()).map(|e| format!("{e:?}")).collect();
            (s, result, events)
        };
        let (mut s, result, events) = feed(&[&bytes]);
        // The same bytes in two reads: the same outcome and events.
        let at = cut.index(bytes.len() + 1);
        let (_, split_result, split_events) = feed(&[&bytes[..at], &bytes[at..]]);
        prop_assert_eq!(&result, &split_result);
        prop_assert_eq!(&events, &split_events);
        // A refused input closes the session: nothing more is taken.
        if result.is_err() {
            prop_assert!(s.is_closed());
            prop_assert!(s.handle_input(b"", Duration::ZERO).is_err());
            prop_assert!(s.handle_timeout(Duration::from_secs(5)).is_err());
        }
    }

    /// A well-formed exchange of many requests, delivered in arbitrary
    /// chunks, yields every response exactly once and leaves no stream open.
    #[test]
    fn every_request_gets_exactly_one_response(n in 1u64..20, chunk in 1usize..97, body_len in 0usize..5000) {
        let t = Duration::ZERO;
        let mut c = Session::new(Role::Connector, SessionConfig::new("c"), t);
        let mut r = Session::new(Role::Relay, SessionConfig::new("r"), t);
        let pump = |from: &mut Session, to: &mut Session| {
            while let Some(b) = from.poll_transmit(t) {
                for part in b.chunks(chunk) {
                    to.handle_input(part, t).unwrap();
                }
            }
        };
        pump(&mut c, &mut r);
        pump(&mut r, &mut c);
        for id in 1..=n {
            let head = RequestHead { method: "POST".into(), path: format!("/{id}"), headers: Headers::new() };
            r.send_request(id, &head, false).unwrap();
            r.send_body(id, Bytes::from(vec![id as u8; body_len]), true).unwrap();
        }
        pump(&mut r, &mut c);
        let mut got_requests = 0;
        while let Some(ev) = c.poll_event() {
            if let Event::Request { id, .. } = ev {
                got_requests += 1;
                c.send_ack(id).unwrap();
                c.send_response(id, 200, Headers::new(), false).unwrap();
                c.send_body(id, Bytes::from(vec![1u8; body_len]), true).unwrap();
            }
        }
        prop_assert_eq!(got_requests, n);
        pump(&mut c, &mut r);
        let mut responses = std::collections::BTreeMap::new();
        let mut bytes = 0usize;
        while let Some(ev) = r.poll_event() {
            match ev {
                Event::Response { id, .. } => *responses.entry(id).or_insert(0) += 1,
                Event::Body { data, .. } => bytes += data.len(),
                _ => {}
            }
        }
        prop_assert_eq!(responses.len() as u64, n);
        prop_assert!(responses.values().all(|c| *c == 1));
        prop_assert_eq!(bytes, body_len * n as usize);
        prop_assert_eq!(c.open_streams(), 0);
        prop_assert_eq!(r.open_streams(), 0);
    }
}

/// One step of the model-based test: a local API call on one side, or the
/// delivery of everything one side has written to the other.
#[derive(Debug, Clone)]
enum Op {
    Request { id: u64, fin: bool },
    RequestBody { id: u64, fin: bool },
    Ack { id: u64 },
    Response { id: u64, fin: bool },
    ResponseBody { id: u64, fin: bool },
    RelayCancel { id: u64 },
    ConnectorCancel { id: u64 },
    DeliverToConnector,
    DeliverToRelay,
}

/// Few ids, so that calls often meet a stream in the state they need.
const IDS: std::ops::Range<u64> = 1..4;

fn op() -> impl Strategy<Value = Op> {
    let id = IDS;
    prop_oneof![
        (id.clone(), any::<bool>()).prop_map(|(id, fin)| Op::Request { id, fin }),
        (id.clone(), any::<bool>()).prop_map(|(id, fin)| Op::RequestBody { id, fin }),
        id.clone().prop_map(|id| Op::Ack { id }),
        (id.clone(), any::<bool>()).prop_map(|(id, fin)| Op::Response { id, fin }),
        (id.clone(), any::<bool>()).prop_map(|(id, fin)| Op::ResponseBody { id, fin }),
        id.clone().prop_map(|id| Op::RelayCancel { id }),
        id.prop_map(|id| Op::ConnectorCancel { id }),
        Just(Op::DeliverToConnector),
        Just(Op::DeliverToConnector),
        Just(Op::DeliverToRelay),
        Just(Op::DeliverToRelay),
    ]
}

/// A frame on the wire, as the model sees it: which stream, which kind,
/// whether it ends its half, and for a body which piece it carries (each
/// piece sent is numbered, and carries its number). Events are compared in
/// the same terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Request { id: u64, fin: bool },
    Body { id: u64, fin: bool, piece: u32 },
    Ack { id: u64 },
    Response { id: u64, fin: bool },
    Cancel { id: u64 },
}

impl Wire {
    fn id(self) -> u64 {
        match self {
            Wire::Request { id, .. }
            | Wire::Body { id, .. }
            | Wire::Ack { id }
            | Wire::Response { id, .. }
            | Wire::Cancel { id } => id,
        }
    }

    /// The model's terms for what a session reported (`None`: an event
    /// about no stream, which this test never causes).
    fn reported(ev: &Event) -> Option<Wire> {
        Some(match *ev {
            Event::Request { id, fin, .. } => Wire::Request { id, fin },
            Event::Body { id, fin, ref data } => {
                let piece = std::str::from_utf8(data).ok().and_then(|t| t.parse().ok()).unwrap_or(u32::MAX);
                Wire::Body { id, fin, piece }
            }
            Event::Acked { id } => Wire::Ack { id },
            Event::Response { id, fin, .. } => Wire::Response { id, fin },
            Event::Cancelled { id, .. } => Wire::Cancel { id },
            Event::Established { .. } | Event::GoAway { .. } => return None,
        })
    }
}

/// One side's view of a stream. "Out" is the half this side sends (the
/// request for the relay, the response for the connector), "in" the half
/// it receives.
#[derive(Debug, Clone, Copy, Default)]
struct ModelStream {
    in_started: bool,
    out_started: bool,
    /// The API was told this half is complete.
    out_fin_given: bool,
    /// The frame ending this half is on the wire.
    out_fin_sent: bool,
    in_fin: bool,
}

/// One side of the tunnel as the protocol's rules describe it, written
/// from the rules rather than from `Session`, and fed only with what the
/// test did: the calls it made and the frames it carried. It predicts the
/// API's answers, the frames each side puts on the wire (heads at once,
/// bodies when the side next transmits: true of the one-byte pieces this
/// test sends, far within a stream's window and a transmit's batch), the
/// events the receiver reports and the streams each side still holds.
#[derive(Debug, Default)]
struct SideModel {
    streams: std::collections::BTreeMap<u64, ModelStream>,
    /// Heads, acks and cancels, in the order they were queued.
    outbox: Vec<Wire>,
    /// Body frames waiting for the next transmit.
    waiting: Vec<Wire>,
    /// Streams this side cancelled: the peer's frames for them may cross
    /// the cancel and are dropped without an event.
    cancelled: std::collections::BTreeSet<u64>,
}

impl SideModel {
    /// A stream ends when its in half arrived complete and its out half's
    /// last frame is on the wire.
    fn reap(&mut self, id: u64) {
        if self.streams.get(&id).is_some_and(|s| s.in_fin && s.out_fin_sent) {
            self.streams.remove(&id);
        }
    }

    fn stream(&self, id: u64) -> Option<ModelStream> {
        self.streams.get(&id).copied()
    }

    /// (Relay) a request head; it is on the wire at once.
    fn open(&mut self, id: u64, fin: bool) {
        let s = ModelStream { out_started: true, out_fin_given: fin, out_fin_sent: fin, ..ModelStream::default() };
        self.streams.insert(id, s);
        self.outbox.push(Wire::Request { id, fin });
    }

    /// A body piece of this side's half is legal while that half has
    /// started and is not complete.
    fn body_legal(&self, id: u64) -> bool {
        self.stream(id).is_some_and(|s| s.out_started && !s.out_fin_given)
    }

    fn body(&mut self, id: u64, fin: bool, piece: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.out_fin_given |= fin;
        }
        self.waiting.push(Wire::Body { id, fin, piece });
    }

    /// (Connector) an ack or a response head is legal before the response
    /// started.
    fn head_legal(&self, id: u64) -> bool {
        self.stream(id).is_some_and(|s| !s.out_started)
    }

    fn ack(&mut self, id: u64) {
        self.outbox.push(Wire::Ack { id });
    }

    fn respond(&mut self, id: u64, fin: bool) {
        if let Some(s) = self.streams.get_mut(&id) {
            *s = ModelStream { out_started: true, out_fin_given: fin, out_fin_sent: fin, ..*s };
        }
        self.outbox.push(Wire::Response { id, fin });
        self.reap(id);
    }

    /// Forgets the stream, with any of its body not yet sent.
    fn cancel(&mut self, id: u64) {
        self.streams.remove(&id);
        self.waiting.retain(|w| w.id() != id);
        self.cancelled.insert(id);
        self.outbox.push(Wire::Cancel { id });
    }

    /// Everything this side puts on the wire at its next transmit.
    fn transmit(&mut self) -> Vec<Wire> {
        let mut out = std::mem::take(&mut self.outbox);
        for w in std::mem::take(&mut self.waiting) {
            if let Wire::Body { id, fin: true, .. } = w {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.out_fin_sent = true;
                }
                self.reap(id);
            }
            out.push(w);
        }
        out
    }

    /// A frame from the peer: the event it gives, if any, or why the
    /// peer broke the rules (which a test that drives both sides by the
    /// rules never makes it do).
    fn receive(&mut self, w: Wire) -> Result<Option<Wire>, String> {
        let id = w.id();
        if let Wire::Request { fin, .. } = w {
            if self.streams.contains_key(&id) {
                return Err(format!("{w:?}: stream {id} is open"));
            }
            self.streams.insert(id, ModelStream { in_started: true, in_fin: fin, ..ModelStream::default() });
            return Ok(Some(w));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            // Gone: a cancel crossing anything is dropped, and so is what
            // crossed this side's own cancel.
            return match w {
                Wire::Cancel { .. } => Ok(None),
                _ if self.cancelled.contains(&id) => Ok(None),
                _ => Err(format!("{w:?}: no stream {id} and it was not cancelled here")),
            };
        };
        match w {
            Wire::Cancel { .. } => {
                self.streams.remove(&id);
            }
            Wire::Response { fin, .. } if !s.in_started => {
                s.in_started = true;
                s.in_fin = fin;
            }
            Wire::Body { fin, .. } if s.in_started && !s.in_fin => s.in_fin = fin,
            Wire::Ack { .. } if !s.in_started => {}
            _ => return Err(format!("{w:?}: stream {id}'s incoming half is complete")),
        }
        self.reap(id);
        Ok(Some(w))
    }
}

/// Events per stream, in order: across streams a session may interleave
/// bodies as it likes, within one the order is the protocol's.
fn per_stream(events: impl IntoIterator<Item = Wire>) -> std::collections::BTreeMap<u64, Vec<Wire>> {
    let mut by_id = std::collections::BTreeMap::<u64, Vec<Wire>>::new();
    for w in events {
        by_id.entry(w.id()).or_default().push(w);
    }
    by_id
}

/// Carries everything `from` has written to `to`, in both the sessions
/// and the models, and checks that `to` reported what its model expects.
fn deliver(
    (from, from_model): (&mut Session, &mut SideModel),
    (to, to_model): (&mut Session, &mut SideModel),
) -> Result<(), TestCaseError> {
    let t = Duration::ZERO;
    while let Some(b) = from.poll_transmit(t) {
        let res = to.handle_input(&b, t);
        prop_assert!(res.is_ok(), "{:?} refused {:?}'s frames: {:?}", to.role(), from.role(), res);
    }
    let mut expected = Vec::new();
    for w in from_model.transmit() {
        if let Some(ev) = to_model.receive(w).map_err(TestCaseError::fail)? {
            expected.push(ev);
        }
    }
    let mut reported = Vec::new();
    while let Some(ev) = to.poll_event() {
        let w = Wire::reported(&ev);
        prop_assert!(w.is_some(), "unexpected event {:?}", ev);
        reported.extend(w);
    }
    // Heads, acks and cancels go out in the order they were made, across
    // streams too (the order requests reach the connector is the order it
    // counts and serves them); bodies interleave by turn.
    let heads =
        |events: &[Wire]| events.iter().filter(|w| !matches!(w, Wire::Body { .. })).copied().collect::<Vec<_>>();
    prop_assert_eq!(heads(&reported), heads(&expected), "{:?}'s heads, acks and cancels", to.role());
    prop_assert_eq!(per_stream(reported), per_stream(expected), "{:?}'s events", to.role());
    Ok(())
}

fn established_pair() -> (Session, Session) {
    let t = Duration::ZERO;
    let mut c = Session::new(Role::Connector, SessionConfig::new("c"), t);
    let mut r = Session::new(Role::Relay, SessionConfig::new("r"), t);
    while let Some(b) = c.poll_transmit(t) {
        r.handle_input(&b, t).unwrap();
    }
    while let Some(b) = r.poll_transmit(t) {
        c.handle_input(&b, t).unwrap();
    }
    while c.poll_event().is_some() {}
    while r.poll_event().is_some() {}
    (r, c)
}

proptest! {
    // A fixed seed, so CI explores the same 4,096 interleavings every run;
    // explore more with PROPTEST_CASES and PROPTEST_RNG_SEED.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(4096),
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED").ok().and_then(|c| c.parse().ok()).unwrap_or(7),
        ),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Both sides driven through calls at random, with deliveries
    /// interleaved at random (so cancels cross heads and bodies on the
    /// wire), against the model: the API accepts exactly what the model
    /// allows, no delivery is a protocol error, each delivery gives the
    /// events the model predicts, and each side holds the streams the
    /// model says it holds.
    #[test]
    fn sessions_follow_the_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        let (mut r, mut c) = established_pair();
        let (mut rm, mut cm) = (SideModel::default(), SideModel::default());
        let mut used_ids = std::collections::BTreeSet::new();
        let mut pieces = 0u32;
        let mut piece = || {
            pieces += 1;
            (pieces, Bytes::from(pieces.to_string()))
        };
        let head = || RequestHead { method: "GET".into(), path: "/".into(), headers: Headers::new() };
        for op in ops {
            match op {
                Op::Request { id, fin } => {
                    // The relay never reuses an id (the ingress counts up);
                    // reuse is the connector's SeenIds' business, not the session's.
                    if used_ids.insert(id) {
                        prop_assert!(r.send_request(id, &head(), fin).is_ok(), "{:?}", op);
                        rm.open(id, fin);
                    }
                }
                Op::RequestBody { id, fin } => {
                    let legal = rm.body_legal(id);
                    let (n, data) = piece();
                    prop_assert_eq!(r.send_body(id, data, fin).is_ok(), legal, "{:?}", op);
                    if legal { rm.body(id, fin, n); }
                }
                Op::Ack { id } => {
                    let legal = cm.head_legal(id);
                    prop_assert_eq!(c.send_ack(id).is_ok(), legal, "{:?}", op);
                    if legal { cm.ack(id); }
                }
                Op::Response { id, fin } => {
                    let legal = cm.head_legal(id);
                    prop_assert_eq!(c.send_response(id, 200, Headers::new(), fin).is_ok(), legal, "{:?}", op);
                    if legal { cm.respond(id, fin); }
                }
                Op::ResponseBody { id, fin } => {
                    let legal = cm.body_legal(id);
                    let (n, data) = piece();
                    prop_assert_eq!(c.send_body(id, data, fin).is_ok(), legal, "{:?}", op);
                    if legal { cm.body(id, fin, n); }
                }
                // Each side cancels only streams it has (the relay when the
                // user gives up, the connector when it refuses work).
                Op::RelayCancel { id } => {
                    if rm.stream(id).is_some() {
                        prop_assert!(r.send_cancel(id, CancelReason::Abandoned).is_ok());
                        rm.cancel(id);
                    }
                }
                Op::ConnectorCancel { id } => {
                    if cm.stream(id).is_some() {
                        prop_assert!(c.send_cancel(id, CancelReason::Overloaded).is_ok());
                        cm.cancel(id);
                    }
                }
                Op::DeliverToConnector => deliver((&mut r, &mut rm), (&mut c, &mut cm))?,
                Op::DeliverToRelay => deliver((&mut c, &mut cm), (&mut r, &mut rm))?,
            }
            prop_assert_eq!(r.open_streams(), rm.streams.len(), "relay streams after {:?}", op);
            prop_assert_eq!(c.open_streams(), cm.streams.len(), "connector streams after {:?}", op);
            for id in IDS {
                prop_assert_eq!(r.queued_body_bytes(id).is_some(), rm.streams.contains_key(&id), "relay stream {} after {:?}", id, op);
                prop_assert_eq!(c.queued_body_bytes(id).is_some(), cm.streams.contains_key(&id), "connector stream {} after {:?}", id, op);
            }
        }
    }
}
