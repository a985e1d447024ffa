//! One authenticated session with the control plane.
//!
//! States as types: a [`Connection`] is unauthenticated; [`handshake`] turns it into a
//! [`Session`] (hello → challenge → auth → welcome, all within [`HANDSHAKE_TIMEOUT`]).
//! [`Session::run`] sends the full inventory, then runs ONE select loop over [`Event`]:
//! frames in, inventory changes, finished commands, automatic rotations to report
//! (`autorotate`; those done while disconnected are sent once the session opens), usage
//! reports (`usage`; the latest is also sent right after the inventory), the heartbeat
//! deadline, and shutdown.
//! A session silent for three heartbeat intervals is stale and ends, so the caller
//! reconnects instead of trusting an open-but-dead socket.
//!
//! The session reads only what it is handed in [`SessionContext`] (the executor, the
//! journal and policy for the inventory, the box profile, the report channels); it reaches
//! into no other module's state. About 500 lines: the handshake and the loop stay together
//! because the loop's tests run over the real handshake.

use crate::base::version::AGENT_VERSION;
use crate::boxside::autorotate::RotationReports;
use crate::boxside::box_profile::BoxProfileHandle;
use crate::boxside::commands::Executor;
use crate::boxside::inventory::{self, InventoryHandle, Snapshot};
use crate::boxside::usage::{LatestUsage, UsageHandle};
use crate::config::policy::Policy;
use crate::local::journal::Journal;
use crate::local::status::AgentStatus;
use crate::plane::connection::{Connection, ConnectionError};
use crate::plane::identity::Identity;
use farmhand_protocol::handshake::{self, ClientHandshake, Step};
use farmhand_protocol::{
    AgentMessage, CommandResult, Heartbeat, Inventory, PlaneMessage, ProtocolError, RotationReport,
    Site, UsageReport, Welcome, MAX_USAGE_ENTRIES, SUPPORTED_VERSIONS,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The whole handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first inventory waits for the poller's first reading.
const FIRST_POLL_WAIT: Duration = Duration::from_secs(5);
/// Heartbeat interval used if the plane sends a nonsensical one.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(15);
/// A peer silent for this many heartbeat intervals is gone.
const STALE_AFTER_INTERVALS: u32 = 3;

/// Why the handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not finished within [`HANDSHAKE_TIMEOUT`].
    #[error("handshake timed out after {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    /// The socket failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The plane refused us with an error message.
    #[error("the control plane refused the connection: {}: {}", code_name(.0), .0.message)]
    Refused(ProtocolError),
    /// The plane sent something out of order or invalid.
    #[error("unexpected handshake message: {0}")]
    Unexpected(String),
}

impl From<handshake::HandshakeError> for HandshakeError {
    fn from(e: handshake::HandshakeError) -> Self {
        match e {
            handshake::HandshakeError::Refused(e) => HandshakeError::Refused(e),
            handshake::HandshakeError::Unexpected(why) => HandshakeError::Unexpected(why),
        }
    }
}

/// The wire name of a protocol error code (`revoked`, `retry_later`, …), for log lines.
pub fn code_name(error: &ProtocolError) -> String {
    serde_json::to_value(error.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The agent is shutting down; the socket was closed cleanly.
    Shutdown,
    /// Nothing arrived for three heartbeat intervals.
    Stale,
    /// The socket failed or the plane closed it.
    Closed(ConnectionError),
    /// The plane sent an error and closes.
    PlaneError(ProtocolError),
    /// The plane broke the protocol (malformed or out-of-order frame); we closed.
    ProtocolViolation(String),
}

/// An authenticated session.
#[derive(Debug)]
pub struct Session<S> {
    conn: Connection<S>,
    /// The plane's welcome.
    pub welcome: Welcome,
    /// The negotiated protocol version.
    pub version: u32,
}

/// Everything a session loop works with; shared across reconnects.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// Reported with the inventory.
    pub site: Site,
    /// The modem poller.
    pub inventory: InventoryHandle,
    /// Runs commands (outlives sessions).
    pub executor: Executor,
    /// Shared live status.
    pub status: Arc<AgentStatus>,
    /// Cancelled on shutdown.
    pub shutdown: CancellationToken,
    /// The traffic meter's reports (`None`: no metering).
    pub usage: Option<UsageHandle>,
    /// The box's health reports.
    pub health: crate::boxside::health::HealthHandle,
    /// The managed ports, reported with the inventory.
    pub journal: Journal,
    /// The seller's policy: ports on excluded modems are never reported; its port cap is.
    pub policy: Policy,
    /// What the box was seen to do; its capabilities are announced when they change.
    pub profile: Arc<BoxProfileHandle>,
    /// The automatic rotations to report.
    pub rotations: RotationReports,
}

