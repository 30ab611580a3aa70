//! HTTP/1.1 to a backend as bytes in and bytes out, with no I/O: the
//! request head and body framing the connector writes, the response head it
//! parses ([`httparse`]) and the response body's decoder. The driver in
//! [`super`] moves the bytes.
//!
//! The connector used hyper's client here. Its connection task and the
//! channel to it were two task wake-ups per request and the largest
//! user-space share of the connector's profile under load; the connector
//! needs only this much of HTTP/1.1: one request at a time per connection,
//! no upgrades, bodies streamed.

use bytes::{Buf, Bytes, BytesMut};

use crate::proto::Headers;

/// A request head or response that cannot go on, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid header {0:?}")]
    HeaderName(String),
    #[error("invalid value of header {0}")]
    HeaderValue(String),
    #[error("invalid content-length {0:?}")]
    ContentLength(String),
    #[error("content-length says {said} bytes but the body has {has}")]
    LengthMismatch { said: u64, has: u64 },
    #[error("the request body is longer than its content-length ({0} bytes)")]
    BodyTooLong(u64),
    #[error("sent an invalid response head: {0}")]
    ResponseHead(String),
    #[error("sent a response head over {0} bytes")]
    HeadTooLarge(usize),
    #[error("switched protocols (101), which the connector does not forward")]
    Switched,
    #[error("sent transfer-encoding {0:?}; the connector undoes only chunked")]
    TransferCoding(String),
    #[error("sent an invalid chunk size line")]
    ChunkSize,
    #[error("sent a chunk not followed by CRLF")]
    ChunkEnd,
    #[error("sent a trailer section over {0} bytes")]
    TrailerTooLarge(usize),
}

/// The longest response head (and trailer section) accepted.
pub const HEAD_MAX: usize = 64 * 1024;
/// The most response headers accepted.
const HEADERS_MAX: usize = 128;

/// How long the request body is, as far as the connector knows when it
/// writes the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// Held whole: this many bytes.
    Whole(u64),
    /// Still arriving from the relay.
    Streamed,
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked` (a streamed body of unknown length).
    Chunked,
}

/// Methods whose empty request body goes without a `content-length: 0`,
/// as clients commonly send them.
const BODILESS: [&str; 6] = ["GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

/// Whether requests with `method` usually have no body: one that has a
/// body anyway may be read by the backend as the next request on the
/// connection, so that connection is not reused.
pub fn is_bodiless(method: &str) -> bool {
    BODILESS.contains(&method)
}

/// Encodes the request head for `method path_and_query`: the forwardable
/// `headers` (validated: a name or value that would break the head is an
/// error, never passed on), `host:port` if they name no host, and the body's
/// framing. A `content-length` from the user frames the body (checked
/// against a whole one); without one a streamed body goes chunked.
pub fn encode_head(
    method: &str,
    path_and_query: &str,
    headers: &Headers,
    (host, port): (&str, u16),
    body: BodyLen,
) -> Result<(Vec<u8>, Framing), H1Error> {
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(H1Error::Method(method.to_string()));
    }
    let mut out = Vec::with_capacity(128 + headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>());
    put(&mut out, &[method, " ", path_and_query, " HTTP/1.1\r\n"]);
    let mut has_host = false;
    let mut said: Option<u64> = None;
    for (name, value) in headers.iter().filter(|(n, _)| super::forwardable(n)) {
        if !valid_name(name) {
            return Err(H1Error::HeaderName(name.to_owned()));
        }
        if !valid_value(value) {
            return Err(H1Error::HeaderValue(name.to_owned()));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let n = digits(value).ok_or_else(|| H1Error::ContentLength(value.to_owned()))?;
            if said.is_some_and(|s| s != n) {
                return Err(H1Error::ContentLength(value.to_owned()));
            }
            said = Some(n);
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        put(&mut out, &[name, ": ", value, "\r\n"]);
    }
    if !has_host {
        put(&mut out, &["host: ", host, ":"]);
        put_number(&mut out, u64::from(port));
        out.extend_from_slice(b"\r\n");
    }
    let framing = match (body, said) {
        (BodyLen::Whole(has), Some(said)) if has != said => return Err(H1Error::LengthMismatch { said, has }),
        (BodyLen::Whole(0), None) if BODILESS.contains(&method) => Framing::Length(0),
        (BodyLen::Whole(n), _) | (BodyLen::Streamed, Some(n)) => {
            put(&mut out, &["content-length: "]);
            put_number(&mut out, n);
            out.extend_from_slice(b"\r\n");
            Framing::Length(n)
        }
        (BodyLen::Streamed, None) => {
            put(&mut out, &["transfer-encoding: chunked\r\n"]);
            Framing::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    Ok((out, framing))
}

fn put(out: &mut Vec<u8>, parts: &[&str]) {
    for p in parts {
        out.extend_from_slice(p.as_bytes());
    }
}

/// `n` in decimal ASCII digits, written into `buf`: no `String` as
/// `to_string` makes.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

/// Writes `n` in decimal.
fn put_number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n, &mut [0; 20]));
}

/// Whether `http::HeaderName::from_bytes` takes `name`: 1 to 65,535 token
/// characters (RFC 9110 5.6.2). Checked here because that call copies
/// every name it does not know into a new buffer, two or three a request
/// (a property test holds the two equal).
fn valid_name(name: &str) -> bool {
    (1..=NAME_LEN_MAX).contains(&name.len()) && name.bytes().all(|b| TOKEN[usize::from(b)])
}

/// Which bytes are token characters (RFC 9110 5.6.2), looked up: testing
/// each byte against the list of symbols cost more than the rest of the
/// head's writing.
const TOKEN: [bool; 256] = alphanumerics_and(b"!#$%&'*+-.^_`|~");

