//! `<tenant>.bootstrap.msappproxy.net`: over mTLS, hands a registered
//! connector its relay endpoints and timers, and records the heartbeat.

use std::rc::Rc;

use connector::api::{BootstrapRequest, BootstrapResponse};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::read_json;
use crate::cloud::{Cloud, CloudError};
use crate::event::CloudEvent;
use crate::pki::subject_cn;
use crate::server::{error, json, serve_https, Body, ConnInfo, Listener};

pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) -> Result<(), CloudError> {
    let tls = cloud.tls_source(&cloud.config.bootstrap_host, true);
    serve_https(listener, tls, move |info: ConnInfo, req| handle(cloud.clone(), info, req)).await;
    Ok(())
}

async fn handle(cloud: Rc<Cloud>, info: ConnInfo, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST || req.uri().path() != "/bootstrap" {
        return error(404, "not_found", "unknown endpoint");
    }
    // The verifier already checked the chain; the subject names the connector.
    let Some(connector_id) = info.client_certs.first().and_then(subject_cn) else {
        return error(403, "no_client_certificate", "a connector client certificate is required");
    };
    let body: BootstrapRequest = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.connector_id != connector_id || !cloud.heartbeat(&connector_id) {
        return error(403, "unknown_connector", "Connector failed to download the configuration: unknown connector.");
    }
    cloud.emit(CloudEvent::BootstrapServed { connector_id });
    let c = &cloud.config;
    json(
        200,
        &BootstrapResponse {
            relay_endpoints: c.relay_endpoints.clone(),
            bootstrap_interval_s: c.bootstrap_interval_s,
            keepalive_s: c.keepalive_s,
            connection_limit: c.connection_limit,
            trust_renewal_interval_min: c.trust_renewal_interval_min,
        },
    )
}
