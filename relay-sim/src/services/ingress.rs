//! The user-facing ingress: takes an HTTP request for a published
//! application (by `Host`), picks a live tunnel of a connector in the app's
//! group, and relays the answer.
//!
//! Delivery rules (at most once):
//! - not yet acknowledged by the connector and the tunnel is lost → the same
//!   request id may be redelivered, but only to the *same* connector process
//!   (its id and the incarnation from its `Hello`), which refuses ids it has
//!   already accepted. A connector that restarted forgot them: it may have
//!   run the request before it died, so it gets no redelivery (502);
//! - acknowledged and then lost → the user gets 502, never a retry;
//! - refused as a duplicate → 502.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use connector::gather::Gather;
use connector::pace::Pace;
use connector::proto::headers::SharedHeaders;
use connector::proto::{self, CancelReason, Headers, RequestHead};
use connector::time::Timer;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::upload::{Refused, Upload};
use super::{gateway, preauth};
use crate::body::Delivery;
use crate::cloud::{Cloud, Dispatch, ToTunnel, TunnelHandle};
use crate::directory::App;
use crate::event::CloudEvent;
use crate::server::{request_host, respond, serve_plain, Body, ConnInfo, Listener};

/// Largest request header block (names, values, and 4 bytes of separators
/// per field), as Azure's gateways and most reverse proxies allow (32 KiB).
/// Larger gets 431 here, before any tunnel sees it.
pub const HEADER_BYTES_MAX: usize = 32 << 10;
/// Longest request target (path and query) relayed; longer gets 414, as
/// from most front ends (nginx's default buffers hold 8 KiB).
pub const URI_BYTES_MAX: usize = 16 << 10;
/// How much of an answer the ingress holds before it sends the head and
/// streams the rest. Within it, a backend or tunnel failing mid-answer
/// still gets the user a clean gateway error (502); past it, only a cut
/// connection (see [`crate::body`]).
pub const STREAM_AFTER_BYTES: usize = 1 << 20;
/// The header that tells a backend the host the user asked for.
const FORWARDED_HOST: &str = "x-forwarded-host";
/// How many tunnels one request may be offered to.
const MAX_ATTEMPTS: u32 = 4;
/// How long a request waits for a tunnel of its group to be available.
pub const TUNNEL_WAIT: Duration = Duration::from_secs(5);

/// Serves the ingress (plain HTTP; the user side is not under test).
pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) {
    serve_plain(listener, move |_info: ConnInfo, req| handle(cloud.clone(), req)).await;
}

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    if let Some(refusal) = screen(&req, cloud.config.upload_bytes_max) {
        return refusal;
    }
    let host = request_host(&req);
    let Some(app) = cloud.config.tenant.app_by_host(&host) else {
        return respond(404, "text/plain", format!("no application is published at {host:?}"));
    };
    if preauth::is_sign_in(app, &req) {
        return preauth::sign_in(&cloud, app, req).await.2;
    }
    let method = proto::method(req.method().as_str());
    // The backend's target: the application's internal URL, then the
    // user's path and query, built in one allocation (no `format!`).
    let base = app.internal_url.trim_end_matches('/');
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut path = String::with_capacity(base.len() + path_and_query.len());
    path.push_str(base);
    path.push_str(path_and_query);
    let from_user = user_headers(req.headers(), host.len());
    let user = match preauth::check(&cloud, app, &from_user) {
        Ok(user) => user,
        Err(stopped) => {
            let (_, detail, resp) = stopped.answer(&cloud.config.tenant.id);
            cloud.emit(CloudEvent::PreAuthRefused { app: app.name.clone(), detail });
            return resp;
        }
    };
    let mut headers = preauth::forwarded_headers(app, user.as_ref(), from_user);
    headers.push(FORWARDED_HOST, &host);
    let limit = cloud.config.upload_bytes_max;
    let mut upload = match Upload::start(req.into_body(), STREAM_AFTER_BYTES, limit).await {
        Ok(upload) => upload,
        // Over the limit, or cut short (a truncated chunked body, a client
        // gone mid-upload): either way nothing reaches a connector.
        Err(refused) => return refusal(refused, limit).2,
    };
    let head = Rc::new(RequestHead { method, path, headers });
    let id = cloud.next_request_id();
    let (status, detail, resp) = relay(&cloud, app, id, head, &mut upload).await;
    if cloud.wants_request_events() {
        cloud.emit(CloudEvent::UserAnswered { id, app: app.name.clone(), status, detail });
    }
    resp
}