/// A table of the bytes that are ASCII letters, digits or in `symbols`.
pub(super) const fn alphanumerics_and(symbols: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < symbols.len() {
        table[symbols[i] as usize] = true;
        i += 1;
    }
    table
}

/// `http::HeaderName`'s longest name.
const NAME_LEN_MAX: usize = (1 << 16) - 1;

/// Whether `http::HeaderValue::from_str` takes `value`: no control
/// character but tab (that call copies the value; a property test holds
/// the two equal).
fn valid_value(value: &str) -> bool {
    value.bytes().all(|b| (b >= 32 && b != 127) || b == b'\t')
}

/// Frames request body pieces as `framing` says, counting what a
/// `content-length` allows.
#[derive(Debug)]
pub struct BodyEncoder {
    framing: Framing,
    sent: u64,
}

impl BodyEncoder {
    pub fn new(framing: Framing) -> Self {
        BodyEncoder { framing, sent: 0 }
    }

    /// The bytes that go before and after `len` bytes of body.
    pub fn piece(&mut self, len: usize) -> Result<(Vec<u8>, &'static [u8]), H1Error> {
        self.sent += len as u64;
        match self.framing {
            Framing::Length(n) if self.sent > n => Err(H1Error::BodyTooLong(n)),
            Framing::Length(_) => Ok((Vec::new(), b"")),
            Framing::Chunked if len == 0 => Ok((Vec::new(), b"")),
            Framing::Chunked => Ok((format!("{len:x}\r\n").into_bytes(), b"\r\n")),
        }
    }

    /// The bytes that end the body.
    pub fn finish(&self) -> Result<&'static [u8], H1Error> {
        match self.framing {
            Framing::Length(n) if self.sent != n => Err(H1Error::LengthMismatch { said: n, has: self.sent }),
            Framing::Length(_) => Ok(b""),
            Framing::Chunked => Ok(b"0\r\n\r\n"),
        }
    }
}

/// A response head, its hop-by-hop headers removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Headers,
    pub body: BodyKind,
    /// Whether the connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// Parses a response head from the start of `buf`: `Ok(None)` if more