/// Authenticates `conn` as `identity`.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    conn: Connection<S>,
    identity: &Identity,
) -> Result<Session<S>, HandshakeError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_steps(conn, identity))
        .await
        .unwrap_or(Err(HandshakeError::Timeout))
}

async fn handshake_steps<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Connection<S>,
    identity: &Identity,
) -> Result<Session<S>, HandshakeError> {
    let (mut handshake, hello) =
        ClientHandshake::start(&identity.agent_id, AGENT_VERSION, SUPPORTED_VERSIONS);
    conn.send(&hello).await?;
    loop {
        let message = conn.recv().await?;
        match handshake.receive(message, |transcript| identity.sign(transcript))? {
            Step::Send(reply) => conn.send(&reply).await?,
            Step::Open { welcome, version } => {
                return Ok(Session {
                    conn,
                    welcome,
                    version,
                })
            }
        }
    }
}

/// The heartbeat interval the plane asked for in `welcome`; outside 1..=3600 s (a plane
/// gone wrong) the fallback, so the session neither spins nor goes silent.
pub fn heartbeat_interval(welcome: &Welcome) -> Duration {
    match welcome.heartbeat_interval_s {
        1..=3600 => Duration::from_secs(welcome.heartbeat_interval_s),
        _ => FALLBACK_HEARTBEAT,
    }
}

/// Every trigger of the session loop.
#[derive(Debug)]
enum Event {
    /// A frame (or a receive error) from the plane.
    Frame(Result<PlaneMessage, ConnectionError>),
    /// The poller published a new snapshot.
    InventoryChanged,
    /// A command finished.
    CommandDone(CommandResult),
    /// The agent rotated a modem on its own.
    Rotated(RotationReport),
    /// The meter published a new usage report.
    UsageMeasured,
    /// The box profile learned something the plane places orders by.
    CapabilitiesChanged,
    /// The box's health moved.
    HealthMeasured,
    /// The heartbeat or staleness deadline passed.
    Tick,
    /// The agent is shutting down.
    Shutdown,
}

