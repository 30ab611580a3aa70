//! One turn of a tunnel end's loop: what both ends wait on alike (their
//! TLS stream both ways, the channel that brings them work, the session's
//! deadline), polled through [`crate::wakes`] so that only what woke the
//! loop is looked at, and the end's own signals after them (the
//! connector's requests served in its loop, and its drain; relay-sim's
//! routing change and pin).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::outbox::Outbox;
use crate::time::Timer;
use crate::wakes::Wakes;

/// The sources both ends wait on, in the order a turn takes them when
/// several are ready (each end's own signals come after, from
/// [`Source::COUNT`] on): the batch going out, what the peer sent, the
/// work brought by the channel, the session's deadline.
#[derive(Clone, Copy)]
pub enum Source {
    Outbox,
    Read,
    Channel,
    Timer,
}

impl Source {
    /// The shared sources; an end's own signals are numbered from here.
    pub const COUNT: usize = Source::Timer as usize + 1;
}

/// What a turn took: from a shared source, or one of the end's signals.
pub enum Turn<T, S> {
    /// A step of the batch going out: whether the batch is gone.
    Sent(io::Result<bool>),
    /// A read: the bytes it brought into the buffer.
    Read(io::Result<usize>),
    Item(T),
    Timeout,
    Signal(S),
}

/// A tunnel end's stream, as two of the sources its loop polls ([`crate::wakes`]):
/// the batch going out through `writer`, and what the peer sends, read
/// from `reader` into `buf`.
pub struct Halves<'a, R, W> {
    pub outbox: &'a mut Outbox,
    pub writer: &'a mut W,
    pub reader: &'a mut R,
    pub buf: &'a mut [u8],
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Halves<'_, R, W> {
    /// A step of the batch going out, if there is one and `source` is
    /// marked: whether the batch is gone.
    pub fn poll_sent<const N: usize>(&mut self, wakes: &Wakes<N>, source: usize) -> Poll<io::Result<bool>> {
        if self.outbox.is_idle() {
            return Poll::Pending;
        }
        wakes.poll(source, |cx| self.outbox.poll_progress(cx, self.writer))
    }

    /// A read into `buf`, if `source` is marked: the bytes it brought.
    pub fn poll_read<const N: usize>(&mut self, wakes: &Wakes<N>, source: usize) -> Poll<io::Result<usize>> {
        wakes.poll(source, |cx| {
            let mut read = ReadBuf::new(self.buf);
            Pin::new(&mut *self.reader).poll_read(cx, &mut read).map_ok(|()| read.filled().len())
        })
    }
}

/// Takes the first ready source among those woken (or marked) since they
/// were last polled: the shared ones in [`Source`] order, then `signals`,
/// the end's own, numbered from [`Source::COUNT`] in the order given; the
/// others are still pending (see [`crate::wakes`]). Yields first, as
/// `select!` does, when the task's budget is spent. The channel's sender
/// is kept by the loop's owner: it never closes under the loop.
pub fn poll<'s, R, W, T, S, const N: usize>(
    cx: &mut Context<'_>,
    wakes: &Wakes<N>,
    io: &mut Halves<'_, R, W>,
    rx: &mut mpsc::UnboundedReceiver<T>,
    timer: &mut Timer,
    signals: impl IntoIterator<Item = (S, Pin<&'s mut dyn Future<Output = ()>>)>,
) -> Poll<Turn<T, S>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    ready!(wakes.begin(cx));
    if let Poll::Ready(sent) = io.poll_sent(wakes, Source::Outbox as usize) {
        return Poll::Ready(Turn::Sent(sent));
    }
    if let Poll::Ready(read) = io.poll_read(wakes, Source::Read as usize) {
        return Poll::Ready(Turn::Read(read));
    }
    if let Poll::Ready(Some(item)) = wakes.poll(Source::Channel as usize, |cx| rx.poll_recv(cx)) {
        return Poll::Ready(Turn::Item(item));
    }
    if wakes.poll(Source::Timer as usize, |cx| timer.poll_wait(cx)).is_ready() {
        return Poll::Ready(Turn::Timeout);
    }
    for (i, (signal, future)) in signals.into_iter().enumerate() {
        if wakes.poll(Source::COUNT + i, |cx| future.poll(cx)).is_ready() {
            return Poll::Ready(Turn::Signal(signal));
        }
    }
    Poll::Pending
}
