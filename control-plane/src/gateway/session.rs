//! An authenticated session: one task owns the socket and runs ONE select loop over an
//! [`Event`] enum — a frame from the agent, a command to send, the heartbeat deadline, a
//! kick (revocation) or shutdown — so every trigger is visible in one match.
//!
//! On open it sends `welcome`, then `reconcile` with the allocations that should exist on
//! this agent (before any other command, so a later `provision` cannot be undone by it),
//! and tells the allocator the agent is back (it redelivers queued commands and finishes
//! pending releases); the `reconcile` answer's `missing` list goes to the allocator too.
//!
//! Every send is bounded by one heartbeat interval, and the closing frames by a few
//! seconds, so a peer that stopped reading (half-open TCP) cannot wedge the session task:
//! it is closed after three silent intervals like any other.
//!
//! The session updates the live fleet view from what the agent reports and hands the rest
//! upward as [`Report`]s, in arrival order: the session opening and ending, modem
//! transitions and duplicate IMEIs, health crossings, rotations the agent did on its own,
//! usage totals, and `policy_denied` results. What they mean (audit entries, webhook
//! events, stored usage and rotations) is the allocator's business (`allocator::reports`).

use super::connection::{refusal, Connection, RecvError};
use super::handshake::{revoked, Authenticated};
use super::registry::Completion;
use super::{Gateway, GatewayCtx, GatewayEvent, Report, SessionInfo, Work};
use crate::ids::{now, unix_ms};
use farmhand_protocol::{
    AgentMessage, Command, CommandBody, CommandErrorCode, CommandOutput, CommandResult, Heartbeat,
    Outcome, PlaneMessage, ProtocolError, ProtocolErrorCode, Reconcile, Welcome,
};
use serde_json::json;
use std::sync::Arc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

/// Heartbeats a peer may miss before it is considered gone.
const MISSED_HEARTBEATS: u32 = 3;

/// Everything that can wake the session loop.
#[derive(Debug)]
enum Event {
    Frame(Result<AgentMessage, RecvError>),
    Outgoing(Option<Box<Command>>),
    Deadline,
    Kicked,
    Superseded,
    Shutdown,
}

/// How the session ends.
enum End {
    Refuse(ProtocolError),
    Close(&'static str),
    Gone,
}

struct Session {
    conn: Connection,
    agent_id: String,
    session_id: String,
    ctx: Arc<GatewayCtx>,
    last_sent: Instant,
    last_received: Instant,
    /// Whether this session's first inventory arrived: that one always reports the modems
    /// (another node may have written them while the agent was there).
    inventory_seen: bool,
}

/// Runs an authenticated session until it ends, then unregisters it.
pub async fn run(auth: Authenticated, ctx: Arc<GatewayCtx>) {
    let Authenticated {
        conn,
        agent,
        agent_version,
        session_id,
        mut commands,
        kick,
        superseded,
        epoch,
        version,
        client,
    } = auth;
    let agent_id = agent.agent_id;
    info!(agent_id = %agent_id, session_id = %session_id, version, "agent session opened");
    ctx.fleet
        .connected(&agent_id, &session_id, &agent_version, version);
    ctx.fleet.set_awaiting_approval(&agent_id, !agent.approved);
    let info = SessionInfo {
        agent_id: agent_id.clone(),
        session_id: session_id.clone(),
        label: agent.label,
        hostname: agent.hostname,
        agent_version,
    };
    let opened = Report::Opened {
        session: info.clone(),
        client: client.to_string(),
        version,
    };
    let _ = ctx.events.send(GatewayEvent::Report(opened));
    let now = Instant::now();
    let mut session = Session {
        conn,
        agent_id,
        session_id,
        ctx,
        last_sent: now,
        last_received: now,
        inventory_seen: false,
    };
    // `open`, `handle` and the closing steps are boxed: a future is as large as its largest
    // state, and ten thousand idle sessions should each hold only the select loop's state
    // (~2 KiB instead of ~4 KiB), not room for the rarely running parts.
    let end = match Box::pin(session.open()).await {
        Ok(()) => session.serve(&mut commands, &kick, &superseded).await,
        Err(end) => end,
    };
    let Session {
        conn,
        agent_id,
        session_id,
        ctx,
        ..
    } = session;
    ctx.registry.unregister(&agent_id, &session_id);
    ctx.fleet.disconnected(&agent_id, &session_id);
    // Boxed like the other closing steps: the postgres backend's future is large.
    let ended = Box::pin(ctx.store.end_session(&agent_id, &ctx.node_id, epoch)).await;
    if let Err(e) = ended {
        // Its lease runs out on its own.
        warn!(agent_id = %agent_id, "cannot record the end of the agent's session: {e}");
    }
    let reason = match &end {
        End::Refuse(error) => json!(error.code).as_str().unwrap_or("error").to_string(),
        End::Close(why) => (*why).to_string(),
        End::Gone => "connection closed".to_string(),
    };
    // Sessions the plane closes because it is stopping are not news (no storm at deploys).
    let announce = !matches!(&end, End::Refuse(e) if e.code == ProtocolErrorCode::ShuttingDown);
    let closed = Report::Closed {
        session: info,
        reason,
        announce,
    };
    let _ = ctx.events.send(GatewayEvent::Report(closed));
    match end {
        End::Refuse(error) => {
            info!(agent_id = %agent_id, code = ?error.code, "closing agent session: {}", error.message);
            Box::pin(conn.refuse(error)).await;
        }
        End::Close(why) => {
            info!(agent_id = %agent_id, "closing agent session: {why}");
            Box::pin(conn.close(why.to_string())).await;
        }
        End::Gone => info!(agent_id = %agent_id, "agent session ended"),
    }
}

impl Session {
    /// `welcome`, then `reconcile`, then the allocator hears the agent is back.
    async fn open(&mut self) -> Result<(), End> {
        let interval = self.ctx.config.heartbeat_interval_s;
        let welcome = Welcome {
            session_id: self.session_id.clone(),
            heartbeat_interval_s: interval,
            server_time_ms: unix_ms(now()),
            health_limits: Some(self.ctx.fleet.health_limits()),
        };
        self.send(PlaneMessage::Welcome(welcome)).await?;
        self.send_reconcile().await?;
        let agent_id = self.agent_id.clone();
        let _ = self
            .ctx
            .events
            .send(GatewayEvent::Work(Work::Connected { agent_id }));
        Ok(())
    }

