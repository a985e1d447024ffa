//! The plane's accept loop, plain HTTP or HTTPS: what an unauthenticated client can hold is
//! bounded before a byte of its request is read.
//!
//! - **Connections are capped** in all (`[http] max_connections`) and per client address
//!   (`max_connections_per_address`); one over a cap is closed at once (plain HTTP: with a
//!   `503`). An agent's WebSocket leaves the count when it upgrades — agents are bounded by
//!   the enrolled agents and the mid-handshake limit instead — so REST abuse cannot lock
//!   agents out, nor agents REST.
//! - **Every connection has deadlines**: the TLS handshake (`[tls] handshake_timeout_s`), and
//!   the request head (`header_timeout_s`), which hyper also applies while a keep-alive
//!   connection waits for its next request — a client that sends half a request line, or
//!   nothing, is closed. Bodies are read under `body_timeout_s` by the extractors
//!   (`api::json`).
//!
//! Each connection is served by its own task (HTTP/1.1 with upgrades), each request carrying
//! `ConnectInfo<SocketAddr>` for the per-address rate limits. On shutdown the loop stops
//! accepting, open connections finish their request in flight and close, and `serve`
//! returns once every connection task has ended.

use crate::config::HttpConfig;
use crate::tls::ServerTls;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);
/// The body a refused plain-HTTP connection is told before it is closed.
const BUSY_BODY: &str = r#"{"error":{"code":"too_many_connections","message":"too many open connections; retry later"}}"#;

/// The connection limits (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections in all (upgraded agent sessions not counted).
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_per_address: usize,
    /// Time for a request's head, and for the next one on an idle keep-alive connection.
    pub header_timeout: Duration,
}

impl From<&HttpConfig> for ConnLimits {
    fn from(config: &HttpConfig) -> Self {
        ConnLimits {
            max_connections: config.max_connections,
            max_per_address: config.max_connections_per_address,
            header_timeout: config.header_timeout(),
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ServerTls>,
    limits: ConnLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tls = tls.map(|tls| (TlsAcceptor::from(tls.config.clone()), tls.handshake_timeout));
    let counts = Counts::new(limits);
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
        let Some(guard) = counts.admit(peer.ip()) else {
            tracker.spawn(refuse(tcp, tls.is_none()));
            continue;
        };
        let conn = Conn {
            app: app.clone(),
            peer,
            header_timeout: limits.header_timeout,
            shutdown: shutdown.clone(),
            _guard: Some(guard),
        };
        match &tls {
            Some((acceptor, timeout)) => tracker.spawn(conn.tls(tcp, acceptor.clone(), *timeout)),
            None => tracker.spawn(conn.http(tcp)),
        };
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Serves `app` on a Unix socket (the local admin socket) until `shutdown` is cancelled.
/// Only the socket file's permissions guard it, so there are no caps; requests carry
/// 127.0.0.1 as their client address.
pub async fn serve_local(
    listener: tokio::net::UnixListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept on the local admin socket failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let conn = Conn {
            app: app.clone(),
            peer: SocketAddr::from(([127, 0, 0, 1], 0)),
            header_timeout,
            shutdown: shutdown.clone(),
            _guard: None,
        };
        tracker.spawn(conn.http(stream));
    }
    tracker.close();
    tracker.wait().await;
}

/// Closes a connection over a cap (plain HTTP: after a 503, without reading the request).
async fn refuse(mut tcp: TcpStream, plain: bool) {
    if plain {
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{BUSY_BODY}",
            BUSY_BODY.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(reply.as_bytes())).await;
    }
    drop(tcp);
}

/// The open connections, in all and by address.
#[derive(Debug, Clone)]
struct Counts {
    limits: ConnLimits,
    inner: Arc<Mutex<(usize, HashMap<IpAddr, usize>)>>,
}

impl Counts {
    fn new(limits: ConnLimits) -> Self {
        Counts {
            limits,
            inner: Arc::default(),
        }
    }

    /// A slot for a connection from `ip`, or `None` over a cap (logged).
    fn admit(&self, ip: IpAddr) -> Option<Guard> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_address) = &mut *inner;
        let mine = by_address.get(&ip).copied().unwrap_or(0);
        if *total >= self.limits.max_connections || mine >= self.limits.max_per_address {
            tracing::debug!(client = %ip, total = *total, from_client = mine, "connection over a cap: closed");
            return None;
        }
        *total += 1;
        by_address.insert(ip, mine + 1);
        Some(Guard {
            counts: self.clone(),
            ip,
        })
    }

    fn leave(&self, ip: IpAddr) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_address) = &mut *inner;
        *total = total.saturating_sub(1);
        if let Some(n) = by_address.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_address.remove(&ip);
            }
        }
    }
}

/// A counted connection; leaves the count when dropped (its task ended, or it upgraded).
#[derive(Debug)]
struct Guard {
    counts: Counts,
    ip: IpAddr,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.counts.leave(self.ip);
    }
}

/// One accepted connection.
struct Conn {
    app: Router,
    peer: SocketAddr,
    header_timeout: Duration,
    shutdown: CancellationToken,
    /// Its slot under the caps (none on the local socket).
    _guard: Option<Guard>,
}

impl Conn {
    async fn tls(self, tcp: TcpStream, acceptor: TlsAcceptor, timeout: Duration) {
        let _ = tcp.set_nodelay(true);
        let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp));
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
        self.http(stream).await;
    }

    async fn http<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = TowerToHyperService::new(self.app);
        let peer = self.peer;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.call(request)
        });
        let http = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
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
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_in_all_and_per_address() {
        let counts = Counts::new(ConnLimits {
            max_connections: 3,
            max_per_address: 2,
            header_timeout: Duration::from_secs(1),
        });
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = counts.admit(a).unwrap();
        let _a2 = counts.admit(a).unwrap();
        assert!(counts.admit(a).is_none(), "per address");
        let _b1 = counts.admit(b).unwrap();
        assert!(counts.admit(b).is_none(), "in all");
        drop(a1);
        assert!(counts.admit(b).is_some(), "a slot came back");
    }
}
