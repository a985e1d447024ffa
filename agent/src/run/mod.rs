//! The agent's main loop: load the identity and journal, start the inventory poller, the
//! automatic rotation scheduler and the traffic meter, then connect → handshake → session,
//! forever, with backoff between attempts. The agent never exits because the plane or
//! ProxySmart is unreachable; it logs why and retries. It stops on cancellation (after the
//! commands in flight are finished and journaled) or when the plane says its key was
//! revoked.
//!
//! The top of the daemon: it builds every part once (the [`CommandContext`] complete, with
//! its builder) and hands each task the handles it needs. It also publishes locally:
//! `status_file` (behind `farmhand-agent status`) and `metrics_page` (`GET /metrics`).

mod metrics_page;
pub mod status_file;

use crate::base::backoff::{Backoff, RECONNECT};
use crate::boxside::autorotate;
use crate::boxside::box_profile::BoxProfileHandle;
use crate::boxside::commands::{CommandContext, Executor};
use crate::boxside::inventory;
use crate::boxside::ports::Ports;
use crate::boxside::proxysmart::{BoxClock, ProxysmartClient, ProxysmartError};
use crate::config::{AgentConfig, ConfigError, ControlPlaneConfig};
use crate::local::audit::{AuditError, AuditLog};
use crate::local::journal::{Journal, JournalError};
use crate::local::metrics::AgentMetrics;
use crate::local::status::AgentStatus;
use crate::plane::connection;
use crate::plane::identity::{Identity, IdentityError};
use crate::plane::proxy_tunnel::{ProxyEnv, Route};
use crate::plane::session::{self, HandshakeError, SessionContext, SessionEnd};
use crate::plane::tls::{Trust, TrustError};
use farmhand_protocol::{ProtocolError, ProtocolErrorCode};
use metrics_page::MetricsSource;
use status_file::StatusSource;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Time allowed for TCP connect + TLS + WebSocket upgrade.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent stopped (other than a requested shutdown).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The identity is missing or unusable.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The journal cannot be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The local audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The TLS trust settings (CA file, system roots) are unusable.
    #[error(transparent)]
    Tls(#[from] TrustError),
    /// The metrics listener (`[metrics] listen`) cannot be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The ProxySmart client cannot be built.
    #[error(transparent)]
    Proxysmart(#[from] ProxysmartError),
    /// The plane revoked this agent's key; reconnecting cannot help.
    #[error(
        "this agent was revoked by the control plane ({message}); enroll again with a new token"
    )]
    Revoked {
        /// The plane's message.
        message: String,
    },
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    run_with_status(config, shutdown, Arc::new(AgentStatus::new())).await
}

