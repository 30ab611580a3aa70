//! An explicit outbound proxy (HTTP `CONNECT`), as a layer over the
//! environment's [`Net`]: every connection of the agent goes to the proxy,
//! which is asked to open a tunnel to the destination. Proxy
//! authentication is not supported (as in the real product); a proxy that
//! demands it gets a diagnostic that says so.

use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{is_sinkhole, BoxStream, LocalBoxFuture, Net, Onward, ProxyError, ProxyHop, Route};
use crate::time::Instant;

/// Largest proxy response head accepted.
const HEAD_BYTES_MAX: usize = 8 * 1024;

/// `text` split at `sep` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, sep: char) -> Vec<String> {
    let (mut parts, mut current, mut quoted) = (Vec::new(), String::new(), false);
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c == sep && !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// What a proxy's answer other than 200 and 407 means.
fn refusal(proxy: String, target: String, status_line: &str, head: &str) -> ProxyError {
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    let status = status_line.split_once(' ').map_or(status_line, |(_, rest)| rest).trim().to_string();
    // RFC 9209: a list, one member per intermediary (`name; error=...;
    // param="..."`); the first member that names an error is the one that
    // failed.
    let members: Vec<Vec<(String, String)>> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case("proxy-status")))
        .flat_map(|(_, v)| split_outside_quotes(v, ','))
        .map(|member| {
            split_outside_quotes(&member, ';')
                .into_iter()
                .skip(1)
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
                })
                .collect()
        })
        .collect();
    let failed = members.iter().find(|m| m.iter().any(|(k, _)| k == "error"));
    let param = |name: &str| failed.and_then(|m| m.iter().find(|(k, _)| k == name)).map(|(_, v)| v.clone());
    let onward = match (param("error").as_deref(), code) {
        (Some("dns_error" | "dns_timeout" | "destination_not_found"), _) => Some(Onward::Unresolved),
        (Some("destination_ip_prohibited" | "destination_ip_unroutable"), _) => {
            let hop = param("next-hop").and_then(|h| h.parse::<IpAddr>().ok());
            hop.filter(|a| is_sinkhole(*a)).map(Onward::Sinkhole)
        }
        (Some("connection_refused"), _) => Some(Onward::Refused),
        (Some("connection_timeout"), _) | (None, "504") => Some(Onward::TimedOut),
        (Some("http_request_denied"), _) => None,
        (Some(other), _) => Some(Onward::Failed(other.to_string())),
        (None, "502" | "503") => Some(Onward::Failed(String::new())),
        (None, _) => None,
    };
    match onward {
        Some(onward) => ProxyError::Onward { proxy, target, status, onward },
        None => ProxyError::Refused { proxy, target, status },
    }
}

/// `inner`, but through the proxy at `host:port`.
pub struct ProxyNet {
    pub inner: Rc<dyn Net>,
    pub host: String,
    pub port: u16,
}

impl ProxyNet {
    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A failure to resolve or reach the proxy itself, told apart from the
    /// destination's. (A proxy that drops the connection looks like one
    /// that is slow to reach the destination: the caller's timeout ends both.)
    fn down(&self, e: io::Error) -> io::Error {
        let what = match e.kind() {
            io::ErrorKind::NotFound => "its name did not resolve".to_string(),
            io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), ProxyError::Down { proxy: self.name(), what })
    }

    async fn read_head(&self, stream: &mut BoxStream) -> io::Result<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= HEAD_BYTES_MAX || stream.read(&mut byte).await? == 0 {
                let what = if head.is_empty() { "nothing".to_string() } else { "a truncated response head".into() };
                return Err(io::Error::other(ProxyError::Garbled { proxy: self.name(), what }));
            }
            head.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    }
}

impl Net for ProxyNet {
    /// Names are resolved by the proxy: the client only needs the proxy's.
    fn resolve<'a>(&'a self, _host: &'a str) -> LocalBoxFuture<'a, io::Result<IpAddr>> {
        Box::pin(async move { self.inner.resolve(&self.host).await.map_err(|e| self.down(e)) })
    }