/// The loop's state.
struct LoopState<S> {
    conn: Connection<S>,
    interval: Duration,
    last_sent: Instant,
    last_recv: Instant,
    sent: Snapshot,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends the inventory and serves the session until it ends.
    pub async fn run(self, ctx: &SessionContext) -> SessionEnd {
        let interval = heartbeat_interval(&self.welcome);
        ctx.executor.set_plane_time(self.welcome.server_time_ms);
        let now = Instant::now();
        let mut state = LoopState {
            conn: self.conn,
            interval,
            last_sent: now,
            last_recv: now,
            sent: Snapshot::default(),
        };
        let mut inv_rx = ctx.inventory.subscribe();
        if let Err(e) = state.send_inventory(ctx, &mut inv_rx).await {
            return SessionEnd::Closed(e);
        }
        let mut usage_rx = ctx.usage.as_ref().map(UsageHandle::subscribe);
        if let Err(end) = state.send_usage(&mut usage_rx).await {
            return end;
        }
        ctx.status.set_health_limits(self.welcome.health_limits);
        let mut health = ctx.health.subscribe();
        let first = health.borrow_and_update().clone();
        if let Some(now) = first {
            if let Err(end) = state.send(AgentMessage::Health(now)).await {
                return end;
            }
        }
        let mut health_open = true;
        let (reply_tx, mut reply_rx) = mpsc::channel(64);
        let mut inventory_open = true;
        let mut capabilities = ctx.profile.subscribe();
        capabilities.mark_unchanged();
        let mut capabilities_open = true;
        let mut reports = ctx.rotations.take();
        loop {
            let deadline = state.next_deadline();
            let event = tokio::select! {
                _ = ctx.shutdown.cancelled() => Event::Shutdown,
                Some(result) = reply_rx.recv() => Event::CommandDone(result),
                Some(report) = next_report(&mut reports) => Event::Rotated(report),
                Some(()) = usage_changed(&mut usage_rx) => Event::UsageMeasured,
                changed = health.changed(), if health_open => match changed {
                    Ok(()) => Event::HealthMeasured,
                    Err(_) => { health_open = false; continue; }
                },
                changed = capabilities.changed(), if capabilities_open => match changed {
                    Ok(()) => Event::CapabilitiesChanged,
                    Err(_) => { capabilities_open = false; continue; }
                },
                changed = inv_rx.changed(), if inventory_open => match changed {
                    Ok(()) => Event::InventoryChanged,
                    Err(_) => { inventory_open = false; continue; }
                },
                frame = state.conn.recv() => Event::Frame(frame),
                _ = tokio::time::sleep_until(deadline) => Event::Tick,
            };
            let step = match event {
                Event::Frame(frame) => state.on_frame(ctx, frame, &reply_tx),
                Event::InventoryChanged => state.send_changes(&mut inv_rx).await,
                Event::CommandDone(result) => state.send(AgentMessage::CommandResult(result)).await,
                Event::Rotated(report) => state.send(AgentMessage::Rotated(report)).await,
                Event::UsageMeasured => state.send_usage(&mut usage_rx).await,
                Event::HealthMeasured => {
                    let now = health.borrow_and_update().clone();
                    match now {
                        Some(now) => state.send(AgentMessage::Health(now)).await,
                        None => Ok(()),
                    }
                }
                Event::CapabilitiesChanged => {
                    let now = capabilities.borrow_and_update().clone();
                    state.send(AgentMessage::Capabilities(now)).await
                }
                Event::Tick => state.on_tick().await,
                Event::Shutdown => return state.shut_down(ctx, reply_tx, reply_rx).await,
            };
            if let Err(end) = step {
                // A stale peer will not answer a close handshake: drop the socket at once
                // instead of waiting for one, so the reconnect starts without delay.
                if !matches!(end, SessionEnd::Closed(_) | SessionEnd::Stale) {
                    state.conn.close().await;
                }
                return end;
            }
        }
    }
}

/// Resolves when the meter published a report; `None` (and never again) once it stopped.
async fn usage_changed(rx: &mut Option<watch::Receiver<LatestUsage>>) -> Option<()> {
    let Some(receiver) = rx else {
        return std::future::pending().await;
    };
    if receiver.changed().await.is_err() {
        *rx = None;
        return None;
    }
    Some(())
}

