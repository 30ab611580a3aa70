//! HTTPS calls to the cloud's services (login, registration, bootstrap) and
//! TLS connection set-up shared with the tunnels. Every step is bounded by a
//! timeout and every failure is classified, so the agent can say which host,
//! port and phase broke.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::client::TlsStream;

use crate::api::ErrorBody;
use crate::diag::{self, ConnectFailure, Diagnostic};
use crate::env::{BoxStream, Env};

/// Largest response body accepted from a service.
pub const SERVICE_BODY_BYTES_MAX: usize = 1 << 20;

/// Why a call to a service failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("connect to {host}:{port}: {failure}")]
    Connect { host: String, port: u16, failure: ConnectFailure },
    #[error("TLS with {host}:{port}: {error}")]
    Tls { host: String, port: u16, error: String },
    #[error("HTTP exchange with {host}:{port} failed: {error}")]
    Http { host: String, port: u16, error: String },
    #[error("{host} answered HTTP {status}: {message}")]
    Status { host: String, status: u16, code: String, message: String },
    #[error("response of {host} is not the expected JSON: {error}")]
    Decode { host: String, error: String },
    #[error("{host}:{port} did not answer within {timeout:?}")]
    Timeout { host: String, port: u16, timeout: Duration },
}

impl CallError {
    /// The diagnostic an administrator needs for this failure.
    pub fn diagnostic(&self) -> Diagnostic {
        match self {
            CallError::Connect { host, port, failure } => diag::unreachable(host, *port, failure),
            CallError::Tls { host, port, error } => diag::tls_failure(host, *port, error),
            CallError::Http { host, port, error } => {
                // Under TLS 1.3 a refused client certificate surfaces on the
                // first read, as an HTTP-level failure carrying the alert.
                if error.contains("certificate") || error.contains("Certificate") {
                    Diagnostic::new(
                        "TLS-CLIENT",
                        "refused",
                        Some(12019),
                        format!("{host}:{port} refused the connector's client certificate ({error})"),
                        "the connector's certificate is not accepted: register the connector again",
                    )
                } else {
                    Diagnostic::new(
                        "NET-443",
                        "broken-exchange",
                        Some(12020),
                        format!("exchange with {host}:{port} broke off: {error}"),
                        "check for proxies or firewalls that cut long or TLS connections",
                    )
                }
            }
            CallError::Status { host, status, code, message } => Diagnostic::new(
                "SVC",
                code,
                Some(12015),
                format!("{host} refused the request (HTTP {status}): {message}"),
                "see the message; the service refused the request",
            ),
            CallError::Decode { host, error } => Diagnostic::new(
                "NET-NOINSPECT",
                "unexpected-response",
                Some(12020),
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

/// Opens TCP then TLS to `host:port` through the environment's network.
pub async fn open_tls(
    env: &Env,
    tls: Arc<ClientConfig>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TlsStream<BoxStream>, CallError> {
    let tcp = match crate::time::timeout(timeout, env.net.connect(host, port)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(CallError::Connect { host: host.into(), port, failure: ConnectFailure::from_io(&e) }),
        Err(_) => return Err(CallError::Connect { host: host.into(), port, failure: ConnectFailure::TimedOut }),
    };
    let name = ServerName::try_from(host.to_string()).map_err(|e| CallError::Tls {
        host: host.into(),
        port,
        error: format!("invalid server name: {e}"),
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    match crate::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(CallError::Tls { host: host.into(), port, error: tls_error_text(&e) }),
        Err(_) => Err(CallError::Timeout { host: host.into(), port, timeout }),
    }
}

/// The rustls error inside an I/O error, spelled with its variant name so
/// diagnostics can classify it (`InvalidCertificate(UnknownIssuer)`).
pub fn tls_error_text(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => format!("{tls:?}"),
        None => e.to_string(),
    }
}

/// One JSON request/response exchange over HTTPS.
pub struct ServiceCall<'a> {
    pub env: &'a Env,
    pub tls: Arc<ClientConfig>,
    pub host: &'a str,
    pub port: u16,
    pub timeout: Duration,
}

impl ServiceCall<'_> {
    /// POSTs `body` as JSON to `path`, with an optional bearer token, and
    /// decodes the JSON answer.
    pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
        bearer: Option<&str>,
    ) -> Result<Resp, CallError> {
        let (host, port) = (self.host, self.port);
        let stream = open_tls(self.env, self.tls.clone(), host, port, self.timeout).await?;
        let http_err = |e: String| CallError::Http { host: host.into(), port, error: e };
        let exchange = async {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http_err(e.to_string()))?;
            tokio::task::spawn_local(async move {
                let _ = conn.await;
            });
            let json = serde_json::to_vec(body).map_err(|e| http_err(format!("encode: {e}")))?;
            let mut req = http::Request::builder()
                .method(http::Method::POST)
                .uri(path)
                .header(http::header::HOST, host)
                .header(http::header::CONTENT_TYPE, "application/json");
            if let Some(token) = bearer {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req.body(Full::new(Bytes::from(json))).map_err(|e| http_err(e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(|e| http_err(hyper_error_text(&e)))?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), SERVICE_BODY_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| http_err(e.to_string()))?
                .to_bytes();
            Ok::<_, CallError>((status, bytes))
        };
        let (status, bytes) = match crate::time::timeout(self.timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => return Err(CallError::Timeout { host: host.into(), port, timeout: self.timeout }),
        };
        if !(200..300).contains(&status) {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => (e.error, e.error_description),
                Err(_) => (format!("http-{status}"), String::from_utf8_lossy(&bytes).into_owned()),
            };
            return Err(CallError::Status { host: host.into(), status, code, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Decode { host: host.into(), error: e.to_string() })
    }
}

/// hyper's error with its source chain (where the TLS alert is).
pub fn hyper_error_text(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = match s.downcast_ref::<std::io::Error>() {
            Some(io) => tls_error_text(io),
            None => s.to_string(),
        };
        text.push_str(": ");
        text.push_str(&part);
        source = s.source();
    }
    text
}
