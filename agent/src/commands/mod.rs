//! Command execution: the journal check, the deadline, dispatch to one file per command,
//! journaling the result, and running commands concurrently (bounded) without ever running
//! the same command id twice at once.
//!
//! A command's effects survive the session that delivered it: commands run on a task
//! tracker owned by the executor, and a result that could not be sent is in the journal
//! for the redelivery.
//!
//! Before a command reaches its file, the executor checks its id and the seller's policy
//! (`policy_denied`); every executed command, denials included, is written to the local
//! audit, after its result is journaled (so an audit line means the answer is durable).
//! Redeliveries answered from the journal are not executed again, so not audited.

mod provision;
mod reconcile;
mod release;
pub(crate) mod rotate_ip;
mod rotation_gate;
mod update_port;
pub mod validate;

use crate::audit::{AuditEntry, AuditLog};
use crate::base::clock::now_ms;
use crate::config::policy::Policy;
use crate::inventory::InventoryHandle;
use crate::journal::Journal;
use crate::ports::Ports;
use crate::proxysmart::ProxysmartClient;
use farmhand_protocol::{
    Command, CommandBody, CommandError, CommandErrorCode, CommandId, CommandOutput, CommandResult,
    Outcome,
};
use rotation_gate::{RotationGate, RotationGuard};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::task::TaskTracker;

/// Commands executing at once; more wait for a slot.
pub const MAX_CONCURRENT_COMMANDS: usize = 16;

/// What commands need: ProxySmart, the journal, timings, and the poller to nudge.
#[derive(Debug)]
pub struct CommandContext {
    /// The only way to ProxySmart.
    pub client: ProxysmartClient,
    /// Durable results and managed ports.
    pub journal: Journal,
    /// How long `rotate_ip` waits for the new IP.
    pub rotation_timeout: Duration,
    /// Asked for a fresh poll after a command changed modems.
    pub inventory: Option<InventoryHandle>,
    /// The seller's policy (default: everything allowed).
    pub policy: Policy,
    /// Where executed commands are recorded for the seller; `None` records nothing.
    pub audit: Option<AuditLog>,
    /// Writes ports on the box and checks they took (and the box's clock and profile).
    pub ports: Ports,
    /// Where executed commands are counted (`farmhand_agent_commands_total`).
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    /// When each modem last started a rotation and whether one runs (for
    /// `policy.min_rotation_interval`; shared with the automatic scheduler).
    rotations: RotationGate,
    /// The automatic rotation scheduler's wake-up and its reports for the plane.
    pub autorotation: crate::autorotate::AutoRotation,
    /// Held by `provision` (count → create → journal) and `reconcile` (list → remove):
    /// two provisions cannot both pass the per-modem cap or pick the same free TCP ports,
    /// and reconcile never mistakes a port being created for an orphan.
    ports_lock: tokio::sync::Mutex<()>,
    /// Plane clock minus local clock (ms), learned from `welcome`; deadlines and expiries
    /// are judged on the plane's clock so a box whose clock is off still works.
    clock_offset_ms: AtomicI64,
}

impl CommandContext {
    /// A context with no clock offset. The rotation spacing starts from the last rotations
    /// the journal remembers.
    pub fn new(client: ProxysmartClient, journal: Journal, rotation_timeout: Duration) -> Self {
        let rotations = RotationGate::default();
        seed_rotations(&rotations, &journal);
        let ports = Ports::new(
            client.clone(),
            Arc::new(crate::box_profile::BoxProfileHandle::in_memory()),
            Arc::default(),
            crate::config::proxysmart::PortSettings::default(),
        );
        CommandContext {
            client,
            journal,
            rotation_timeout,
            inventory: None,
            policy: Policy::default(),
            audit: None,
            ports,
            metrics: Arc::default(),
            rotations,
            autorotation: crate::autorotate::AutoRotation::default(),
            ports_lock: tokio::sync::Mutex::new(()),
            clock_offset_ms: AtomicI64::new(0),
        }
    }

