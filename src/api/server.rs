//! The operator API's HTTPS server loop: accepts TCP connections, does the TLS handshake
//! (under a timeout, each in its own task, so a stalled client blocks nobody), hands the
//! verified client chain and the peer address to every request of the connection, and serves
//! it with hyper (HTTP/1.1 or HTTP/2, by ALPN) until shutdown.
//!
//! ```text
//!   accept ─► spawn ─► TLS handshake (≤ 10 s; failure: debug log, dropped)
//!                        └─► hyper auto (h1/h2) ─► Router, each request carrying
//!                              PeerCertificates (leaf first; empty: none presented)
//!                              ConnectInfo<SocketAddr>
//!   shutdown ─► stop accepting, let open connections finish their requests (graceful),
//!               at most GRACE, then return
//! ```
//!
//! This module does not look at who the certificates name; handlers do.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown is asked.
pub const GRACE: Duration = Duration::from_secs(10);

/// The client's verified certificate chain, leaf first, as an extension of every request of
/// its connection (empty when the client presented none).
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

impl PeerCertificates {
    /// The client's own certificate, if it presented one.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true (or its sender is
/// dropped). Every request carries [`PeerCertificates`] and the client's address, both as
/// `ConnectInfo<SocketAddr>` (the extractor) and as a plain `SocketAddr` extension.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!("operator API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "operator API: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "operator API: TLS handshake timed out");
                        return;
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            let chain: Vec<CertificateDer<'static>> = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let peer_certs = PeerCertificates(Arc::new(chain));
            let service = TowerToHyperService::new(router);
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(peer_certs.clone());
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(peer);
                service.call(req)
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // The timer enables hyper's HTTP/1 header read timeout (30 s) and HTTP/2 timers.
            builder.http1().timer(TokioTimer::new());
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, "operator API: connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("operator API: connections still open after the grace period");
    }
}
