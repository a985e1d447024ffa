//! The agent's Prometheus metrics and the local listener that serves them (`[metrics]
//! listen`, off by default, loopback only unless `allow_non_loopback`): whether a session
//! is open, reconnects, commands by op and outcome, ProxySmart call latency and errors by
//! kind, and the modems ProxySmart reports.
//!
//! The listener is a deliberately tiny HTTP/1.1 responder — `GET /metrics` and nothing
//! else, one request per connection, a bounded request head and a read timeout — so the
//! agent needs no HTTP server dependency for one read-only page.

use crate::config::MetricsConfig;
use crate::inventory::InventoryHandle;
use crate::proxysmart::ProxysmartError;
use crate::run::AgentError;
use crate::status::AgentStatus;
use farmhand_ops::metrics::{
    Counter, CounterVec, Histogram, Text, CONTENT_TYPE, LATENCY_BUCKETS_S,
};
use farmhand_protocol::Outcome;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Largest request head read from a scraper.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a scraper has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Every `ProxysmartError` kind, so each series exists from the start.
const ERROR_KINDS: [&str; 6] = [
    "unauthorized",
    "unavailable",
    "timeout",
    "refused",
    "not_found",
    "malformed",
];

/// The agent's counters and histograms; gauges are read from live state when scraped.
#[derive(Debug)]
pub struct AgentMetrics {
    reconnects: Counter,
    sessions: Counter,
    commands: CounterVec<2>,
    proxysmart_latency: Histogram,
    proxysmart_errors: CounterVec<1>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let errors = CounterVec::new(["kind"]);
        for kind in ERROR_KINDS {
            errors.touch([kind]);
        }
        AgentMetrics {
            reconnects: Counter::default(),
            sessions: Counter::default(),
            commands: CounterVec::new(["op", "outcome"]),
            proxysmart_latency: Histogram::new(LATENCY_BUCKETS_S),
            proxysmart_errors: errors,
        }
    }
}

impl AgentMetrics {
    /// A session with the plane was established.
    pub fn session_opened(&self) {
        self.sessions.inc();
    }

    /// The agent is about to dial the plane again after a failure or a lost session.
    pub fn reconnecting(&self) {
        self.reconnects.inc();
    }

    /// A command was executed (journal redeliveries are not): `ok` or its error code.
    pub fn command_done(&self, op: &str, outcome: &Outcome) {
        let outcome = match outcome {
            Outcome::Ok { .. } => "ok",
            Outcome::Error { error } => error.code.as_str(),
        };
        self.commands.inc([op, outcome]);
    }

    /// One ProxySmart HTTP call finished (every attempt of a retried read counts).
    pub fn proxysmart_call<T>(&self, elapsed: Duration, result: &Result<T, ProxysmartError>) {
        self.proxysmart_latency.observe(elapsed);
        if let Err(e) = result {
            self.proxysmart_errors.inc([error_kind(e)]);
        }
    }

    /// How many `op` commands ended with `outcome` (for tests).
    pub fn commands(&self, op: &str, outcome: &str) -> u64 {
        self.commands.get([op, outcome])
    }

    /// The text exposition, with the gauges read from `status` and `inventory`.
    pub fn render(&self, status: &AgentStatus, inventory: &InventoryHandle) -> String {
        let mut t = Text::new();
        let info = [
            crate::base::version::AGENT_VERSION,
            crate::base::version::GIT_COMMIT,
        ];
        t.gauge_vec(
            "farmhand_agent_info",
            "The agent's version and commit.",
            ["version", "commit"],
            &[(info, 1.0)],
        );
        t.gauge(
            "farmhand_agent_connected",
            "1 while a session with the control plane is open.",
            f64::from(u8::from(status.connected())),
        );
        t.counter(
            "farmhand_agent_sessions_total",
            "Sessions established with the control plane.",
            &self.sessions,
        );
        t.counter(
            "farmhand_agent_reconnects_total",
            "Reconnection attempts after a failed dial or a lost session.",
            &self.reconnects,
        );
        t.counter_vec(
            "farmhand_agent_commands_total",
            "Commands executed, by op and outcome (ok or the error code).",
            &self.commands,
        );
        let snapshot = inventory.current();
        let online = snapshot.modems.iter().filter(|m| m.online).count();
        t.gauge(
            "farmhand_agent_proxysmart_reachable",
            "1 if the last ProxySmart poll succeeded.",
            f64::from(u8::from(snapshot.reachable)),
        );
        t.gauge(
            "farmhand_agent_modems",
            "Modems reported to the control plane (excluded IMEIs not counted).",
            snapshot.modems.len() as f64,
        );
        t.gauge(
            "farmhand_agent_modems_online",
            "Of those, modems ProxySmart reports online.",
            online as f64,
        );
        t.histogram(
            "farmhand_agent_proxysmart_request_duration_seconds",
            "Duration of ProxySmart HTTP calls, errors included.",
            &self.proxysmart_latency,
        );
        t.counter_vec(
            "farmhand_agent_proxysmart_errors_total",
            "Failed ProxySmart calls by kind.",
            &self.proxysmart_errors,
        );
        t.finish()
    }
}

fn error_kind(e: &ProxysmartError) -> &'static str {
    match e {
        ProxysmartError::Unauthorized { .. } => "unauthorized",
        ProxysmartError::Unavailable { .. } => "unavailable",
        ProxysmartError::Timeout => "timeout",
        ProxysmartError::Refused { .. } => "refused",
        ProxysmartError::NotFound { .. } => "not_found",
        ProxysmartError::Malformed { .. } => "malformed",
    }
}

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
            let body = source.metrics.render(&source.status, &source.inventory);
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