    /// The plane's idea of now, Unix ms.
    pub fn now_ms(&self) -> u64 {
        now_ms().saturating_add_signed(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// This box's rotations, with the context's client, profile and timeout.
    pub fn rotation(&self) -> crate::rotation::Rotation<'_> {
        crate::rotation::Rotation {
            client: &self.client,
            profile: self.ports.profile(),
            timeout: self.rotation_timeout,
        }
    }

    /// Records the plane's clock from `welcome`.
    pub fn set_plane_time(&self, server_time_ms: u64) {
        let offset = i64::try_from(server_time_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(now_ms() as i64);
        self.clock_offset_ms.store(offset, Ordering::Relaxed);
    }
}

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

    /// The shared context.
    pub fn context(&self) -> &Arc<CommandContext> {
        &self.ctx
    }

    /// Runs `command` in the background and sends its result to `reply` (if still open).
    pub fn submit(&self, command: Command, reply: mpsc::Sender<CommandResult>) {
        let this = self.clone();
        self.tracker.spawn(async move {
            let result = this.execute(command).await;
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
        self.audit(&command, &result.outcome).await;
        self.ctx
            .metrics
            .command_done(command.body.op(), &result.outcome);
        if let Err(e) = journaled {
            tracing::error!(command = %id, error = %e, "cannot journal the command result");
            return internal(&id, &format!("cannot journal the result: {e}"));
        }
        result
    }

    /// Records the command for the seller. A failing audit does not undo what was done on
    /// the box, so it is logged loudly and the result is still answered.
    async fn audit(&self, command: &Command, outcome: &Outcome) {
        let Some(audit) = &self.ctx.audit else {
            return;
        };
        if let Err(e) = audit.append(&AuditEntry::new(command, outcome)).await {
            tracing::error!(command = %command.id, op = command.body.op(), error = %e, "cannot write the local audit");
        }
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
        match dispatch(&self.ctx, command.body.clone()).await {
            Ok(output) => Outcome::Ok { output },
            Err(error) => {
                tracing::warn!(command = %command.id, op, code = error.code.as_str(), message = %error.message, "command failed");
                Outcome::Error { error }
            }
        }
    }
}

async fn dispatch(ctx: &CommandContext, body: CommandBody) -> Result<CommandOutput, CommandError> {
    match body {
        CommandBody::Provision(p) => provision::run(ctx, p).await.map(CommandOutput::Provision),
        CommandBody::Release(r) => release::run(ctx, r).await.map(CommandOutput::Release),
        CommandBody::RotateIp(r) => rotate_ip::run(ctx, r).await.map(CommandOutput::RotateIp),
        CommandBody::UpdatePort(u) => update_port::run(ctx, u)
            .await
            .map(CommandOutput::UpdatePort),
        CommandBody::Reconcile(r) => reconcile::run(ctx, r).await.map(CommandOutput::Reconcile),
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

impl CommandContext {
    /// Starts a rotation of `imei` if none is running and the policy's minimum interval
    /// allows it; the rotation counts as running until the guard is dropped.
    pub(crate) fn start_rotation(&self, imei: &str) -> Result<RotationGuard<'_>, CommandError> {
        let min = self.policy.min_rotation_interval;
        self.rotations
            .try_start(imei, min, tokio::time::Instant::now())
    }

    /// When the last rotation of `imei` started, if known.
    pub(crate) fn last_rotation_start(&self, imei: &str) -> Option<tokio::time::Instant> {
        self.rotations.last_start(imei)
    }

    /// Serialises changes to the set of ports (see `ports_lock`).
    pub(crate) async fn lock_ports(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ports_lock.lock().await
    }
}

/// Seeds the rotation spacing from the journal (a rotation before a restart still counts).
fn seed_rotations(gate: &RotationGate, journal: &Journal) {
    let (now, now_ms) = (tokio::time::Instant::now(), now_ms());
    match journal.last_rotations() {
        Ok(list) => {
            for (imei, at_ms) in list {
                let ago = Duration::from_millis(now_ms.saturating_sub(at_ms));
                if let Some(at) = now.checked_sub(ago) {
                    gate.seed(&imei, at);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the last rotations; spacing starts afresh")
        }
    }
}

/// Maps a journal failure to an `internal` command error.
pub(crate) fn journal_error(e: crate::journal::JournalError) -> CommandError {
    CommandError::new(CommandErrorCode::Internal, format!("journal: {e}"))
}

/// The modem `imei` as ProxySmart reports it now; `unknown_imei` if it is not there.
pub(crate) async fn current_modem(
    ctx: &CommandContext,
    imei: &str,
) -> Result<farmhand_protocol::Modem, CommandError> {
    crate::rotation::current_modem(&ctx.client, imei).await
}
