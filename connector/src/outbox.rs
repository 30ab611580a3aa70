//! The bytes a session has handed over for sending, written a piece at a
//! time so that the driver keeps reading while they go out.
//!
//! A driver that writes everything before it reads again deadlocks under
//! traffic both ways: the relay pushes a large upload down the tunnel while
//! the connector pushes a large download up; both sockets' buffers fill,
//! each side waits in its write for the other to read, and every request on
//! the tunnel hangs until the user's time limit. With an outbox the write is
//! one branch of the driver's `select!` beside the read.

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

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
    /// gone. Cancel-safe: a step dropped before it completes is repeated.
    pub async fn progress<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<bool> {
        if self.written < self.batch.len() {
            let n = w.write(&self.batch[self.written..]).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "transport took no bytes"));
            }
            self.written += n;
            return Ok(false);
        }
        w.flush().await?;
        *self = Outbox::default();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        while !out.progress(&mut a).await.unwrap() {
            steps += 1;
        }
        assert!(out.is_idle());
        assert!(steps >= 2, "a 7-byte pipe takes the batch in pieces");
        drop(a);
        assert_eq!(reader.await.unwrap().unwrap(), b"hello, tunnel");
    }
}
