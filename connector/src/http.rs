//! HTTP to the cloud, below the TLS layer: the one error type of a call to
//! a service ([`CallError`]), the TCP step shared by every call, and plain
//! HTTP for revocation data ([`plain_request`] on port 80). Every step is
//! bounded by a timeout and every failure is classified, so the agent can say
//! which host, port and phase broke. HTTPS calls build on this in
//! [`crate::https`].

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::classify::Verdict;
use crate::code::{self, Code, EventId};
use crate::diag::{self, Diagnostic};
use crate::env::Env;
use crate::net::{BoxStream, ConnectFailure};
use crate::tls_failure::TlsFailure;

/// Why a call to a service failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("connect to {host}:{port}: {failure}")]
    Connect { host: String, port: u16, failure: ConnectFailure, verdict: Box<Verdict>, diagnostic: Box<Diagnostic> },
    #[error("TLS with {host}:{port}: {error}")]
    Tls { host: String, port: u16, error: TlsFailure, diagnostic: Box<Diagnostic> },
    #[error("{host}:{port} refused: {}", .diagnostic.message)]
    Revocation { host: String, port: u16, diagnostic: Box<Diagnostic> },
    #[error("HTTP exchange with {host}:{port} failed: {error}")]
    Http { host: String, port: u16, error: String, tls: Option<TlsFailure> },
    #[error("{host} answered HTTP {status}: {message}")]
    Status { host: String, status: u16, code: String, message: String },
    #[error("response of {host} is not the expected JSON: {error}")]
    Decode { host: String, error: String },
    #[error("{host}:{port} did not answer within {timeout:?}")]
    Timeout { host: String, port: u16, timeout: Duration },
}

impl CallError {
    /// The service answered that it does not know this connector.
    pub fn is_unknown_connector(&self) -> bool {
        matches!(self, CallError::Status { code, .. } if code == "unknown_connector")
    }

    /// The diagnostic an administrator needs for this failure.
    pub fn diagnostic(&self) -> Diagnostic {
        match self {
            CallError::Connect { diagnostic, .. }
            | CallError::Tls { diagnostic, .. }
            | CallError::Revocation { diagnostic, .. } => (**diagnostic).clone(),
            CallError::Http { host, port, error, tls } => {
                // Under TLS 1.3 a refused client certificate surfaces on the
                // first read, as an HTTP-level failure carrying the alert.
                tls.as_ref().and_then(|t| diag::client_cert_alert(host, *port, t)).unwrap_or_else(|| {
                    Diagnostic::new(
                        code::NET_443_BROKEN_EXCHANGE,
                        Some(EventId::Networking),
                        format!("exchange with {host}:{port} broke off: {error}"),
                        "check for proxies or firewalls that cut long or TLS connections",
                    )
                })
            }
            CallError::Status { host, status, code, message } => {
                let found = service_refusal(code, message);
                let message = format!("{host} refused the request (HTTP {status}): {message}");
                match found {
                    Some((found, remedy)) => Diagnostic::new(found, Some(EventId::CannotConnect), message, remedy),
                    None => {
                        Diagnostic::service_refusal(code, message, "see the message; the service refused the request")
                    }
                }
            }
            CallError::Decode { host, error } => Diagnostic::new(
                code::NET_NOINSPECT_UNEXPECTED_RESPONSE,
                Some(EventId::Networking),
                format!("{host} answered something that is not the service's protocol: {error}"),
                "a proxy or inspection device may be answering in the service's place",
            ),
            CallError::Timeout { host, port, timeout } => diag::unreachable(
                host,
                *port,
                &ConnectFailure::Other(format!("no answer within {}s", timeout.as_secs())),
            ),
        }
    }
}

pub(crate) async fn connect_tcp(env: &Env, host: &str, port: u16, timeout: Duration) -> Result<BoxStream, CallError> {
    match crate::reach::connect(env, host, port, timeout).await {
        Ok((_, stream)) => Ok(stream),
        Err(u) => Err(CallError::Connect {
            host: host.into(),
            port,
            failure: u.failure,
            verdict: Box::new(u.verdict),
            diagnostic: Box::new(u.diagnostic),
        }),
    }
}

