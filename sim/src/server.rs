//! The simulator's own accept loop. Each connection's request line is read first so that the
//! `refuse` fault can drop API connections without touching `/_sim/` ones; accepted
//! connections are then handed to axum through a channel-backed `Listener`.

use super::shared::Sim;
use super::{admin, api, gate};
use axum::Router;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Longest request line we wait for before classifying a connection.
const MAX_FIRST_LINE: usize = 8192;
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawns the accept loop and the axum server on the sim's tracker.
pub(crate) fn spawn(sim: Arc<Sim>, listener: TcpListener) {
    let (tx, rx) = mpsc::channel(64);
    let router = Router::new()
        .merge(api::routes())
        .merge(admin::routes())
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            gate::gate,
        ))
        .with_state(sim.clone());
    let channel = ChannelListener {
        rx,
        local: sim.local_addr,
    };
    let shutdown = sim.shutdown.clone();
    sim.tracker.spawn(async move {
        let served = axum::serve(channel, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    sim.tracker.spawn(accept_loop(sim.clone(), listener, tx));
}

async fn accept_loop(
    sim: Arc<Sim>,
    listener: TcpListener,
    tx: mpsc::Sender<(SimConn, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            _ = sim.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let sim = sim.clone();
                let tx = tx.clone();
                sim.tracker.clone().spawn(async move {
                    if let Some(conn) = classify(sim, stream).await {
                        let _ = tx.send((conn, peer)).await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "simulator accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads the request line; drops the connection if it is an API call while refusing.
async fn classify(sim: Arc<Sim>, mut stream: TcpStream) -> Option<SimConn> {
    let head = tokio::select! {
        _ = sim.shutdown.cancelled() => return None,
        read = tokio::time::timeout(FIRST_LINE_TIMEOUT, read_first_line(&mut stream)) => read.ok()?.ok()?,
    };
    let admin = is_admin_request(&head);
    if !admin && sim.refusing() {
        // Reset rather than FIN, like a port nobody listens on would.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        return None;
    }
    let watch = (!admin).then_some(sim);
    Some(SimConn {
        prefix: head,
        pos: 0,
        stream,
        watch,
    })
}

async fn read_first_line(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.contains(&b'\n') && buf.len() < MAX_FIRST_LINE {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

fn is_admin_request(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    target == b"/_sim" || target.starts_with(b"/_sim/")
}

/// A connection whose already-read bytes are replayed first. API connections (`watch` set)
/// fail their next read once the `refuse` fault is on, so pooled keep-alive connections are
/// refused too.
#[derive(Debug)]
pub(crate) struct SimConn {
    prefix: Vec<u8>,
    pos: usize,
    stream: TcpStream,
    watch: Option<Arc<Sim>>,
}

impl AsyncRead for SimConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.watch.as_ref().is_some_and(|sim| sim.refusing()) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Feeds classified connections to `axum::serve`.
struct ChannelListener {
    rx: mpsc::Receiver<(SimConn, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for ChannelListener {
    type Io = SimConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): wait for graceful shutdown to drop us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_requests_are_recognised() {
        assert!(is_admin_request(b"GET /_sim/state HTTP/1.1\r\n"));
        assert!(is_admin_request(b"POST /_sim/fault HTTP/1.1\r\nHost: x"));
        assert!(!is_admin_request(
            b"GET /apix/show_status_json HTTP/1.1\r\n"
        ));
        assert!(!is_admin_request(b"GET /_simulate HTTP/1.1\r\n"));
        assert!(!is_admin_request(b""));
    }
}
