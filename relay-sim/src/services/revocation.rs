//! The certificate authorities' revocation servers on port 80 (NET-80,
//! NET-CRL): CRLs by URL path (`crl3.digicert.com`, `crl4.digicert.com`,
//! `crl.microsoft.com`) and OCSP by POST or by GET (RFC 6960 A.1: the
//! request base64-encoded in the path, what Windows sends for small
//! requests) at `ocsp.digicert.com`, `ocsp.msocsp.com`,
//! `oneocsp.microsoft.com`. One server answers for all
//! six names (as a CDN would); the `Host` header says which was asked.
//! Answers carry a `Date` from the cloud's clock, which connectors use to
//! explain clock skew. The same server stands for the certificate trust
//! list hosts a registration reads (`ctldl.windowsupdate.com`).

use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::cloud::Cloud;
use crate::event::CloudEvent;
use crate::server::{request_host, respond, serve_plain, Body, ConnInfo, Listener};

/// Hosts of Windows' certificate trust list (NET-REG on port 80).
pub const TRUST_LIST_HOSTS: [&str; 4] =
    ["ctldl.windowsupdate.com", "ctldl.windowsupdate.us", "www.microsoft.com", "www.microsoft.us"];

/// The trust list, modelled as one SHA-256 fingerprint (hex) per line of
/// every root the service uses (the real file is a signed CAB of the
/// Microsoft root program).
fn trust_list(cloud: &Cloud) -> String {
    cloud.service_roots().iter().map(|r| connector::pki::cert::sha256_hex(r.as_ref()) + "\n").collect()
}

/// Largest OCSP request accepted.
const OCSP_REQUEST_BYTES_MAX: usize = 16 * 1024;

pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) {
    serve_plain(listener, move |_info: ConnInfo, req| handle(cloud.clone(), req)).await;
}

/// The OCSP responders' names.
const OCSP_HOSTS: [&str; 3] = ["ocsp.digicert.com", "ocsp.msocsp.com", "oneocsp.microsoft.com"];

/// The DER request of an RFC 6960 A.1 GET: the path after the responder's
/// (`/`), percent-decoded, then base64.
fn ocsp_get_request(path: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let encoded = path.trim_start_matches('/');
    let mut text = Vec::with_capacity(encoded.len());
    let mut bytes = encoded.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            text.push(b);
            continue;
        }
        let hex: Vec<u8> = bytes.by_ref().take(2).collect();
        let byte = (hex.len() == 2)
            .then(|| std::str::from_utf8(&hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        text.push(byte.ok_or_else(|| format!("bad percent-escape in OCSP GET path {path:?}"))?);
    }
    base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|e| format!("OCSP GET path is not base64 of a request: {e}"))
}

fn ocsp(cloud: &Cloud, request: &[u8], now: std::time::SystemTime) -> Response<Body> {
    match cloud.pki().ocsp_answer(request, now) {
        Ok((der, status)) => {
            cloud.emit(CloudEvent::OcspServed { status });
            respond(200, "application/ocsp-response", der)
        }
        // A request that does not decode gets the OCSP answer
        // malformedRequest; an error here is the responder's own.
        Err(e) => respond(500, "text/plain", e.to_string()),
    }
}

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    let host = request_host(&req);
    let now = cloud.now();
    let mut resp = if req.method() == Method::POST {
        let body: Bytes = match Limited::new(req.into_body(), OCSP_REQUEST_BYTES_MAX).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return respond(400, "text/plain", format!("request body: {e}")),
        };
        ocsp(&cloud, &body, now)
    } else if OCSP_HOSTS.contains(&&*host) && req.uri().path().len() > 1 {
        match ocsp_get_request(req.uri().path()) {
            Ok(der) => ocsp(&cloud, &der, now),
            Err(e) => respond(400, "text/plain", e),
        }
    } else if TRUST_LIST_HOSTS.contains(&&*host) {
        cloud.emit(CloudEvent::TrustListServed { host: host.to_string() });
        respond(200, "text/plain", trust_list(&cloud))
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn a_get_path_gives_back_the_request_bytes() {
        let request: Vec<u8> = (0u8..=255).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&request);
        // RFC 6960 A.1: url-encoding of the base64 text.
        let path = format!("/{}", b64.replace('/', "%2F").replace('+', "%2B").replace('=', "%3D"));
        assert_eq!(ocsp_get_request(&path).unwrap(), request);
        // Unescaped base64 (what some clients send) decodes too.
        assert_eq!(ocsp_get_request(&format!("/{b64}")).unwrap(), request);
        assert!(ocsp_get_request("/%zz").unwrap_err().contains("percent-escape"));
        assert!(ocsp_get_request("/QUJD%4").unwrap_err().contains("percent-escape"));
        assert!(ocsp_get_request("/not*base64").unwrap_err().contains("not base64"));
    }
}