    async fn send_reconcile(&mut self) -> Result<(), End> {
        let agent_id = self.agent_id.clone();
        // Anything on the box that this agent created and that is not desired is an orphan
        // to remove. The read still queues with the other handshakes in a storm.
        let work = self.ctx.handshake_work.acquire().await;
        let desired = self.ctx.store.desired_ports(&agent_id).await;
        drop(work);
        let ports = match desired {
            Ok(ports) => ports,
            Err(e) => {
                warn!(agent_id = %agent_id, "cannot read allocations for reconcile, skipping it: {e}");
                return Ok(());
            }
        };
        let timeout = self.ctx.config.command_timeout();
        let body = CommandBody::Reconcile(Reconcile { ports });
        let command = super::dispatch::new_command(body, timeout);
        let deadline = Instant::now() + timeout;
        let rx = self
            .ctx
            .registry
            .track(&agent_id, &command.id, "reconcile", deadline.into_std());
        let (gateway, id) = (
            Gateway {
                ctx: self.ctx.clone(),
            },
            command.id.clone(),
        );
        self.ctx.tracker.spawn(async move {
            let answer =
                super::dispatch::wait_reconcile(&gateway, &agent_id, &id, rx, deadline).await;
            on_reconciled(&gateway.ctx, agent_id, answer);
        });
        self.send(PlaneMessage::Command(command)).await
    }

