//! `<tenant>.renewtrust.msappproxy.net`: over mTLS with its current
//! certificate, a connector sends a new key's CSR and gets a new client
//! certificate (trust renewal, every couple of months in the real product).

use std::rc::Rc;

use connector::api::{RenewRequest, RenewResponse};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::read_json;
use crate::cloud::{Cloud, CloudError};
use crate::pki::subject_cn;
use crate::server::{error, json, serve_https, Body, ConnInfo, Listener};

pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) -> Result<(), CloudError> {
    let tls = cloud.tls_source(&cloud.config.renewtrust_host, true);
    serve_https(listener, tls, move |info: ConnInfo, req| handle(cloud.clone(), info, req)).await;
    Ok(())
}

async fn handle(cloud: Rc<Cloud>, info: ConnInfo, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST || req.uri().path() != "/renew" {
        return error(404, "not_found", "unknown endpoint");
    }
    let Some(connector_id) = info.client_certs.first().and_then(subject_cn) else {
        return error(403, "no_client_certificate", "a connector client certificate is required");
    };
    let body: RenewRequest = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.connector_id != connector_id {
        return error(403, "wrong_connector", "the CSR is for another connector than the client certificate");
    }
    match cloud.renew_connector(&connector_id, &body.csr_pem) {
        Ok(certificate_pem) => json(200, &RenewResponse { certificate_pem }),
        Err(e) => error(400, "renewal_refused", &e.to_string()),
    }
}
