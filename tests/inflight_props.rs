//! Property test of in-flight accounting: random interleavings of accept,
//! body chunks, handler start, last frame, reset, cancel and tunnel loss,
//! driven the way `tunnel::drive` drives [`Requests`]. The slots in use
//! always equal the requests held, never exceed the limit, never go below
//! zero, and come back to zero when the tunnels end; a handler is stopped
//! only if it was cancelled or lost its tunnel while running, and at most
//! once. The body bytes held are those of the requests still gathering
//! theirs (their buffers' capacity), never more than the agent's budget.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use connector::inflight::{Abort, BodyStep, Requests, Slots};
use connector::proto::{Headers, RequestHead};
use proptest::prelude::*;

/// A handler that counts how often it was stopped.
struct Handler(Rc<Cell<u32>>);

impl Abort for Handler {
    fn abort(&self) {
        self.0.set(self.0.get() + 1);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A request arrives on tunnel `t` (with or without a body).
    Accept {
        t: usize,
        id: u64,
        fin: bool,
    },
    Body {
        t: usize,
        id: u64,
        len: usize,
        fin: bool,
    },
    /// The handler's last frame, or its reset.
    Finish {
        t: usize,
        id: u64,
    },
    Cancel {
        t: usize,
        id: u64,
    },
    /// Tunnel `t` ends; a new one takes its place.
    Lost {
        t: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0usize..2;
    let id = 0u64..12;
    prop_oneof![
        (t.clone(), id.clone(), any::<bool>()).prop_map(|(t, id, fin)| Op::Accept { t, id, fin }),
        (t.clone(), id.clone(), 0usize..600, any::<bool>()).prop_map(|(t, id, len, fin)| Op::Body { t, id, len, fin }),
        (t.clone(), id.clone()).prop_map(|(t, id)| Op::Finish { t, id }),
        (t.clone(), id).prop_map(|(t, id)| Op::Cancel { t, id }),
        t.prop_map(|t| Op::Lost { t }),
    ]
}

const MAX_INFLIGHT: usize = 5;
const BODY_HOLD: usize = 1000;
/// Small enough for a few gathering bodies to fill it.
const HELD_MAX: usize = 700;

/// What the test knows of each handler it started: its stop counter and
/// whether it may be stopped (it was running when cancelled or lost).
struct Started {
    stops: Rc<Cell<u32>>,
    finished: bool,
    may_stop: bool,
}

struct World {
    slots: Rc<Slots>,
    /// The model: which requests each tunnel must hold.
    held: Vec<std::collections::BTreeSet<u64>>,
    /// The model: body bytes gathered by each request still gathering.
    gathering: Vec<BTreeMap<u64, usize>>,
    tunnels: Vec<Requests<Handler>>,
    handlers: BTreeMap<(usize, u64, u32), Started>,
    generation: Vec<u32>,
}

impl World {
    /// A new handler for request `id` of tunnel `t`, known to the test.
    fn handler(&mut self, t: usize, id: u64) -> Handler {
        let stops = Rc::new(Cell::new(0));
        let key = (t, id, self.generation[t]);
        self.handlers.insert(key, Started { stops: stops.clone(), finished: false, may_stop: false });
        Handler(stops)
    }

    fn start(&mut self, t: usize, id: u64) {
        let h = self.handler(t, id);
        self.tunnels[t].running(id, h);
    }

    /// Starts a handler that takes the rest of its body as it arrives.
    fn start_fed(&mut self, t: usize, id: u64) {
        let h = self.handler(t, id);
        let (sink, _feed) = tokio::sync::mpsc::unbounded_channel();
        self.tunnels[t].feeding(id, h, sink);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Accept { t, id, fin } => {
                // A live id is never reused by the relay on one tunnel.
                if self.handlers.get(&(t, id, self.generation[t])).is_some_and(|h| !h.finished && !h.may_stop) {
                    return;
                }
                let Some(slot) = self.slots.try_take(MAX_INFLIGHT) else { return };
                self.held[t].insert(id);
                // A request still gathering its body under this id is replaced.
                self.gathering[t].remove(&id);
                if !fin {
                    self.gathering[t].insert(id, 0);
                }
                let head = RequestHead { method: "GET".into(), path: "/".into(), headers: Headers::new() };
                if self.tunnels[t].accept(id, slot, head, fin).is_some() {
                    self.start(t, id);
                }
            }
            Op::Body { t, id, len, fin } => match self.tunnels[t].body(id, vec![0; len].into(), fin, BODY_HOLD) {
                BodyStep::Ready(..) => {
                    self.gathering[t].remove(&id);
                    self.start(t, id);
                }
                BodyStep::Stream(..) => {
                    self.gathering[t].remove(&id);
                    self.start_fed(t, id);
                }
                BodyStep::Partial => *self.gathering[t].entry(id).or_default() += len,
                BodyStep::Fed | BodyStep::Unknown => {}
            },
            Op::Finish { t, id } => {
                if let Some(h) = self.handlers.get_mut(&(t, id, self.generation[t])) {
                    h.finished = true;
                }
                self.tunnels[t].finished(id);
                self.held[t].remove(&id);
                self.gathering[t].remove(&id);
            }
            Op::Cancel { t, id } => {
                if let Some(h) = self.handlers.get_mut(&(t, id, self.generation[t])) {
                    h.may_stop |= !h.finished;
                }
                self.tunnels[t].cancel(id);
                self.held[t].remove(&id);
                self.gathering[t].remove(&id);
            }
            Op::Lost { t } => {
                for ((ht, _, g), h) in self.handlers.iter_mut() {
                    if *ht == t && *g == self.generation[t] {
                        h.may_stop |= !h.finished;
                    }
                }
                self.tunnels[t] = Requests::default();
                self.held[t].clear();
                self.gathering[t].clear();
                self.generation[t] += 1;
            }
        }
    }
}

proptest! {
    #[test]
    fn slots_follow_the_requests_held(ops in prop::collection::vec(op(), 0..120)) {
        let slots = Rc::new(Slots::with_held_max(HELD_MAX));
        let mut w = World {
            slots: slots.clone(),
            held: vec![Default::default(), Default::default()],
            gathering: vec![Default::default(), Default::default()],
            tunnels: vec![Requests::default(), Requests::default()],
            handlers: BTreeMap::new(),
            generation: vec![0, 0],
        };
        for op in &ops {
            w.apply(op);
            for t in 0..2 {
                prop_assert_eq!(w.tunnels[t].len(), w.held[t].len(), "tunnel {} after {:?}", t, op);
            }
            let held: usize = w.held.iter().map(|h| h.len()).sum();
            prop_assert_eq!(slots.used(), held, "after {:?}", op);
            prop_assert!(slots.used() <= MAX_INFLIGHT);
            let gathered: usize = w.gathering.iter().flat_map(|g| g.values()).sum();
            // Held counts buffers' capacity, at least what they hold.
            prop_assert!(slots.held() >= gathered, "{} held, {} gathered, after {:?}", slots.held(), gathered, op);
            prop_assert_eq!(slots.held() == 0, gathered == 0, "after {:?}", op);
            prop_assert!(slots.held() <= HELD_MAX, "{} bytes held after {:?}", slots.held(), op);
        }
        w.apply(&Op::Lost { t: 0 });
        w.apply(&Op::Lost { t: 1 });
        prop_assert_eq!(slots.used(), 0, "every slot comes back when the tunnels end");
        prop_assert_eq!(slots.held(), 0, "every held byte is given back when the tunnels end");
        for ((t, id, g), h) in &w.handlers {
            let stops = h.stops.get();
            prop_assert!(stops <= 1, "handler {t}/{id}/{g} stopped {stops} times");
            prop_assert!(stops == 0 || h.may_stop, "handler {t}/{id}/{g} stopped though it finished first");
        }
    }
}
