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

use crate::env::{BoxStream, LocalBoxFuture, Net};
use crate::evidence::Route;
use crate::time::Instant;

/// Largest proxy response head accepted.
const HEAD_BYTES_MAX: usize = 8 * 1024;

/// What a proxy answered instead of opening the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProxyError {
    #[error("proxy {proxy} requires authentication (407), which the connector does not support")]
    AuthRequired { proxy: String },
    #[error("proxy {proxy} refused CONNECT {target} with {status}")]
    Refused { proxy: String, target: String, status: String },
    #[error("proxy {proxy} answered something that is not HTTP: {what}")]
    Garbled { proxy: String, what: String },
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
        self.inner.resolve(&self.host)
    }

    fn connect_addr<'a>(&'a self, host: &'a str, addr: IpAddr, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move { self.connect_timed(host, addr, port).await.map(|(s, _)| s) })
    }

    fn route(&self) -> Route {
        Route::Proxy(self.name())
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
            let proxy_addr = self.inner.resolve(&self.host).await?;
            let started = Instant::now();
            let mut s = self.inner.connect_addr(&self.host, proxy_addr, self.port).await?;
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
                    Err(io::Error::other(ProxyError::Refused {
                        proxy: self.name(),
                        target,
                        status: status_line.clone(),
                    }))
                }
                _ => Err(io::Error::other(ProxyError::Garbled { proxy: self.name(), what: status_line })),
            }
        })
    }
}
