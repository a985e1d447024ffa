//! Commands from the plane, carried out on the box: [`CommandContext`] (everything a
//! command needs, built once with [`CommandContext::builder`]), the `executor` (the journal
//! check, the gates, dispatch, journaling, bounded concurrency) and one file per command,
//! each owning its validation, ProxySmart calls and answer: `provision`, `release`,
//! `rotate_ip`, `update_port`, `reconcile`. `validate` checks every field before any of it
//! reaches the box; `rotation_gate` keeps one rotation per modem at a time and the seller's
//! spacing; `arrivals` keeps the order commands came in, for `reconcile`.
//!
//! The box side below (`ports`, `rotation`, `proxysmart`) does the writing and reading;
//! this layer decides what to write. Upward it only signals: a provision with a rotation
//! schedule wakes whoever waits on [`CommandContext::schedules_changed`] (`autorotate`).

mod arrivals;
mod executor;
mod provision;
mod reconcile;
mod release;
pub(crate) mod rotate_ip;
mod rotation_gate;
mod update_port;
pub mod validate;

pub use executor::{Executor, MAX_CONCURRENT_COMMANDS};

use crate::base::clock::now_ms;
use crate::boxside::box_profile::BoxProfileHandle;
use crate::boxside::inventory::InventoryHandle;
use crate::boxside::ports::Ports;
use crate::boxside::proxysmart::ProxysmartClient;
use crate::config::policy::Policy;
use crate::config::proxysmart::PortSettings;
use crate::local::audit::{AuditEntry, AuditLog};
use crate::local::journal::{Journal, JournalError};
use crate::local::metrics::AgentMetrics;
use arrivals::Arrivals;
use farmhand_protocol::{Command, CommandError, CommandErrorCode, Outcome};
use rotation_gate::{RotationGate, RotationGuard};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// What commands need: ProxySmart, the journal, the seller's policy, timings, and where to
/// report. Built once, complete ([`CommandContext::builder`]); shared behind an `Arc` by
/// the executor and the automatic rotation scheduler.
#[derive(Debug)]
pub struct CommandContext {
    /// The only way to ProxySmart.
    client: ProxysmartClient,
    /// Durable results and managed ports.
    journal: Journal,
    /// How long `rotate_ip` waits for the new IP.
    rotation_timeout: Duration,
    /// Asked for a fresh poll after a command changed modems; `None`: nothing to nudge.
    inventory: Option<InventoryHandle>,
    /// The seller's policy (default: everything allowed).
    policy: Policy,
    /// Where executed commands are recorded for the seller; `None` records nothing.
    audit: Option<AuditLog>,
    /// Writes ports on the box and checks they took (and the box's clock and profile).
    ports: Ports,
    /// Where executed commands are counted (`farmhand_agent_commands_total`).
    metrics: Arc<AgentMetrics>,
    /// When each modem last started a rotation and whether one runs (for
    /// `policy.min_rotation_interval`; shared with the automatic scheduler).
    rotations: RotationGate,
    /// Woken when a port with a rotation schedule was journaled (`autorotate` waits).
    schedules: Notify,
    /// Held by `provision` (count → create → journal) and `reconcile` (list → remove):
    /// two provisions cannot both pass the per-modem cap or pick the same free TCP ports,
    /// and reconcile never mistakes a port being created for an orphan.
    ports_lock: tokio::sync::Mutex<()>,
    /// Plane clock minus local clock (ms), learned from `welcome`; deadlines and expiries
    /// are judged on the plane's clock so a box whose clock is off still works.
    clock_offset_ms: AtomicI64,
    /// The order commands arrived in (`arrivals`).
    arrivals: std::sync::Mutex<Arrivals>,
}

/// Builds a [`CommandContext`]; what is not given has a default (everything allowed, no
/// audit, no poller to nudge, ports checked with default settings and an in-memory box
/// profile, a private metrics registry).
#[derive(Debug)]
pub struct CommandContextBuilder {
    client: ProxysmartClient,
    journal: Journal,
    rotation_timeout: Duration,
    inventory: Option<InventoryHandle>,
    policy: Policy,
    audit: Option<AuditLog>,
    ports: Option<Ports>,
    metrics: Arc<AgentMetrics>,
}

impl CommandContextBuilder {
    /// The poller to ask for a fresh reading after a command changed modems.
    pub fn inventory(mut self, inventory: InventoryHandle) -> Self {
        self.inventory = Some(inventory);
        self
    }

