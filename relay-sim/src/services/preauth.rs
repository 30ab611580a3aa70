//! Pre-authentication at the ingress (OPS-IDENTITY): an application
//! published with Microsoft Entra ID pre-authentication lets a request
//! through to a connector only when it carries the session of a user of the
//! tenant's directory, synchronised from on-premises or created in the
//! tenant. The session comes from signing in (`POST /.auth/login` on the
//! app's host, standing for the sign-in page the service redirects to);
//! a user the directory does not know is refused there and never reaches
//! a connector. (That page is interactive, so a user whose sign-in needs
//! MFA answers it there.) The session is good for that app only, and is no
//! bearer token for the service's APIs. Header-based single sign-on hands
//! the backend the signed-in user; headers of those names that a client
//! sends itself are dropped whatever the app's settings, so that no one can
//! claim another's name.

use std::rc::Rc;

use connector::api::LoginRequest;
use connector::proto::Headers;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::read_json;
use crate::cloud::{Cloud, Token};
use crate::directory::{App, PreAuthentication, SingleSignOn, User, UserSource, ON_PREMISES_HEADER, PRINCIPAL_HEADER};
use crate::event::CloudEvent;
use crate::server::{respond, Body};

/// Where a user signs in for an application (on the application's host).
pub const SIGN_IN_PATH: &str = "/.auth/login";
/// The cookie carrying the pre-authenticated session.
pub const SESSION_COOKIE: &str = "AzureAppProxyAccessCookie";

/// An answer the ingress gives itself: status, `x-relay-error` code, response.
pub type Refusal = (u16, String, Response<Body>);

/// Whether `req` is a sign-in for `app` (handled here, not forwarded).
pub fn is_sign_in(app: &App, req: &Request<Incoming>) -> bool {
    app.pre_authentication == PreAuthentication::EntraId
        && req.method() == Method::POST
        && req.uri().path() == SIGN_IN_PATH
}

/// Signs a user in: a session cookie for a user of the directory with the
/// right password; 403 for a user the directory does not hold (AADSTS50034
/// for an account on the tenant's domains, AADSTS50020 for one from
/// elsewhere); 401 for a wrong password.
pub async fn sign_in(cloud: &Rc<Cloud>, app: &App, req: Request<Incoming>) -> Refusal {
    let login: LoginRequest = match read_json(req).await {
        Ok(l) => l,
        Err(resp) => return (400, "bad-sign-in".into(), resp),
    };
    let tenant = &cloud.config.tenant;
    let denied = |status: u16, code: &str, aadsts: &str, text: String| {
        cloud.emit(CloudEvent::UserSignInDenied { user: login.username.clone(), error: aadsts.into() });
        super::gateway(status, code, format!("{aadsts}: {text}"))
    };
    let Some(user) = tenant.user(&login.username) else {
        let (aadsts, text) = if tenant.owns_domain_of(&login.username) {
            ("AADSTS50034", format!("The user account {} does not exist in the {} directory. Synchronise it from on-premises or create it in the tenant.", login.username, tenant.id))
        } else {
            (
                "AADSTS50020",
                format!(
                    "User account '{}' from identity provider does not exist in tenant '{}'.",
                    login.username, tenant.id
                ),
            )
        };
        return denied(403, "user-not-in-directory", aadsts, text);
    };
    if user.password != login.password {
        let text = "Error validating credentials due to invalid username or password.".to_string();
        return denied(401, "bad-credentials", "AADSTS50126", text);
    }
    let token = cloud.issue_token(user, &tenant.id, Some(app.name.clone()));
    cloud.emit(CloudEvent::UserSignedIn { user: user.upn.clone() });
    let mut resp = respond(204, "text/plain", "");
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly")) {
        resp.headers_mut().insert(hyper::header::SET_COOKIE, v);
    }
    (204, String::new(), resp)
}

/// Why pre-authentication stopped a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// No session, or an expired one: the browser is sent to sign in here.
    SignInRequired { login: String },
    /// The session's user has since left the directory.
    NotInDirectory { upn: String },
}

impl Stopped {
    /// The answer the user gets.
    pub fn answer(&self, tenant: &str) -> Refusal {
        match self {
            Stopped::SignInRequired { login } => {
                let mut refusal = super::gateway(302, "sign-in-required", format!("sign in first: {login}"));
                if let Ok(v) = hyper::header::HeaderValue::from_str(login) {
                    refusal.2.headers_mut().insert(hyper::header::LOCATION, v);
                }
                refusal
            }
            Stopped::NotInDirectory { upn } => super::gateway(
                403,
                "user-not-in-directory",
                format!("the account {upn} is no longer in the {tenant} directory"),
            ),
        }
    }
}

/// The user a request to `app` is let through as (`None` for a
/// passthrough app), or why it is stopped.
pub fn check(cloud: &Cloud, app: &App, headers: &Headers) -> Result<Option<User>, Stopped> {
    if app.pre_authentication == PreAuthentication::Passthrough {
        return Ok(None);
    }
    let tenant = &cloud.config.tenant;
    // Only this app's session: not another app's, nor an API bearer token.
    let session = session_token(headers).and_then(|t| cloud.token(&t));
    let ours =
        |s: &Token| s.session_for.as_deref() == Some(app.name.as_str()) && s.directory.eq_ignore_ascii_case(&tenant.id);
    let Some(session) = session.filter(ours) else {
        let (host, id, app) = (&cloud.config.login_host, &tenant.id, &app.external_host);
        return Err(Stopped::SignInRequired {
            login: format!("https://{host}/{id}/oauth2/authorize?redirect_uri=https://{app}/"),
        });
    };
    match tenant.user(&session.upn) {
        Some(user) => Ok(Some(user.clone())),
        None => Err(Stopped::NotInDirectory { upn: session.upn }),
    }
}

