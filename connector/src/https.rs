//! HTTPS calls to the cloud's services (login, registration, bootstrap) and
//! the TLS set-up shared with the tunnels: TCP through [`crate::http`], TLS
//! with the service's trust, then the revocation check of the chain the
//! server presented, before any byte is sent over it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_rustls::client::TlsStream;

use crate::api::ErrorBody;
use crate::diag;
use crate::env::Env;
use crate::http::{connect_tcp, exchange_error, CallError};
use crate::net::BoxStream;
use crate::pki::ServiceTls;
use crate::tls_failure::TlsFailure;

/// Largest response body accepted from a service.
pub const SERVICE_BODY_BYTES_MAX: usize = 1 << 20;

/// Opens TCP then TLS to `host:port` through the environment's network,
/// then checks the revocation status of the chain the server presented
/// (before any byte is sent over it).
pub async fn open_tls(
    env: &Env,
    tls: &ServiceTls,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TlsStream<BoxStream>, CallError> {
    let tcp = connect_tcp(env, host, port, timeout).await?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        let error = TlsFailure::Setup(format!("invalid server name: {e}"));
        CallError::Tls { host: host.into(), port, diagnostic: Box::new(diag::tls_failure(host, port, &error)), error }
    })?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = match crate::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let error = TlsFailure::from_io(&e);
            if error.is_validity() && tls.trust.revocation.observed_skew().is_none() {
                // A certificate not valid "now": ask a server for its time
                // to tell a wrong host clock from a wrong certificate.
                let chain = tls.trust.seen_chain(host).unwrap_or_default();
                tls.trust.revocation.probe_time(env, &chain).await;
            }
            let diagnostic = Box::new(tls.trust.explain(host, port, &error, env.clock.now()));
            return Err(CallError::Tls { host: host.into(), port, error, diagnostic });
        }
        Err(_) => return Err(CallError::Timeout { host: host.into(), port, timeout }),
    };
    let chain: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    if let Err(failure) = tls.trust.revocation.check(env, &tls.trust.anchors, host, &chain).await {
        return Err(CallError::Revocation { host: host.into(), port, diagnostic: Box::new(failure.diagnostic(host)) });
    }
    Ok(stream)
}

/// One JSON request/response exchange over HTTPS.
pub struct ServiceCall<'a> {
    pub env: &'a Env,
    pub tls: &'a ServiceTls,
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
        let stream = open_tls(self.env, self.tls, host, port, self.timeout).await?;
        let http_err = |e: String| CallError::Http { host: host.into(), port, error: e, tls: None };
        let hyper_err = |e: hyper::Error| exchange_error(host, port, &e);
        let exchange = async {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(hyper_err)?;
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
            let resp = sender.send_request(req).await.map_err(hyper_err)?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), SERVICE_BODY_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(h) => hyper_err(*h),
                    Err(other) => http_err(other.to_string()),
                })?
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
