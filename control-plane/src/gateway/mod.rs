//! The agent gateway: `GET /v1/agent/connect` upgraded to a WebSocket with bounded frames
//! and small buffers (the plane holds thousands of these), the handshake
//! (`handshake`), one task per session (`session`), the registry of live sessions and
//! awaited results (`registry`), and `dispatch`: commands go through a durable outbox and
//! are redelivered with the same id after a reconnect, until their deadline. Where the
//! store is shared between nodes, each session is claimed there with a lease and a
//! fencing epoch, and a session another node took over is closed (`leases`); commands and
//! results cross nodes through the database (`cluster`), and each node publishes its
//! agents and mirrors the others' into its fleet view (`mirror`).
//!
//! Results nobody waits for any more, agents coming back and what their `reconcile`
//! found are reported as [`GatewayEvent`]s on a channel the allocator consumes — the
//! gateway does not know what an allocation is.
//!
//! A reconnect storm is absorbed, not refused: up to `max_pending_handshakes` connections
//! may be mid-handshake (503 `retry_later` beyond that), and the storage-bound part of
//! each handshake (reading the agent record, building its `reconcile`) queues on a
//! semaphore of `handshake_concurrency` permits instead of running all at once.

mod cluster;
mod connection;
mod dispatch;
mod handshake;
mod leases;
mod mirror;
mod pause;
mod registry;
mod session;

use crate::config::ServerConfig;
use crate::fleet::Fleet;
use crate::http_error::ApiError;
use crate::ratelimit::{ClientAddr, Limits};
use crate::store::Store;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use connection::Connection;
use farmhand_protocol::CommandResult;
use handshake::Unauthenticated;
pub use pause::Paused;
pub use registry::InFlight;
use registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Per-connection read buffer: small, because the plane holds thousands of sockets and an
/// agent's frames are small (a heartbeat is ~60 bytes, an inventory of 8 modems ~1.5 KiB;
/// a larger frame is read in several steps and grows the buffer while it lasts).
const READ_BUFFER_BYTES: usize = 1024;
/// Data written out once this much is buffered (every send is flushed anyway).
const WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// Who a session is for, as the reports about it name it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The agent.
    pub agent_id: String,
    /// This session.
    pub session_id: String,
    /// The agent's enrollment label.
    pub label: String,
    /// The agent's hostname.
    pub hostname: String,
    /// The agent's software version from `hello`.
    pub agent_version: String,
}

/// What the gateway hands the rest of the plane (the allocator consumes them: see
/// `allocator::Allocator::run_events`). The gateway is transport: it keeps the live fleet
/// view and its command outbox, and hands everything that means something to the business
/// upward: [`Report`]s (audits, events, usage, rotations — a few local writes each,
/// handled in the order they happened) and [`Work`] (what may wait on an agent).
#[derive(Debug)]
pub enum GatewayEvent {
    /// Something an agent's session reported.
    Report(Report),
    /// Something the allocator must act on, possibly waiting on the agent.
    Work(Work),
}

/// What an agent's session reported, in arrival order.
#[derive(Debug)]
pub enum Report {
    /// A session authenticated (before `welcome` is sent).
    Opened {
        /// The session.
        session: SessionInfo,
        /// The client's address.
        client: String,
        /// The protocol version agreed.
        version: u32,
    },
    /// A session ended.
    Closed {
        /// The session.
        session: SessionInfo,
        /// Why (an error code or a short sentence).
        reason: String,
        /// False when the plane closed it because it is stopping (not news).
        announce: bool,
    },
    /// An inventory or change report made news (modem transitions, duplicate IMEIs).
    FleetChanged {
        /// The agent that reported.
        agent_id: String,
        /// What changed.
        update: crate::fleet::Update,
    },
    /// The box's health crossed a limit, either way.
    HealthCrossed {
        /// The agent.
        agent_id: String,
        /// The crossings.
        crossings: Vec<crate::fleet::HealthCrossing>,
    },
    /// The agent rotated a modem on its own.
    Rotated {
        /// The agent.
        agent_id: String,
        /// What it reported.
        report: farmhand_protocol::RotationReport,
    },
    /// The agent's traffic totals.
    Usage {
        /// The agent.
        agent_id: String,
        /// What it reported.
        report: farmhand_protocol::UsageReport,
    },
    /// The seller's policy refused a command (the agent's short message says which rule).
    PolicyDenied {
        /// The agent.
        agent_id: String,
        /// The command refused.
        command_id: String,
        /// The agent's message.
        message: String,
    },
}