/// The answer to a request the ingress refuses before reading its body:
/// no `Host` or more than one (400), a target or header block over the
/// limits (414, 431), a declared body over the limit (413).
fn screen(req: &Request<Incoming>, limit: u64) -> Option<Response<Body>> {
    // RFC 9112 §3.2: no Host, or more than one, is a 400. Two could name
    // two applications, and the ingress and the backend must not pick
    // differently.
    match req.headers().get_all(hyper::header::HOST).iter().count() {
        0 => return Some(gateway(400, "no-host", "an HTTP/1.1 request needs a Host header".into()).2),
        1 => {}
        n => return Some(gateway(400, "many-hosts", format!("{n} Host headers; a request has exactly one")).2),
    }
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > URI_BYTES_MAX {
        let text = format!("request target of {target} bytes; at most {URI_BYTES_MAX} are accepted");
        return Some(gateway(414, "uri-too-long", text).2);
    }
    let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if header_bytes > HEADER_BYTES_MAX {
        let text = format!("request header fields total {header_bytes} bytes; at most {HEADER_BYTES_MAX} are accepted");
        return Some(gateway(431, "headers-too-large", text).2);
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Some(refusal(Refused::TooLarge, limit).2);
    }
    None
}

/// The gateway error for a request body that cannot be relayed.
fn refusal(refused: Refused, limit: u64) -> (u16, String, Response<Body>) {
    match refused {
        Refused::TooLarge => gateway(413, "body-too-large", format!("request body over {limit} bytes")),
        Refused::Broken(why) => gateway(400, "bad-request-body", why),
    }
}

/// The user's headers but those of this hop, in one allocation with room
/// for `x-forwarded-host` (a `Host` of `host_bytes`), which takes `Host`'s
/// place at the end.
fn user_headers(from: &hyper::HeaderMap, host_bytes: usize) -> Headers {
    let text = from.iter().map(|(n, v)| n.as_str().len() + v.len()).sum::<usize>() + FORWARDED_HOST.len() + host_bytes;
    let mut headers = Headers::with_capacity(from.len() + 1, text);
    for (n, v) in from {
        if n != hyper::header::HOST && n != hyper::header::CONNECTION {
            headers.push(n.as_str(), &proto::headers::text(v.as_bytes()));
        }
    }
    headers
}

/// The user's answer: the connector's status and headers over `body`.
/// A type is named only when the backend gave none. Values are slices of
/// the connector's list, not copies, checked as `HeaderValue::from_str`
/// checked them before: no control characters but tab, no DEL; other
/// bytes (UTF-8 text from the backend) pass.
fn answer(status: u16, headers: Headers, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    let headers = SharedHeaders::from(headers);
    // Sized once (with room for a content type), not grown header by header.
    resp.headers_mut().reserve(headers.len() + 1);
    for (n, v) in headers.iter() {
        if let (Ok(n), Ok(v)) =
            (hyper::header::HeaderName::from_bytes(n), hyper::header::HeaderValue::from_maybe_shared(v))
        {
            resp.headers_mut().append(n, v);
        }
    }
    if !resp.headers().contains_key(hyper::header::CONTENT_TYPE) {
        let octets = hyper::header::HeaderValue::from_static("application/octet-stream");
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, octets);
    }
    resp
}

