//! `login.microsoftonline.com`: checks a user's password and issues a token
//! that carries the user's role.

use std::rc::Rc;

use connector::api::{LoginRequest, LoginResponse};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::read_json;
use crate::cloud::{Cloud, CloudError};
use crate::directory::{upn_domain, PERSONAL_DOMAINS};
use crate::event::CloudEvent;
use crate::server::{error, json, serve_https, Body, ConnInfo, Listener};

pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener) -> Result<(), CloudError> {
    let tls = cloud.tls_source(&cloud.config.login_host, false);
    serve_https(listener, tls, move |_info: ConnInfo, req| handle(cloud.clone(), req)).await;
    Ok(())
}

/// The other cloud's sign-in (REG-GOV): a connector installed for the
/// wrong cloud reaches it, and it has never heard of the tenant.
pub async fn serve_other_cloud(cloud: Rc<Cloud>, listener: impl Listener) -> Result<(), CloudError> {
    let tls = cloud.tls_source(&cloud.config.other_cloud_login_host, false);
    serve_https(listener, tls, move |_info: ConnInfo, req| {
        let cloud = cloud.clone();
        async move {
            let directory = req
                .uri()
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            cloud.emit(CloudEvent::LoginDenied { user: String::new(), error: "AADSTS90002".into() });
            error(
                400,
                "invalid_request",
                &format!(
                    "AADSTS90002: Tenant '{directory}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            )
        }
    })
    .await;
    Ok(())
}

async fn handle(cloud: Rc<Cloud>, req: Request<Incoming>) -> Response<Body> {
    // `/{directory}/oauth2/token`: the directory the user signs in to.
    let path = req.uri().path().to_string();
    let directory = match path.strip_prefix('/').and_then(|p| p.strip_suffix("/oauth2/token")) {
        Some(d) if req.method() == Method::POST && !d.is_empty() && !d.contains('/') => d.to_string(),
        _ => return error(404, "not_found", "AADSTS90002: Tenant not found or endpoint unknown."),
    };
    let login: LoginRequest = match read_json(req).await {
        Ok(l) => l,
        Err(resp) => return resp,
    };
    let deny = |code: &str, msg: &str| {
        cloud.emit(CloudEvent::LoginDenied { user: login.username.clone(), error: code.into() });
        error(400, "invalid_grant", msg)
    };
    if PERSONAL_DOMAINS.contains(&upn_domain(&login.username).as_str()) {
        return deny(
            "AADSTS50059",
            "AADSTS50059: No tenant-identifying information found: a personal Microsoft account cannot sign in to an organization's directory. Sign in with a work account of the tenant.",
        );
    }
    let tenant = &cloud.config.tenant;
    let Some(user) = tenant.user(&login.username).filter(|u| u.password == login.password) else {
        return deny("AADSTS50126", "AADSTS50126: Error validating credentials due to invalid username or password.");
    };
    let member = directory.eq_ignore_ascii_case(&tenant.id)
        || user.directories.iter().any(|d| d.eq_ignore_ascii_case(&directory));
    if !member {
        return deny(
            "AADSTS50020",
            &format!(
                "AADSTS50020: User account '{}' from identity provider does not exist in tenant '{directory}'.",
                login.username
            ),
        );
    }
    if user.mfa && !login.mfa {
        return deny(
            "AADSTS50076",
            "AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access this resource.",
        );
    }
    let token = cloud.issue_token(user, &directory, None);
    cloud.emit(CloudEvent::LoginOk { user: user.upn.clone() });
    json(
        200,
        &LoginResponse {
            access_token: token,
            tenant_id: directory,
            expires_in_s: cloud.config.token_lifetime.as_secs(),
        },
    )
}