    fn connect_addr<'a>(&'a self, host: &'a str, addr: IpAddr, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move { self.connect_timed(host, addr, port).await.map(|(s, _)| s) })
    }

    fn route(&self) -> Route {
        Route::Proxy(self.name())
    }

    fn account(&self) -> crate::net::Account {
        self.inner.account()
    }

    fn as_account(&self, account: &crate::net::Account) -> Option<Rc<dyn Net>> {
        let inner = self.inner.as_account(account)?;
        Some(Rc::new(ProxyNet { inner, host: self.host.clone(), port: self.port }))
    }

    /// Requests to backends go direct: the outbound proxy is for the
    /// service (the real connector sends backend requests through it only
    /// when `UseDefaultProxyForBackendRequests` is set).
    fn proxy(&self) -> Option<ProxyHop<'_>> {
        Some(ProxyHop { inner: self.inner.as_ref(), host: &self.host, port: self.port })
    }

    /// The round trip is the proxy's onward leg: the CONNECT exchange (one
    /// round trip to the proxy plus the proxy's own TCP handshake with the
    /// destination) less the round trip to the proxy (our TCP handshake
    /// with it).
    fn connect_timed<'a>(
        &'a self,
        host: &'a str,
        _addr: IpAddr,
        port: u16,
    ) -> LocalBoxFuture<'a, io::Result<(BoxStream, Duration)>> {
        Box::pin(async move {
            // Only the TCP handshake is timed, not the lookup of the proxy's name.
            let proxy_addr = self.inner.resolve(&self.host).await.map_err(|e| self.down(e))?;
            let started = Instant::now();
            let mut s = self.inner.connect_addr(&self.host, proxy_addr, self.port).await.map_err(|e| self.down(e))?;
            let to_proxy = started.elapsed();
            let asked = Instant::now();
            let target = format!("{host}:{port}");
            s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await?;
            let head = self.read_head(&mut s).await?;
            let onward = asked.elapsed().saturating_sub(to_proxy);
            let status_line = head.lines().next().unwrap_or_default().to_string();
            let code = status_line.split_whitespace().nth(1).unwrap_or_default();
            match code {
                "200" => Ok((s, onward)),
                "407" => Err(io::Error::other(ProxyError::AuthRequired { proxy: self.name() })),
                c if c.len() == 3 && c.chars().all(|d| d.is_ascii_digit()) => {
                    Err(io::Error::other(refusal(self.name(), target, &status_line, &head)))
                }
                _ => Err(io::Error::other(ProxyError::Garbled { proxy: self.name(), what: status_line })),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status_line: &str, headers: &str) -> ProxyError {
        let head = format!("{status_line}\r\n{headers}\r\n");
        refusal("p:8080".into(), "x.msappproxy.net:443".into(), status_line, &head)
    }

    fn onward(e: ProxyError) -> Option<Onward> {
        match e {
            ProxyError::Onward { onward, .. } => Some(onward),
            _ => None,
        }
    }

    #[test]
    fn proxy_status_names_the_onward_failure() {
        let dns = answer("HTTP/1.1 502 Bad Gateway", "Proxy-Status: p; error=dns_error; rcode=\"NXDOMAIN\"\r\n");
        assert_eq!(onward(dns), Some(Onward::Unresolved));
        let sink = answer(
            "HTTP/1.1 403 Forbidden",
            "proxy-status: p; error=destination_ip_prohibited; next-hop=\"0.0.0.0\"\r\n",
        );
        assert_eq!(onward(sink), Some(Onward::Sinkhole("0.0.0.0".parse().unwrap())));
        let refused = answer("HTTP/1.1 502 Bad Gateway", "Proxy-Status: p; error=connection_refused\r\n");
        assert_eq!(onward(refused), Some(Onward::Refused));
        let odd = answer("HTTP/1.1 502 Bad Gateway", "Proxy-Status: p; error=tls_protocol_error\r\n");
        assert_eq!(onward(odd), Some(Onward::Failed("tls_protocol_error".into())));
        // A chain of proxies: the member that names the error counts.
        let chain = answer(
            "HTTP/1.1 502 Bad Gateway",
            "Proxy-Status: edge, inner; error=dns_error; details=\"a, b; c\", outer\r\n",
        );
        assert_eq!(onward(chain), Some(Onward::Unresolved));
    }

    #[test]
    fn without_the_header_only_the_status_speaks() {
        assert_eq!(onward(answer("HTTP/1.1 504 Gateway Timeout", "")), Some(Onward::TimedOut));
        assert_eq!(onward(answer("HTTP/1.1 502 Bad Gateway", "")), Some(Onward::Failed(String::new())));
        assert!(matches!(answer("HTTP/1.1 403 Forbidden", ""), ProxyError::Refused { .. }));
        let denied = answer("HTTP/1.1 403 Forbidden", "Proxy-Status: p; error=http_request_denied\r\n");
        assert!(matches!(denied, ProxyError::Refused { .. }));
        // A prohibited address that is no sinkhole is the proxy's policy.
        let policy = answer("HTTP/1.1 403 Forbidden", "Proxy-Status: p; error=destination_ip_prohibited\r\n");
        assert!(matches!(policy, ProxyError::Refused { .. }));
    }
}
