//! `<tenant>.registration.msappproxy.net`: takes an administrator's token
//! and a CSR, returns a client certificate signed by the connector CA.

use std::rc::Rc;

use connector::api::{RegisterRequest, RegisterResponse};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::{bearer, read_json};
use crate::cloud::{Cloud, CloudError};
use crate::directory::Role;
use crate::event::CloudEvent;
use crate::server::{error, json, serve_https, Body, ConnInfo, Listener};

pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) -> Result<(), CloudError> {
    let tls = cloud.tls_source(&cloud.config.registration_host, false);
    serve_https(listener, tls, move |_info: ConnInfo, req| handle(cloud.clone(), req)).await;
    Ok(())
}

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST || req.uri().path() != "/register" {
        return error(404, "not_found", "unknown endpoint");
    }
    // Only a bearer token from sign-in: a browser session is not one.
    let Some(token) = bearer(&req).and_then(|t| cloud.token(&t)).filter(|t| t.session_for.is_none()) else {
        cloud.emit(CloudEvent::RegistrationDenied { error: "invalid_token".into() });
        return error(401, "invalid_token", "The access token is missing, invalid or expired.");
    };
    let tenant = &cloud.config.tenant;
    let deny = |code: &str, msg: String| {
        cloud.emit(CloudEvent::RegistrationDenied { error: code.into() });
        error(403, code, &msg)
    };
    if !token.directory.eq_ignore_ascii_case(&tenant.id) {
        return deny(
            "wrong_directory",
            format!(
                "The registration request was denied: {} is signed in to the directory '{}', not to '{}', the directory that uses application proxy. Switch directory and register again.",
                token.upn, token.directory, tenant.id
            ),
        );
    }
    if !tenant.app_proxy_enabled {
        return deny(
            "app_proxy_disabled",
            format!(
                "The registration request was denied: application proxy is not enabled in the directory '{}'.",
                tenant.id
            ),
        );
    }
    if !tenant.owns_domain_of(&token.upn) {
        return deny(
            "not_tenant_domain",
            format!(
                "The registration request was denied: {} is not on a domain of this tenant ({}).",
                token.upn,
                tenant.domains.join(", ")
            ),
        );
    }
    if token.role != Role::GlobalAdministrator {
        return deny(
            "registration_denied",
            format!(
                "The registration request was denied: {} is not a Global Administrator of this directory.",
                token.upn
            ),
        );
    }
    let reg: RegisterRequest = match read_json(req).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match cloud.register_connector(&reg.csr_pem, &reg.machine_name, &reg.version) {
        Ok((connector_id, certificate_pem)) => json(200, &RegisterResponse { connector_id, certificate_pem }),
        Err(e) => {
            cloud.emit(CloudEvent::RegistrationDenied { error: "bad_csr".into() });
            error(400, "bad_csr", &e.to_string())
        }
    }
}
