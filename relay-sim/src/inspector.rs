//! A TLS inspection box (a world element, not part of the cloud): it
//! terminates the connector's outbound TLS and re-signs with the enterprise
//! CA, as outbound inspection proxies do (NET-NOINSPECT). Like real boxes it
//! first dials the origin named in the ClientHello — as a plain TLS client,
//! so the service sees no client certificate — then presents a forged
//! certificate for that name and copies bytes between the two.
//!
//! In [`Mode::LegacyTls`] it stands for a middlebox that only speaks TLS
//! 1.0: it answers every ClientHello with a `protocol_version` alert
//! (TLS-MIN12).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use connector::net::Net;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cloud::Cloud;
use crate::event::CloudEvent;
use crate::server::Listener;

/// What the box does with intercepted connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Terminate and re-sign with the enterprise CA.
    #[default]
    ReSign,
    /// Refuse anything above TLS 1.0.
    LegacyTls,
}

/// A TLS alert record: fatal `protocol_version`, as a TLS 1.0-only peer
/// answers a ClientHello whose versions it does not support.
const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves intercepted connections; `upstream` reaches the real origins.
pub async fn serve(cloud: Rc<Cloud>, listener: impl Listener, mode: Mode, upstream: Rc<dyn Net>) {
    loop {
        let Ok(stream) = listener.accept().await else {
            connector::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (cloud, upstream) = (cloud.clone(), upstream.clone());
        tokio::task::spawn_local(async move {
            match mode {
                Mode::LegacyTls => legacy(stream).await,
                Mode::ReSign => {
                    if let Err(e) = resign(&cloud, stream, upstream.as_ref()).await {
                        tracing::debug!("inspection: {e}");
                    }
                }
            }
        });
    }
}

async fn legacy(mut stream: connector::net::BoxStream) {
    let mut hello = [0u8; 512];
    if let Ok(Ok(n)) = connector::time::timeout(STEP_TIMEOUT, stream.read(&mut hello)).await {
        if n > 0 {
            let _ = stream.write_all(&PROTOCOL_VERSION_ALERT).await;
        }
    }
    let _ = stream.shutdown().await;
}

async fn resign(cloud: &Rc<Cloud>, client: connector::net::BoxStream, upstream: &dyn Net) -> Result<(), String> {
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client);
    let start = connector::time::timeout(STEP_TIMEOUT, acceptor)
        .await
        .map_err(|_| "no ClientHello".to_string())?
        .map_err(|e| format!("ClientHello: {e}"))?;
    let sni = start.client_hello().server_name().map(str::to_string).ok_or("ClientHello without a server name")?;
    cloud.emit(CloudEvent::Intercepted { host: sni.clone() });
    // Dial the origin first, as a plain TLS client (no client certificate).
    let mut roots = RootCertStore::empty();
    for root in cloud.service_roots() {
        roots.add(root).map_err(|e| e.to_string())?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), cloud.tls.provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
    let config = cloud.tls.client_config(verifier, None).map_err(|e| e.to_string())?;
    let (_, tcp) = connector::time::timeout(STEP_TIMEOUT, connector::net::connect(upstream, &sni, 443))
        .await
        .map_err(|_| format!("{sni}: connect timed out"))?
        .map_err(|e| format!("{sni}: {}", e.error))?;
    let name = ServerName::try_from(sni.clone()).map_err(|e| e.to_string())?;
    let mut origin = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("origin {sni}: {e}"))?;
    let forged = cloud.forged_config(&sni).map_err(|e| e.to_string())?;
    let mut client = connector::time::timeout(STEP_TIMEOUT, start.into_stream(forged))
        .await
        .map_err(|_| "client handshake timed out".to_string())?
        .map_err(|e| format!("client refused the re-signed certificate: {e}"))?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
    Ok(())
}
