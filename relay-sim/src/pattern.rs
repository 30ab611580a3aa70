//! The body pattern of generated traffic: every upload a simulated user
//! sends and every `?size=N` answer the echo backend gives is the bytes
//! `0, 1, …, 250` repeated, cut at its length.
//!
//! Both ends check bodies by SHA-256, and hashing was the largest cost of a
//! world that moves data (a fifth of a fault schedule's time, beside a tenth
//! spent making the pattern a byte at a time). A [`BodyDigest`] therefore
//! compares what arrives with the pattern first, which is a `memcmp`, and
//! takes the digest of a body that *is* the pattern from a cache; any other
//! body is hashed from the first piece that differs on, after the pattern
//! it had up to that piece. The digest is the same either way.

use std::cell::RefCell;

use bytes::Bytes;
use ring::digest::{Context, SHA256};

/// The pattern's period.
const PERIOD: usize = 251;
/// The pattern's first `PERIOD * 16` bytes: any run of the pattern of up
/// to `TABLE.len() - PERIOD` bytes is one slice of it.
static TABLE: [u8; PERIOD * 16] = table();

const fn table() -> [u8; PERIOD * 16] {
    let mut t = [0u8; PERIOD * 16];
    let mut i = 0;
    while i < t.len() {
        t[i] = (i % PERIOD) as u8;
        i += 1;
    }
    t
}

/// How many digests of pattern lengths a thread remembers.
const DIGESTS_KEPT: usize = 8;

thread_local! {
    /// Digests of the pattern cut at recent lengths (a world sends a few
    /// sizes many times), most recent last.
    static DIGESTS: RefCell<Vec<(usize, String)>> = const { RefCell::new(Vec::new()) };
}

/// The pattern cut at `len` bytes.
pub fn pattern(len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    walk(0, len, |run| out.extend_from_slice(run));
    out.into()
}

/// SHA-256 (hex) of the pattern cut at `len` bytes.
pub fn pattern_digest(len: usize) -> String {
    DIGESTS.with(|kept| {
        let mut kept = kept.borrow_mut();
        if let Some(i) = kept.iter().position(|(l, _)| *l == len) {
            let hit = kept.remove(i);
            kept.push(hit.clone());
            return hit.1;
        }
        let mut hash = Context::new(&SHA256);
        walk(0, len, |run| hash.update(run));
        let digest = connector::package::hex(hash.finish().as_ref());
        if kept.len() >= DIGESTS_KEPT {
            kept.remove(0);
        }
        kept.push((len, digest.clone()));
        digest
    })
}

/// Calls `f` with the pattern's bytes from offset `from` for `len` bytes,
/// in runs borrowed from [`TABLE`].
fn walk(from: usize, len: usize, mut f: impl FnMut(&[u8])) {
    let (mut at, end) = (from, from + len);
    while at < end {
        let start = at % PERIOD;
        let n = (end - at).min(TABLE.len() - start);
        f(&TABLE[start..start + n]);
        at += n;
    }
}

/// Whether `data`, found at offset `from` of a body, is the pattern there.
fn matches(from: usize, data: &[u8]) -> bool {
    let mut rest = data;
    let mut at = from;
    while !rest.is_empty() {
        let start = at % PERIOD;
        let n = rest.len().min(TABLE.len() - start);
        if rest[..n] != TABLE[start..start + n] {
            return false;
        }
        rest = &rest[n..];
        at += n;
    }
    true
}

/// The SHA-256 of a body fed piece by piece, with the pattern recognised
/// rather than hashed (see the module's documentation).
#[derive(Clone, Default)]
pub struct BodyDigest {
    len: usize,
    /// Set from the first piece that is not the pattern on.
    hash: Option<Context>,
}

impl BodyDigest {
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest of a whole body.
    pub fn of(body: &[u8]) -> String {
        let mut d = Self::new();
        d.update(body);
        d.finish()
    }

    pub fn update(&mut self, data: &[u8]) {
        match &mut self.hash {
            Some(hash) => hash.update(data),
            None if matches(self.len, data) => {}
            None => {
                let mut hash = Context::new(&SHA256);
                walk(0, self.len, |run| hash.update(run));
                hash.update(data);
                self.hash = Some(hash);
            }
        }
        self.len += data.len();
    }

    /// Bytes fed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The SHA-256 of every byte fed, in hex.
    pub fn finish(self) -> String {
        match self.hash {
            Some(hash) => connector::package::hex(hash.finish().as_ref()),
            None => pattern_digest(self.len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector::pki::cert::sha256_hex;

    fn slow_pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % PERIOD) as u8).collect()
    }

    #[test]
    fn the_pattern_counts_up_to_250_and_starts_again() {
        for len in [0, 1, 250, 251, 252, TABLE.len() - 1, TABLE.len(), 3 * TABLE.len() + 17] {
            assert_eq!(pattern(len).as_ref(), slow_pattern(len).as_slice(), "len {len}");
            assert_eq!(pattern_digest(len), sha256_hex(&slow_pattern(len)), "len {len}");
        }
    }

    #[test]
    fn a_digest_is_the_sha256_of_what_was_fed_pattern_or_not() {
        let len = 2 * TABLE.len() + 100;
        let body = slow_pattern(len);
        let mut changed = body.clone();
        changed[len - 3] ^= 1;
        let mut early = body.clone();
        early[0] = 7;
        for b in [&body, &changed, &early, &b"not the pattern at all".to_vec()] {
            for piece in [1, 7, 251, 4096, len] {
                let mut d = BodyDigest::new();
                b.chunks(piece).for_each(|c| d.update(c));
                assert_eq!(d.len(), b.len());
                assert_eq!(d.finish(), sha256_hex(b), "piece {piece}");
            }
        }
        // A prefix of the pattern is the pattern of its length.
        assert_eq!(BodyDigest::of(&body[..1000]), sha256_hex(&body[..1000]));
    }
}