/// Like [`run`], updating `status` as sessions open and close.
pub async fn run_with_status(
    config: AgentConfig,
    shutdown: CancellationToken,
    status: Arc<AgentStatus>,
) -> Result<(), AgentError> {
    config.validate()?;
    let url = config.connect_url()?;
    let urls = shuffled(config.connect_urls()?);
    let trust = transport_trust(&config.control_plane)?;
    let proxies = ProxyEnv::from_process();
    announce_proxy(&url, &proxies);
    let identity = Identity::load(&config.state_dir)?;
    let journal = Journal::open(&config.state_dir)?;
    let metrics = Arc::new(AgentMetrics::default());
    let client = ProxysmartClient::new(&config.proxysmart)?.with_metrics(metrics.clone());
    let poller_stop = shutdown.child_token();
    let inventory = inventory::spawn(
        client.clone(),
        config.proxysmart.poll_interval,
        config.policy.excluded_imeis.clone(),
        poller_stop.clone(),
    );
    let heard = status.clone();
    let (health, health_task) = crate::boxside::health::spawn(
        config.state_dir.clone(),
        config.health.clone(),
        move || heard.health_limits(),
        poller_stop.clone(),
    );
    let status_writer = status_file::spawn_writer(
        status_file::path_for(&status, &config.state_dir),
        StatusSource {
            agent_id: identity.agent_id.clone(),
            control_plane_url: config.control_plane.url.clone(),
            status: status.clone(),
            inventory: inventory.clone(),
            journal: journal.clone(),
            health: health.clone(),
        },
        poller_stop.clone(),
    );
    let (usage, meter) = crate::boxside::usage::spawn(
        client.clone(),
        journal.clone(),
        config.usage.interval,
        poller_stop.clone(),
    );
    let profile = Arc::new(BoxProfileHandle::load(&config.state_dir));
    // Learned offsets live in the box profile; agents before it kept them in the journal.
    let remembered_offset = profile.snapshot().utc_offset_s.or_else(|| {
        journal.box_utc_offset().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the learned box UTC offset; learning it again");
            None
        })
    });
    let clock = Arc::new(BoxClock::new(
        config.proxysmart.box_utc_offset,
        remembered_offset,
    ));
    let ports = Ports::new(
        client.clone(),
        profile.clone(),
        clock,
        config.proxysmart.ports.clone(),
    );
    crate::boxside::ports::expiry_watch::spawn(ports.clone(), poller_stop.clone());
    let commands =
        CommandContext::builder(client, journal.clone(), config.proxysmart.rotation_timeout)
            .ports(ports.clone())
            .inventory(inventory.clone())
            .policy(config.policy.clone())
            .audit(AuditLog::open(&config.state_dir)?)
            .metrics(metrics.clone())
            .build();
    let commands = Arc::new(commands);
    let executor = Executor::new(commands.clone());
    remove_scratch_ports(ports, poller_stop.clone());
    let rotator_stop = shutdown.child_token();
    let (rotations, rotator) = autorotate::spawn(commands, rotator_stop.clone());
    let source = MetricsSource {
        metrics: metrics.clone(),
        status: status.clone(),
        inventory: inventory.clone(),
    };
    metrics_page::start(&config.metrics, source, poller_stop.clone()).await?;
    let ctx = SessionContext {
        site: config.site.clone(),
        inventory,
        executor: executor.clone(),
        status,
        shutdown,
        usage: Some(usage),
        health,
        journal,
        policy: config.policy.clone(),
        profile,
        rotations,
    };
    tracing::info!(agent_id = %identity.agent_id, %url, nodes = urls.len(), "agent starting");
    let dial = Dial {
        urls: &urls,
        next: AtomicUsize::new(0),
        trust: trust.as_ref(),
        proxies: &proxies,
    };
    let result = connect_forever(&dial, &identity, &ctx, &metrics).await;
    rotator_stop.cancel();
    let _ = rotator.await;
    executor.drain().await;
    poller_stop.cancel();
    let _ = status_writer.await;
    let _ = meter.await;
    let _ = health_task.await;
    tracing::info!("agent stopped");
    result
}

/// A selftest killed half-way left its scratch port: remove it once ProxySmart answers
/// (best effort; `reconcile` removes it too).
fn remove_scratch_ports(ports: Ports, stop: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            result = ports.remove_scratch() => match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed the scratch ports of an interrupted selftest"),
                Err(e) => tracing::debug!(error = %e.message, "could not look for selftest scratch ports"),
            },
            () = stop.cancelled() => {}
        }
    });
}

/// The TLS trust for the plane, or `None` for an `http://` URL (allowed only with
/// `insecure_plaintext`, checked by the config, and announced loudly here).
fn transport_trust(plane: &ControlPlaneConfig) -> Result<Option<Trust>, AgentError> {
    if plane.uses_tls() {
        let trust = Trust::for_plane(plane)?;
        tracing::info!(trust = %trust.anchor(), "verifying the control plane's certificate");
        return Ok(Some(trust));
    }
    tracing::warn!(
        url = %plane.url,
        "control_plane.insecure_plaintext = true: talking to the control plane WITHOUT TLS; \
         anyone on the path can read and alter the session (tests and loopback only)"
    );
    Ok(None)
}

/// Says once, at start, whether the plane is reached through a proxy (and which).
fn announce_proxy(url: &str, proxies: &ProxyEnv) {
    match connection::route_for(url, proxies) {
        None | Some(Ok(Route::Direct)) => {}
        Some(Ok(Route::Proxy(proxy))) => {
            tracing::info!(%proxy, variable = proxy.variable(), "reaching the control plane through an HTTP proxy");
        }
        // Reported again, with the backoff, by every connection attempt.
        Some(Err(e)) => tracing::error!(error = %e, "the proxy settings cannot be used"),
    }
}

/// Where and how to dial the plane: its nodes in turn (one, or a cluster's), so a node
/// that is gone costs one attempt and the next goes to another.
struct Dial<'a> {
    urls: &'a [String],
    next: AtomicUsize,
    trust: Option<&'a Trust>,
    proxies: &'a ProxyEnv,
}

impl Dial<'_> {
    /// The node to try now; the next call gives the one after it.
    fn url(&self) -> &str {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.urls
            .get(i % self.urls.len().max(1))
            .map_or("", String::as_str)
    }
}

/// `urls` in a random order, so a cluster's agents spread over its nodes.
fn shuffled(mut urls: Vec<String>) -> Vec<String> {
    for i in (1..urls.len()).rev() {
        let j = (crate::base::backoff::random_u64() % (i as u64 + 1)) as usize;
        urls.swap(i, j);
    }
    urls
}