/// bytes are needed, else the head and its length. `to_head` says the
/// request was a HEAD (whose answer has no body whatever it announces).
pub fn parse_response(buf: &[u8], to_head: bool) -> Result<Option<(usize, ResponseHead)>, H1Error> {
    // Left uninitialised: writing 128 empty headers (4 KiB) before every
    // parse cost more than parsing a short head.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > HEAD_MAX => return Err(H1Error::HeadTooLarge(HEAD_MAX)),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::ResponseHead(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status == 101 {
        return Err(H1Error::Switched);
    }
    if status < 100 {
        return Err(H1Error::ResponseHead(format!("status {status}")));
    }
    let (mut close, mut keep, mut encoded) = (false, false, false);
    // The length, and its text as the backend wrote it.
    let mut length: Option<(u64, &str)> = None;
    // Room for every header and the length as we write it: one allocation.
    let text = resp.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>();
    let mut headers = Headers::with_capacity(resp.headers.len() + 1, text + "content-length".len() + 20);
    for h in resp.headers.iter() {
        let value = crate::proto::headers::text(h.value);
        if h.name.eq_ignore_ascii_case("connection") {
            close |= has_token(&value, "close");
            keep |= has_token(&value, "keep-alive");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only chunked is undone here; another coding would reach the
            // user undeclared once this hop-by-hop header is dropped.
            if !value.trim().eq_ignore_ascii_case("chunked") {
                return Err(H1Error::TransferCoding(value.into_owned()));
            }
            encoded = true;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = digits(&value).ok_or_else(|| H1Error::ContentLength(value.to_string()))?;
            if length.is_some_and(|(l, _)| l != n) {
                return Err(H1Error::ContentLength(value.to_string()));
            }
            // Digits only: valid UTF-8, so borrowed from the head.
            let text = match value {
                std::borrow::Cow::Borrowed(v) => v,
                std::borrow::Cow::Owned(_) => "",
            };
            length = Some((n, text));
            continue;
        }
        if super::forwardable(h.name) {
            headers.push_lowercased(h.name, &value);
        }
    }
    let body = match () {
        () if to_head || (100..200).contains(&status) || status == 204 || status == 304 => BodyKind::Empty,
        // RFC 9112 6.3: chunked wins over a length.
        () if encoded => BodyKind::Chunked,
        () => length.map_or(BodyKind::UntilClose, |(n, _)| BodyKind::Length(n)),
    };
    // One length, as the backend gave it (a HEAD's or a 304's included),
    // unless chunked framing made it meaningless (RFC 9112 6.3).
    if let (Some((n, text)), false) = (length, encoded) {
        headers.push("content-length", &canonical(text, n, &mut [0; 20]));
    }
    let persistent = if resp.version == Some(1) { !close } else { keep && !close };
    let keep_alive = persistent && body != BodyKind::UntilClose;
    Ok(Some((len, ResponseHead { status, headers, body, keep_alive })))
}

/// `n` as `value` wrote it when that is how `n` is written (digits with
/// no leading zero: the usual case, with no conversion), else written anew.
fn canonical<'a>(value: &'a str, n: u64, buf: &'a mut [u8; 20]) -> std::borrow::Cow<'a, str> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0')) {
        return v.into();
    }
    String::from_utf8_lossy(decimal(n, buf))
}

/// A content-length: digits only (no sign, no spaces inside).
fn digits(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What the body decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Data(Bytes),
    /// The buffer holds no more of the body: read more.
    NeedMore,
    /// The body is complete.
    Done,
}

/// Takes a response body out of the read buffer as `BodyKind` frames it.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

/// The longest chunk-size line accepted (size and extensions).
const SIZE_LINE_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    UntilClose,
    /// Reading a chunk-size line, `line` bytes of it so far; `ext` once
    /// past the size (an extension).
    Size {
        size: u64,
        digits: u8,
        line: usize,
        ext: bool,
    },
    /// The LF that ends a chunk-size line.
    SizeLf {
        size: u64,
    },
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Its LF.
    DataEndLf,
    /// The trailer section, `bytes` of it so far; `line` says whether the
    /// current line has anything on it.
    Trailers {
        bytes: usize,
        line: bool,
    },
    Done,
}

impl State {
    const SIZE: State = State::Size { size: 0, digits: 0, line: 0, ext: false };
}

