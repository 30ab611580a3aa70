//! An explicit outbound proxy (a world element): HTTP `CONNECT host:port`,
//! optionally demanding authentication (407, which the connector does not
//! support), with its own allow-list of destinations. Like a real proxy it
//! dials the destination itself, so the perimeter sees the proxy, not the
//! connector.

use std::rc::Rc;
use std::time::Duration;

use connector::net::{BoxStream, Net};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cloud::Cloud;
use crate::event::CloudEvent;
use crate::network::{Action, Conn, Firewall};
use crate::server::Listener;

/// Largest CONNECT request head accepted.
const HEAD_BYTES_MAX: usize = 8 * 1024;
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The proxy's name in `Proxy-Status`.
const PROXY_NAME: &str = "proxy.corp.local";

/// How the proxy behaves.
#[derive(Debug, Clone, Default)]
pub struct ProxyPolicy {
    /// Demand `Proxy-Authorization` (answer 407 without it).
    pub require_auth: bool,
    /// Destinations it lets through (first match wins, default allow).
    pub allow: Firewall,
}

/// Serves CONNECT on `listener`; `upstream` is the proxy's own egress (the
/// world's DNS, the firewall between the proxy and the Internet, and any
/// middlebox in the path).
pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener, policy: Rc<ProxyPolicy>, upstream: Rc<dyn Net>) {
    loop {
        let Ok(stream) = listener.accept().await else {
            connector::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (cloud, policy, upstream) = (cloud.clone(), policy.clone(), upstream.clone());
        tokio::task::spawn_local(async move {
            if let Err(e) = handle(&cloud, stream, &policy, upstream.as_ref()).await {
                tracing::debug!("proxy: {e}");
            }
        });
    }
}

/// Reads an HTTP request head (through the blank line).
async fn read_head(stream: &mut BoxStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= HEAD_BYTES_MAX {
            return Err("request head too large".into());
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("closed before the request head ended".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    String::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())
}

/// What the proxy answers when it does not open the tunnel: the status and
/// an RFC 9209 `Proxy-Status` error type (with its parameters), so that a
/// client can tell a policy refusal from a destination it could not reach.
/// Squid, Envoy and most gateways answer the same statuses; the header is
/// what a well-behaved proxy adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    /// `error=...` and its parameters, as the header carries them.
    pub error: String,
}

impl Refusal {
    fn new(status: u16, reason: &'static str, error: impl Into<String>) -> Self {
        Refusal { status, reason, error: error.into() }
    }

    /// Why the onward connection to `host` failed, as a proxy reports it:
    /// NXDOMAIN 502 `dns_error`, a sinkhole answer 403
    /// `destination_ip_prohibited` (Squid's default `to_localhost` rule
    /// denies 0.0.0.0), refused 502 `connection_refused`, no answer 504
    /// `connection_timeout`.
    pub fn onward(failure: &Onward) -> Self {
        match failure {
            Onward::Unresolved => Refusal::new(502, "Bad Gateway", "error=dns_error; rcode=\"NXDOMAIN\""),
            Onward::Prohibited(addr) => {
                Refusal::new(403, "Forbidden", format!("error=destination_ip_prohibited; next-hop=\"{addr}\""))
            }
            Onward::Refused => Refusal::new(502, "Bad Gateway", "error=connection_refused"),
            Onward::TimedOut => Refusal::new(504, "Gateway Timeout", "error=connection_timeout"),
        }
    }
}

/// How the proxy's own connection to the destination failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onward {
    Unresolved,
    /// The name resolved to an address the proxy will not connect to.
    Prohibited(std::net::IpAddr),
    Refused,
    TimedOut,
}

async fn reply(stream: &mut BoxStream, status: &str, extra: &str) {
    let _ = stream.write_all(format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n").as_bytes()).await;
}

async fn refuse(stream: &mut BoxStream, r: &Refusal) {
    let status = format!("{} {}", r.status, r.reason);
    reply(stream, &status, &format!("Proxy-Status: {PROXY_NAME}; {}\r\n", r.error)).await;
}

/// Connects to `host:port` through the proxy's egress, or says why not.
async fn connect_onward(upstream: &dyn Net, host: &str, port: u16) -> Result<BoxStream, Onward> {
    let addr = match connector::time::timeout(STEP_TIMEOUT, upstream.resolve(host)).await {
        Ok(Ok(a)) => a,
        _ => return Err(Onward::Unresolved),
    };
    if addr.is_unspecified() {
        return Err(Onward::Prohibited(addr));
    }
    match connector::time::timeout(STEP_TIMEOUT, upstream.connect_addr(host, addr, port)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(Onward::Refused),
        Ok(Err(_)) | Err(_) => Err(Onward::TimedOut),
    }
}

async fn handle(cloud: &Cloud, mut client: BoxStream, policy: &ProxyPolicy, upstream: &dyn Net) -> Result<(), String> {
    let head = connector::time::timeout(STEP_TIMEOUT, read_head(&mut client)).await.map_err(|_| "no request")??;
    let mut lines = head.lines();
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split_whitespace();
    let (Some("CONNECT"), Some(authority)) = (parts.next(), parts.next()) else {
        reply(&mut client, "405 Method Not Allowed", "").await;
        return Err(format!("not a CONNECT: {request:?}"));
    };
    let Some((host, port)) =
        authority.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        reply(&mut client, "400 Bad Request", "").await;
        return Err(format!("bad authority {authority:?}"));
    };
    let emit = |status: u16| cloud.emit(CloudEvent::ProxyConnect { host: host.clone(), port, status });
    let authorized = lines.any(|l| l.to_ascii_lowercase().starts_with("proxy-authorization:"));
    if policy.require_auth && !authorized {
        emit(407);
        reply(
            &mut client,
            "407 Proxy Authentication Required",
            "Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: NTLM\r\n",
        )
        .await;
        return Ok(());
    }
    let conn = Conn { host: &host, addr: None, port, account: "proxy" };
    if policy.allow.verdict(&conn) != Action::Allow {
        emit(403);
        refuse(&mut client, &Refusal::new(403, "Forbidden", "error=http_request_denied")).await;
        return Ok(());
    }
    let mut origin = match connect_onward(upstream, &host, port).await {
        Ok(s) => s,
        Err(failure) => {
            let refusal = Refusal::onward(&failure);
            emit(refusal.status);
            refuse(&mut client, &refusal).await;
            return Ok(());
        }
    };
    emit(200);
    client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.map_err(|e| e.to_string())?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
    Ok(())
}
