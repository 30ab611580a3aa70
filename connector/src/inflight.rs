//! The connector's requests in flight, as types: a [`Slot`] is taken when a
//! request is accepted and given back exactly once, when its entry leaves
//! [`Requests`] — the last answer frame, a cancel, a refusal, or the
//! tunnel's end (dropping the table). Counting by hand at each of those
//! places once leaked slots (a request cancelled while its body was still
//! arriving) and gave some back twice (a cancel racing the last frame), so
//! the count is now a consequence of ownership, not of bookkeeping.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::gather::Gather;

use crate::proto::RequestHead;

/// Requests in flight on all tunnels of one agent.
#[derive(Debug, Default)]
pub struct Slots {
    used: Cell<usize>,
}

impl Slots {
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
}

/// One request's share of the agent's capacity; given back when dropped.
#[derive(Debug)]
pub struct Slot(Rc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        // Each Slot added one when it was made: this cannot underflow.
        self.0.used.set(self.0.used.get() - 1);
    }
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
    /// Accepted; its body is still arriving.
    Receiving { head: RequestHead, body: Gather },
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
    _slot: Slot,
    phase: Phase<H>,
}

/// What a body chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyStep {
    /// More is expected.
    Partial,
    /// The body is complete: start the handler with it.
    Ready(RequestHead, Bytes),
    /// The body is longer than the tunnel holds: start the handler with
    /// its start, and hand it the rest ([`Requests::feeding`]).
    Stream(RequestHead, Bytes),
    /// Passed on to the running handler.
    Fed,
    /// No request receiving a body has this id (cancelled, or never accepted).
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
            self.map.insert(id, Entry { _slot: slot, phase: Phase::Starting });
            return Some(head);
        }
        self.map.insert(id, Entry { _slot: slot, phase: Phase::Receiving { head, body: Gather::default() } });
        None
    }

    /// A chunk of request `id`'s body. Up to `hold` bytes are held until the
    /// body is complete; past that the handler starts and takes the rest as
    /// it comes (the tunnel never waits for the whole of an upload).
    pub fn body(&mut self, id: u64, data: Bytes, fin: bool, hold: usize) -> BodyStep {
        let Some(entry) = self.map.get_mut(&id) else { return BodyStep::Unknown };
        let body = match &mut entry.phase {
            Phase::Receiving { head, body } => {
                if body.is_empty() {
                    *body = Gather::for_headers(&head.headers, hold);
                }
                body
            }
            Phase::Feeding { sink, .. } => {
                // A handler gone has stopped reading: nothing to do.
                let _ = sink.send((data, fin));
                if fin {
                    if let Phase::Feeding { handler, .. } = std::mem::replace(&mut entry.phase, Phase::Starting) {
                        entry.phase = Phase::Running(handler);
                    }
                }
                return BodyStep::Fed;
            }
            Phase::Starting | Phase::Running(_) => return BodyStep::Unknown,
        };
        body.push(data);
        if !fin && body.len() <= hold {
            return BodyStep::Partial;
        }
        match std::mem::replace(&mut entry.phase, Phase::Starting) {
            Phase::Receiving { head, mut body } if fin => BodyStep::Ready(head, body.take()),
            Phase::Receiving { head, mut body } => BodyStep::Stream(head, body.take()),
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