/// Offers the request to tunnels until one answers; see the module docs.
async fn relay(
    cloud: &Rc<Cloud>,
    app: &App,
    id: u64,
    head: Rc<RequestHead>,
    upload: &mut Upload,
) -> (u16, String, Response<Body>) {
    let deadline = tokio::time::Instant::now() + cloud.config.dispatch_timeout;
    let mut pinned: Option<(Rc<str>, u64)> = None;
    for attempt in 0..MAX_ATTEMPTS {
        let only = pinned.as_ref().map(|(c, i)| (&**c, *i));
        let Some(tunnel) = wait_for_tunnel(cloud, &app.group, only).await else {
            return match pinned {
                None => gateway(
                    503,
                    "no-active-connector",
                    format!("no active connector in group {:?} serves application {:?}", app.group, app.name),
                ),
                Some((c, _)) => gateway(
                    502,
                    "connector-lost",
                    format!("lost the tunnel to connector {c} before it accepted the request"),
                ),
            };
        };
        if cloud.wants_request_events() {
            cloud.emit(CloudEvent::RequestDispatched {
                id,
                app: app.name.clone(),
                connector_id: tunnel.connector_id.to_string(),
                endpoint: tunnel.endpoint.to_string(),
                attempt,
            });
        }
        if upload.spent() {
            // Part of its body went to a connector that has lost it since.
            let text = format!("tunnel lost while request {id}'s upload was on its way");
            return gateway(502, "lost-after-accept", text);
        }
        let patience = deadline.saturating_duration_since(tokio::time::Instant::now());
        match offer(&tunnel, id, head.clone(), upload, patience).await {
            Outcome::Answered(status, resp) => return (status, "ok".into(), resp),
            Outcome::Streaming(status, resp) => {
                if !cloud.wants_request_events() {
                    return (status, "streaming".into(), resp);
                }
                let (cloud, app) = (cloud.clone(), app.name.clone());
                let resp = resp.map(|body| {
                    body.on_cut(move |why| cloud.emit(CloudEvent::UserAnswerCut { id, app, reason: why.to_string() }))
                });
                return (status, "streaming".into(), resp);
            }
            Outcome::NotAccepted => {
                // Unacknowledged: safe to offer again, to the same connector.
                pinned = Some((tunnel.connector_id.clone(), tunnel.incarnation));
                connector::time::sleep(Duration::from_millis(500)).await;
            }
            Outcome::Overloaded => continue,
            Outcome::Failed(status, code, text) => return gateway(status, &code, text),
        }
    }
    gateway(502, "no-tunnel-accepted", format!("no tunnel accepted request {id} after {MAX_ATTEMPTS} attempts"))
}

/// A live tunnel of the group (or of one connector), waiting up to
/// [`TUNNEL_WAIT`] for one to (re)appear: connectors reconnect within
/// seconds after a relay restart, and a user should not see that.
async fn wait_for_tunnel(cloud: &Cloud, group: &str, only: Option<(&str, u64)>) -> Option<TunnelHandle> {
    let give_up = tokio::time::Instant::now() + TUNNEL_WAIT;
    loop {
        if let Some(t) = cloud.pick_tunnel(group, only) {
            return Some(t);
        }
        if tokio::time::Instant::now() >= give_up {
            return None;
        }
        connector::time::sleep(Duration::from_millis(250)).await;
    }
}

enum Outcome {
    Answered(u16, Response<Body>),
    /// The head went out and the rest of the answer streams.
    Streaming(u16, Response<Body>),
    NotAccepted,
    Overloaded,
    Failed(u16, String, String),
}

