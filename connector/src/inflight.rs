//! The connector's requests in flight, as types: a [`Slot`] is taken when a
//! request is accepted and given back exactly once, when its entry leaves
//! [`Requests`] — the last answer frame, a cancel, a refusal, or the
//! tunnel's end (dropping the table). Counting by hand at each of those
//! places once leaked slots (a request cancelled while its body was still
//! arriving) and gave some back twice (a cancel racing the last frame), so
//! the count is now a consequence of ownership, not of bookkeeping.
//!
//! Body bytes held are counted the same way: a [`Held`] per request, from
//! its first chunk until its backend has the start of its body, against
//! one budget for the agent ([`HELD_BYTES_MAX`]). Past the budget a
//! request's handler starts with what came, so a burst of uploads cannot
//! make the agent hold each one's start at once.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::gather::Gather;

use crate::proto::RequestHead;

/// Request body bytes all requests of an agent may hold at once while
/// they wait to be whole ([`Requests::body`]) or for their backend to take
/// that start. A burst of uploads would otherwise hold each one's start (a
/// MiB) at once: 1,000 uploads arriving together, a GiB. Past this, an
/// upload's handler starts with what came and the rest streams, under the
/// tunnel's flow control (`proto::session::SESSION_WINDOW`).
pub const HELD_BYTES_MAX: usize = 2 << 20;

/// Requests in flight on all tunnels of one agent, and the body bytes they
/// hold.
#[derive(Debug)]
pub struct Slots {
    used: Cell<usize>,
    held: Cell<usize>,
    held_max: usize,
}

impl Default for Slots {
    fn default() -> Self {
        Slots::with_held_max(HELD_BYTES_MAX)
    }
}

impl Slots {
    /// Slots whose requests may hold `held_max` body bytes together.
    pub fn with_held_max(held_max: usize) -> Self {
        Slots { used: Cell::new(0), held: Cell::new(0), held_max }
    }

    /// A slot, if fewer than `max` are in use.
    pub fn try_take(self: &Rc<Self>, max: usize) -> Option<Slot> {
        let used = self.used.get();
        if used >= max {
            return None;
        }
        self.used.set(used + 1);
        Some(Slot(self.clone()))
    }

    /// Slots in use now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Body bytes held now, all requests together.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    fn room_to_hold(&self) -> bool {
        self.held.get() <= self.held_max
    }
}

/// One request's share of the agent's capacity; given back when dropped.
#[derive(Debug)]
pub struct Slot(Rc<Slots>);

impl Slot {
    fn held(&self) -> Held {
        Held { slots: self.0.clone(), bytes: 0 }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Each Slot added one when it was made: this cannot underflow.
        self.0.used.set(self.0.used.get() - 1);
    }
}

/// The body bytes one request holds, counted against the agent's
/// [`HELD_BYTES_MAX`]; given back when dropped.
#[derive(Debug)]
pub struct Held {
    slots: Rc<Slots>,
    bytes: usize,
}

