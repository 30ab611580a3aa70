//! A user's request body on its way to a tunnel.
//!
//! The ingress holds up to [`super::ingress::STREAM_AFTER_BYTES`] of it. A
//! body that ends within that goes with the request, as one piece, and can
//! be offered to another tunnel if the first does not take it. A longer
//! one (an upload) goes with its start; the rest is pumped into the tunnel
//! once the connector has accepted the request (before that it may still
//! be offered elsewhere, and nothing of the rest has been read), paced so
//! that the ingress holds about one stream window of it, never the whole.

use std::rc::Rc;

use bytes::Bytes;
use connector::gather::Gather;
use connector::pace::Pace;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc::UnboundedSender;

use crate::cloud::ToTunnel;

/// Why a body cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Over the ingress's upload limit (413).
    #[error("upload over the limit")]
    TooLarge,
    /// Cut short or malformed (a truncated chunked body, a client gone
    /// mid-upload): 400.
    #[error("{0}")]
    Broken(String),
}

/// A request body: its start, and the rest still to read.
pub struct Upload {
    pub first: Bytes,
    rest: Option<Incoming>,
    spent: bool,
    limit: u64,
}

impl Upload {
    /// Reads the body up to `hold` bytes (or its end), refusing it past `limit`.
    pub async fn start(mut body: Incoming, hold: usize, limit: u64) -> Result<Upload, Refused> {
        let mut first = Gather::new(hyper::body::Body::size_hint(&body).exact(), hold);
        loop {
            if first.len() > hold {
                return Ok(Upload { first: first.take(), rest: Some(body), spent: false, limit });
            }
            match next_chunk(&mut body).await? {
                Some(chunk) => {
                    if (first.len() + chunk.len()) as u64 > limit {
                        return Err(Refused::TooLarge);
                    }
                    first.push(chunk);
                }
                None => {
                    return Ok(Upload { first: first.take(), rest: None, spent: false, limit });
                }
            }
        }
    }

    /// The largest body taken, bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether more than [`Upload::first`] is to come.
    pub fn streams(&self) -> bool {
        self.rest.is_some() || self.spent
    }

    /// Whether the rest has been taken out to be pumped: the request can
    /// no longer be offered anywhere else.
    pub fn spent(&self) -> bool {
        self.spent
    }

    /// Takes the rest out, to be pumped into tunnel `tx` as request `id`.
    pub fn pump(&mut self, id: u64, tx: UnboundedSender<ToTunnel>, pace: Rc<Pace>) -> Option<Pump> {
        let body = self.rest.take()?;
        self.spent = true;
        Some(Pump { id, body, tx, pace, read: self.first.len() as u64, limit: self.limit })
    }
}

/// One chunk of body data (trailers are not relayed); `None` at the end.
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, Refused> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(Refused::Broken(format!("request body: {e}"))),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// The rest of an accepted upload, on its way into its tunnel.
pub struct Pump {
    id: u64,
    body: Incoming,
    tx: UnboundedSender<ToTunnel>,
    pace: Rc<Pace>,
    read: u64,
    limit: u64,
}

impl Pump {
    /// Moves the rest of the body into the tunnel as fast as the tunnel
    /// takes it. On a refusal the stream is abandoned (the connector
    /// cancels the backend's request: it never sees a short body as a
    /// whole one).
    pub async fn run(mut self) -> Result<(), Refused> {
        loop {
            self.pace.ready().await;
            // The stream is gone (cancelled, answered and closed, or its
            // tunnel ended): the rest has nowhere to go.
            if self.pace.is_closed() {
                return Ok(());
            }
            let chunk = match next_chunk(&mut self.body).await {
                Ok(chunk) => chunk,
                Err(refused) => return Err(self.abandon(refused)),
            };
            let Some(data) = chunk else {
                let _ = self.tx.send(ToTunnel::Body { id: self.id, data: Bytes::new(), fin: true });
                return Ok(());
            };
            self.read += data.len() as u64;
            if self.read > self.limit {
                return Err(self.abandon(Refused::TooLarge));
            }
            self.pace.sent(data.len());
            // A tunnel gone fails the request through its reply channel.
            if self.tx.send(ToTunnel::Body { id: self.id, data, fin: false }).is_err() {
                return Ok(());
            }
        }
    }

    fn abandon(&self, refused: Refused) -> Refused {
        let _ = self.tx.send(ToTunnel::Abandon { id: self.id });
        refused
    }
}