async fn offer(
    tunnel: &TunnelHandle,
    id: u64,
    head: Rc<RequestHead>,
    upload: &mut Upload,
    patience: Duration,
) -> Outcome {
    let (reply, mut rx) = crate::body::replies();
    let pace = upload.streams().then(|| Rc::new(Pace::default()));
    let dispatch = Dispatch { id, head, body: upload.first.clone(), upload: pace.clone(), reply };
    if tunnel.tx.send(ToTunnel::Dispatch(dispatch)).is_err() {
        return Outcome::NotAccepted;
    }
    // A streamed upload not wholly sent is abandoned however this ends
    // (also when the user goes away and this future is dropped).
    let mut unfinished = Abandon { tx: tunnel.tx.clone(), id, armed: pace.is_some() };
    let mut pump: Option<JoinHandle<Result<(), Refused>>> = None;
    let mut answer = Answering::default();
    // The connector's answer is awaited for `patience` from the dispatch,
    // or from the end of an upload: a long upload that keeps moving is
    // never timed out here (the connector times out a stalled one).
    // One timer for the whole wait, not one per delivery: an answer
    // comes as three (Ack, head, body), and a timeout built around each
    // receive registered and removed a timer entry three times a request.
    // None while the upload goes: the connector answers 504 itself if it
    // stalls (and a simulation skips idle time past no deadline of it).
    let mut deadline = Some(Timer::new(tokio::time::Instant::now() + patience));
    let outcome = loop {
        let next = tokio::select! {
            biased;
            next = rx.recv() => next,
            () = expiry(&mut deadline) => {
                let text = format!("connector did not answer request {id} in time");
                break Outcome::Failed(504, "connector-timeout".into(), text);
            },
            pumped = pumped(&mut pump) => match pumped {
                Ok(()) => {
                    unfinished.armed = false;
                    deadline = Some(Timer::new(tokio::time::Instant::now() + patience));
                    continue;
                }
                Err(refused) => {
                    let (status, code, _) = refusal(refused.clone(), upload.limit());
                    break Outcome::Failed(status, code, format!("request {id}: {refused}"));
                }
            },
        };
        if let (Some(Delivery::Acked), Some(pace)) = (&next, &pace) {
            // Accepted: it will not be offered elsewhere, so the rest of
            // the upload can go.
            pump = upload.pump(id, tunnel.tx.clone(), pace.clone()).map(|p| tokio::task::spawn_local(p.run()));
            if pump.is_some() {
                deadline = None;
            }
        }
        match answer.take(id, next) {
            Step::More => {}
            Step::Answer(status, Answered::Whole(bytes)) => {
                break Outcome::Answered(status, answer.respond(status, Body::whole(bytes)));
            }
            Step::Answer(status, Answered::Streams(first)) => {
                // The rest of the upload may still be going (a backend can
                // answer while it reads): the pump goes on, and abandons
                // the stream itself if the user's body fails.
                if pump.is_some() {
                    unfinished.armed = false;
                }
                return Outcome::Streaming(status, answer.respond(status, Body::relayed(first, rx)));
            }
            Step::Failed(outcome) => break outcome,
        }
    };
    if let Some(pump) = pump {
        pump.abort();
    }
    outcome
}

/// Sends `Abandon` for request `id` when dropped armed.
struct Abandon {
    tx: mpsc::UnboundedSender<ToTunnel>,
    id: u64,
    armed: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.tx.send(ToTunnel::Abandon { id: self.id });
        }
    }
}

/// Completes when `deadline` passes; pending for ever without one.
async fn expiry(deadline: &mut Option<Timer>) {
    match deadline {
        Some(timer) => timer.wait().await,
        None => std::future::pending().await,
    }
}

/// Waits for the upload pump, if one runs; pending for ever otherwise.
async fn pumped(pump: &mut Option<JoinHandle<Result<(), Refused>>>) -> Result<(), Refused> {
    let Some(handle) = pump.as_mut() else { return std::future::pending().await };
    let result = handle.await.unwrap_or_else(|e| Err(Refused::Broken(format!("upload: {e}"))));
    *pump = None;
    result
}

/// What has come back of an answer so far.
#[derive(Default)]
struct Answering {
    acked: bool,
    status: u16,
    headers: Headers,
    acc: Gather,
}

/// Where an answer stands after a delivery.
enum Step {
    More,
    Answer(u16, Answered),
    Failed(Outcome),
}