impl Held {
    /// The request holds `n` body bytes now.
    fn set(&mut self, n: usize) {
        // `bytes` is part of the total: this cannot underflow.
        let others = self.slots.held.get() - self.bytes;
        self.bytes = n;
        self.slots.held.set(others + n);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// The start of a request's body, for its handler to send the backend
/// first.
#[derive(Debug)]
pub struct Start {
    pub bytes: Bytes,
    /// Counts `bytes` against the agent's budget until the backend has
    /// them.
    pub held: Held,
    /// Bytes at the end of `bytes` that the tunnel has not counted as
    /// taken: the handler says when the backend has them (the rest were
    /// taken as they were held).
    pub untaken: usize,
}

/// A running request handler that can be stopped.
pub trait Abort {
    fn abort(&self);
}

impl<T> Abort for tokio::task::JoinHandle<T> {
    fn abort(&self) {
        tokio::task::JoinHandle::abort(self);
    }
}

enum Phase<H> {
    /// Accepted; its body is still arriving. (The head is boxed: every
    /// request in flight has an entry, and few are in this phase.)
    Receiving { head: Box<RequestHead>, body: Gather, held: Held },
    /// Complete (or long enough to stream); its handler is being started.
    Starting,
    /// Its handler runs and takes the rest of the body as it arrives.
    Feeding { handler: H, sink: BodySink },
    /// Its handler runs.
    Running(H),
}

/// Where the rest of a streamed request body goes: pieces with their
/// `fin`. The receiver ([`crate::backend`]) takes a channel closed without
/// a `fin` for a body cut short.
pub type BodySink = tokio::sync::mpsc::UnboundedSender<(Bytes, bool)>;

struct Entry<H> {
    slot: Slot,
    phase: Phase<H>,
}

/// What a body chunk did. The tunnel counts the chunk as taken at once
/// after `Partial` (it is held, within the budget) and `Unknown` (dropped);
/// after the others the handler says when its backend took it.
#[derive(Debug)]
pub enum BodyStep {
    /// More is expected.
    Partial,
    /// The body is complete: start the handler with it.
    Ready(RequestHead, Start),
    /// The body is longer than the tunnel holds: start the handler with
    /// its start, and hand it the rest ([`Requests::feeding`]).
    Stream(RequestHead, Start),
    /// Passed on to the running handler, which says when its backend took
    /// it.
    Fed,
    /// No request receiving a body has this id (cancelled, or never
    /// accepted), or its handler stopped reading: the piece is dropped.
    Unknown,
}

/// One tunnel's requests in flight, by relay request id. Dropping the table
/// (the tunnel ended) stops every running handler and gives back every slot.
pub struct Requests<H: Abort> {
    map: BTreeMap<u64, Entry<H>>,
}

impl<H: Abort> Default for Requests<H> {
    fn default() -> Self {
        Requests { map: BTreeMap::new() }
    }
}

impl<H: Abort> Requests<H> {
    /// Takes in an accepted request holding `slot`. With `fin` (no body)
    /// its head comes back, to start the handler at once ([`Self::running`]).
    pub fn accept(&mut self, id: u64, slot: Slot, head: RequestHead, fin: bool) -> Option<RequestHead> {
        if fin {
            self.map.insert(id, Entry { slot, phase: Phase::Starting });
            return Some(head);
        }
        let held = slot.held();
        self.map.insert(
            id,
            Entry { slot, phase: Phase::Receiving { head: Box::new(head), body: Gather::default(), held } },
        );
        None
    }

    /// A chunk of request `id`'s body. Up to `hold` bytes are held until the
    /// body is complete; past that, or once the agent's requests hold
    /// their budget together ([`HELD_BYTES_MAX`]), the handler starts and
    /// takes the rest as it comes (the tunnel never waits for the whole of
    /// an upload).
    pub fn body(&mut self, id: u64, data: Bytes, fin: bool, hold: usize) -> BodyStep {
        let Some(entry) = self.map.get_mut(&id) else { return BodyStep::Unknown };
        let (body, held) = match &mut entry.phase {
            Phase::Receiving { head, body, held } => {
                if body.is_empty() {
                    *body = Gather::for_headers(&head.headers, hold);
                }
                (body, held)
            }
            Phase::Feeding { sink, .. } => {
                // A handler gone has stopped reading: the piece is dropped.
                let fed = sink.send((data, fin)).is_ok();
                if fin {
                    if let Phase::Feeding { handler, .. } = std::mem::replace(&mut entry.phase, Phase::Starting) {
                        entry.phase = Phase::Running(handler);
                    }
                }
                return if fed { BodyStep::Fed } else { BodyStep::Unknown };
            }
            Phase::Starting | Phase::Running(_) => return BodyStep::Unknown,
        };
        let untaken = data.len();
        body.push(data);
        held.set(body.footprint());
        if !fin && body.len() <= hold && entry.slot.0.room_to_hold() {
            return BodyStep::Partial;
        }
        match std::mem::replace(&mut entry.phase, Phase::Starting) {
            Phase::Receiving { head, mut body, held } => {
                let start = Start { bytes: body.take(), held, untaken };
                if fin {
                    BodyStep::Ready(*head, start)
                } else {
                    BodyStep::Stream(*head, start)
                }
            }
            // Matched as Receiving just above.
            _ => BodyStep::Unknown,
        }
    }

    /// Request `id`'s handler started with the start of a streamed body;
    /// the rest goes to `sink`. Ignored if the request is gone (cancelled
    /// meanwhile): the handler is stopped at once.
    pub fn feeding(&mut self, id: u64, handler: H, sink: BodySink) {
        match self.map.get_mut(&id) {
            Some(entry) => entry.phase = Phase::Feeding { handler, sink },
            None => handler.abort(),
        }
    }

    /// Request `id`'s handler started. Ignored if the request is gone
    /// (cancelled meanwhile): the handler is stopped at once.
    pub fn running(&mut self, id: u64, handler: H) {
        match self.map.get_mut(&id) {
            Some(entry) => entry.phase = Phase::Running(handler),
            None => handler.abort(),
        }
    }

    /// Request `id` sent its last answer frame (or reset its stream): its
    /// slot goes back. Nothing happens if it is already gone.
    pub fn finished(&mut self, id: u64) {
        self.map.remove(&id);
    }

    /// Request `id` was cancelled: its handler stops and its slot goes back.
    pub fn cancel(&mut self, id: u64) {
        if let Some(Entry { phase: Phase::Running(h) | Phase::Feeding { handler: h, .. }, .. }) = self.map.remove(&id) {
            h.abort();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

impl<H: Abort> Drop for Requests<H> {
    fn drop(&mut self) {
        for (_, entry) in std::mem::take(&mut self.map) {
            if let Phase::Running(h) | Phase::Feeding { handler: h, .. } = entry.phase {
                h.abort();
            }
        }
    }
}
