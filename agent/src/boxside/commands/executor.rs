//! Command execution: the journal check, the deadline, dispatch to one file per command,
//! journaling the result, and running commands concurrently (bounded) without ever running
//! the same command id twice at once.
//!
//! A command's effects survive the session that delivered it: commands run on a task
//! tracker owned by the executor, and a result that could not be sent is in the journal
//! for the redelivery.
//!
//! Before a command reaches its file, the executor checks its fields (`validate`), its
//! deadline and the seller's policy (`policy_denied`); every executed command, denials
//! included, is written to the local audit, after its result is journaled (so an audit
//! line means the answer is durable). Redeliveries answered from the journal are not
//! executed again, so not audited.

use super::{provision, reconcile, release, rotate_ip, update_port, validate, CommandContext};
use farmhand_protocol::{
    Command, CommandBody, CommandError, CommandErrorCode, CommandId, CommandOutput, CommandResult,
    Outcome,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::task::TaskTracker;

/// Commands executing at once; more wait for a slot.
pub const MAX_CONCURRENT_COMMANDS: usize = 16;

/// Runs commands: dedupes by id, bounds concurrency, journals every result.
#[derive(Debug, Clone)]
pub struct Executor {
    ctx: Arc<CommandContext>,
    inflight: Arc<Mutex<HashMap<CommandId, watch::Receiver<Option<CommandResult>>>>>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl Executor {
    /// An executor over `ctx`.
    pub fn new(ctx: Arc<CommandContext>) -> Self {
        Executor {
            ctx,
            inflight: Arc::default(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_COMMANDS)),
            tracker: TaskTracker::new(),
        }
    }

    /// Records the plane's clock from `welcome`: deadlines and expiries are judged on it.
    pub fn set_plane_time(&self, server_time_ms: u64) {
        self.ctx.set_plane_time(server_time_ms);
    }

    /// Runs `command` in the background and sends its result to `reply` (if still open).
    pub fn submit(&self, command: Command, reply: mpsc::Sender<CommandResult>) {
        // In the order the plane sent them, before any runs (see `reconcile`).
        self.ctx.arrived(&command);
        let this = self.clone();
        self.tracker.spawn(async move {
            let id = command.id.clone();
            let result = this.execute(command).await;
            this.ctx.finished(&id);
            let _ = reply.send(result).await;
        });
    }

    /// Waits until every submitted command has finished.
    pub async fn drain(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    /// Runs one delivery; a delivery of an id already running waits for that run's result.
    pub async fn execute(&self, command: Command) -> CommandResult {
        let id = command.id.clone();
        let (tx, existing) = {
            let Ok(mut map) = self.inflight.lock() else {
                return internal(&id, "executor state poisoned");
            };
            match map.get(&id) {
                Some(rx) => (None, Some(rx.clone())),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(id.clone(), rx);
                    (Some(tx), None)
                }
            }
        };
        if let Some(mut rx) = existing {
            return match rx.wait_for(Option::is_some).await {
                Ok(result) => result.clone().unwrap_or_else(|| internal(&id, "no result")),
                Err(_) => internal(&id, "the first delivery of this command failed"),
            };
        }
        let result = self.run_once(command).await;
        if let Some(tx) = tx {
            let _ = tx.send(Some(result.clone()));
        }
        if let Ok(mut map) = self.inflight.lock() {
            map.remove(&id);
        }
        result
    }

    async fn run_once(&self, command: Command) -> CommandResult {
        let id = command.id.clone();
        match self.ctx.journal.result(&id) {
            Ok(Some(recorded)) => {
                tracing::info!(command = %id, "redelivered command; answering from the journal");
                return recorded;
            }
            Ok(None) => {}
            Err(e) => return internal(&id, &format!("cannot read the journal: {e}")),
        }
        let outcome = match self.slots.acquire().await {
            Ok(_permit) => self.outcome(&command).await,
            Err(_) => Outcome::Error {
                error: CommandError::new(CommandErrorCode::Internal, "executor closed"),
            },
        };
        let result = CommandResult {
            id: id.clone(),
            outcome,
        };
        // Journal first, then audit: an audit line then also says the answer is durable.
        // The audit records what was done on the box even when the journal write failed.
        let journaled = self.ctx.journal.record_result(&result).await;
        self.ctx.audit(&command, &result.outcome).await;
        self.ctx
            .metrics
            .command_done(command.body.op(), &result.outcome);
        if let Err(e) = journaled {
            tracing::error!(command = %id, error = %e, "cannot journal the command result");
            return internal(&id, &format!("cannot journal the result: {e}"));
        }
        result
    }

    async fn outcome(&self, command: &Command) -> Outcome {
        let op = command.body.op();
        let now_ms = self.ctx.now_ms();
        if let Err(error) = validate::command(command, now_ms) {
            tracing::warn!(op, reason = %error.message, "invalid command refused");
            return Outcome::Error { error };
        }
        if now_ms > command.deadline_ms {
            tracing::warn!(command = %command.id, op, "command arrived after its deadline; not started");
            let error = CommandError::new(
                CommandErrorCode::DeadlineExceeded,
                "the command's deadline had passed when it arrived",
            );
            return Outcome::Error { error };
        }
        if let Err(error) = self.ctx.policy.check(&command.body) {
            tracing::warn!(command = %command.id, op, reason = %error.message, "command refused by the local policy");
            return Outcome::Error { error };
        }
        tracing::info!(command = %command.id, op, "executing command");
        match dispatch(&self.ctx, command).await {
            Ok(output) => Outcome::Ok { output },
            Err(error) => {
                tracing::warn!(command = %command.id, op, code = error.code.as_str(), message = %error.message, "command failed");
                Outcome::Error { error }
            }
        }
    }
}

async fn dispatch(ctx: &CommandContext, command: &Command) -> Result<CommandOutput, CommandError> {
    match command.body.clone() {
        CommandBody::Provision(p) => provision::run(ctx, p).await.map(CommandOutput::Provision),
        CommandBody::Release(r) => release::run(ctx, r).await.map(CommandOutput::Release),
        CommandBody::RotateIp(r) => rotate_ip::run(ctx, r).await.map(CommandOutput::RotateIp),
        CommandBody::UpdatePort(u) => update_port::run(ctx, u)
            .await
            .map(CommandOutput::UpdatePort),
        CommandBody::Reconcile(r) => reconcile::run(ctx, r, &command.id)
            .await
            .map(CommandOutput::Reconcile),
    }
}

fn internal(id: &str, message: &str) -> CommandResult {
    CommandResult {
        id: id.to_string(),
        outcome: Outcome::Error {
            error: CommandError::new(CommandErrorCode::Internal, message),
        },
    }
}
