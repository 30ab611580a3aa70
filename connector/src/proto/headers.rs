//! A request's or response's header list, held in one string.
//!
//! Every request crosses the connector as two header lists (the user's
//! request head, the backend's response head). Held as a `Vec` of
//! `(String, String)` pairs they cost two allocations a header and one
//! for the list: 14 of the 26 allocations a request made (valgrind dhat,
//! `wrk -c32` through the tunnel), and allocation was a sixth of the
//! connector's time. Here the names and values follow one another in one
//! `String`, and where each ends is kept inline for the usual number of
//! headers, so a list usually costs one allocation, and decoding one from
//! a frame is one copy.

use std::fmt;

use bytes::Bytes;

use smallvec::SmallVec;

/// Headers whose ends are kept inline before they spill to the heap: a
/// typical response, or a command-line client's request with the relay's
/// additions, fits (a browser's request may not: one more allocation).
const INLINE: usize = 8;

/// An ordered list of header names and values; a name may repeat (as
/// `set-cookie` does), and order is kept as given.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every name and value, one after the other.
    text: String,
    /// Per header, where its name ends and where its value ends in `text`
    /// (`u32`: half the size inline; see [`Headers::push`]).
    ends: SmallVec<[(u32, u32); INLINE]>,
}

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    /// An empty list with room for `count` headers of `text_bytes` bytes
    /// in all (names and values), so that filling it allocates once.
    pub fn with_capacity(count: usize, text_bytes: usize) -> Self {
        Headers { text: String::with_capacity(text_bytes), ends: SmallVec::with_capacity(count) }
    }

    /// Appends `name: value` after the headers already there. A list
    /// holds at most 4 GiB of names and values; past that a header is not
    /// kept. No list comes near it: every source is bounded far below (a
    /// frame by its 256 KiB maximum, a backend's head by 64 KiB, a user's
    /// by the ingress).
    pub fn push(&mut self, name: &str, value: &str) {
        let Some((name_end, value_end)) = ends_after(self.text.len(), name.len(), value.len()) else { return };
        self.text.push_str(name);
        self.text.push_str(value);
        self.ends.push((name_end, value_end));
    }

    /// Appends `name: value` with `name` in ASCII lower case, as HTTP/2
    /// and the tunnel carry names, without a lowered copy of it.
    pub fn push_lowercased(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.push(name, value);
        // Absent if `push` did not keep the header.
        if let Some(pushed) = self.text.get_mut(start..start + name.len()) {
            pushed.make_ascii_lowercase();
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The headers in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { headers: self, next: 0 }
    }

    /// The first value of `name`, compared without regard to ASCII case
    /// (header names are case-insensitive, RFC 9110 5.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Header `i` as (name, value).
    fn at(&self, i: usize) -> Option<(&str, &str)> {
        let (name, value) = span(&self.ends, i)?;
        Some((self.text.get(name)?, self.text.get(value)?))
    }
}

/// Where a header's name and value end in a list's text of `len` bytes
/// once they are appended; `None` past the 4 GiB a list holds.
fn ends_after(len: usize, name: usize, value: usize) -> Option<(u32, u32)> {
    Some((u32::try_from(len + name).ok()?, u32::try_from(len + name + value).ok()?))
}

/// Where header `i`'s name and value lie in its list's text: each header
/// starts where the one before it ends.
fn span(ends: &[(u32, u32)], i: usize) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let &(name_end, value_end) = ends.get(i)?;
    let start = match i.checked_sub(1) {
        Some(before) => ends.get(before)?.1,
        None => 0,
    };
    let (start, name_end, value_end) = (start as usize, name_end as usize, value_end as usize);
    Some((start..name_end, name_end..value_end))
}

/// A header list as one shared buffer, for a consumer that wants values
/// as [`Bytes`] (hyper's `HeaderValue::from_maybe_shared`): each is a
/// slice of the buffer, not a copy. relay-sim's ingress copied every value
/// of every answer into a buffer of its own (four a typical answer).
pub struct SharedHeaders {
    text: Bytes,
    ends: SmallVec<[(u32, u32); INLINE]>,
}

impl SharedHeaders {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The headers in order, as (name's bytes, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Bytes)> + '_ {
        (0..self.len()).filter_map(|i| {
            let (name, value) = span(&self.ends, i)?;
            // Checked before slicing: `Bytes::slice` panics out of range.
            self.text.get(value.clone())?;
            Some((self.text.get(name)?, self.text.slice(value)))
        })
    }
}

impl From<Headers> for SharedHeaders {
    fn from(headers: Headers) -> Self {
        SharedHeaders { text: Bytes::from(headers.text), ends: headers.ends }
    }
}

/// A header list gathered from bytes not yet known to be UTF-8 (a
/// frame's), checked once as a whole when done: one `from_utf8` over a
/// head's names and values instead of one a name and one a value (eight
/// calls for a typical answer's head, ~850 instructions of relay-sim's
/// ~39,000 a request at 32 connections, callgrind).
#[derive(Default)]
pub struct RawHeaders {
    text: Vec<u8>,
    ends: SmallVec<[(u32, u32); INLINE]>,
}

impl RawHeaders {
    /// Room for `count` headers of `text_bytes` bytes in all.
    pub fn with_capacity(count: usize, text_bytes: usize) -> Self {
        RawHeaders { text: Vec::with_capacity(text_bytes), ends: SmallVec::with_capacity(count) }
    }

    /// Appends `name: value`; `false` (and nothing kept) past the 4 GiB a
    /// list holds, as [`Headers::push`].
    pub fn push(&mut self, name: &[u8], value: &[u8]) -> bool {
        let Some((name_end, value_end)) = ends_after(self.text.len(), name.len(), value.len()) else { return false };
        self.text.extend_from_slice(name);
        self.text.extend_from_slice(value);
        self.ends.push((name_end, value_end));
        true
    }

