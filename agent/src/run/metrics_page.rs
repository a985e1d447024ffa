//! The local metrics page (`[metrics] listen`, off by default, loopback only unless
//! `allow_non_loopback`): the counters of `metrics` with the gauges read from the live
//! status and inventory when scraped.
//!
//! The listener is a deliberately tiny HTTP/1.1 responder — `GET /metrics` and nothing
//! else, one request per connection, a bounded request head and a read timeout — so the
//! agent needs no HTTP server dependency for one read-only page.

use super::AgentError;
use crate::boxside::inventory::InventoryHandle;
use crate::config::MetricsConfig;
use crate::local::metrics::{AgentMetrics, Gauges};
use crate::local::status::AgentStatus;
use farmhand_ops::metrics::CONTENT_TYPE;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest request head read from a scraper.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a scraper has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the listener serves from.
#[derive(Debug, Clone)]
pub struct MetricsSource {
    /// The counters.
    pub metrics: Arc<AgentMetrics>,
    /// Connection state.
    pub status: Arc<AgentStatus>,
    /// The modems.
    pub inventory: InventoryHandle,
}

impl MetricsSource {
    /// The gauges as they are now.
    fn gauges(&self) -> Gauges {
        let snapshot = self.inventory.current();
        Gauges {
            connected: self.status.connected(),
            proxysmart_reachable: snapshot.reachable,
            modems: snapshot.modems.len(),
            modems_online: snapshot.modems.iter().filter(|m| m.online).count(),
        }
    }
}

/// Binds `config.listen` (if set), records the bound address in the status, and serves
/// until `shutdown`. The address was checked at load (loopback unless allowed).
pub(crate) async fn start(
    config: &MetricsConfig,
    source: MetricsSource,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let Some(addr) = config.listen else {
        return Ok(());
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Metrics { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AgentError::Metrics { addr, source })?;
    source.status.set_metrics_addr(bound);
    tracing::info!("serving metrics on http://{bound}/metrics");
    tokio::spawn(serve(listener, source, shutdown));
    Ok(())
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, source: MetricsSource, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let source = source.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &source).await {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, source: &MetricsSource) -> std::io::Result<()> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time"))??;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let body = source.metrics.render(&source.gauges());
            ("200 OK", CONTENT_TYPE, body)
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads until the end of the request head (`\r\n\r\n`), at most `MAX_REQUEST_BYTES`.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
