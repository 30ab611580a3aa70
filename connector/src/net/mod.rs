//! The transport seam: how the agent opens outbound connections, and the
//! one error type for a connection that failed ([`ConnectFailure`]). The bottom
//! layer of the crate: it knows nothing of diagnostics, events or the
//! evidence log, so everything above can depend on it. Real mode uses
//! [`TokioNet`]; the simulator supplies its own [`Net`] over turmoil, and
//! [`crate::proxy::ProxyNet`] layers an outbound proxy over either.

mod failure;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub use failure::{is_sinkhole, ConnectFailure, Onward, ProxyError};

/// A boxed future that need not be `Send`: everything runs on one thread
/// (turmoil hosts, and the real agent's `LocalSet`).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A byte stream to a peer.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncStream for T {}

/// An owned, type-erased stream.
pub type BoxStream = Box<dyn AsyncStream>;

/// The Windows account a connection originates from, as a firewall that
/// filters by user sees it (NET-USER): registration runs in the context of
/// the administrator who runs setup; both services run as Network Service.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Account {
    #[default]
    NetworkService,
    /// A user account (`contoso\alice`).
    User(String),
}

impl Account {
    /// The name a firewall rule uses for it (`network-service`, or the
    /// user's name).
    pub fn rule_name(&self) -> &str {
        match self {
            Account::NetworkService => "network-service",
            Account::User(u) => u,
        }
    }

    /// The account a rule name stands for.
    pub fn from_rule_name(name: &str) -> Account {
        if name.eq_ignore_ascii_case("network-service") {
            Account::NetworkService
        } else {
            Account::User(name.to_string())
        }
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Account::NetworkService => f.write_str("Network Service"),
            Account::User(u) => f.write_str(u),
        }
    }
}

/// Outbound connections. The only network capability the agent has: there is
/// deliberately no `listen` (NET-OUTONLY).
pub trait Net {
    /// Resolves `host` as the machine's DNS would.
    fn resolve<'a>(&'a self, host: &'a str) -> LocalBoxFuture<'a, io::Result<IpAddr>>;

    /// Opens TCP to `addr:port`, the address `host` resolved to. The name
    /// travels along because firewalls and proxies match on it. No timeout
    /// here: callers bound it, because a firewall that drops packets makes
    /// connect hang.
    fn connect_addr<'a>(&'a self, host: &'a str, addr: IpAddr, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>>;

    /// The way connections go out (for the evidence log).
    fn route(&self) -> Route {
        Route::Direct
    }

    /// The account connections originate from (for the evidence log).
    fn account(&self) -> Account {
        Account::NetworkService
    }

    /// This network for connections made as `account`; `None` when the
    /// account makes no difference to it (real sockets: the operating
    /// system uses the account the process runs as).
    fn as_account(&self, _account: &Account) -> Option<Rc<dyn Net>> {
        None
    }

    /// The outbound proxy this network goes through, if any: requests to
    /// backends on the private network go around it, and a failure is
    /// explained by asking first whether the proxy itself answers.
    fn proxy(&self) -> Option<ProxyHop<'_>> {
        None
    }

    /// [`Net::connect_addr`], and one round trip to the destination itself:
    /// the TCP handshake's time when direct. A proxy overrides this with its
    /// onward leg, so that a proxy next to the connector does not make the
    /// service look far away.
    fn connect_timed<'a>(
        &'a self,
        host: &'a str,
        addr: IpAddr,
        port: u16,
    ) -> LocalBoxFuture<'a, io::Result<(BoxStream, Duration)>> {
        Box::pin(async move {
            let started = crate::time::Instant::now();
            let stream = self.connect_addr(host, addr, port).await?;
            Ok((stream, started.elapsed()))
        })
    }
}

/// An outbound proxy, and the network beneath it.
pub struct ProxyHop<'a> {
    /// The network without the proxy.
    pub inner: &'a dyn Net,
    pub host: &'a str,
    pub port: u16,
}

