//! The tunnel's wire format: length-prefixed frames, decoded without I/O.
//!
//! ```text
//! frame   := length:u32be kind:u8 payload      (length = 1 + payload bytes)
//! string  := len:u16be utf8-bytes
//! headers := count:u16be (string string)*
//! ```
//! A frame longer than the negotiated maximum is refused before its payload is
//! buffered, so a hostile peer cannot make us buffer more than
//! `max_frame_bytes`; what a frame decodes to is at most a small multiple of
//! it (a list of empty headers keeps 8 bytes of offsets for each 4 bytes of
//! frame). Every decoding error names the frame kind and the field.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::headers::{Headers, RawHeaders};

/// Protocol version spoken by this build. A peer with another major version
/// is refused at `Hello`.
pub const PROTOCOL_VERSION: u16 = 4;
/// Magic at the start of every `Hello` payload: refuses a peer that is not
/// speaking this protocol at all (a TLS inspection box, an HTTP server).
pub const HELLO_MAGIC: &[u8; 4] = b"CSIM";
/// Default and lower bound for the maximum frame size (bytes, header included).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 256 * 1024;
/// The smallest maximum a peer may announce; below this no request head fits.
pub const MIN_MAX_FRAME_BYTES: u32 = 4 * 1024;
/// Bytes of the frame header (length + kind).
pub const HEADER_BYTES: usize = 5;

/// The methods of RFC 9110 and RFC 5789 (PATCH): a request's method is
/// one of these nearly always, and then costs no allocation.
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// A request method as a frame carries it: borrowed when it is one of the
/// standard methods (compared case-sensitively, as methods are), owned
/// otherwise.
pub fn method(name: &str) -> Cow<'static, str> {
    match METHODS.iter().find(|m| **m == name) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(name.to_owned()),
    }
}

/// Why a request was cancelled or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CancelReason {
    /// The connector has already accepted this request id once (at-most-once).
    Duplicate,
    /// The user went away, or the relay gave up waiting.
    Abandoned,
    /// The connector is draining and takes no new work.
    Draining,
    /// The connector has too many requests in flight.
    Overloaded,
    /// (Connector) the backend broke off after its response had started:
    /// what was relayed is not the whole answer and must not reach the
    /// user as a success.
    BackendBrokeOff,
}

impl CancelReason {
    fn to_u8(self) -> u8 {
        match self {
            CancelReason::Duplicate => 1,
            CancelReason::Abandoned => 2,
            CancelReason::Draining => 3,
            CancelReason::Overloaded => 4,
            CancelReason::BackendBrokeOff => 5,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => CancelReason::Duplicate,
            2 => CancelReason::Abandoned,
            3 => CancelReason::Draining,
            4 => CancelReason::Overloaded,
            5 => CancelReason::BackendBrokeOff,
            _ => return None,
        })
    }
}

/// Why a side sends `GoAway`: what the peer should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoAwayCode {
    /// The sender stops (a restart, an upgrade, a relay going down): the
    /// requests in flight finish; come back (or go elsewhere) later.
    Draining,
    /// (Relay) this endpoint does not serve the connector's tenant or group
    /// (any more): the tenant was moved to another cloud instance, or its
    /// group to another region. The connector asks bootstrap for the
    /// current endpoints instead of dialling this one again.
    Moved,
}