    /// The seller's policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Where executed commands are recorded for the seller.
    pub fn audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// How ports are written on this box (its profile, clock and settings).
    pub fn ports(mut self, ports: Ports) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Where executed commands are counted.
    pub fn metrics(mut self, metrics: Arc<AgentMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The context, with no clock offset; the rotation spacing starts from the last
    /// rotations the journal remembers.
    pub fn build(self) -> CommandContext {
        let rotations = RotationGate::default();
        seed_rotations(&rotations, &self.journal);
        let client = self.client;
        let ports = self.ports.unwrap_or_else(|| {
            Ports::new(
                client.clone(),
                Arc::new(BoxProfileHandle::in_memory()),
                Arc::default(),
                PortSettings::default(),
            )
        });
        CommandContext {
            client,
            journal: self.journal,
            rotation_timeout: self.rotation_timeout,
            inventory: self.inventory,
            policy: self.policy,
            audit: self.audit,
            ports,
            metrics: self.metrics,
            rotations,
            schedules: Notify::new(),
            ports_lock: tokio::sync::Mutex::new(()),
            clock_offset_ms: AtomicI64::new(0),
            arrivals: Default::default(),
        }
    }
}

impl CommandContext {
    /// A builder over ProxySmart, the journal and the time `rotate_ip` waits for a new IP.
    pub fn builder(
        client: ProxysmartClient,
        journal: Journal,
        rotation_timeout: Duration,
    ) -> CommandContextBuilder {
        CommandContextBuilder {
            client,
            journal,
            rotation_timeout,
            inventory: None,
            policy: Policy::default(),
            audit: None,
            ports: None,
            metrics: Arc::default(),
        }
    }

    /// The plane's idea of now, Unix ms.
    pub fn now_ms(&self) -> u64 {
        now_ms().saturating_add_signed(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Records the plane's clock from `welcome`.
    pub fn set_plane_time(&self, server_time_ms: u64) {
        let offset = i64::try_from(server_time_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(now_ms() as i64);
        self.clock_offset_ms.store(offset, Ordering::Relaxed);
    }

    /// The journal the commands write.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The seller's policy the commands obey.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The box's ports, as the commands write them.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// This box's rotations, with the context's client, profile and timeout.
    pub fn rotation(&self) -> crate::boxside::rotation::Rotation<'_> {
        crate::boxside::rotation::Rotation {
            client: &self.client,
            profile: self.ports.profile(),
            timeout: self.rotation_timeout,
        }
    }

    /// Completes when a port with a rotation schedule was journaled since the last call.
    pub async fn schedules_changed(&self) {
        self.schedules.notified().await;
    }

    /// When the last rotation of `imei` started, if known.
    pub fn last_rotation_start(&self, imei: &str) -> Option<tokio::time::Instant> {
        self.rotations.last_start(imei)
    }

    /// Writes `command` with `outcome` to the seller's audit (if there is one). A failing
    /// audit does not undo what was done on the box, so it is logged loudly, not returned.
    pub async fn audit(&self, command: &Command, outcome: &Outcome) {
        let Some(audit) = &self.audit else {
            return;
        };
        if let Err(e) = audit.append(&AuditEntry::new(command, outcome)).await {
            tracing::error!(command = %command.id, op = command.body.op(), error = %e, "cannot write the local audit");
        }
    }

    /// Wakes the automatic rotation scheduler: a schedule was journaled.
    fn notify_schedules_changed(&self) {
        self.schedules.notify_one();
    }

    /// Starts a rotation of `imei` if none is running and the policy's minimum interval
    /// allows it; the rotation counts as running until the guard is dropped.
    fn start_rotation(&self, imei: &str) -> Result<RotationGuard<'_>, CommandError> {
        let min = self.policy.min_rotation_interval;
        self.rotations
            .try_start(imei, min, tokio::time::Instant::now())
    }

    /// Serialises changes to the set of ports (see `ports_lock`).
    async fn lock_ports(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ports_lock.lock().await
    }

    /// Notes that `command` arrived now (in the order the plane sent it: `arrivals`).
    pub fn arrived(&self, command: &Command) {
        self.arrivals().arrived(command);
    }

    /// Command `command_id` finished, whether it ran or not (`arrivals`).
    fn finished(&self, command_id: &str) {
        self.arrivals().finished(command_id);
    }

    /// The allocations provisioned by commands that arrived after reconcile `command_id`.
    fn provisioned_after(&self, command_id: &str) -> std::collections::BTreeSet<String> {
        self.arrivals().provisioned_after(command_id)
    }

    fn arrivals(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        self.arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
fn journal_error(e: JournalError) -> CommandError {
    CommandError::new(CommandErrorCode::Internal, format!("journal: {e}"))
}

/// The modem `imei` as ProxySmart reports it now; `unknown_imei` if it is not there.
async fn current_modem(
    ctx: &CommandContext,
    imei: &str,
) -> Result<farmhand_protocol::Modem, CommandError> {
    crate::boxside::rotation::current_modem(&ctx.client, imei).await
}
