//! Accept loops shared by every service: TCP (turmoil or tokio) → optional
//! TLS → hyper HTTP/1.1. Connections are served on the current `LocalSet`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use connector::net::{BoxStream, LocalBoxFuture};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;

/// A source of accepted connections.
pub trait Listener {
    fn accept(&self) -> LocalBoxFuture<'_, io::Result<BoxStream>>;
}

impl Listener for tokio::net::TcpListener {
    fn accept(&self) -> LocalBoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let (s, _) = tokio::net::TcpListener::accept(self).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

impl Listener for turmoil::net::TcpListener {
    fn accept(&self) -> LocalBoxFuture<'_, io::Result<BoxStream>> {
        Box::pin(async move {
            let (s, _) = turmoil::net::TcpListener::accept(self).await?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

/// What a handler learns about the connection.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The client certificate chain presented over mTLS, if any.
    pub client_certs: Vec<CertificateDer<'static>>,
}

pub use crate::body::Body;

/// Time a client has to send a request head (headers complete) before the
/// connection is closed without an answer: a slowloris client, or an idle
/// keep-alive connection, holds a connection no longer than this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for a TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an accept loop gets its TLS configuration, per connection (the
/// cloud's certificates change with root rotation and revocation), and
/// where it reports refused handshakes.
pub trait TlsSource {
    fn config(&self) -> Option<Arc<ServerConfig>>;
    fn refused(&self, reason: String);
}

/// A fixed configuration (real-mode tests, tools).
impl TlsSource for Arc<ServerConfig> {
    fn config(&self) -> Option<Arc<ServerConfig>> {
        Some(self.clone())
    }

    fn refused(&self, reason: String) {
        tracing::debug!("TLS accept failed: {reason}");
    }
}

/// Accepts TLS connections and runs `on_conn` on each decrypted stream.
pub async fn accept_tls<L, T, F, Fut>(listener: L, tls: T, on_conn: F)
where
    L: Listener,
    T: TlsSource + 'static,
    F: Fn(ConnInfo, tokio_rustls::server::TlsStream<BoxStream>) -> Fut + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let tls = Rc::new(tls);
    loop {
        let tcp = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                connector::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(config) = tls.config() else { continue };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let on_conn = on_conn.clone();
        let tls = tls.clone();
        // Boxed, as every connection's task below: the future is ~20 KB
        // (rustls' connection and hyper's inline), and tokio copies a task's
        // future into its cell and writes the cell whole when it ends.
        tokio::task::spawn_local(Box::pin(async move {
            let stream = match connector::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp).into_fallible()).await {
                Ok(Ok(s)) => s,
                Ok(Err((e, tcp))) => {
                    tls.refused(connector::tls_failure::TlsFailure::from_io(&e).to_string());
                    lingering_close(tcp).await;
                    return;
                }
                Err(_) => return,
            };
            let info = ConnInfo {
                client_certs: stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default(),
            };
            on_conn(info, stream).await;
        }));
    }
}

/// How long a refused connection is drained before it is dropped.
pub const LINGER: Duration = Duration::from_secs(2);

/// Closes a connection whose handshake or request was refused the way
/// servers do (nginx's lingering close): the alert or the 400 is out, so
/// send FIN, then read and discard what the client still sends until it
/// closes or [`LINGER`] passes. Dropping it at once would answer the
/// client's unread data with a reset, which can reach the client before
/// the refusal and hide it (a TLS 1.3 client sends its first request right
/// after its Finished; a client sending garbage is still sending it).
async fn lingering_close<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut tcp: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = connector::time::timeout(LINGER, drain).await;
}

/// Serves HTTP/1.1 on one stream with `handler`.
pub async fn serve_http_conn<S, H, Fut>(mut stream: S, info: ConnInfo, handler: H)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
    H: Fn(ConnInfo, Request<Incoming>) -> Fut + Clone + 'static,
    Fut: Future<Output = Response<Body>> + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(handler(info, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The Date header would read the machine's clock: keep it out of traces.
    builder.auto_date_header(false).timer(connector::time::HyperTimer).header_read_timeout(HEADER_READ_TIMEOUT);
    // No `half_close`: the end of a user's input while its request is in
    // flight means the user is gone (as nginx reads it, answering 499), and
    // dropping the handler is what cancels the request at the connector.
    let served = builder.serve_connection(TokioIo::new(&mut stream), service).await;
    if let Err(e) = served {
        tracing::debug!("HTTP connection ended: {e}");
        // Input hyper could not parse (it may have answered 400, 431 or
        // 414), with the client's bytes maybe still unread: close without
        // a reset.
        if e.is_parse() {
            lingering_close(stream).await;
        }
    }
}

/// Serves HTTPS (`tls`) on `listener`.
pub async fn serve_https<L, T, H, Fut>(listener: L, tls: T, handler: H)
where
    L: Listener,
    T: TlsSource + 'static,
    H: Fn(ConnInfo, Request<Incoming>) -> Fut + Clone + 'static,
    Fut: Future<Output = Response<Body>> + 'static,
{
    accept_tls(listener, tls, move |info, stream| serve_http_conn(stream, info, handler.clone())).await;
}

/// Serves plain HTTP on `listener`.
pub async fn serve_plain<L, H, Fut>(listener: L, handler: H)
where
    L: Listener,
    H: Fn(ConnInfo, Request<Incoming>) -> Fut + Clone + 'static,
    Fut: Future<Output = Response<Body>> + 'static,
{
    loop {
        match listener.accept().await {
            Ok(s) => {
                // Boxed: ~13 KB (hyper's connection inline); see `accept_tls`.
                tokio::task::spawn_local(Box::pin(serve_http_conn(s, ConnInfo::default(), handler.clone())));
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                connector::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The host a request was sent to (its `Host` header without the port),
/// lowercased; empty when there is none. Borrowed unless it had capitals
/// (a copy was one of the ingress's ~24 allocations a request).
pub fn request_host<B>(req: &Request<B>) -> std::borrow::Cow<'_, str> {
    let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let host = host.split(':').next().unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// A response with a body and content type.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::whole(body.into()));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(v) => respond(status, "application/json", v),
        Err(e) => respond(500, "text/plain", format!("encode: {e}")),
    }
}

/// A JSON error in the services' common shape.
pub fn error(status: u16, code: &str, description: &str) -> Response<Body> {
    json(status, &connector::api::ErrorBody { error: code.to_string(), error_description: description.to_string() })
}