async fn connect_forever(
    dial: &Dial<'_>,
    identity: &Identity,
    ctx: &SessionContext,
    metrics: &AgentMetrics,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new(RECONNECT);
    while !ctx.shutdown.is_cancelled() {
        let delay = attempt(dial, identity, ctx, metrics, &mut backoff).await?;
        if ctx.shutdown.is_cancelled() {
            break;
        }
        tracing::info!(retry_in = ?delay, "reconnecting to the control plane");
        metrics.reconnecting();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

/// One connection: dial, authenticate, serve. Returns how long to wait before the next.
async fn attempt(
    dial: &Dial<'_>,
    identity: &Identity,
    ctx: &SessionContext,
    metrics: &AgentMetrics,
    backoff: &mut Backoff,
) -> Result<Duration, AgentError> {
    let handshake = async {
        let url = dial.url();
        tracing::debug!(%url, "dialling the control plane");
        let conn = connection::connect_via(url, dial.trust, CONNECT_TIMEOUT, dial.proxies).await?;
        session::handshake(conn, identity).await
    };
    let session = tokio::select! {
        _ = ctx.shutdown.cancelled() => return Ok(Duration::ZERO),
        result = handshake => result,
    };
    let session = match session {
        Ok(session) => session,
        Err(HandshakeError::Refused(error)) => return on_plane_error(ctx, error, backoff),
        Err(HandshakeError::Connection(connection::ConnectionError::Tls { reason })) => {
            // Not transient like a refused TCP connect: say loudly what to fix.
            tracing::error!(%reason, "refusing the control plane's certificate; will retry");
            ctx.status.session_closed(Some(reason));
            return Ok(backoff.next_delay());
        }
        Err(HandshakeError::Connection(connection::ConnectionError::Proxy(e))) => {
            // Usually a setting to fix (credentials, NO_PROXY, the proxy's allow list).
            tracing::error!(error = %e, "cannot reach the control plane through the proxy; will retry");
            ctx.status.session_closed(Some(e.to_string()));
            return Ok(backoff.next_delay());
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a session with the control plane");
            ctx.status.session_closed(Some(e.to_string()));
            return Ok(backoff.next_delay());
        }
    };
    tracing::info!(session_id = %session.welcome.session_id, version = session.version, "connected to the control plane");
    ctx.status.session_opened(&session.welcome.session_id);
    metrics.session_opened();
    let started = Instant::now();
    let end = session.run(ctx).await;
    backoff.session_ended(started.elapsed());
    match end {
        SessionEnd::Shutdown => {
            ctx.status.session_closed(None);
            Ok(Duration::ZERO)
        }
        SessionEnd::PlaneError(error) => on_plane_error(ctx, error, backoff),
        other => {
            let why = describe(&other);
            tracing::warn!(reason = %why, "session ended");
            ctx.status.session_closed(Some(why));
            Ok(backoff.next_delay())
        }
    }
}

fn on_plane_error(
    ctx: &SessionContext,
    error: ProtocolError,
    backoff: &mut Backoff,
) -> Result<Duration, AgentError> {
    let summary = format!("{}: {}", session::code_name(&error), error.message);
    ctx.status.session_closed(Some(summary.clone()));
    match error.code {
        ProtocolErrorCode::Revoked => {
            tracing::error!(message = %error.message, "the control plane revoked this agent");
            Err(AgentError::Revoked {
                message: error.message,
            })
        }
        ProtocolErrorCode::RetryLater | ProtocolErrorCode::ShuttingDown => {
            tracing::info!(error = %summary, retry_after_s = ?error.retry_after_s, "control plane asked to retry later");
            Ok(match error.retry_after_s {
                Some(secs) => backoff.retry_after(Duration::from_secs(secs)),
                None => backoff.next_delay(),
            })
        }
        ProtocolErrorCode::UnsupportedVersion => {
            tracing::error!(error = %summary, supported = ?error.supported, ours = ?farmhand_protocol::SUPPORTED_VERSIONS, "no protocol version in common; upgrade the agent or the plane");
            Ok(backoff.next_delay())
        }
        _ => {
            tracing::error!(error = %summary, "the control plane refused the session");
            Ok(backoff.next_delay())
        }
    }
}

fn describe(end: &SessionEnd) -> String {
    match end {
        SessionEnd::Shutdown => "shutdown".into(),
        SessionEnd::Stale => "no frame for 3 heartbeat intervals".into(),
        SessionEnd::Closed(e) => e.to_string(),
        SessionEnd::PlaneError(e) => format!("{}: {}", session::code_name(e), e.message),
        SessionEnd::ProtocolViolation(why) => format!("protocol violation: {why}"),
    }
}