impl GoAwayCode {
    fn to_u8(self) -> u8 {
        match self {
            GoAwayCode::Draining => 1,
            GoAwayCode::Moved => 2,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => GoAwayCode::Draining,
            2 => GoAwayCode::Moved,
            _ => return None,
        })
    }
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame in each direction: protocol version, the sender's maximum
    /// frame size and its name (connector id, or relay endpoint).
    /// `incarnation`: drawn at random when the sending process starts, so
    /// that the relay can tell a connector that reconnected (it remembers
    /// the requests it accepted) from one that restarted (it forgot them).
    Hello { version: u16, max_frame_bytes: u32, peer: String, incarnation: u64 },
    /// Relay → connector: a user's request head. `fin` = no body follows.
    Request { id: u64, method: Cow<'static, str>, path: String, headers: Headers, fin: bool },
    /// A body chunk of the request (relay → connector) or response (back).
    Body { id: u64, fin: bool, data: Bytes },
    /// Connector → relay: the backend's response head.
    Response { id: u64, status: u16, headers: Headers, fin: bool },
    /// Connector → relay: the request is accepted and will be served once.
    Ack { id: u64 },
    /// Either way: the request will not be (further) served.
    Cancel { id: u64, reason: CancelReason },
    /// Keepalive probe; the peer answers with `Pong` carrying the same nonce.
    Ping { nonce: u64 },
    /// Keepalive answer.
    Pong { nonce: u64 },
    /// The sender will accept no new requests; in-flight ones finish.
    /// `code` says what the peer should do; `reason` is for people.
    GoAway { code: GoAwayCode, reason: String },
    /// Either way: the sender took `bytes` more of stream `id`'s body, so
    /// the peer may send that much more (per-stream flow control; see
    /// `session::STREAM_WINDOW`).
    WindowUpdate { id: u64, bytes: u32 },
}

impl Frame {
    /// Stable name of the frame kind, for errors and traces.
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }

    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => 1,
            Frame::Request { .. } => REQUEST,
            Frame::Body { .. } => 3,
            Frame::Response { .. } => 4,
            Frame::Ack { .. } => 5,
            Frame::Cancel { .. } => 6,
            Frame::Ping { .. } => 7,
            Frame::Pong { .. } => 8,
            Frame::GoAway { .. } => 9,
            Frame::WindowUpdate { .. } => 10,
        }
    }

    /// Appends the encoded frame to `out`. Fails only when the frame would be
    /// larger than `max_frame_bytes`, or a string or header list is too long
    /// for its length field.
    pub fn encode(&self, max_frame_bytes: u32, out: &mut BytesMut) -> Result<(), FrameError> {
        encode_framed(self.kind(), max_frame_bytes, out, |out| self.encode_payload(out))
    }

    /// Appends a Request frame encoded from borrowed parts, as
    /// [`Frame::encode`] would the frame they make: the relay keeps a
    /// request's head to offer it again, and this spares it a copy.
    pub fn encode_request(
        id: u64,
        (method, path, headers): (&str, &str, &Headers),
        fin: bool,
        max_frame_bytes: u32,
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        encode_framed(REQUEST, max_frame_bytes, out, |out| put_request(out, id, fin, method, path, headers))
    }

    fn encode_payload(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            Frame::Hello { version, max_frame_bytes, peer, incarnation } => {
                out.put_slice(HELLO_MAGIC);
                out.put_u16(*version);
                out.put_u32(*max_frame_bytes);
                put_str(out, peer, "peer")?;
                out.put_u64(*incarnation);
            }
            Frame::Request { id, method, path, headers, fin } => put_request(out, *id, *fin, method, path, headers)?,
            Frame::Body { id, fin, data } => {
                out.put_u64(*id);
                out.put_u8(u8::from(*fin));
                out.put_slice(data);
            }
            Frame::Response { id, status, headers, fin } => {
                out.put_u64(*id);
                out.put_u8(u8::from(*fin));
                out.put_u16(*status);
                put_headers(out, headers)?;
            }
            Frame::Ack { id } => out.put_u64(*id),
            Frame::Cancel { id, reason } => {
                out.put_u64(*id);
                out.put_u8(reason.to_u8());
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => out.put_u64(*nonce),
            Frame::GoAway { code, reason } => {
                out.put_u8(code.to_u8());
                put_str(out, reason, "reason")?;
            }
            Frame::WindowUpdate { id, bytes } => {
                out.put_u64(*id);
                out.put_u32(*bytes);
            }
        }
        Ok(())
    }
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "Hello",
        2 => "Request",
        3 => "Body",
        4 => "Response",
        5 => "Ack",
        6 => "Cancel",
        7 => "Ping",
        8 => "Pong",
        9 => "GoAway",
        10 => "WindowUpdate",
        _ => "unknown",
    }
}

/// A Request frame's kind byte ([`Frame::encode_request`] writes one
/// without a [`Frame`]).
const REQUEST: u8 = 2;

