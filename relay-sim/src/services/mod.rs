//! The cloud's services, one module each. Every service is an async
//! function over a [`crate::server::Listener`], so the same code serves
//! turmoil hosts and loopback ports.

pub mod bootstrap;
pub mod ingress;
pub mod login;
pub mod portal;
pub mod preauth;
pub mod registration;
pub mod relay;
pub mod renewtrust;
pub mod revocation;
pub mod upload;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::de::DeserializeOwned;

use crate::server::{error, respond, Body};

/// Largest JSON request body a service accepts.
const JSON_BODY_BYTES_MAX: usize = 64 * 1024;

/// Reads and decodes a JSON request body, or the error response to send.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, hyper::Response<Body>> {
    let bytes: Bytes = match Limited::new(req.into_body(), JSON_BODY_BYTES_MAX).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return Err(error(400, "invalid_request", &format!("body: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| error(400, "invalid_request", &format!("JSON: {e}")))
}

/// The bearer token of a request, if any.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    req.headers().get(hyper::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string)
}

/// The relay's own answer to a user (a gateway error, a sign-in
/// redirect): `status`, its reason as `x-relay-error: code`, and `text`.
fn gateway(status: u16, code: &str, text: String) -> (u16, String, Response<Body>) {
    let mut resp = respond(status, "text/plain", text);
    if let Ok(v) = hyper::header::HeaderValue::from_str(code) {
        resp.headers_mut().insert("x-relay-error", v);
    }
    (status, code.to_string(), resp)
}
