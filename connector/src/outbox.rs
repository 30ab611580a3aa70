//! The bytes a session has handed over for sending, written a piece at a
//! time so that the driver keeps reading while they go out.
//!
//! A driver that writes everything before it reads again deadlocks under
//! traffic both ways: the relay pushes a large upload down the tunnel while
//! the connector pushes a large download up; both sockets' buffers fill,
//! each side waits in its write for the other to read, and every request on
//! the tunnel hangs until the user's time limit. With an outbox the write is
//! one of the sources the driver polls beside the read.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;

/// One batch of a session's output on its way into the transport.
#[derive(Debug, Default)]
pub struct Outbox {
    batch: Bytes,
    /// Written into the transport; once all is, it is flushed.
    written: usize,
    loaded: bool,
}

impl Outbox {
    /// Nothing left to write or flush: ready for the next batch.
    pub fn is_idle(&self) -> bool {
        !self.loaded
    }

    /// Takes the next batch (call only when idle).
    pub fn load(&mut self, batch: Bytes) {
        debug_assert!(self.is_idle(), "a batch is still going out");
        *self = Outbox { batch, written: 0, loaded: true };
    }

    /// One step: a write of what is left, or (all written) the flush that
    /// pushes it out of the transport's buffers. True once the batch is
    /// gone. For a loop that polls its sources itself ([`crate::turn`]):
    /// only a completed write or flush changes the outbox, so after
    /// `Pending` the step goes on where it stopped (the flush alone, if the
    /// write was done).
    pub fn poll_progress<W: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, w: &mut W) -> Poll<io::Result<bool>> {
        if self.written < self.batch.len() {
            let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.batch[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::WriteZero, "transport took no bytes")));
            }
            self.written += n;
            if self.written < self.batch.len() {
                return Poll::Ready(Ok(false));
            }
            // All written: the flush follows in the same step (usually at
            // once), not in another turn of the driver's loop, which the
            // peer just woken on this core would wait for.
        }
        ready!(Pin::new(w).poll_flush(cx))?;
        *self = Outbox::default();
        Poll::Ready(Ok(true))
    }
}

/// Completes once every other task the runtime has ready, and every one
/// a look at the sockets makes ready, has had its turn: a driver that
/// waits here after taking what is ready for its peer writes the turn's
/// output in one batch, last in the turn.
///
/// Why last: a socket write wakes the reader on the writer's core, the
/// kernel taking the writer to be about to sleep. A tunnel end that wrote
/// as soon as it had something went on with its turn (more users' requests,
/// more backends' answers) while the other end, woken onto the same core,
/// waited for it: the two single-threaded ends ran one after the other on
/// one core for much of a closed loop at 32 connections while the other
/// core idled (BENCHMARKS, round seventeen: with this wait at both ends,
/// `wrk -c32` through the tunnel 32,677 / 34,693 / 30,663 / 31,587 →
/// 39,250 / 34,182 / 37,271 / 38,691 requests/s, alternating rounds; the
/// connector's wait for a core fell from ~6.3 to ~2.9 µs a request, and
/// the batches grew by a quarter to a half).
/// The wait costs a look at the sockets (a zero-timeout `epoll_wait`) and
/// a turn of the scheduler, about 2,000 instructions: a driver that took
/// one request's output alone (one connection's load) writes at once.
pub async fn end_of_turn() {
    tokio::task::yield_now().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step, awaited as a driver's turn would poll it.
    async fn step<W: AsyncWrite + Unpin>(out: &mut Outbox, w: &mut W) -> io::Result<bool> {
        std::future::poll_fn(|cx| out.poll_progress(cx, w)).await
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_goes_out_whole_through_short_writes() {
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut out = Outbox::default();
        out.load(Bytes::from_static(b"hello, tunnel"));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got).await.map(|_| got)
        });
        let mut steps = 0;
        while !step(&mut out, &mut a).await.unwrap() {
            steps += 1;
        }
        assert!(out.is_idle());
        assert!(steps >= 1, "a 7-byte pipe takes the batch in pieces");
        drop(a);
        assert_eq!(reader.await.unwrap().unwrap(), b"hello, tunnel");
    }

    /// A transport that takes the whole batch: written and flushed in one
    /// step, so the driver's next turn is not needed for it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_taken_whole_is_out_in_one_step() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut out = Outbox::default();
        out.load(Bytes::from_static(b"hello, tunnel"));
        assert!(step(&mut out, &mut a).await.unwrap());
        assert!(out.is_idle());
        let mut got = [0u8; 13];
        tokio::io::AsyncReadExt::read_exact(&mut b, &mut got).await.unwrap();
        assert_eq!(&got, b"hello, tunnel");
    }
}