/// An answer ready for the user.
enum Answered {
    Whole(Bytes),
    /// Its start; the rest streams.
    Streams(Bytes),
}

impl Answering {
    fn respond(&mut self, status: u16, body: Body) -> Response<Body> {
        answer(status, std::mem::take(&mut self.headers), body)
    }

    /// Takes one delivery: the answer once there is one to give (whole,
    /// or long enough to be a download: the head goes out and the rest
    /// streams, see `crate::body`), or the outcome if the request failed.
    fn take(&mut self, id: u64, next: Option<Delivery>) -> Step {
        match next {
            Some(Delivery::Acked) => self.acked = true,
            Some(Delivery::Head { status, headers }) => {
                self.status = status;
                if self.acc.is_empty() {
                    self.acc = Gather::for_headers(&headers, STREAM_AFTER_BYTES);
                }
                self.headers = headers;
            }
            Some(Delivery::Body { data, fin }) => {
                self.acc.push(data);
                if fin {
                    return Step::Answer(self.status, Answered::Whole(self.acc.take()));
                }
                if self.acc.len() > STREAM_AFTER_BYTES {
                    return Step::Answer(self.status, Answered::Streams(self.acc.take()));
                }
            }
            other => return Step::Failed(failed(id, self.acked, other)),
        }
        Step::More
    }
}

/// The outcome of a request the tunnel reports failed (`None`: the relay
/// task is gone).
fn failed(id: u64, acked: bool, next: Option<Delivery>) -> Outcome {
    // Lost after the connector accepted it: never offered again.
    let lost = |accepted: bool, text: String| {
        if accepted {
            Outcome::Failed(502, "lost-after-accept".into(), text)
        } else {
            Outcome::NotAccepted
        }
    };
    match next {
        Some(Delivery::Unsendable(why)) => {
            Outcome::Failed(431, "headers-too-large".into(), format!("request {id}: {why}"))
        }
        // (Before an Ack only: after one, no refusal may send it elsewhere.)
        Some(Delivery::Cancelled(CancelReason::Overloaded)) if !acked => Outcome::Overloaded,
        Some(Delivery::Cancelled(CancelReason::BackendBrokeOff)) => Outcome::Failed(
            502,
            "backend-broke-off".into(),
            format!("the backend broke off its answer to request {id}"),
        ),
        Some(Delivery::Cancelled(reason)) => {
            Outcome::Failed(502, "refused".into(), format!("connector refused request {id}: {reason:?}"))
        }
        Some(Delivery::Lost { acked: a, reason }) => {
            lost(a || acked, format!("tunnel lost while serving request {id}: {reason}"))
        }
        // The relay task was dropped (relay host crashed).
        None => lost(acked, format!("relay lost while serving request {id}")),
        // Taken by `Answering::take`.
        Some(Delivery::Acked | Delivery::Head { .. } | Delivery::Body { .. }) => Outcome::NotAccepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every header the connector relays reaches the user exactly when
    /// `HeaderValue::from_str`, which copied each value before, takes it.
    #[test]
    fn answer_headers_pass_as_their_copies_did() {
        let pairs = [
            ("content-length", "5"),
            ("x-name", "caf\u{e9}"),
            ("x-tab", "a\tb"),
            ("x-empty", ""),
            ("x-del", "a\u{7f}"),
            ("x-ctl", "a\u{1}"),
            ("bad name", "v"),
        ];
        let resp = answer(201, pairs.iter().copied().collect(), Body::whole(Bytes::from_static(b"hello")));
        assert_eq!(resp.status(), 201);
        let h = resp.headers();
        for (name, value) in pairs {
            let before = hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && hyper::header::HeaderValue::from_str(value).is_ok();
            assert_eq!(h.get(name).map(|v| v.as_bytes()), before.then_some(value.as_bytes()), "{name}");
        }
        assert!(h.contains_key("x-name"), "UTF-8 text from a backend passes");
        assert_eq!(h[hyper::header::CONTENT_TYPE], "application/octet-stream");
    }
}