impl BodyDecoder {
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::SIZE,
            BodyKind::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next piece of body in `buf`, taken out of it without copying.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Piece, H1Error> {
        loop {
            match self.state {
                State::Done => return Ok(Piece::Done),
                _ if buf.is_empty() => return Ok(Piece::NeedMore),
                State::UntilClose => return Ok(Piece::Data(buf.split().freeze())),
                State::Length(left) | State::Data(left) => {
                    let n = left.min(buf.len() as u64);
                    let rest = left - n;
                    self.state = match (self.state, rest) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), r) => State::Length(r),
                        (_, 0) => State::DataEnd,
                        (_, r) => State::Data(r),
                    };
                    return Ok(Piece::Data(buf.split_to(n as usize).freeze()));
                }
                State::Size { .. }
                | State::SizeLf { .. }
                | State::DataEnd
                | State::DataEndLf
                | State::Trailers { .. } => self.framing_byte(buf)?,
            }
        }
    }

    /// Consumes one byte of chunk framing (sizes, CRLFs, trailers).
    fn framing_byte(&mut self, buf: &mut BytesMut) -> Result<(), H1Error> {
        let b = buf.get_u8();
        let after_size =
            |size: u64| if size == 0 { State::Trailers { bytes: 0, line: false } } else { State::Data(size) };
        self.state = match (self.state, b) {
            (State::Size { line, .. }, _) if line >= SIZE_LINE_MAX => return Err(H1Error::ChunkSize),
            (State::Size { digits: 0, .. }, b) if !b.is_ascii_hexdigit() => return Err(H1Error::ChunkSize),
            (State::Size { size, digits, line, ext: false }, b) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err(H1Error::ChunkSize);
                }
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                State::Size { size: size << 4 | d, digits: digits + 1, line: line + 1, ext: false }
            }
            (State::Size { size, .. }, b'\r') => State::SizeLf { size },
            (State::Size { size, .. }, b'\n') => after_size(size),
            (State::Size { size, digits, line, .. }, b';' | b' ' | b'\t') => {
                State::Size { size, digits, line: line + 1, ext: true }
            }
            (State::Size { size, digits, line, ext: true }, _) => {
                State::Size { size, digits, line: line + 1, ext: true }
            }
            (State::Size { .. }, _) => return Err(H1Error::ChunkSize),
            (State::SizeLf { size }, b'\n') => after_size(size),
            (State::SizeLf { .. }, _) => return Err(H1Error::ChunkSize),
            (State::DataEnd, b'\r') => State::DataEndLf,
            (State::DataEnd | State::DataEndLf, b'\n') => State::SIZE,
            (State::DataEnd | State::DataEndLf, _) => return Err(H1Error::ChunkEnd),
            (State::Trailers { bytes, .. }, _) if bytes >= HEAD_MAX => return Err(H1Error::TrailerTooLarge(HEAD_MAX)),
            (State::Trailers { line: false, .. }, b'\n') => State::Done,
            (State::Trailers { bytes, .. }, b'\n') => State::Trailers { bytes: bytes + 1, line: false },
            (State::Trailers { bytes, line }, b'\r') => State::Trailers { bytes: bytes + 1, line },
            (State::Trailers { bytes, .. }, _) => State::Trailers { bytes: bytes + 1, line: true },
            (s, _) => s,
        };
        Ok(())
    }

    /// The backend closed the connection: fine only for a body that runs
    /// until the close. Otherwise how much was missing.
    pub fn at_eof(&mut self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.state = State::Done;
                Ok(())
            }
            State::Length(left) => Err(format!("closed the connection with {left} bytes of the body still to come")),
            _ => Err("closed the connection before the last chunk".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(kind: BodyKind, wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), H1Error> {
        let mut dec = BodyDecoder::new(kind);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        for p in points {
            buf.extend_from_slice(&wire[at..p]);
            at = p;
            loop {
                match dec.next(&mut buf)? {
                    Piece::Data(d) => out.extend_from_slice(&d),
                    Piece::NeedMore => break,
                    Piece::Done => return Ok((out, true)),
                }
            }
        }
        Ok((out, false))
    }

    fn chunk(pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut enc = BodyEncoder::new(Framing::Chunked);
        for p in pieces {
            let (before, after) = enc.piece(p.len()).unwrap();
            wire.extend_from_slice(&before);
            wire.extend_from_slice(p);
            wire.extend_from_slice(after);
        }
        wire.extend_from_slice(enc.finish().unwrap());
        wire
    }

    /// Token characters, separators, controls and a non-ASCII letter.
    const HEADER_TEXT: &str = "aZ09!#$%&'*+.^_`|~-: \"(),;<=>?@[]{}\\/\t\r\n\x00\x01\x1f\x7f\u{e9}";

    proptest! {
        /// Whatever the pieces and however the wire is cut into reads, a
        /// chunked body decodes to its bytes and ends exactly at its end.
        #[test]
        fn chunked_bodies_round_trip(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let wire = chunk(&pieces);
            let (out, done) = decode_all(BodyKind::Chunked, &wire, &cuts).unwrap();
            prop_assert!(done);
            prop_assert_eq!(out, pieces.concat());
        }

        /// Header names and values are judged as `http` judges them.
        #[test]
        fn names_and_values_are_judged_as_http_does(
            text in proptest::collection::vec(proptest::sample::select(HEADER_TEXT.chars().collect::<Vec<_>>()), 0..12)
                .prop_map(|chars| chars.into_iter().collect::<String>()),
        ) {
            prop_assert_eq!(valid_name(&text), http::HeaderName::from_bytes(text.as_bytes()).is_ok());
            prop_assert_eq!(valid_value(&text), http::HeaderValue::from_str(&text).is_ok());
        }

        /// Garbage never panics the decoder.
        #[test]
        fn garbage_is_an_error_or_a_body(wire in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_all(BodyKind::Chunked, &wire, &[]);
            let _ = parse_response(&wire, false);
        }
    }

    #[test]
    fn chunks_with_extensions_and_trailers_decode() {
        let wire = b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let mut dec = BodyDecoder::new(BodyKind::Chunked);
        let mut buf = BytesMut::from(&wire[..]);
        let mut out = Vec::new();
        while let Piece::Data(d) = dec.next(&mut buf).unwrap() {
            out.extend_from_slice(&d);
        }
        assert_eq!(out, b"hello world");
        assert!(dec.is_done());
        assert_eq!(&buf[..], b"NEXT", "the next response's bytes stay in the buffer");
    }

    #[test]
    fn decimals_read_as_display_writes_them() {
        for n in [0, 7, 10, 99, 4_294_967_296, u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
            assert_eq!(canonical(&n.to_string(), n, &mut [0; 20]), n.to_string());
            assert_eq!(canonical(&format!(" 0{n} "), n, &mut [0; 20]), n.to_string());
        }
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n", false).unwrap().unwrap().1;
        assert_eq!(r.headers.get("content-length"), Some("7"), "a length goes on as a number");
    }

    #[test]
    fn a_cr_in_a_size_line_must_end_it() {
        assert_eq!(decode_all(BodyKind::Chunked, b"1\r0\r\n", &[]), Err(H1Error::ChunkSize));
        assert_eq!(decode_all(BodyKind::Chunked, b"1\r\na\r\r\n", &[]), Err(H1Error::ChunkEnd));
        let long = [b"1;".as_slice(), &[b'x'; SIZE_LINE_MAX]].concat();
        assert_eq!(decode_all(BodyKind::Chunked, &long, &[]), Err(H1Error::ChunkSize));
    }

    #[test]
    fn bad_chunk_framing_is_named() {
        assert_eq!(decode_all(BodyKind::Chunked, b"zz\r\n", &[]), Err(H1Error::ChunkSize));
        assert_eq!(decode_all(BodyKind::Chunked, b"2\r\nabX", &[]), Err(H1Error::ChunkEnd));
        assert_eq!(decode_all(BodyKind::Chunked, b"11111111111111111\r\n", &[]), Err(H1Error::ChunkSize));
    }

    #[test]
    fn lengths_end_where_they_say_and_eof_says_what_is_missing() {
        let (out, done) = decode_all(BodyKind::Length(3), b"abcdef", &[1]).unwrap();
        assert_eq!((out.as_slice(), done), (&b"abc"[..], true));
        let mut dec = BodyDecoder::new(BodyKind::Length(10));
        let mut buf = BytesMut::from(&b"abcd"[..]);
        assert_eq!(dec.next(&mut buf).unwrap(), Piece::Data(Bytes::from_static(b"abcd")));
        assert!(dec.at_eof().unwrap_err().contains("6 bytes"));
        assert!(BodyDecoder::new(BodyKind::UntilClose).at_eof().is_ok());
    }

    #[test]
    fn response_heads_say_how_the_body_ends() {
        let parse = |s: &str, head| parse_response(s.as_bytes(), head).unwrap().unwrap().1;
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-A: b\r\n\r\n", false);
        assert_eq!((r.status, r.body, r.keep_alive), (200, BodyKind::Length(5), true));
        assert_eq!(r.headers.iter().collect::<Vec<_>>(), [("x-a", "b"), ("content-length", "5")]);
        let r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false);
        assert_eq!((r.body, r.keep_alive), (BodyKind::Chunked, true));
        assert!(r.headers.is_empty(), "neither framing header goes on: {:?}", r.headers);
        let gzip = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false);
        assert!(matches!(gzip, Err(H1Error::TransferCoding(_))));
        assert!(matches!(parse_response(b"HTTP/1.1 099 X\r\n\r\n", false), Err(H1Error::ResponseHead(_))));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", false),
            Err(H1Error::ContentLength(_))
        ));
        let r = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.body, r.keep_alive), (BodyKind::UntilClose, false));
        let r = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false);
        assert!(!r.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\n", true);
        assert_eq!((r.body, r.keep_alive), (BodyKind::Empty, false));
        assert_eq!(parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false).body, BodyKind::Empty);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", false), Ok(None));
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(H1Error::ContentLength(_))
        ));
        assert!(matches!(parse_response(b"HTTP/1.1 101 Switching\r\n\r\n", false), Err(H1Error::Switched)));
        assert!(matches!(parse_response(b"NOT HTTP\r\n\r\n", false), Err(H1Error::ResponseHead(_))));
    }

    #[test]
    fn request_heads_are_framed_and_checked() {
        let h = |v: &[(&str, &str)]| v.iter().copied().collect::<Headers>();
        let (head, framing) = encode_head("GET", "/a?b", &h(&[("x-a", "1")]), ("app", 80), BodyLen::Whole(0)).unwrap();
        assert_eq!(String::from_utf8(head).unwrap(), "GET /a?b HTTP/1.1\r\nx-a: 1\r\nhost: app:80\r\n\r\n");
        assert_eq!(framing, Framing::Length(0));
        let (head, _) =
            encode_head("POST", "/", &h(&[("Host", "h"), ("Connection", "x")]), ("d", 80), BodyLen::Whole(0)).unwrap();
        assert_eq!(String::from_utf8(head).unwrap(), "POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\n\r\n");
        let (head, framing) = encode_head("PUT", "/", &h(&[]), ("d", 80), BodyLen::Streamed).unwrap();
        assert!(String::from_utf8(head).unwrap().contains("transfer-encoding: chunked\r\n"));
        assert_eq!(framing, Framing::Chunked);
        let streamed = encode_head("PUT", "/", &h(&[("content-length", "7")]), ("d", 80), BodyLen::Streamed).unwrap();
        assert_eq!(streamed.1, Framing::Length(7));
        assert_eq!(
            encode_head("PUT", "/", &h(&[("content-length", "7")]), ("d", 80), BodyLen::Whole(3)).unwrap_err(),
            H1Error::LengthMismatch { said: 7, has: 3 }
        );
        assert!(matches!(encode_head("GE T", "/", &h(&[]), ("d", 80), BodyLen::Whole(0)), Err(H1Error::Method(_))));
        let smuggle = h(&[("x-a", "1\r\nx-b: 2")]);
        assert!(matches!(
            encode_head("GET", "/", &smuggle, ("d", 80), BodyLen::Whole(0)),
            Err(H1Error::HeaderValue(_))
        ));
        assert!(matches!(
            encode_head("GET", "/", &h(&[("a b", "1")]), ("d", 80), BodyLen::Whole(0)),
            Err(H1Error::HeaderName(_))
        ));
    }

    #[test]
    fn a_length_framed_body_is_held_to_its_length() {
        let mut enc = BodyEncoder::new(Framing::Length(3));
        assert!(enc.piece(2).is_ok());
        assert_eq!(enc.finish(), Err(H1Error::LengthMismatch { said: 3, has: 2 }));
        assert_eq!(enc.piece(2), Err(H1Error::BodyTooLong(3)));
    }
}
