//! Pacing a producer by its tunnel: see [`Pace`].

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::proto::Session;

/// How far one stream's producer is ahead of its tunnel. The producer
/// (the connector's handler reading a backend's answer, the ingress
/// reading a user's upload) takes no more while over [`Pace::HIGH_WATER`]
/// bytes of it wait in the session (for the stream's window, or its turn),
/// so a peer slower than the producer makes the forwarder hold about one
/// window per stream, not the whole body.
#[derive(Debug, Default)]
pub struct Pace {
    /// Sent by the handler, not yet taken by the tunnel.
    in_channel: Cell<usize>,
    /// Taken by the tunnel, waiting in the session.
    in_session: Cell<usize>,
    /// The stream is gone (cancelled, or its tunnel ended): the producer
    /// stops.
    closed: Cell<bool>,
    /// The producer waits in [`Pace::ready`]: only then is anyone woken.
    /// Waking nobody still took `Notify`'s lock, for every stream after
    /// every transmit (~140 instructions a request at c32, callgrind).
    parked: Cell<bool>,
    wake: tokio::sync::Notify,
}

impl Pace {
    pub const HIGH_WATER: usize = crate::proto::session::STREAM_WINDOW as usize;

    fn behind(&self) -> usize {
        self.in_channel.get() + self.in_session.get()
    }

    /// The tunnel took `n` bytes off the channel into the session.
    pub fn taken(&self, n: usize) {
        self.in_channel.set(self.in_channel.get().saturating_sub(n));
    }

    /// The session's count of the stream's waiting bytes.
    pub fn set(&self, in_session: usize) {
        self.in_session.set(in_session);
        if self.behind() <= Self::HIGH_WATER {
            self.wake_parked();
        }
    }

    fn wake_parked(&self) {
        if self.parked.replace(false) {
            self.wake.notify_waiters();
        }
    }

    /// The producer handed `n` bytes to the tunnel's channel.
    pub fn sent(&self, n: usize) {
        self.in_channel.set(self.in_channel.get() + n);
    }

    /// The stream is gone: [`Pace::ready`] returns at once from now on.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake_parked();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Returns once the stream is no longer too far behind, or is gone.
    pub async fn ready(&self) {
        loop {
            let woken = self.wake.notified();
            if self.behind() <= Self::HIGH_WATER || self.closed.get() {
                return;
            }
            self.parked.set(true);
            woken.await;
        }
    }
}

/// Tells the producer of each stream in `paces` how much of it still waits
/// in `session` (after the session took more, or sent some); one whose
/// stream has ended is closed and forgotten. The connector's tunnel (for
/// its handlers) and the relay (for the ingress's uploads) call it after
/// each transmit.
pub fn follow(paces: &mut BTreeMap<u64, Rc<Pace>>, session: &Session) {
    paces.retain(|id, pace| match session.queued_body_bytes(*id) {
        Some(queued) => {
            pace.set(queued);
            true
        }
        None => {
            pace.close();
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler more than a window ahead of its tunnel waits until the
    /// tunnel has taken the bytes and the session has sent them.
    #[tokio::test(flavor = "current_thread")]
    async fn a_handler_waits_for_its_tunnel() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let pace = Rc::new(Pace::default());
                pace.sent(Pace::HIGH_WATER + 1);
                let waiting = {
                    let pace = pace.clone();
                    tokio::task::spawn_local(async move { pace.ready().await })
                };
                tokio::task::yield_now().await;
                assert!(!waiting.is_finished(), "ran ahead of its tunnel");
                pace.taken(Pace::HIGH_WATER + 1);
                pace.set(Pace::HIGH_WATER + 1);
                tokio::task::yield_now().await;
                assert!(!waiting.is_finished(), "the bytes still wait in the session");
                pace.set(0);
                waiting.await.unwrap();
            })
            .await;
    }
}