/// The headers as the connector gets them: the session cookie and any
/// identity headers the client sent are removed; with header-based single
/// sign-on, the signed-in user's are added. A list with nothing to remove
/// goes on as it came, not copied (most requests: no cookie).
pub fn forwarded_headers(app: &App, user: Option<&User>, headers: Headers) -> Headers {
    let mut out = if headers.iter().any(|(name, _)| screened(name)) { screen(&headers) } else { headers };
    if let (SingleSignOn::Headers, Some(user)) = (app.sso, user) {
        out.push(PRINCIPAL_HEADER, &user.upn);
        if let UserSource::Synced { on_premises } = &user.source {
            out.push(ON_PREMISES_HEADER, on_premises);
        }
    }
    out
}

/// Identity headers a client may not send for itself (the ingress sets
/// them from the session, or nothing).
const IDENTITY_HEADERS: [&str; 2] = [PRINCIPAL_HEADER, ON_PREMISES_HEADER];

/// Whether [`screen`] takes out or changes a header of this name: the one
/// list both decide by.
fn screened(name: &str) -> bool {
    name.eq_ignore_ascii_case("cookie") || IDENTITY_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// `headers` without identity headers and the session cookie.
fn screen(headers: &Headers) -> Headers {
    // Room for the identity headers and `x-forwarded-host` too.
    let text = headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() + 256;
    let mut out = Headers::with_capacity(headers.len() + 3, text);
    for (name, value) in headers {
        if !screened(name) {
            out.push(name, value);
            continue;
        }
        if !name.eq_ignore_ascii_case("cookie") {
            continue;
        }
        let kept = without_session(value);
        if !kept.is_empty() {
            out.push(name, &kept);
        }
    }
    out
}

/// The session token among a request's cookies.
fn session_token(headers: &Headers) -> Option<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A cookie header without the session cookie.
fn without_session(value: &str) -> String {
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').is_none_or(|(n, _)| n != SESSION_COOKIE))
        .collect();
    kept.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(sso: SingleSignOn) -> App {
        App {
            name: "hr".into(),
            external_host: "hr-contoso.msappproxy.net".into(),
            internal_url: "http://hr.corp.local:8080".into(),
            group: "Default".into(),
            pre_authentication: PreAuthentication::EntraId,
            sso,
        }
    }

    fn synced() -> User {
        User {
            upn: "alice@contoso.com".into(),
            password: "pw".into(),
            role: crate::directory::Role::User,
            directories: Vec::new(),
            source: UserSource::Synced { on_premises: "CONTOSO\\alice".into() },
            mfa: false,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_session_cookie_is_found_and_never_forwarded() {
        let headers = h(&[("cookie", "a=1; AzureAppProxyAccessCookie=tok; b=2")]);
        assert_eq!(session_token(&headers).as_deref(), Some("tok"));
        let fwd = forwarded_headers(&app(SingleSignOn::None), None, headers.clone());
        assert_eq!(fwd, h(&[("cookie", "a=1; b=2")]));
        let only = forwarded_headers(&app(SingleSignOn::None), None, h(&[("cookie", "AzureAppProxyAccessCookie=tok")]));
        assert!(only.is_empty(), "{only:?}");
        let kept = forwarded_headers(&app(SingleSignOn::None), None, h(&[("a", "1"), ("Cookie", ""), ("b", "2")]));
        assert_eq!(kept, h(&[("a", "1"), ("b", "2")]), "an empty cookie header goes too; the rest keep their order");
    }

    #[test]
    fn a_list_with_nothing_to_remove_goes_on_as_it_came() {
        let plain = h(&[("a", "1"), ("accept", "*/*")]);
        assert_eq!(forwarded_headers(&app(SingleSignOn::None), Some(&synced()), plain.clone()), plain);
        let fwd = forwarded_headers(&app(SingleSignOn::Headers), Some(&synced()), plain);
        let want = [("a", "1"), ("accept", "*/*"), (PRINCIPAL_HEADER, "alice@contoso.com")];
        assert_eq!(fwd, h(&[want[0], want[1], want[2], (ON_PREMISES_HEADER, "CONTOSO\\alice")]));
    }

    #[test]
    fn a_client_cannot_name_itself_to_the_backend() {
        let claims = h(&[(PRINCIPAL_HEADER, "admin@contoso.com"), ("X-MS-CLIENT-ONPREM-ACCOUNT", "CONTOSO\\admin")]);
        let fwd = forwarded_headers(&app(SingleSignOn::None), Some(&synced()), claims);
        assert!(fwd.is_empty(), "without single sign-on the backend gets no identity: {fwd:?}");
        let fwd = forwarded_headers(
            &app(SingleSignOn::Headers),
            Some(&synced()),
            h(&[(PRINCIPAL_HEADER, "admin@contoso.com")]),
        );
        assert_eq!(fwd, h(&[(PRINCIPAL_HEADER, "alice@contoso.com"), (ON_PREMISES_HEADER, "CONTOSO\\alice")]));
    }
}