    async fn serve(
        &mut self,
        commands: &mut tokio::sync::mpsc::Receiver<Box<Command>>,
        kick: &tokio_util::sync::CancellationToken,
        superseded: &tokio_util::sync::CancellationToken,
    ) -> End {
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let deadline = self.next_deadline();
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                _ = kick.cancelled() => Event::Kicked,
                _ = superseded.cancelled() => Event::Superseded,
                frame = self.conn.recv() => Event::Frame(frame),
                command = commands.recv() => Event::Outgoing(command),
                _ = sleep_until(deadline) => Event::Deadline,
            };
            if let Err(end) = Box::pin(self.handle(event)).await {
                return end;
            }
        }
    }

    async fn handle(&mut self, event: Event) -> Result<(), End> {
        match event {
            Event::Frame(Ok(message)) => self.on_message(message).await,
            Event::Frame(Err(e)) => Err(e.protocol_error().map_or(End::Gone, End::Refuse)),
            Event::Outgoing(Some(command)) => {
                debug!(agent_id = %self.agent_id, command_id = %command.id, op = command.body.op(), "sending command");
                self.send(PlaneMessage::Command(*command)).await
            }
            Event::Outgoing(None) => Err(End::Close("session handle dropped")),
            Event::Deadline => self.on_deadline().await,
            Event::Kicked => Err(End::Refuse(revoked())),
            Event::Superseded => Err(End::Refuse(refusal(
                ProtocolErrorCode::DuplicateAgent,
                "a newer session of this agent took over on another control-plane node",
            ))),
            Event::Shutdown => Err(End::Refuse(refusal(
                ProtocolErrorCode::ShuttingDown,
                "the control plane is shutting down",
            ))),
        }
    }

    async fn on_message(&mut self, message: AgentMessage) -> Result<(), End> {
        self.last_received = Instant::now();
        self.ctx.fleet.touch(&self.agent_id);
        debug!(agent_id = %self.agent_id, frame = frame_name(&message), "received frame");
        match message {
            AgentMessage::Inventory(inventory) => {
                let mut update = self.ctx.fleet.replace_inventory(&self.agent_id, inventory);
                if !self.inventory_seen {
                    // A session's first inventory records the agent's modems, changed or
                    // not, on a store that keeps them (another node may not have them).
                    self.inventory_seen = true;
                    update.modems_changed |= self.ctx.store.keeps_modems();
                }
                self.fleet_changed(update);
            }
            AgentMessage::ModemsChanged(changes) => {
                let update = self.ctx.fleet.apply_changes(&self.agent_id, changes);
                self.fleet_changed(update);
            }
            AgentMessage::CommandResult(result) => {
                self.report_policy_denial(&result);
                let id = result.id.clone();
                match self.ctx.registry.complete(&self.agent_id, result) {
                    Completion::Delivered => self.answered(&id).await,
                    Completion::Elsewhere { origin, result } => {
                        // The command came from another node: the result goes there, and
                        // the command leaves the outbox with it.
                        let stored = self
                            .ctx
                            .store
                            .put_result(&origin, &self.agent_id, &result.id, &result.outcome)
                            .await;
                        self.ctx.registry.handed_over(&result.id);
                        if let Err(e) = stored {
                            warn!(agent_id = %self.agent_id, command_id = %result.id, "cannot hand a result to the node that sent the command (the agent answers again on redelivery): {e}");
                        }
                    }
                    Completion::Late(result) => {
                        self.answered(&id).await;
                        let event = Work::LateResult {
                            agent_id: self.agent_id.clone(),
                            result,
                        };
                        let _ = self.ctx.events.send(GatewayEvent::Work(event));
                    }
                    Completion::Unknown => {
                        debug!(agent_id = %self.agent_id, "ignored a result for an unknown command")
                    }
                }
            }
            AgentMessage::Heartbeat(_) => {}
            AgentMessage::Capabilities(capabilities) => {
                self.ctx
                    .fleet
                    .set_capabilities(&self.agent_id, capabilities);
            }
            AgentMessage::Health(health) => {
                let crossings = self.ctx.fleet.set_health(&self.agent_id, health);
                if !crossings.is_empty() {
                    let agent_id = self.agent_id.clone();
                    self.report(Report::HealthCrossed {
                        agent_id,
                        crossings,
                    });
                }
            }
            AgentMessage::Rotated(report) => {
                let agent_id = self.agent_id.clone();
                self.report(Report::Rotated { agent_id, report });
            }
            AgentMessage::Usage(report) => {
                let agent_id = self.agent_id.clone();
                self.report(Report::Usage { agent_id, report });
            }
            AgentMessage::Hello(_) | AgentMessage::Auth(_) => {
                let message = "hello and auth are only valid during the handshake";
                return Err(End::Refuse(refusal(
                    ProtocolErrorCode::MalformedFrame,
                    message,
                )));
            }
        }
        Ok(())
    }

    /// Hands a report to the allocator (it outlives every session; a send fails only
    /// while the plane stops).
    fn report(&self, report: Report) {
        let _ = self.ctx.events.send(GatewayEvent::Report(report));
    }

    fn fleet_changed(&self, update: crate::fleet::Update) {
        if update.modems_changed
            || !update.duplicates.is_empty()
            || !update.transitions.is_empty()
            || !update.identity_changes.is_empty()
        {
            let agent_id = self.agent_id.clone();
            self.report(Report::FleetChanged { agent_id, update });
        }
    }

    /// Command `id` has its answer: it leaves the outbox (it is not redelivered again).
    /// (Takes what it needs rather than `&self`: a session is not `Sync`, and the future
    /// must be `Send`.)
    fn answered(&self, id: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
        let gateway = Gateway {
            ctx: self.ctx.clone(),
        };
        let (agent_id, id) = (self.agent_id.clone(), id.to_string());
        async move { gateway.forget_pending(&agent_id, &id).await }
    }

    /// A command the seller's policy refused is reported (the allocator audits it).
    fn report_policy_denial(&self, result: &CommandResult) {
        let Outcome::Error { error } = &result.outcome else {
            return;
        };
        if error.code == CommandErrorCode::PolicyDenied {
            self.report(Report::PolicyDenied {
                agent_id: self.agent_id.clone(),
                command_id: result.id.clone(),
                message: error.message.clone(),
            });
        }
    }

    /// Either the peer has been silent too long, or it is our turn to send a heartbeat.
    async fn on_deadline(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if now >= self.last_received + self.interval() * MISSED_HEARTBEATS {
            warn!(agent_id = %self.agent_id, "no frame from the agent for {MISSED_HEARTBEATS} heartbeat intervals");
            return Err(End::Close("peer silent"));
        }
        if now >= self.last_sent + self.interval() {
            let beat = Heartbeat {
                time_ms: unix_ms(crate::ids::now()),
            };
            self.send(PlaneMessage::Heartbeat(beat)).await?;
        }
        Ok(())
    }

    fn next_deadline(&self) -> Instant {
        let heartbeat_due = self.last_sent + self.interval();
        let silence_limit = self.last_received + self.interval() * MISSED_HEARTBEATS;
        heartbeat_due.min(silence_limit)
    }

    fn interval(&self) -> std::time::Duration {
        self.ctx.config.heartbeat_interval()
    }

    /// Sends one message; a peer that does not take it within one heartbeat interval
    /// (its receive window is full: it stopped reading) is treated as gone.
    async fn send(&mut self, message: PlaneMessage) -> Result<(), End> {
        match tokio::time::timeout(self.interval(), self.conn.send(&message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(End::Gone),
            Err(_) => {
                warn!(agent_id = %self.agent_id, "the agent does not read its socket: closing");
                return Err(End::Gone);
            }
        }
        self.last_sent = Instant::now();
        Ok(())
    }
}

