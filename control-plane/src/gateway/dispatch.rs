//! Sending commands and waiting for their results, with at-least-once delivery until the
//! deadline: every command except `reconcile` is written to the durable outbox
//! (`store::PendingCommand`) before it is sent, survives a disconnect (and a plane restart),
//! is redelivered with the **same id** when the agent reconnects (`redeliver`, called by the
//! allocator after the session's `reconcile`), and leaves the outbox on its result or at its
//! deadline. The agent journals results by command id, so a redelivery never acts twice.
//! A revoked agent's outbox is emptied at once (`revoked`): it can never connect again.

use super::{DispatchError, Gateway};
use crate::ids::{now, random_id, unix_ms};
use crate::store::PendingCommand;
use farmhand_protocol::{Command, CommandBody, Outcome};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How a dispatcher waits when the agent's session closes before it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Keep waiting until the deadline: the agent may reconnect and get it again.
    UntilDeadline,
    /// Return `SessionClosed` at once; the command stays queued for redelivery and its
    /// result, if any, goes to the late-result handler.
    UntilDisconnect,
}

impl Gateway {
    /// Sends `body` to `agent_id` and waits up to `timeout` for its outcome, across
    /// disconnects: if the agent reconnects before the deadline the command is redelivered
    /// and its answer still arrives here. `AgentOffline` when no session exists now.
    pub async fn dispatch(
        &self,
        agent_id: &str,
        body: CommandBody,
        timeout: Duration,
    ) -> Result<Outcome, DispatchError> {
        self.send_and_wait(agent_id, body, timeout, Wait::UntilDeadline)
            .await
    }

    /// Like [`Gateway::dispatch`], but returns `SessionClosed` as soon as the session ends;
    /// the command stays queued (it is redelivered on reconnect until its deadline) and its
    /// result is reported as a `LateResult`. For operations that finish in the background
    /// (release).
    pub async fn dispatch_or_defer(
        &self,
        agent_id: &str,
        body: CommandBody,
        timeout: Duration,
    ) -> Result<Outcome, DispatchError> {
        self.send_and_wait(agent_id, body, timeout, Wait::UntilDisconnect)
            .await
    }

    async fn send_and_wait(
        &self,
        agent_id: &str,
        body: CommandBody,
        timeout: Duration,
        wait: Wait,
    ) -> Result<Outcome, DispatchError> {
        let ctx = &self.ctx;
        let session = match ctx.registry.session(agent_id) {
            Some(session) => Some(session),
            // Held by another node (sessions shared in the store): through the database.
            None => match ctx.store.session_holder(agent_id).await {
                Ok(Some(node)) if node != ctx.node_id => None,
                Ok(_) => return Err(DispatchError::AgentOffline),
                Err(e) => {
                    warn!(agent_id, "cannot look up the agent's session: {e}");
                    return Err(DispatchError::Storage);
                }
            },
        };
        let started = Instant::now();
        let deadline = started + timeout;
        let command = new_command(body, timeout);
        let op = command.body.op();
        let id = command.id.clone();
        let mut queued = PendingCommand::new(agent_id, &command);
        if ctx.store.is_shared() {
            queued.origin_node = Some(ctx.node_id.clone());
        }
        ctx.store.put_pending_command(&queued).await.map_err(|e| {
            warn!(agent_id, "cannot record a command in the outbox: {e}");
            DispatchError::Storage
        })?;
        debug!(agent_id, command_id = %id, op = command.body.op(), "dispatching command");
        let rx = ctx.registry.track(agent_id, &id, op, deadline.into_std());
        let closed = match &session {
            Some(session) => {
                // A session that ended before taking the command leaves it queued for
                // redelivery.
                let sent = session.commands.send(Box::new(command));
                let _ = tokio::time::timeout_at(deadline, sent).await;
                match wait {
                    Wait::UntilDeadline => CancellationToken::new(),
                    Wait::UntilDisconnect => session.closed.clone(),
                }
            }
            None => {
                // The holder is woken; the queued row is what it sends. Its result comes
                // back through the database (`cluster`), so this waits until the deadline.
                if let Err(e) = ctx.store.notify_commands(agent_id).await {
                    warn!(agent_id, "cannot wake the node holding the agent: {e}");
                }
                CancellationToken::new()
            }
        };
        let result = wait_for(self, agent_id, &id, rx, deadline, &closed).await;
        let outcome = match &result {
            Ok(Outcome::Ok { .. }) => "ok",
            Ok(Outcome::Error { error }) => error.code.as_str(),
            Err(e) => e.label(),
        };
        let elapsed = started.elapsed();
        ctx.metrics
            .command_finished(op, outcome, result.is_ok(), elapsed);
        // An answered command left the outbox with its answer (the session, or the
        // holder's result transaction). One that timed out leaves it here, and so does a
        // revoked agent's: one written after `revoked` emptied the outbox (the dispatch had
        // found the session just before the kick).
        if matches!(
            result,
            Err(DispatchError::Timeout | DispatchError::AgentRevoked)
        ) {
            self.forget_pending(agent_id, &id).await;
        }
        result
    }