/// The next automatic rotation report; never, for a session that does not hold them.
async fn next_report(
    reports: &mut Option<tokio::sync::MutexGuard<'_, mpsc::Receiver<RotationReport>>>,
) -> Option<RotationReport> {
    match reports {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> LoopState<S> {
    fn next_deadline(&self) -> Instant {
        (self.last_sent + self.interval).min(self.last_recv + self.interval * STALE_AFTER_INTERVALS)
    }

    async fn send(&mut self, message: AgentMessage) -> Result<(), SessionEnd> {
        self.conn.send(&message).await.map_err(SessionEnd::Closed)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The full inventory, after waiting briefly for the poller's first reading.
    async fn send_inventory(
        &mut self,
        ctx: &SessionContext,
        inv_rx: &mut watch::Receiver<Snapshot>,
    ) -> Result<(), ConnectionError> {
        let _ = tokio::time::timeout(FIRST_POLL_WAIT, inv_rx.wait_for(|s| s.polled)).await;
        let snapshot = inv_rx.borrow_and_update().clone();
        let mut ports = ctx.journal.ports().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read managed ports from the journal");
            Vec::new()
        });
        // A port made before the seller excluded its modem must not name that modem.
        ports.retain(|p| !ctx.policy.excludes(&p.imei));
        let inventory = Inventory {
            site: ctx.site.clone(),
            proxysmart_reachable: snapshot.reachable,
            modems: snapshot.modems.clone(),
            ports,
            // The policy is read once at start, so every session's inventory carries the
            // same cap; a runtime reload would have to send a new inventory.
            max_ports_per_modem: ctx.policy.max_ports_per_modem,
            capabilities: Some(ctx.profile.capabilities()),
            probes_refused: ctx.policy.refuse_probes,
        };
        self.conn.send(&AgentMessage::Inventory(inventory)).await?;
        self.last_sent = Instant::now();
        self.sent = snapshot;
        Ok(())
    }

    /// The meter's latest report (if it has one not sent yet), split into messages of at
    /// most [`MAX_USAGE_ENTRIES`] allocations.
    async fn send_usage(
        &mut self,
        usage_rx: &mut Option<watch::Receiver<LatestUsage>>,
    ) -> Result<(), SessionEnd> {
        let Some(report) = usage_rx
            .as_mut()
            .and_then(|rx| rx.borrow_and_update().clone())
        else {
            return Ok(());
        };
        for chunk in report.allocations.chunks(MAX_USAGE_ENTRIES) {
            let part = UsageReport {
                measured_at_ms: report.measured_at_ms,
                allocations: chunk.to_vec(),
            };
            self.send(AgentMessage::Usage(part)).await?;
        }
        Ok(())
    }

    async fn send_changes(
        &mut self,
        inv_rx: &mut watch::Receiver<Snapshot>,
    ) -> Result<(), SessionEnd> {
        let snapshot = inv_rx.borrow_and_update().clone();
        let report = inventory::diff(
            &self.sent.modems,
            &snapshot.modems,
            self.sent.reachable,
            snapshot.reachable,
        );
        self.sent = snapshot;
        match report {
            Some(report) => self.send(AgentMessage::ModemsChanged(report)).await,
            None => Ok(()),
        }
    }

    fn on_frame(
        &mut self,
        ctx: &SessionContext,
        frame: Result<PlaneMessage, ConnectionError>,
        reply: &mpsc::Sender<CommandResult>,
    ) -> Result<(), SessionEnd> {
        let message = match frame {
            Ok(message) => message,
            Err(ConnectionError::BadFrame(why)) => {
                tracing::warn!(%why, "malformed frame from the control plane; closing");
                return Err(SessionEnd::ProtocolViolation(why));
            }
            Err(e) => return Err(SessionEnd::Closed(e)),
        };
        self.last_recv = Instant::now();
        ctx.status.frame_received();
        match message {
            PlaneMessage::Command(command) => {
                ctx.executor.submit(command, reply.clone());
                Ok(())
            }
            PlaneMessage::Heartbeat(_) => Ok(()),
            PlaneMessage::Error(e) => Err(SessionEnd::PlaneError(e)),
            other => {
                let why = format!("unexpected {} after welcome", other.kind());
                tracing::warn!(%why, "protocol violation by the control plane; closing");
                Err(SessionEnd::ProtocolViolation(why))
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), SessionEnd> {
        let now = Instant::now();
        if now >= self.last_recv + self.interval * STALE_AFTER_INTERVALS {
            tracing::warn!(silent_for = ?now - self.last_recv, "no frame from the control plane for 3 heartbeat intervals; reconnecting");
            return Err(SessionEnd::Stale);
        }
        if now >= self.last_sent + self.interval {
            self.send(AgentMessage::Heartbeat(Heartbeat {
                time_ms: crate::base::clock::now_ms(),
            }))
            .await?;
        }
        Ok(())
    }

    /// Stops taking commands, lets running ones finish and sends their results, closes.
    async fn shut_down(
        mut self,
        ctx: &SessionContext,
        reply_tx: mpsc::Sender<CommandResult>,
        mut reply_rx: mpsc::Receiver<CommandResult>,
    ) -> SessionEnd {
        drop(reply_tx);
        let drain = ctx.executor.drain();
        tokio::pin!(drain);
        let mut drained = false;
        loop {
            tokio::select! {
                _ = &mut drain, if !drained => drained = true,
                result = reply_rx.recv() => match result {
                    Some(result) => { let _ = self.send(AgentMessage::CommandResult(result)).await; }
                    None => break,
                },
            }
        }
        self.conn.close().await;
        SessionEnd::Shutdown
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
