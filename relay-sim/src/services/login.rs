//! `login.microsoftonline.com`: checks a user's password and issues a token
//! that carries the user's role.

use std::rc::Rc;

use connector::api::{LoginRequest, LoginResponse};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::read_json;
use crate::cloud::{Cloud, CloudError, Token};
use crate::event::CloudEvent;
use crate::server::{error, json, serve_https, Body, ConnInfo, Listener};

pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) -> Result<(), CloudError> {
    let tls = cloud.tls_source(&cloud.config.login_host, false);
    serve_https(listener, tls, move |_info: ConnInfo, req| handle(cloud.clone(), req)).await;
    Ok(())
}

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    let expected = format!("/{}/oauth2/token", cloud.config.tenant.id);
    if req.method() != Method::POST || req.uri().path() != expected {
        return error(404, "not_found", "AADSTS90002: Tenant not found or endpoint unknown.");
    }
    let login: LoginRequest = match read_json(req).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let tenant = &cloud.config.tenant;
    let Some(user) = tenant.user(&login.username).filter(|u| u.password == login.password) else {
        let msg = "AADSTS50126: Error validating credentials due to invalid username or password.";
        cloud.emit(CloudEvent::LoginDenied { user: login.username.clone(), error: "AADSTS50126".into() });
        return error(400, "invalid_grant", msg);
    };
    let token = cloud.random_hex(24);
    let expires = cloud.now() + cloud.config.token_lifetime;
    cloud.store_token(token.clone(), Token { upn: user.upn.clone(), role: user.role, expires });
    cloud.emit(CloudEvent::LoginOk { user: user.upn.clone() });
    json(
        200,
        &LoginResponse {
            access_token: token,
            tenant_id: tenant.id.clone(),
            expires_in_s: cloud.config.token_lifetime.as_secs(),
        },
    )
}