/// What the allocator must act on for an agent; each is handled in its own task.
#[derive(Debug)]
pub enum Work {
    /// A session of this agent is ready (after `welcome` and `reconcile` were sent).
    Connected {
        /// The agent.
        agent_id: String,
    },
    /// The agent answered the session's `reconcile`: these desired allocations have no
    /// port on the box.
    Reconciled {
        /// The agent.
        agent_id: String,
        /// Allocation ids the agent reported `missing`.
        missing: Vec<String>,
    },
    /// Another node queued commands for this agent, whose session is here: send them.
    Queued {
        /// The agent.
        agent_id: String,
    },
    /// A result arrived after its dispatcher stopped waiting (or for a command redelivered
    /// after a plane restart).
    LateResult {
        /// The agent that sent it.
        agent_id: String,
        /// The result.
        result: CommandResult,
    },
}

/// Why a dispatched command has no outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// The agent has no live session; nothing was sent.
    #[error("the agent is offline")]
    AgentOffline,
    /// The deadline passed without an answer (the agent was slow, or disconnected and did
    /// not come back in time); the command is no longer redelivered, and a late answer goes
    /// to the late-result handler.
    #[error("the agent did not answer before the command's deadline")]
    Timeout,
    /// The session closed before the agent answered; the command stays queued for
    /// redelivery until its deadline (`dispatch_or_defer` only).
    #[error("the agent's session closed before it answered")]
    SessionClosed,
    /// The agent was revoked before it answered: it can never answer, and the command was
    /// dropped from the outbox (`Gateway::revoked`).
    #[error("the agent was revoked before it answered")]
    AgentRevoked,
    /// The command could not be recorded in the outbox; nothing was sent.
    #[error("the command could not be stored")]
    Storage,
}

impl DispatchError {
    /// The metrics label for a command that ended this way.
    pub fn label(self) -> &'static str {
        match self {
            DispatchError::AgentOffline => "agent_offline",
            DispatchError::Timeout => "timeout",
            DispatchError::SessionClosed => "session_closed",
            DispatchError::AgentRevoked => "agent_revoked",
            DispatchError::Storage => "storage_error",
        }
    }
}

/// State shared by the gateway's handler, sessions and dispatchers.
#[derive(Debug)]
pub(crate) struct GatewayCtx {
    store: Store,
    fleet: Arc<Fleet>,
    registry: Registry,
    config: Arc<ServerConfig>,
    limits: Arc<Limits>,
    events: mpsc::UnboundedSender<GatewayEvent>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    accepting: AtomicBool,
    /// Bounds the storage-bound steps of handshakes running at once (queues, never refuses).
    handshake_work: Semaphore,
    /// Command counts and round-trip times (`crate::metrics`).
    metrics: Arc<crate::metrics::PlaneMetrics>,
    /// Between a handshake's key check and its registration (tests only arm it).
    before_register: pause::PausePoint,
    /// This node's id where sessions are shared between nodes (`leases`).
    node_id: String,
}

/// Handle to the gateway; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    ctx: Arc<GatewayCtx>,
}