    /// `agent_id` was revoked (its session already kicked): every dispatcher waiting on
    /// one of its commands returns [`DispatchError::AgentRevoked`] now instead of at the
    /// command's deadline, then its outbox is emptied, durably — nothing in it can be
    /// delivered any more. Returns how many queued commands were dropped.
    pub async fn revoked(&self, agent_id: &str) -> Result<usize, crate::store::StoreError> {
        let woken = self.ctx.registry.revoke(agent_id);
        let dropped = self.ctx.store.purge_agent_commands(agent_id).await?;
        self.ctx.store.durable().await?;
        // Other nodes close its session there and stop waiting on its commands.
        if let Err(e) = self.ctx.store.notify_revoked(agent_id).await {
            warn!(
                agent_id,
                "cannot tell the other nodes the agent was revoked: {e}"
            );
        }
        info!(
            agent_id,
            woken, dropped, "revoked agent: its waiting commands failed, its outbox emptied"
        );
        Ok(dropped)
    }

    /// Removes an answered or expired command from the outbox.
    pub(super) async fn forget_pending(&self, agent_id: &str, command_id: &str) {
        if let Err(e) = self
            .ctx
            .store
            .remove_pending_command(agent_id, command_id)
            .await
        {
            warn!(
                agent_id,
                command_id, "cannot remove a command from the outbox: {e}"
            );
        }
    }

    /// Redelivers the queued commands of `agent_id` (same ids) on its live session, oldest
    /// first — with `only_new`, only those not sent from this node yet (commands another
    /// node queued for a session here). `rebuild` turns a stored body back into the one to
    /// send (a `provision` gets its password back) or returns `None` when the command is
    /// obsolete; obsolete and expired commands are dropped. Returns how many were sent.
    pub async fn redeliver<F: std::future::Future<Output = Option<CommandBody>>>(
        &self,
        agent_id: &str,
        only_new: bool,
        rebuild: impl Fn(CommandBody) -> F,
    ) -> Result<usize, crate::store::StoreError> {
        let Some(session) = self.ctx.registry.session(agent_id) else {
            return Ok(0);
        };
        let mut sent = 0;
        for pending in self.ctx.store.pending_commands(agent_id).await? {
            // Only what another node queued is new: this node's own commands went out
            // when they were made (one answered a moment ago may still be in the outbox).
            let mine = pending.origin_node.as_deref() == Some(self.ctx.node_id.as_str());
            if only_new && (mine || self.ctx.registry.is_tracked(&pending.command_id)) {
                continue;
            }
            let id = pending.command_id.clone();
            let left_ms = pending.deadline_ms.saturating_sub(unix_ms(now()));
            let op = pending.body.op();
            let body = match rebuild(pending.body).await {
                Some(body) if left_ms > 0 => body,
                _ => {
                    info!(agent_id, command_id = %id, op, "dropping a queued command: past its deadline or obsolete");
                    self.ctx.registry.forget(&id);
                    self.forget_pending(agent_id, &id).await;
                    continue;
                }
            };
            let deadline = Instant::now() + Duration::from_millis(left_ms);
            // Set only where nodes share the store (`send_and_wait`).
            let origin = pending.origin_node.filter(|o| *o != self.ctx.node_id);
            self.ctx
                .registry
                .adopt(agent_id, &id, op, deadline.into_std(), origin);
            info!(agent_id, command_id = %id, op, "redelivering a command");
            let command = Command {
                id,
                deadline_ms: pending.deadline_ms,
                body,
            };
            if session.commands.send(Box::new(command)).await.is_err() {
                break; // the session ended again: the next reconnect retries
            }
            sent += 1;
        }
        Ok(sent)
    }

    /// Whether a queued command about `allocation_id` awaits its result.
    pub async fn has_pending_for(&self, agent_id: &str, allocation_id: &str) -> bool {
        self.ctx
            .store
            .pending_commands(agent_id)
            .await
            .is_ok_and(|list| {
                list.iter()
                    .any(|c| c.allocation_id() == Some(allocation_id))
            })
    }
}

/// A command with a fresh id whose deadline is `timeout` from now.
pub(super) fn new_command(body: CommandBody, timeout: Duration) -> Command {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    Command {
        id: random_id("c"),
        deadline_ms: unix_ms(now()).saturating_add(timeout_ms),
        body,
    }
}

/// Waits for the outcome of command `id` until `deadline` (or until `closed`, or until the
/// plane's sessions are shut down); past the deadline the id is expired so a later answer
/// is treated as late.
async fn wait_for(
    gateway: &Gateway,
    agent_id: &str,
    id: &str,
    mut rx: oneshot::Receiver<Outcome>,
    deadline: Instant,
    closed: &CancellationToken,
) -> Result<Outcome, DispatchError> {
    let registry = &gateway.ctx.registry;
    tokio::select! {
        outcome = &mut rx => outcome.map_err(|_| {
            if registry.is_revoked(agent_id) {
                DispatchError::AgentRevoked
            } else {
                DispatchError::SessionClosed
            }
        }),
        () = closed.cancelled() => {
            debug!(agent_id, command_id = id, "session closed: the command stays queued");
            Err(DispatchError::SessionClosed)
        }
        () = gateway.ctx.shutdown.cancelled() => Err(DispatchError::SessionClosed),
        () = tokio::time::sleep_until(deadline) => {
            if registry.expire(id) {
                Err(DispatchError::Timeout)
            } else {
                // The result was being delivered as the deadline passed: take it.
                rx.await.map_err(|_| DispatchError::SessionClosed)
            }
        }
    }
}

/// Waits for the answer of the session's own `reconcile` (not queued: each session sends
/// a fresh one).
pub(super) async fn wait_reconcile(
    gateway: &Gateway,
    agent_id: &str,
    id: &str,
    rx: oneshot::Receiver<Outcome>,
    deadline: Instant,
) -> Result<Outcome, DispatchError> {
    let never = CancellationToken::new();
    wait_for(gateway, agent_id, id, rx, deadline, &never).await
}
