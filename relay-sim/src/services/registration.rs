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
    let Some(token) = bearer(&req).and_then(|t| cloud.token(&t)) else {
        cloud.emit(CloudEvent::RegistrationDenied { error: "invalid_token".into() });
        return error(401, "invalid_token", "The access token is missing, invalid or expired.");
    };
    if token.role != Role::GlobalAdministrator {
        cloud.emit(CloudEvent::RegistrationDenied { error: "registration_denied".into() });
        return error(
            403,
            "registration_denied",
            "The registration request was denied: the account is not a Global Administrator of this directory.",
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
