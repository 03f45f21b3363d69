//! Serving an axum router: plain HTTP or TLS (rustls), with a header read timeout so a slow
//! client cannot hold a connection open, and a bound on concurrent connections. Used by the
//! worker's `/metrics` + `/health` and by the review service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// How long a client may take to send its request head (and how long a kept-alive connection
/// may sit idle before its next one).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to send a request's body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body taken (the biggest is a privacy mask's polygons).
pub const MAX_BODY: usize = 1 << 20;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections served at once from one address (a trusted proxy is exempt): one client cannot
/// take every slot.
pub const MAX_PER_ADDRESS: usize = 32;

/// An address range: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<IpNet, String> {
        let (a, p) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let addr: std::net::IpAddr =
            a.trim().parse().map_err(|_| format!("{s:?} is not an address or range like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The client behind `peer`: `peer` itself, unless it is a trusted proxy; then the rightmost
/// address in `X-Forwarded-For` that is not a trusted proxy (the header's left part is the
/// client's own say, which a client can forge).
pub fn client_ip(peer: std::net::IpAddr, headers: &http::HeaderMap, trusted: &[IpNet]) -> std::net::IpAddr {
    if !trusted.iter().any(|t| t.contains(peer)) {
        return peer;
    }
    let hops: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().parse().ok())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    hops.into_iter().rev().find(|h| !trusted.iter().any(|t| t.contains(*h))).unwrap_or(peer)
}

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

/// Reads a request's whole body (at most [`MAX_BODY`]) within [`BODY_READ_TIMEOUT`] before the
/// handler runs: a client that announces a body and sends it slowly, or never, holds its
/// connection for that long at most (408), and a handler never waits on a client.
async fn body_in_time(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Err(_) => (http::StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time").into_response(),
        Ok(Err(_)) => (http::StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large or broken").into_response(),
        Ok(Ok(b)) => next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(b))).await,
    }
}

/// Connections open per address.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// A connection counted against its address until dropped.
struct AddressSlot(Arc<PerAddress>, std::net::IpAddr);

impl PerAddress {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<AddressSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot(self.clone(), ip))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Serves `app` on `listener` until the process ends; returns the bound address. HTTP/1.1 only
/// (no h2c: its idle streams had no timeout); request heads and bodies must arrive in time; at
/// most [`MAX_PER_ADDRESS`] connections from one address but `exempt` (trusted proxies).
pub fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<SocketAddr> {
    serve_with(listener, app, tls, Vec::new())
}

/// [`serve`], with addresses exempt from the per-address limit.
pub fn serve_with(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    exempt: Vec<IpNet>,
) -> std::io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let per = Arc::new(PerAddress::default());
    let app = app.layer(axum::middleware::from_fn(body_in_time));
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
            let ip = peer.ip();
            let slot = if exempt.iter().any(|e| e.contains(ip)) {
                None
            } else {
                match per.take(ip) {
                    Some(s) => Some(s),
                    // over its share: closed at once, the slot free for others
                    None => continue,
                }
            };
            let app = app.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (_permit, _slot) = (permit, slot);
                let svc = TowerToHyperService::new(app.layer(axum::Extension(ClientAddr(peer))));
                let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
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

/// The value of a cookie in the request.
pub fn cookie<'a>(h: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| match (c.name_raw(), c.value_raw()) {
            (Some(_), Some(v)) => Some(v),
            _ => None,
        })
}

/// A `Set-Cookie` value: `HttpOnly` unless `script` may read it, `SameSite=Strict`, `Secure`
/// over TLS, for `max_age_s` seconds (0: delete it).
pub fn set_cookie(name: &str, value: &str, path: &str, max_age_s: i64, secure: bool, http_only: bool) -> String {
    cookie::Cookie::build((name, value))
        .path(path)
        .http_only(http_only)
        .same_site(cookie::SameSite::Strict)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_s))
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_and_written_strict() {
        let mut h = axum::http::HeaderMap::new();
        h.append(axum::http::header::COOKIE, "a=1; vigil_session=abc_-9; b=2".parse().unwrap());
        h.append(axum::http::header::COOKIE, "vigil_lang=en".parse().unwrap());
        assert_eq!(cookie(&h, "vigil_session"), Some("abc_-9"));
        assert_eq!(cookie(&h, "vigil_lang"), Some("en"));
        assert_eq!(cookie(&h, "session"), None);
        let s = set_cookie("vigil_session", "tok", "/", 3600, true, true);
        for part in ["vigil_session=tok", "HttpOnly", "SameSite=Strict", "Secure", "Path=/", "Max-Age=3600"] {
            assert!(s.split("; ").any(|p| p == part), "{part} in {s}");
        }
        let gone = set_cookie("vigil_session", "", "/", 0, false, true);
        assert!(gone.contains("Max-Age=0") && !gone.contains("Secure"), "{gone}");
    }

    #[test]
    fn the_client_behind_a_trusted_proxy_is_the_rightmost_untrusted_hop() {
        let t: Vec<IpNet> = vec!["127.0.0.1".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap());
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(lo, &h, &t).to_string(), "203.0.113.7", "the forged left part is ignored");
        let other: std::net::IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(other, &h, &t), other, "an untrusted peer's header is ignored");
        assert_eq!(client_ip(lo, &http::HeaderMap::new(), &t), lo);
        assert!("10.0.0.0/33".parse::<IpNet>().is_err() && "nope".parse::<IpNet>().is_err());
        assert!("::ffff:0:0/96".parse::<IpNet>().is_ok());
        let v6: IpNet = "::1".parse().unwrap();
        assert!(v6.contains("::1".parse().unwrap()) && !v6.contains(lo));
    }
}