impl Gateway {
    /// A gateway whose sessions stop when `shutdown` is cancelled. The receiver yields
    /// [`GatewayEvent`]s and must be consumed (see `allocator::Allocator::run_events`).
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        config: Arc<ServerConfig>,
        limits: Arc<Limits>,
        shutdown: CancellationToken,
        metrics: Arc<crate::metrics::PlaneMetrics>,
    ) -> (Self, mpsc::UnboundedReceiver<GatewayEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let ctx = GatewayCtx {
            store,
            fleet,
            registry: Registry::default(),
            limits,
            events,
            shutdown,
            tracker: TaskTracker::new(),
            accepting: AtomicBool::new(true),
            handshake_work: Semaphore::new(config.handshake_concurrency),
            config,
            metrics,
            before_register: pause::PausePoint::default(),
            node_id: crate::ids::random_id("nd"),
        };
        (Gateway { ctx: Arc::new(ctx) }, rx)
    }

    /// The routes of the gateway (`GET /v1/agent/connect`).
    pub fn router<S>(&self) -> Router<S> {
        Router::new()
            .route("/v1/agent/connect", get(connect))
            .with_state(self.clone())
    }

    /// Closes the live session of `agent_id` at once (revocation); false if it had none.
    pub fn kick(&self, agent_id: &str) -> bool {
        self.ctx.registry.kick(agent_id)
    }

    /// For tests: holds the next handshake after its key check, before it registers (the
    /// window a revocation must still win), until the returned handle resumes it.
    #[doc(hidden)]
    pub fn pause_next_registration(&self) -> Paused {
        self.ctx.before_register.arm()
    }

    /// Whether `agent_id` has a live, authenticated session.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.ctx.registry.is_connected(agent_id)
    }

    /// The commands this node's dispatchers wait for now (the console's health page,
    /// `farmhand_commands_in_flight`).
    pub fn commands_in_flight(&self) -> InFlight {
        self.ctx.registry.in_flight()
    }

    /// Whether new agent connections are accepted (readiness).
    pub fn is_accepting(&self) -> bool {
        self.ctx.accepting.load(Ordering::Relaxed) && !self.ctx.shutdown.is_cancelled()
    }

    /// Refuses new agent connections from now on (the first step of a shutdown); live
    /// sessions continue, so in-flight requests can still be answered by their agents.
    pub fn stop_accepting(&self) {
        self.ctx.accepting.store(false, Ordering::Relaxed);
    }

    /// Refuses new connections and waits until every session task has finished (sessions
    /// end by themselves when the shutdown token is cancelled).
    pub async fn drain(&self) {
        self.stop_accepting();
        self.ctx.tracker.close();
        self.ctx.tracker.wait().await;
    }
}

/// `GET /v1/agent/connect`: upgrade, then handshake and session in one tracked task.
/// Refused before upgrading (503 `retry_later`) while `max_pending_handshakes` other
/// connections are mid-handshake; a client over its failed-handshake budget is upgraded
/// only to be told `retry_later` with `retry_after_s`.
async fn connect(
    State(gateway): State<Gateway>,
    client: ClientAddr,
    upgrade: WebSocketUpgrade,
) -> Response {
    let ctx = gateway.ctx;
    if !ctx.accepting.load(Ordering::Relaxed) || ctx.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the control plane is shutting down",
        )
            .into_response();
    }
    let Some(slot) = ctx.limits.handshake_slot() else {
        tracing::warn!(%client, "too many agent connections mid-handshake: refusing one");
        let error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "retry_later",
            "too many agent connections are being authenticated; retry later",
        );
        return error.with_retry_after(5).into_response();
    };
    let limit = ctx.config.max_frame_bytes;
    let tracker = ctx.tracker.clone();
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                let conn = Connection::new(socket, limit);
                // Boxed: the handshake's state is freed once it is done, so an idle session's
                // task holds only the session loop (~2 KiB, see `session`).
                let handshake = Box::pin(Unauthenticated::new(conn, client).authenticate(&ctx));
                let authenticated = handshake.await;
                drop(slot);
                if let Some(session) = authenticated {
                    Box::pin(session::run(session, ctx)).await;
                }
            })
        })
}
