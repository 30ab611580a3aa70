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

use bytes::{Bytes, BytesMut};
use connector::proto::{CancelReason, RequestHead};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::mpsc;

use super::preauth;
use crate::cloud::{Cloud, Delivery, Dispatch, TunnelHandle};
use crate::directory::App;
use crate::event::CloudEvent;
use crate::server::{request_host, respond, serve_plain, Body, ConnInfo, Listener};

/// Largest request body relayed (an upload is held whole before it is
/// offered to a tunnel; answers stream and have no limit).
pub const BODY_BYTES_MAX: usize = 16 << 20;
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
/// How many tunnels one request may be offered to.
const MAX_ATTEMPTS: u32 = 4;
/// How long a request waits for a tunnel of its group to be available.
pub const TUNNEL_WAIT: Duration = Duration::from_secs(5);

/// Serves the ingress (plain HTTP; the user side is not under test).
pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) {
    serve_plain(listener, move |_info: ConnInfo, req| handle(cloud.clone(), req)).await;
}

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    if let Some(refusal) = screen(&req) {
        return refusal;
    }
    let host = request_host(&req);
    let Some(app) = cloud.config.tenant.app_by_host(&host).cloned() else {
        return respond(404, "text/plain", format!("no application is published at {host:?}"));
    };
    if preauth::is_sign_in(&app, &req) {
        return preauth::sign_in(&cloud, &app, req).await.2;
    }
    let method = req.method().to_string();
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let mut headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(n, _)| *n != hyper::header::HOST && *n != hyper::header::CONNECTION)
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let user = match preauth::check(&cloud, &app, &headers) {
        Ok(user) => user,
        Err(stopped) => {
            let (_, detail, resp) = stopped.answer(&cloud.config.tenant.id);
            cloud.emit(CloudEvent::PreAuthRefused { app: app.name.clone(), detail });
            return resp;
        }
    };
    preauth::forwarded_headers(&app, user.as_ref(), &mut headers);
    headers.push(("x-forwarded-host".into(), host.clone()));
    let body = match Limited::new(req.into_body(), BODY_BYTES_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        // Over the limit, or cut short (a truncated chunked body, a client
        // gone mid-upload): either way nothing reaches a connector.
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return body_too_large(),
        Err(e) => return gateway(400, "bad-request-body", format!("request body: {e}")).2,
    };
    let head =
        RequestHead { method, path: format!("{}{}", app.internal_url.trim_end_matches('/'), path_and_query), headers };
    let id = cloud.next_request_id();
    let (status, detail, resp) = relay(&cloud, &app, id, head, body).await;
    cloud.emit(CloudEvent::UserAnswered { id, app: app.name.clone(), status, detail });
    resp
}

/// The answer to a request the ingress refuses before reading its body:
/// no `Host` (400), a target or header block over the limits (414, 431),
/// a declared body over the limit (413).
fn screen(req: &Request<Incoming>) -> Option<Response<Body>> {
    if !req.headers().contains_key(hyper::header::HOST) {
        return Some(gateway(400, "no-host", "an HTTP/1.1 request needs a Host header".into()).2);
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
    if declared.is_some_and(|n| n > BODY_BYTES_MAX as u64) {
        return Some(body_too_large());
    }
    None
}

fn body_too_large() -> Response<Body> {
    gateway(413, "body-too-large", format!("request body over {BODY_BYTES_MAX} bytes")).2
}

pub(super) fn gateway(status: u16, code: &str, text: String) -> (u16, String, Response<Body>) {
    let mut resp = respond(status, "text/plain", text);
    if let Ok(v) = hyper::header::HeaderValue::from_str(code) {
        resp.headers_mut().insert("x-relay-error", v);
    }
    (status, code.to_string(), resp)
}

/// The user's answer: the connector's status and headers over `body`.
/// A type is named only when the backend gave none.
fn answer(status: u16, headers: &[(String, String)], body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (n, v) in headers {
        if let (Ok(n), Ok(v)) =
            (hyper::header::HeaderName::from_bytes(n.as_bytes()), hyper::header::HeaderValue::from_str(v))
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
async fn relay(cloud: &Rc<Cloud>, app: &App, id: u64, head: RequestHead, body: Bytes) -> (u16, String, Response<Body>) {
    let deadline = tokio::time::Instant::now() + cloud.config.dispatch_timeout;
    let mut pinned: Option<(String, u64)> = None;
    for attempt in 0..MAX_ATTEMPTS {
        let only = pinned.as_ref().map(|(c, i)| (c.as_str(), *i));
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
        cloud.emit(CloudEvent::RequestDispatched {
            id,
            app: app.name.clone(),
            connector_id: tunnel.connector_id.clone(),
            endpoint: tunnel.endpoint.clone(),
            attempt,
        });
        match offer(&tunnel, id, head.clone(), body.clone(), deadline).await {
            Outcome::Answered(status, resp) => return (status, "ok".into(), resp),
            Outcome::Streaming(status, resp) => return (status, "streaming".into(), resp),
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
        if let Some(t) = cloud.tunnels_for(group, only).into_iter().next() {
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
    head: RequestHead,
    body: Bytes,
    deadline: tokio::time::Instant,
) -> Outcome {
    let (reply, mut rx) = mpsc::unbounded_channel();
    if tunnel.tx.send(Dispatch { id, head, body, reply }).is_err() {
        return Outcome::NotAccepted;
    }
    let mut acked = false;
    let mut status = 0u16;
    let mut headers = Vec::new();
    let mut acc = BytesMut::new();
    loop {
        let next = match connector::time::timeout_at(deadline, rx.recv()).await {
            Ok(n) => n,
            Err(_) => {
                return Outcome::Failed(
                    504,
                    "connector-timeout".into(),
                    format!("connector did not answer request {id} in time"),
                )
            }
        };
        match next {
            Some(Delivery::Acked) => acked = true,
            Some(Delivery::Head { status: s, headers: h }) => {
                status = s;
                headers = h;
            }
            Some(Delivery::Body { data, fin }) => {
                acc.extend_from_slice(&data);
                if fin {
                    return Outcome::Answered(status, answer(status, &headers, Body::whole(acc.freeze())));
                }
                // Long enough to be a download: the head goes out and the
                // rest streams (see `crate::body`).
                if acc.len() > STREAM_AFTER_BYTES {
                    return Outcome::Streaming(status, answer(status, &headers, Body::relayed(acc.freeze(), rx)));
                }
            }
            Some(Delivery::Unsendable(why)) => {
                return Outcome::Failed(431, "headers-too-large".into(), format!("request {id}: {why}"))
            }
            Some(Delivery::Cancelled(CancelReason::Overloaded)) => return Outcome::Overloaded,
            Some(Delivery::Cancelled(CancelReason::BackendBrokeOff)) => {
                return Outcome::Failed(
                    502,
                    "backend-broke-off".into(),
                    format!("the backend broke off its answer to request {id}"),
                )
            }
            Some(Delivery::Cancelled(reason)) => {
                return Outcome::Failed(502, "refused".into(), format!("connector refused request {id}: {reason:?}"))
            }
            Some(Delivery::Lost { acked: a, reason }) => {
                return if a || acked {
                    Outcome::Failed(
                        502,
                        "lost-after-accept".into(),
                        format!("tunnel lost while serving request {id}: {reason}"),
                    )
                } else {
                    Outcome::NotAccepted
                };
            }
            // The relay task was dropped (relay host crashed).
            None => {
                return if acked {
                    Outcome::Failed(502, "lost-after-accept".into(), format!("relay lost while serving request {id}"))
                } else {
                    Outcome::NotAccepted
                };
            }
        }
    }
}