/// The code of a service's refusal and its fix; `None` for a refusal code
/// the table does not know (it is reported as the service named it).
fn service_refusal(code: &str, message: &str) -> Option<(Code, &'static str)> {
    let aadsts = message.split(':').next().filter(|c| c.starts_with("AADSTS")).unwrap_or("");
    match (code, aadsts) {
        (_, "AADSTS50059") => Some((code::REG_DOMAIN_PERSONAL_ACCOUNT, "sign in with a work account on the tenant's domain (admin@contoso.com), not a personal Microsoft account")),
        (_, "AADSTS90002") => Some((code::REG_GOV_TENANT_NOT_IN_CLOUD, "if the tenant is in Azure Government, install with ENVIRONMENTNAME=\"AzureUSGovernment\" (PowerShell registration: -EnvironmentName \"AzureUSGovernment\"); otherwise check the tenant ID")),
        (_, "AADSTS50020") => Some((code::REG_DIR_NOT_A_MEMBER, "sign in to the directory that uses application proxy with an account of that directory")),
        (_, "AADSTS50076" | "AADSTS50079") => Some((code::REG_ADMIN_MFA_REQUIRED, "the administrator's sign-in needs multi-factor authentication, which a sign-in with user name and password cannot give: register interactively (the installer's sign-in window) or with a token obtained with MFA")),
        (_, "AADSTS50126") => {
            Some((code::REG_ADMIN_BAD_CREDENTIALS, "check the administrator's user name and password"))
        }
        ("wrong_directory", _) => Some((code::REG_DIR_WRONG_DIRECTORY, "switch to the directory that uses application proxy (the account belongs to several), then register again")),
        ("not_tenant_domain", _) => Some((code::REG_DOMAIN_NOT_TENANT_DOMAIN, "register with an administrator on the tenant's domain (or one of its aliases)")),
        ("registration_denied", _) => Some((code::REG_ADMIN_NOT_GLOBAL_ADMIN, "register with a Global Administrator of the directory that uses application proxy")),
        ("version_unsupported", _) => Some((code::VER_PA_MIN_TOO_OLD, "upgrade the connector to 1.5.3417.0 or later (uninstall, delete its folders, install the latest)")),
        ("release_pulled", _) => Some((code::VER_UPDATER_RELEASE_PULLED, "the updater rolls back to the previous version; after a manual install, install another release")),
        ("unknown_connector", _) => Some((code::REG_VISIBLE_NOT_REGISTERED, "this connector is no longer registered (the service removes connectors unseen for 10 days, and an administrator may delete one): register it again with an administrator's sign-in")),
        ("app_proxy_disabled", _) => Some((code::REG_ADMIN_APP_PROXY_DISABLED, "enable application proxy (or Private Access) in the directory, then register")),
        _ => None,
    }
}

/// A plain HTTP answer (revocation data).
#[derive(Debug, Clone)]
pub struct PlainResponse {
    pub status: u16,
    /// The server's `Date` header, for clock-skew diagnosis.
    pub date: Option<SystemTime>,
    pub body: Bytes,
}

/// One plain-HTTP exchange: GET `url`, or POST `body` (content type, bytes)
/// to it. The answer is limited to `limit` bytes.
pub async fn plain_request(
    env: &Env,
    url: &HttpUrl,
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
    limit: usize,
) -> Result<PlainResponse, CallError> {
    let (host, port) = (url.host.as_str(), url.port);
    let http_err = |e: String| CallError::Http { host: host.into(), port, error: e, tls: None };
    let hyper_err = |e: hyper::Error| exchange_error(host, port, &e);
    // Connect first, under its own timeout, so a failure is explained as a
    // connection failure (with what the agent knows about the destination).
    let stream = connect_tcp(env, host, port, timeout).await?;
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(hyper_err)?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder().uri(url.path.as_str()).header(http::header::HOST, host);
        let payload = match body {
            Some((content_type, bytes)) => {
                req = req.method(http::Method::POST).header(http::header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(payload)).map_err(|e| http_err(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(hyper_err)?;
        let status = resp.status().as_u16();
        let date = resp
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let bytes = Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| http_err(format!("body: {e} (limit {limit} bytes)")))?
            .to_bytes();
        Ok::<_, CallError>(PlainResponse { status, date, body: bytes })
    };
    match crate::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout { host: host.into(), port, timeout }),
    }
}

/// A failed HTTP exchange, with the TLS failure under it kept as a value.
pub(crate) fn exchange_error(host: &str, port: u16, e: &hyper::Error) -> CallError {
    CallError::Http { host: host.into(), port, error: hyper_error_text(e), tls: TlsFailure::from_hyper(e) }
}

/// An `http://host[:port]/path` URL (revocation data travels over plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for HttpUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url:?}: bad port {p:?}"))?),
            None => (authority, 80),
        };
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
            return Err(format!("{url:?}: bad host name {host:?}"));
        }
        Ok(HttpUrl { host: host.to_ascii_lowercase(), port, path: path.to_string() })
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.port == 80 {
            write!(f, "http://{}{}", self.host, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// hyper's error with its source chain (where the TLS alert is).
pub fn hyper_error_text(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = match s.downcast_ref::<std::io::Error>() {
            Some(io) => TlsFailure::from_io(io).to_string(),
            None => s.to_string(),
        };
        text.push_str(": ");
        text.push_str(&part);
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_port() {
        let u: HttpUrl = "http://crl3.digicert.com/Omniroot2025.crl".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("crl3.digicert.com", 80, "/Omniroot2025.crl"));
        let u: HttpUrl = "http://ocsp.digicert.com".parse().unwrap();
        assert_eq!(u.path, "/");
        assert!("https://x/".parse::<HttpUrl>().is_err());
        assert!("http://a b/".parse::<HttpUrl>().is_err());
        assert!("http://x:99999/".parse::<HttpUrl>().is_err());
    }
}