    /// The list, if every name and value is UTF-8: the whole text is, and
    /// each of them starts and ends on a character boundary (a character
    /// split between a name and its value would make the whole valid and
    /// neither part). `None` says only that some part is not; the caller
    /// finds which.
    pub fn into_headers(self) -> Option<Headers> {
        let text = String::from_utf8(self.text).ok()?;
        let whole =
            self.ends.iter().all(|&(n, v)| text.is_char_boundary(n as usize) && text.is_char_boundary(v as usize));
        whole.then_some(Headers { text, ends: self.ends })
    }
}

/// A header value's bytes as text: borrowed when they are UTF-8, else
/// with U+FFFD for what is not. Checked with `from_utf8` first:
/// `from_utf8_lossy` walks even valid text chunk by chunk, without its
/// fast path for ASCII (the larger cost of a response head's parse).
pub fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(v) => std::borrow::Cow::Borrowed(v),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The headers of a [`Headers`] in order, as (name, value).
#[derive(Clone)]
pub struct Iter<'a> {
    headers: &'a Headers,
    next: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let header = self.headers.at(self.next)?;
        self.next += 1;
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.headers.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

/// As a list of pairs, the way a `Vec<(String, String)>` shows: traces
/// and test failures read the same as before the list had its own type.
impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pushed_headers_come_back_in_order_with_repeats() {
        let mut h = Headers::new();
        h.push("Set-Cookie", "a=1");
        h.push("", "");
        h.push("set-cookie", "b=2");
        assert_eq!(h.len(), 3);
        assert_eq!(h.iter().collect::<Vec<_>>(), [("Set-Cookie", "a=1"), ("", ""), ("set-cookie", "b=2")]);
        assert_eq!(h.get("SET-COOKIE"), Some("a=1"));
        assert_eq!(h.get("cookie"), None);
        assert_eq!(h.iter().len(), 3);
        h.push_lowercased("Content-TYPE", "Text/Plain");
        assert_eq!(h.iter().last(), Some(("content-type", "Text/Plain")));
    }

    #[test]
    fn value_bytes_read_as_text_lossily() {
        assert!(matches!(text(b"caf\xc3\xa9"), std::borrow::Cow::Borrowed("caf\u{e9}")));
        assert_eq!(text(b"a\xffb"), "a\u{fffd}b");
    }

    /// One string holds every name and value: lists that differ only in
    /// where a name ends and its value starts are different lists.
    #[test]
    fn where_a_name_ends_tells_lists_apart() {
        let a: Headers = [("ab", "")].into_iter().collect();
        let b: Headers = [("a", "b")].into_iter().collect();
        assert_ne!(a, b);
        assert_ne!([("a", ""), ("", "b")].into_iter().collect::<Headers>(), b);
    }

    #[test]
    fn shows_as_a_list_of_pairs() {
        let h: Headers = [("host", "a"), ("x-b", "c\"d")].into_iter().collect();
        let v: Vec<(String, String)> = h.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        assert_eq!(format!("{h:?}"), format!("{v:?}"));
        assert_eq!(format!("{:?}", Headers::new()), "[]");
    }

    #[test]
    fn raw_headers_are_checked_as_a_whole_and_part_by_part() {
        let mut raw = RawHeaders::with_capacity(2, 16);
        assert!(raw.push(b"host", b"caf\xc3\xa9"));
        assert!(raw.push(b"x", b""));
        let h = raw.into_headers().expect("valid UTF-8");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("host", "caf\u{e9}"), ("x", "")]);
        // Invalid bytes anywhere: no list.
        let mut raw = RawHeaders::default();
        raw.push(b"a\xff", b"b");
        assert!(raw.into_headers().is_none());
        // "é" split between a name and its value: the whole text is UTF-8,
        // neither part is.
        let mut raw = RawHeaders::default();
        raw.push(b"caf\xc3", b"\xa9");
        assert!(raw.into_headers().is_none());
    }

    #[test]
    fn shared_headers_are_the_list_in_order() {
        let h: Headers = [("content-type", "text/plain"), ("", ""), ("x-a", "caf\u{e9}")].into_iter().collect();
        let shared = SharedHeaders::from(h.clone());
        assert_eq!(shared.len(), 3);
        let back: Vec<(Vec<u8>, Bytes)> = shared.iter().map(|(n, v)| (n.to_vec(), v)).collect();
        let want: Vec<(Vec<u8>, Bytes)> =
            h.iter().map(|(n, v)| (n.as_bytes().to_vec(), Bytes::copy_from_slice(v.as_bytes()))).collect();
        assert_eq!(back, want);
        assert!(SharedHeaders::from(Headers::new()).is_empty());
    }

    proptest! {
        /// Whatever the names and values (empty, non-ASCII, more than fit
        /// inline), the list gives back exactly what went in, and two
        /// lists are equal exactly when their pairs are.
        #[test]
        fn a_list_is_its_pairs(
            pairs in prop::collection::vec((".{0,6}", ".{0,6}"), 0..(INLINE * 2)),
            other in prop::collection::vec((".{0,6}", ".{0,6}"), 0..3),
        ) {
            let h: Headers = pairs.iter().map(|(n, v)| (n, v)).collect();
            let back: Vec<(String, String)> = h.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            prop_assert_eq!(&back, &pairs);
            prop_assert_eq!(h.len(), pairs.len());
            let o: Headers = other.iter().map(|(n, v)| (n, v)).collect();
            prop_assert_eq!(h == o, pairs == other);
            let same: Headers = pairs.iter().map(|(n, v)| (n, v)).collect();
            prop_assert_eq!(h, same);
        }
    }
}