/// The frame of `kind` whose payload `payload` appends, with its length
/// in front; nothing appended if it fails or is over `max_frame_bytes`.
fn encode_framed(
    kind: u8,
    max_frame_bytes: u32,
    out: &mut BytesMut,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(kind);
    if let Err(e) = payload(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - 4;
    if len + 4 > max_frame_bytes as usize {
        out.truncate(start);
        return Err(FrameError::TooLarge { kind: kind_name(kind), bytes: len + 4, max_bytes: max_frame_bytes });
    }
    // Length fits: max_frame_bytes is a u32.
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

fn put_request(
    out: &mut BytesMut,
    id: u64,
    fin: bool,
    method: &str,
    path: &str,
    headers: &Headers,
) -> Result<(), FrameError> {
    out.put_u64(id);
    out.put_u8(u8::from(fin));
    put_str(out, method, "method")?;
    put_str(out, path, "path")?;
    put_headers(out, headers)
}

fn put_str(out: &mut BytesMut, s: &str, field: &'static str) -> Result<(), FrameError> {
    let len = u16::try_from(s.len()).map_err(|_| FrameError::FieldTooLong { field })?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_headers(out: &mut BytesMut, headers: &Headers) -> Result<(), FrameError> {
    let count = u16::try_from(headers.len()).map_err(|_| FrameError::FieldTooLong { field: "headers" })?;
    out.put_u16(count);
    for (name, value) in headers.iter() {
        put_str(out, name, "header name")?;
        put_str(out, value, "header value")?;
    }
    Ok(())
}

/// What was wrong with bytes received or a frame to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{kind} frame of {bytes} bytes exceeds the maximum frame size of {max_bytes} bytes")]
    TooLarge { kind: &'static str, bytes: usize, max_bytes: u32 },
    #[error("frame of length 0 has no kind byte")]
    Empty,
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("{kind} frame truncated while reading {field}")]
    Truncated { kind: &'static str, field: &'static str },
    #[error("{kind} frame has {extra} trailing bytes")]
    Trailing { kind: &'static str, extra: usize },
    #[error("{kind} frame field {field} is not valid UTF-8")]
    BadUtf8 { kind: &'static str, field: &'static str },
    #[error("Hello frame does not start with the protocol magic: the peer is not a relay tunnel")]
    BadMagic,
    #[error("{kind} frame field {field} has invalid value {value}")]
    BadValue { kind: &'static str, field: &'static str, value: u64 },
    #[error("field {field} is too long for its length prefix")]
    FieldTooLong { field: &'static str },
}

/// Incremental decoder: feed bytes as they arrive, take frames out.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame_bytes: u32,
}

impl Decoder {
    pub fn new(max_frame_bytes: u32) -> Self {
        Decoder { buf: BytesMut::new(), max_frame_bytes }
    }

    /// Changes the limit (after the peer's `Hello` announced a smaller one).
    pub fn set_max_frame_bytes(&mut self, max: u32) {
        self.max_frame_bytes = max;
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next whole frame, `Ok(None)` when more bytes are needed.
    /// After an error the stream is unusable: the caller must close it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let total = len as usize + 4;
        if total > self.max_frame_bytes as usize {
            // The error names the frame's kind, so it waits for that one
            // byte: what it says must not depend on where a read ended.
            let Some(&kind) = self.buf.get(4) else { return Ok(None) };
            return Err(FrameError::TooLarge { kind: kind_name(kind), bytes: total, max_bytes: self.max_frame_bytes });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total).freeze();
        frame.advance(4);
        decode_body(frame).map(Some)
    }
}

/// Decodes one frame from `kind || payload`.
fn decode_body(mut b: Bytes) -> Result<Frame, FrameError> {
    let kind_byte = b.get_u8();
    let kind = kind_name(kind_byte);
    let mut r = Reader { b: &mut b, kind };
    let frame = match kind_byte {
        1 => {
            let magic = r.take(4, "magic")?;
            if magic.as_ref() != HELLO_MAGIC {
                return Err(FrameError::BadMagic);
            }
            let version = r.u16("version")?;
            let max_frame_bytes = r.u32("max_frame_bytes")?;
            let peer = r.string("peer")?;
            let incarnation = r.u64("incarnation")?;
            Frame::Hello { version, max_frame_bytes, peer, incarnation }
        }
        2 => {
            let id = r.u64("id")?;
            let fin = r.flag("fin")?;
            let method = r.method()?;
            let path = r.string("path")?;
            let headers = r.headers()?;
            Frame::Request { id, method, path, headers, fin }
        }
        3 => {
            let id = r.u64("id")?;
            let fin = r.flag("fin")?;
            let data = r.rest();
            Frame::Body { id, fin, data }
        }
        4 => {
            let id = r.u64("id")?;
            let fin = r.flag("fin")?;
            let status = r.u16("status")?;
            if !(100..=999).contains(&status) {
                return Err(FrameError::BadValue { kind, field: "status", value: status.into() });
            }
            let headers = r.headers()?;
            Frame::Response { id, status, headers, fin }
        }
        5 => Frame::Ack { id: r.u64("id")? },
        6 => {
            let id = r.u64("id")?;
            let raw = r.u8("reason")?;
            let reason =
                CancelReason::from_u8(raw).ok_or(FrameError::BadValue { kind, field: "reason", value: raw.into() })?;
            Frame::Cancel { id, reason }
        }
        7 => Frame::Ping { nonce: r.u64("nonce")? },
        8 => Frame::Pong { nonce: r.u64("nonce")? },
        9 => {
            let raw = r.u8("code")?;
            let code =
                GoAwayCode::from_u8(raw).ok_or(FrameError::BadValue { kind, field: "code", value: raw.into() })?;
            Frame::GoAway { code, reason: r.string("reason")? }
        }
        10 => {
            let id = r.u64("id")?;
            let bytes = r.u32("bytes")?;
            if bytes == 0 {
                return Err(FrameError::BadValue { kind, field: "bytes", value: 0 });
            }
            Frame::WindowUpdate { id, bytes }
        }
        other => return Err(FrameError::UnknownKind { kind: other }),
    };
    if b.has_remaining() {
        return Err(FrameError::Trailing { kind, extra: b.remaining() });
    }
    Ok(frame)
}

struct Reader<'a> {
    b: &'a mut Bytes,
    kind: &'static str,
}

impl Reader<'_> {
    fn need(&self, n: usize, field: &'static str) -> Result<(), FrameError> {
        if self.b.remaining() < n {
            return Err(FrameError::Truncated { kind: self.kind, field });
        }
        Ok(())
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        self.need(1, field)?;
        Ok(self.b.get_u8())
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(FrameError::BadValue { kind: self.kind, field, value: v.into() }),
        }
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        self.need(2, field)?;
        Ok(self.b.get_u16())
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        self.need(4, field)?;
        Ok(self.b.get_u32())
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        self.need(8, field)?;
        Ok(self.b.get_u64())
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, FrameError> {
        self.need(n, field)?;
        Ok(self.b.split_to(n))
    }
    /// The string `at` bytes into what is left, read in place, and where
    /// it ends: decoding it costs no copy until the caller keeps it.
    fn str_at(&self, at: usize, field: &'static str) -> Result<(&str, usize), FrameError> {
        let (raw, end) = self.bytes_at(at, field)?;
        let s = std::str::from_utf8(raw).map_err(|_| FrameError::BadUtf8 { kind: self.kind, field })?;
        Ok((s, end))
    }
    /// [`Reader::str_at`]'s bytes, not yet checked as UTF-8.
    fn bytes_at(&self, at: usize, field: &'static str) -> Result<(&[u8], usize), FrameError> {
        let truncated = FrameError::Truncated { kind: self.kind, field };
        let b = self.b.get(at..).unwrap_or_default();
        let len = match b {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return Err(truncated),
        };
        let raw = b.get(2..2 + len).ok_or(truncated)?;
        Ok((raw, at + 2 + len))
    }
    fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        let (s, end) = self.str_at(0, field)?;
        let s = s.to_owned();
        self.b.advance(end);
        Ok(s)
    }
    fn method(&mut self) -> Result<Cow<'static, str>, FrameError> {
        let (s, end) = self.str_at(0, "method")?;
        let m = method(s);
        self.b.advance(end);
        Ok(m)
    }
    fn headers(&mut self) -> Result<Headers, FrameError> {
        let count = usize::from(self.u16("headers")?);
        // Each header takes at least its two length fields: a count the
        // payload cannot hold reserves no more than the payload does.
        let left = self.b.remaining();
        let mut raw = RawHeaders::with_capacity(count.min(left / 4), left.saturating_sub(4 * count));
        let mut at = 0;
        for _ in 0..count {
            let Ok((name, name_end)) = self.bytes_at(at, "header name") else { break };
            let Ok((value, end)) = self.bytes_at(name_end, "header value") else { break };
            if !raw.push(name, value) {
                break;
            }
            at = end;
        }
        match raw.into_headers().filter(|h| h.len() == count) {
            Some(headers) => {
                self.b.advance(at);
                Ok(headers)
            }
            // Cut short or not UTF-8 somewhere: the error names the first
            // field that is wrong, found field by field.
            None => self.headers_checked(count),
        }
    }
    /// [`Reader::headers`] one field at a time, checking each as it goes.
    fn headers_checked(&mut self, count: usize) -> Result<Headers, FrameError> {
        let mut out = Headers::new();
        for _ in 0..count {
            let (name, name_end) = self.str_at(0, "header name")?;
            let (value, end) = self.str_at(name_end, "header value")?;
            out.push(name, value);
            self.b.advance(end);
        }
        Ok(out)
    }
    fn rest(&mut self) -> Bytes {
        let n = self.b.remaining();
        self.b.split_to(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let mut out = BytesMut::new();
        f.encode(DEFAULT_MAX_FRAME_BYTES, &mut out).unwrap();
        let mut d = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
        d.extend(&out);
        assert_eq!(d.next_frame().unwrap(), Some(f));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn every_kind_roundtrips() {
        roundtrip(Frame::Hello { version: 1, max_frame_bytes: 9999, peer: "c1".into(), incarnation: 7 });
        roundtrip(Frame::Request {
            id: 7,
            method: "GET".into(),
            path: "/x".into(),
            headers: [("host", "a")].into_iter().collect(),
            fin: true,
        });
        roundtrip(Frame::Body { id: 7, fin: false, data: Bytes::from_static(b"abc") });
        roundtrip(Frame::Response { id: 7, status: 200, headers: Headers::new(), fin: false });
        roundtrip(Frame::Ack { id: 1 });
        roundtrip(Frame::Cancel { id: 1, reason: CancelReason::Duplicate });
        roundtrip(Frame::Ping { nonce: 3 });
        roundtrip(Frame::Pong { nonce: 3 });
        roundtrip(Frame::GoAway { code: GoAwayCode::Draining, reason: "restart".into() });
        roundtrip(Frame::GoAway { code: GoAwayCode::Moved, reason: "tenant moved".into() });
        roundtrip(Frame::WindowUpdate { id: 3, bytes: 65_536 });
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut d = Decoder::new(MIN_MAX_FRAME_BYTES);
        d.extend(&[0xff, 0xff, 0xff, 0xff, 3]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { kind: "Body", .. })));
    }

    /// The refusal names the frame's kind however the bytes were cut: with
    /// only the length arrived it waits for one more byte (no more is ever
    /// buffered; a peer that stops there meets the session's idle timeout).
    #[test]
    fn an_oversized_length_waits_for_its_kind_byte() {
        let mut d = Decoder::new(MIN_MAX_FRAME_BYTES);
        d.extend(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Ok(None)));
        d.extend(&[1]);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { kind: "Hello", .. })));
    }

    #[test]
    fn truncated_payload_names_the_field() {
        let mut d = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
        d.extend(&[0, 0, 0, 3, 5, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Truncated { kind: "Ack", field: "id" }));
    }

    /// A header count the payload cannot hold is an error naming the field
    /// where the bytes ran out, not a reservation of 65,535 headers; a
    /// value cut short is named as the value.
    #[test]
    fn header_lists_cut_short_name_where() {
        let frame = |payload: &[u8]| {
            let mut d = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
            d.extend(&(payload.len() as u32 + 1).to_be_bytes());
            d.extend(&[4]);
            d.extend(payload);
            d.next_frame()
        };
        let head = [&7u64.to_be_bytes()[..], &[0], &200u16.to_be_bytes()].concat();
        let many = [&head[..], &[0xff, 0xff], &[0, 1, b'a', 0, 0]].concat();
        assert_eq!(frame(&many), Err(FrameError::Truncated { kind: "Response", field: "header name" }));
        let cut_value = [&head[..], &[0, 1], &[0, 1, b'a', 0, 5, b'x']].concat();
        assert_eq!(frame(&cut_value), Err(FrameError::Truncated { kind: "Response", field: "header value" }));
        let whole = [&head[..], &[0, 1], &[0, 1, b'a', 0, 1, b'x']].concat();
        let Ok(Some(Frame::Response { headers, .. })) = frame(&whole) else { panic!("{:?}", frame(&whole)) };
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("a", "x")]);
    }

    /// A request encoded from borrowed parts is the frame encoded whole,
    /// byte for byte, and fails the same way when too large.
    #[test]
    fn a_request_from_parts_is_the_request_frame() {
        let headers: Headers = [("host", "a"), ("x-b", "c\u{e9}")].into_iter().collect();
        let frame =
            Frame::Request { id: 9, method: "POST".into(), path: "/p?q".into(), headers: headers.clone(), fin: true };
        let (mut whole, mut parts) = (BytesMut::new(), BytesMut::new());
        frame.encode(DEFAULT_MAX_FRAME_BYTES, &mut whole).unwrap();
        Frame::encode_request(9, ("POST", "/p?q", &headers), true, DEFAULT_MAX_FRAME_BYTES, &mut parts).unwrap();
        assert_eq!(whole, parts);
        let small = 20;
        let err = frame.encode(small, &mut whole).unwrap_err();
        assert_eq!(Frame::encode_request(9, ("POST", "/p?q", &headers), true, small, &mut parts), Err(err));
        assert_eq!(whole, parts, "nothing appended by a failed encode");
    }

    /// Names and values are checked as one text, yet an error still names
    /// the first field that is not UTF-8, also when the text as a whole is
    /// (a character split between a name and its value), and a list both
    /// cut short and not UTF-8 is named where its first fault lies.
    #[test]
    fn header_lists_not_utf8_name_the_field() {
        let listed = |count: u16, headers: &[&[u8]]| {
            let head = [&7u64.to_be_bytes()[..], &[0], &200u16.to_be_bytes()].concat();
            let mut payload = [&head[..], &count.to_be_bytes()].concat();
            for field in headers {
                payload.extend_from_slice(&(field.len() as u16).to_be_bytes());
                payload.extend_from_slice(field);
            }
            let mut d = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
            d.extend(&(payload.len() as u32 + 1).to_be_bytes());
            d.extend(&[4]);
            d.extend(&payload);
            d.next_frame()
        };
        let frame = |headers: &[&[u8]]| listed(headers.len() as u16 / 2, headers);
        let bad = |field| Err(FrameError::BadUtf8 { kind: "Response", field });
        assert_eq!(listed(3, &[b"a", b"\xff", b"b", b"y"]), bad("header value"));
        let cut = Err(FrameError::Truncated { kind: "Response", field: "header name" });
        assert_eq!(listed(3, &[b"a", b"x", b"b", b"y"]), cut);
        assert_eq!(frame(&[b"a", b"x", b"b", b"\xff"]), bad("header value"));
        assert_eq!(frame(&[b"a", b"x", b"\xffb", b"y"]), bad("header name"));
        assert_eq!(frame(&[b"caf\xc3", b"\xa9"]), bad("header name"));
        let Ok(Some(Frame::Response { headers, .. })) = frame(&[b"caf\xc3\xa9", b"\xc3\xa9"]) else { panic!() };
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("caf\u{e9}", "\u{e9}")]);
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut d = Decoder::new(DEFAULT_MAX_FRAME_BYTES);
        d.extend(&[0, 0, 0, 5, 1, b'H', b'T', b'T', b'P']);
        assert_eq!(d.next_frame(), Err(FrameError::BadMagic));
    }
}
