//! Serving an axum router: plain HTTP or TLS (rustls), with a header read timeout so a slow
//! client cannot hold a connection open, and a bound on concurrent connections. Used by the
//! worker's `/metrics` + `/health` and by the review service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// How long a client may take to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// TLS from PEM certificate chain and key files.
pub fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::util::secret::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("TLS certificate {}", cert.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("TLS certificate {}: not PEM", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("TLS key {}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `app` on `listener` until the process ends; returns the bound address.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let app = app.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = TowerToHyperService::new(app.layer(axum::Extension(ClientAddr(peer))));
                let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                b.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
                match acceptor {
                    None => {
                        let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(a) => {
                        let Ok(Ok(tls)) = tokio::time::timeout(HEADER_READ_TIMEOUT, a.accept(stream)).await else {
                            return;
                        };
                        let _ = b.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
            });
        }
    });
    Ok(bound)
}

/// The peer address of the connection a request came on (an `Extension` on every request).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Whether binding `addr` exposes the port beyond this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}