/// Reports what the agent's `reconcile` found missing to the allocator.
fn on_reconciled(
    ctx: &GatewayCtx,
    agent_id: String,
    answer: Result<Outcome, super::DispatchError>,
) {
    match answer {
        Ok(Outcome::Ok {
            output: CommandOutput::Reconcile(r),
        }) => {
            info!(agent_id = %agent_id, removed = r.removed.len(), missing = r.missing.len(), "reconcile answered");
            if !r.missing.is_empty() {
                let event = Work::Reconciled {
                    agent_id,
                    missing: r.missing,
                };
                let _ = ctx.events.send(GatewayEvent::Work(event));
            }
        }
        Ok(Outcome::Ok { .. }) => warn!(agent_id = %agent_id, "reconcile answered with another op"),
        Ok(Outcome::Error { error }) => {
            warn!(agent_id = %agent_id, code = error.code.as_str(), "reconcile failed on the agent")
        }
        Err(e) => warn!(agent_id = %agent_id, "reconcile not answered: {e}"),
    }
}

fn frame_name(message: &AgentMessage) -> &'static str {
    match message {
        AgentMessage::Hello(_) => "hello",
        AgentMessage::Auth(_) => "auth",
        AgentMessage::Inventory(_) => "inventory",
        AgentMessage::ModemsChanged(_) => "modems_changed",
        AgentMessage::CommandResult(_) => "command_result",
        AgentMessage::Heartbeat(_) => "heartbeat",
        AgentMessage::Rotated(_) => "rotated",
        AgentMessage::Usage(_) => "usage",
        AgentMessage::Capabilities(_) => "capabilities",
        AgentMessage::Health(_) => "health",
    }
}
