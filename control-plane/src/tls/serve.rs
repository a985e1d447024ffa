//! The HTTPS accept loop. axum's `serve` only takes plain listeners, so this accepts TCP
//! itself, runs each TLS handshake in the connection's own task under a timeout (a slow or
//! broken client cannot stall the loop), then serves HTTP/1.1 with upgrades (agent
//! WebSockets) through hyper. Each request carries `ConnectInfo<SocketAddr>` like under
//! `axum::serve` with connect info, so per-address limits see the real peer.
//!
//! On shutdown the loop stops accepting, open connections finish their request in flight
//! and close, and `serve` returns once every connection task has ended.

use super::ServerTls;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// Serves `app` over TLS on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: ServerTls,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let conn = Conn {
            acceptor: acceptor.clone(),
            app: app.clone(),
            peer,
            handshake_timeout: tls.handshake_timeout,
            shutdown: shutdown.clone(),
        };
        tracker.spawn(conn.run(tcp));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// One accepted connection: TLS handshake, then HTTP.
struct Conn {
    acceptor: TlsAcceptor,
    app: Router,
    peer: SocketAddr,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
}

impl Conn {
    async fn run(self, tcp: TcpStream) {
        let _ = tcp.set_nodelay(true);
        let handshake = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp));
        let stream = tokio::select! {
            _ = self.shutdown.cancelled() => return,
            result = handshake => match result {
                Ok(Ok(stream)) => stream,
                // Debug only: scanners and misconfigured agents would flood the log.
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    return;
                }
            },
        };
        let app = TowerToHyperService::new(self.app);
        let peer = self.peer;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.call(request)
        });
        let http = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(http);
        let result = tokio::select! {
            result = http.as_mut() => result,
            _ = self.shutdown.cancelled() => {
                // Finish the request in flight, then close; idle connections close now.
                http.as_mut().graceful_shutdown();
                http.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, error = %e, "HTTPS connection ended with an error");
        }
    }
}
