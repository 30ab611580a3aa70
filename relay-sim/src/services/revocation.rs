//! The certificate authorities' revocation servers on port 80 (NET-80,
//! NET-CRL): CRLs by URL path (`crl3.digicert.com`, `crl4.digicert.com`,
//! `crl.microsoft.com`) and OCSP by POST (`ocsp.digicert.com`,
//! `ocsp.msocsp.com`, `oneocsp.microsoft.com`). One server answers for all
//! six names (as a CDN would); the `Host` header says which was asked.
//! Answers carry a `Date` from the cloud's clock, which connectors use to
//! explain clock skew.

use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::cloud::Cloud;
use crate::event::CloudEvent;
use crate::server::{respond, serve_plain, Body, ConnInfo, Listener};

/// Largest OCSP request accepted.
const OCSP_REQUEST_BYTES_MAX: usize = 16 * 1024;

pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) {
    serve_plain(listener, move |_info: ConnInfo, req| handle(cloud.clone(), req)).await;
}

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
        .unwrap_or_default();
    let now = cloud.now();
    let mut resp = if req.method() == Method::POST {
        let body: Bytes = match Limited::new(req.into_body(), OCSP_REQUEST_BYTES_MAX).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return respond(400, "text/plain", format!("request body: {e}")),
        };
        match cloud.pki().ocsp_answer(&body, now) {
            Ok((der, status)) => {
                cloud.emit(CloudEvent::OcspServed { status });
                respond(200, "application/ocsp-response", der)
            }
            Err(e) => respond(500, "text/plain", e.to_string()),
        }
    } else {
        let url = format!("http://{host}{}", req.uri().path());
        let crl = cloud.pki().crl_at(&url, now);
        match crl {
            Some(Ok(der)) => {
                cloud.emit(CloudEvent::CrlServed { url });
                respond(200, "application/pkix-crl", der)
            }
            Some(Err(e)) => respond(500, "text/plain", e.to_string()),
            None => respond(404, "text/plain", format!("no CRL at {url}")),
        }
    };
    if let Ok(date) = hyper::header::HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
        resp.headers_mut().insert(hyper::header::DATE, date);
    }
    resp
}
