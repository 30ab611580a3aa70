//! The certificate authorities' revocation servers on port 80 (NET-80,
//! NET-CRL): CRLs by URL path (`crl3.digicert.com`, `crl4.digicert.com`,
//! `crl.microsoft.com`) and OCSP by POST (`ocsp.digicert.com`,
//! `ocsp.msocsp.com`, `oneocsp.microsoft.com`). One server answers for all
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

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    let host = request_host(&req);
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
    } else if TRUST_LIST_HOSTS.contains(&host.as_str()) {
        cloud.emit(CloudEvent::TrustListServed { host: host.clone() });
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
