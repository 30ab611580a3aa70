//! `<tenant>.bootstrap.msappproxy.net`: over mTLS, hands a registered
//! connector its relay endpoints and timers, and records the heartbeat.

use std::rc::Rc;

use connector::api::{
    BootstrapRequest, BootstrapResponse, PackageRequest, PackageResponse, UpdatePhase, UpdateRequest, UpdateResponse,
};
use connector::host::product_version;
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
    if req.method() != Method::POST {
        return error(404, "not_found", "unknown endpoint");
    }
    // The verifier already checked the chain; the subject names the connector.
    let Some(connector_id) = info.client_certs.first().and_then(subject_cn) else {
        return error(403, "no_client_certificate", "a connector client certificate is required");
    };
    match req.uri().path() {
        "/bootstrap" => bootstrap(cloud, connector_id, req).await,
        "/update" => update(cloud, connector_id, req).await,
        "/package" => package(cloud, connector_id, req).await,
        _ => error(404, "not_found", "unknown endpoint"),
    }
}

async fn bootstrap(cloud: Rc<Cloud>, connector_id: String, req: Request<Incoming>) -> Response<Body> {
    let body: BootstrapRequest = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.connector_id != connector_id || !cloud.heartbeat(&connector_id, &body.version) {
        return error(403, "unknown_connector", "Connector failed to download the configuration: unknown connector.");
    }
    let c = &cloud.config;
    if c.private_access && product_version(&body.version).is_none_or(|v| v < PRIVATE_ACCESS_MIN) {
        return error(
            403,
            "version_unsupported",
            &format!(
                "Private Access requires connector version 1.5.3417.0 or later; this connector runs {}.",
                body.version
            ),
        );
    }
    if c.pulled_releases.contains(&body.version) {
        return error(
            409,
            "release_pulled",
            &format!(
                "connector version {} was withdrawn: it fails against the service; use another version.",
                body.version
            ),
        );
    }
    let relay_endpoints = cloud.relays_for(&connector_id);
    cloud.emit(CloudEvent::BootstrapServed { connector_id });
    json(
        200,
        &BootstrapResponse {
            relay_endpoints,
            bootstrap_interval_s: c.bootstrap_interval_s,
            keepalive_s: c.keepalive_s,
            connection_limit: c.connection_limit,
            trust_renewal_interval_min: c.trust_renewal_interval_min,
            update_check_interval_min: c.update_check_interval_min,
        },
    )
}

/// The updater's check (newer release, group upgrade slot) and its "done".
async fn update(cloud: Rc<Cloud>, connector_id: String, req: Request<Incoming>) -> Response<Body> {
    let body: UpdateRequest = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.connector_id != connector_id || !cloud.is_registered(&connector_id) {
        return error(403, "unknown_connector", "unknown connector");
    }
    match body.phase {
        UpdatePhase::Done => {
            cloud.release_update_slot(&connector_id);
            json(200, &UpdateResponse { release: None, granted: false })
        }
        UpdatePhase::Check => {
            let release = cloud.offer(&connector_id, &body.version);
            let granted = release.is_some() && cloud.claim_update_slot(&connector_id);
            json(200, &UpdateResponse { release, granted })
        }
    }
}

/// A release's package, for a connector whose group the feed offers it to.
async fn package(cloud: Rc<Cloud>, connector_id: String, req: Request<Incoming>) -> Response<Body> {
    let body: PackageRequest = match read_json(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if body.connector_id != connector_id || !cloud.is_registered(&connector_id) {
        return error(403, "unknown_connector", "unknown connector");
    }
    let Some(bytes) = cloud.package(&connector_id, &body.version) else {
        return error(
            404,
            "release_not_offered",
            &format!("release {} is not offered to this connector", body.version),
        );
    };
    cloud.emit(CloudEvent::PackageServed { connector_id, version: body.version.clone() });
    json(200, &PackageResponse { version: body.version, package_hex: connector::package::hex(&bytes) })
}

/// Private Access needs at least this connector version (VER-PA-MIN).
const PRIVATE_ACCESS_MIN: [u32; 4] = [1, 5, 3417, 0];
