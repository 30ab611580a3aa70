//! Response bodies of the services: whole, or relayed from a tunnel piece
//! by piece as the connector delivers them.
//!
//! The ingress buffers the start of an answer (see
//! [`crate::services::ingress::STREAM_AFTER_BYTES`]) so that a backend
//! failing early still gives the user a clean gateway error. Past that the
//! head is committed and the rest streams: the ingress does not wait for
//! the whole of a download, and there is no size limit. (Grants follow
//! receipt, so what a user slower than the backend has not read yet
//! waits in the channel; see ARCHITECTURE's data-path limits.) A failure after the head can only cut
//! the answer short, which the body does by ending in an error: hyper then
//! closes the user's connection without finishing the message, so that no
//! client takes a truncated answer for a whole one.
//!
//! [`Delivery`] is what a tunnel reports back to the ingress about a
//! request it was given: acknowledged, the head, body pieces, or why not.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use connector::proto::{CancelReason, Headers};
use futures_core::Stream;
use hyper::body::{Frame, SizeHint};

/// A response body; see the module docs.
#[derive(Debug)]
pub struct Body(Kind);

enum Kind {
    Whole(Option<Bytes>),
    Relayed { first: Option<Bytes>, rx: Replies, done: bool, on_cut: Option<OnCut> },
}

/// Told why, when a relayed answer is cut short (the ingress reports it).
pub type OnCut = Box<dyn FnOnce(&str)>;

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Whole(b) => f.debug_tuple("Whole").field(b).finish(),
            Kind::Relayed { first, done, .. } => {
                f.debug_struct("Relayed").field("first", first).field("done", done).finish_non_exhaustive()
            }
        }
    }
}

/// Why a relayed answer ended before its end.
#[derive(Debug, thiserror::Error)]
#[error("relayed answer cut short: {0}")]
pub struct CutShort(String);

impl Body {
    /// A body held whole.
    pub fn whole(bytes: Bytes) -> Self {
        Body(Kind::Whole(Some(bytes)))
    }

    /// `first`, then what the tunnel delivers on `rx` up to its `fin`.
    pub fn relayed(first: Bytes, rx: Replies) -> Self {
        Body(Kind::Relayed { first: Some(first), rx, done: false, on_cut: None })
    }

    /// Calls `f` with the reason if this body is cut short (a whole body
    /// never is).
    pub fn on_cut(mut self, f: impl FnOnce(&str) + 'static) -> Self {
        if let Kind::Relayed { on_cut, .. } = &mut self.0 {
            *on_cut = Some(Box::new(f));
        }
        self
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = CutShort;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, CutShort>>> {
        let (first, rx, done, on_cut) = match &mut self.get_mut().0 {
            Kind::Whole(bytes) => {
                return Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))))
            }
            Kind::Relayed { first, rx, done, on_cut } => (first, rx, done, on_cut),
        };
        if let Some(bytes) = first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        while !*done {
            let cut = match ready!(Pin::new(&mut *rx).poll_next(cx)) {
                Some(Delivery::Body { data, fin }) => {
                    *done = fin;
                    if data.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // Acks and the head came before the body started.
                Some(Delivery::Acked | Delivery::Head { .. } | Delivery::Unsendable(_)) => continue,
                Some(Delivery::Cancelled(reason)) => format!("the connector cancelled the stream ({reason:?})"),
                Some(Delivery::Lost { reason, .. }) => format!("tunnel lost: {reason}"),
                None => "relay lost".to_string(),
            };
            *done = true;
            if let Some(f) = on_cut.take() {
                f(&cut);
            }
            return Poll::Ready(Some(Err(CutShort(cut))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Whole(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Kind::Relayed { done, first, .. } => *done && first.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Relayed { .. } => SizeHint::default(),
        }
    }
}

/// Where a tunnel sends what it reports about one request ([`Delivery`]).
pub type Reply = local_channel::mpsc::Sender<Delivery>;
/// Where the ingress hears it; `None` once the tunnel's end is gone.
pub type Replies = local_channel::mpsc::Receiver<Delivery>;

/// A channel for one request's deliveries. Single-threaded, as the cloud
/// is: tokio's channel, made for every request, cost its allocation,
/// atomics and wake-ups (callgrind, relay-sim under `wrk -c1` through the
/// tunnel: 73,476 instructions a request with it, 72,006 with this).
pub fn replies() -> (Reply, Replies) {
    local_channel::mpsc::channel()
}

/// What the tunnel reports back about a dispatched request.
#[derive(Debug)]
pub enum Delivery {
    /// The connector accepted it: it must not be sent anywhere else.
    Acked,
    Head {
        status: u16,
        headers: Headers,
    },
    Body {
        data: Bytes,
        fin: bool,
    },
    Cancelled(CancelReason),
    /// The request's head cannot be framed for this tunnel (its headers
    /// are too large for the connector's frames): the user gets 431.
    Unsendable(String),
    /// The tunnel ended before the answer was complete.
    Lost {
        acked: bool,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    #[tokio::test(flavor = "current_thread")]
    async fn a_relayed_body_is_its_first_part_then_the_tunnels_pieces() {
        let (tx, rx) = replies();
        tx.send(Delivery::Body { data: Bytes::from_static(b"bc"), fin: false }).unwrap();
        tx.send(Delivery::Body { data: Bytes::from_static(b"d"), fin: true }).unwrap();
        let got = Body::relayed(Bytes::from_static(b"a"), rx).collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"abcd");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_tunnel_lost_mid_body_ends_the_body_in_an_error() {
        let (tx, rx) = replies();
        tx.send(Delivery::Body { data: Bytes::from_static(b"bc"), fin: false }).unwrap();
        tx.send(Delivery::Lost { acked: true, reason: "closed by connector".into() }).unwrap();
        let told = std::rc::Rc::new(std::cell::RefCell::new(String::new()));
        let heard = told.clone();
        let err = Body::relayed(Bytes::from_static(b"a"), rx)
            .on_cut(move |why| *heard.borrow_mut() = why.to_string())
            .collect()
            .await
            .unwrap_err();
        assert!(told.borrow().contains("tunnel lost"), "{}", told.borrow());
        assert!(err.to_string().contains("closed by connector"), "{err}");
        let (tx, rx) = replies();
        drop(tx);
        assert!(Body::relayed(Bytes::new(), rx).collect().await.is_err(), "a relay gone is no clean end");
    }

    #[test]
    fn a_whole_body_says_its_length() {
        assert_eq!(Body::whole(Bytes::from_static(b"abc")).size_hint().exact(), Some(3));
        assert!(Body::whole(Bytes::new()).is_end_stream());
    }
}