/// Why [`connect`] failed: the error, and the address if the name resolved.
#[derive(Debug)]
pub struct ConnectError {
    pub addr: Option<IpAddr>,
    pub error: io::Error,
}

/// Resolves `host` and connects to it on `port`.
pub async fn connect(net: &dyn Net, host: &str, port: u16) -> Result<(IpAddr, BoxStream), ConnectError> {
    let addr = net.resolve(host).await.map_err(|error| ConnectError { addr: None, error })?;
    let stream = net.connect_addr(host, addr, port).await.map_err(|error| ConnectError { addr: Some(addr), error })?;
    Ok((addr, stream))
}

/// A `--resolve` override: connections to `host` (optionally only on `port`)
/// go to `addr` instead of what DNS says, like curl's `--resolve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveEntry {
    pub host: String,
    pub port: Option<u16>,
    pub addr: SocketAddr,
}

impl std::str::FromStr for ResolveEntry {
    type Err = String;

    /// Parses `name=addr:port` or `name:port=addr:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (lhs, rhs) = s.split_once('=').ok_or_else(|| format!("--resolve {s:?}: expected NAME[:PORT]=ADDR:PORT"))?;
        let addr: SocketAddr = rhs.parse().map_err(|e| format!("--resolve {s:?}: {rhs:?} is not ADDR:PORT ({e})"))?;
        let (host, port) = match lhs.rsplit_once(':') {
            Some((h, p)) => {
                let port = p.parse().map_err(|_| format!("--resolve {s:?}: bad port {p:?}"))?;
                (h, Some(port))
            }
            None => (lhs, None),
        };
        if host.is_empty() {
            return Err(format!("--resolve {s:?}: empty host name"));
        }
        Ok(ResolveEntry { host: host.to_ascii_lowercase(), port, addr })
    }
}

/// Real sockets, with an optional `--resolve` map.
#[derive(Debug, Default, Clone)]
pub struct TokioNet {
    overrides: BTreeMap<(String, Option<u16>), SocketAddr>,
}

impl TokioNet {
    pub fn new(entries: impl IntoIterator<Item = ResolveEntry>) -> Self {
        let overrides = entries.into_iter().map(|e| ((e.host, e.port), e.addr)).collect();
        TokioNet { overrides }
    }

    fn lookup(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let host = host.to_ascii_lowercase();
        self.overrides.get(&(host.clone(), Some(port))).or_else(|| self.overrides.get(&(host, None))).copied()
    }
}

impl Net for TokioNet {
    fn resolve<'a>(&'a self, host: &'a str) -> LocalBoxFuture<'a, io::Result<IpAddr>> {
        Box::pin(async move {
            let lower = host.to_ascii_lowercase();
            if let Some(addr) = self.overrides.iter().find(|((h, _), _)| *h == lower).map(|(_, a)| *a) {
                return Ok(addr.ip());
            }
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(ip);
            }
            // A failed lookup is "not found" whatever the resolver's
            // wording, so the agent classifies it by kind, not by text.
            tokio::net::lookup_host((host, 0))
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{host}: {e}")))?
                .next()
                .map(|a| a.ip())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address")))
        })
    }

    fn connect_addr<'a>(&'a self, host: &'a str, addr: IpAddr, port: u16) -> LocalBoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let target = self.lookup(host, port).unwrap_or(SocketAddr::new(addr, port));
            let stream = tokio::net::TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// The way a connection went out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    Direct,
    /// Through the explicit proxy at `host:port`.
    Proxy(String),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Direct => f.write_str("direct"),
            Route::Proxy(p) => write!(f, "through proxy {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_parses_both_forms() {
        let e: ResolveEntry = "a.example=127.0.0.1:9".parse().unwrap();
        assert_eq!(e.port, None);
        let e: ResolveEntry = "A.example:443=127.0.0.1:9".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("a.example", Some(443)));
        assert!("nonsense".parse::<ResolveEntry>().is_err());
        assert!("a=notanaddr".parse::<ResolveEntry>().is_err());
    }
}
