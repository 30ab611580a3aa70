//! The start of a body gathered from the chunks it arrives in, by the
//! connector (a request's first MiB) and by the relay's ingress (an
//! upload's and an answer's first MiB).
//!
//! Appending each chunk to a growing buffer copied a one-chunk body once
//! for nothing and a large start once per doubling from a small size. A
//! [`Gather`] keeps a lone chunk as it came, and sizes its buffer from the
//! length the body announced, up to what it will hold; but never more
//! than a few times what has arrived, so a peer that announces a large
//! body and sends two bytes of it does not make this reserve the rest.

use bytes::{Bytes, BytesMut};

use crate::proto::Headers;

/// The first reserve is at most this many times what has arrived...
const AHEAD: usize = 4;
/// ...or this much, whichever is more.
const AHEAD_MIN: usize = 64 << 10;

/// A body's start, gathered.
#[derive(Debug, Default)]
pub struct Gather {
    /// The first chunk, while it is the only one.
    lone: Option<Bytes>,
    joined: BytesMut,
    /// Bytes to reserve once a second chunk comes.
    expect: usize,
}

impl Gather {
    /// A body announced as `announced` bytes (if it said), of which at most
    /// `hold` (and one chunk more) will be gathered.
    pub fn new(announced: Option<u64>, hold: usize) -> Self {
        let expect = announced.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX).min(hold));
        Gather { lone: None, joined: BytesMut::new(), expect }
    }

    /// A body whose head carries `headers`: its `content-length`, if any.
    pub fn for_headers(headers: &Headers, hold: usize) -> Self {
        Self::new(content_length(headers), hold)
    }

    pub fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        if self.lone.is_none() && self.joined.is_empty() {
            self.lone = Some(data);
            return;
        }
        if let Some(lone) = self.lone.take() {
            let arrived = lone.len() + data.len();
            let ahead = arrived.saturating_mul(AHEAD).max(AHEAD_MIN);
            self.joined.reserve(self.expect.min(ahead).max(arrived));
            self.joined.extend_from_slice(&lone);
        }
        self.joined.extend_from_slice(&data);
    }

    pub fn len(&self) -> usize {
        self.lone.as_ref().map_or(self.joined.len(), Bytes::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory this holds: its buffer's capacity, which may run ahead of
    /// what has arrived (see the module docs), or the lone chunk.
    pub fn footprint(&self) -> usize {
        self.lone.as_ref().map_or(self.joined.capacity(), Bytes::len)
    }

    /// Everything gathered, leaving this empty.
    pub fn take(&mut self) -> Bytes {
        match self.lone.take() {
            Some(lone) => lone,
            None => std::mem::take(&mut self.joined).freeze(),
        }
    }
}

/// The `content-length` among `headers`, if one parses.
pub fn content_length(headers: &Headers) -> Option<u64> {
    headers.get("content-length").and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_out_in_order_whatever_was_announced() {
        for announced in [None, Some(0), Some(3), Some(10), Some(u64::MAX)] {
            let mut g = Gather::new(announced, 8);
            assert!(g.is_empty());
            for c in [&b"abc"[..], b"", b"de", b"fghij"] {
                g.push(Bytes::copy_from_slice(c));
            }
            assert_eq!(g.len(), 10);
            assert_eq!(g.take(), Bytes::from_static(b"abcdefghij"));
            assert!(g.is_empty());
            g.push(Bytes::from_static(b"again"));
            assert_eq!(g.take(), Bytes::from_static(b"again"));
        }
    }

    #[test]
    fn a_lone_chunk_is_not_copied() {
        let chunk = Bytes::from(vec![7u8; 1000]);
        let mut g = Gather::new(Some(1000), 1 << 20);
        g.push(chunk.clone());
        assert_eq!(g.take().as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn an_announced_length_is_not_taken_on_trust() {
        let mut g = Gather::new(Some(1 << 30), 1 << 20);
        g.push(Bytes::from_static(b"a"));
        g.push(Bytes::from_static(b"b"));
        assert!(g.joined.capacity() <= AHEAD_MIN, "{}", g.joined.capacity());
        assert_eq!(g.take(), Bytes::from_static(b"ab"));
    }

    #[test]
    fn the_length_comes_from_the_headers() {
        let h = |v: &str| [("Host", "a"), ("Content-Length", v)].into_iter().collect::<Headers>();
        assert_eq!(content_length(&h("42")), Some(42));
        assert_eq!(content_length(&h(" 7 ")), Some(7));
        assert_eq!(content_length(&h("x")), None);
        assert_eq!(content_length(&Headers::new()), None);
    }
}
