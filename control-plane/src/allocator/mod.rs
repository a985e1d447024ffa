//! Allocations: choosing a modem, generating buyer credentials, and driving each allocation
//! through `pending → active → releasing → released` / `pending → failed` /
//! `active → failed` by commanding its agent through the gateway. Also IP rotation and
//! renewal, the handler for what the gateway reports afterwards (late results, agents
//! coming back, `reconcile` findings → `repair`), and the `expiry` sweeper. `replace`
//! moves a live allocation to another modem (`active → replaced`, same id and
//! credentials), on request or from the `outages` sweeper when its modem stays down.
//! `revoked` ends every allocation of a revoked agent (`release_reason: agent_revoked`).
//!
//! Every state change is written to the audit log with the caller that caused it
//! (`ROLE:NAME`, or `system` for what happens on its own), and every allocation that ends
//! wakes the retention task (`retention`). Webhook events (`crate::events`) go
//! out next to the audit entries: `allocation.active`, `.released`, `.failed` here, and
//! `.expiring` from its own task (`expiring`).
//!
//! Every public operation runs in its own task, so an HTTP client that hangs up cannot
//! cancel it half-way (which would leave an allocation `pending` and its slot reserved).

mod events;
mod expiring;
mod expiry;
mod locks;
mod outages;
mod provision;
mod release;
mod release_retry;
mod renew;
mod repair;
mod replace;
mod reports;
pub mod request;
mod revoked;
mod rotate;

pub use release::ReleaseStatus;
pub use rotate::{LastRotation, Rotation};

use crate::clock::{Clock, Sweeps};
use crate::config::ServerConfig;
use crate::credentials::{CredentialCipher, CredentialError};
use crate::events::{EventType, Events};
use crate::fleet::Fleet;
use crate::gateway::{DispatchError, Gateway};
use crate::store::{
    AllocationRecord, AllocationRequest, AllocationState, AuditAction, Expected, ReleaseReason,
    Store, StoreError,
};
use farmhand_protocol::{CommandError, Secret};
use locks::KeyedLocks;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// Why an allocation operation did not succeed; the API maps each to a status and code.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// A field is out of range.
    #[error("{0}")]
    Invalid(String),
    /// No such allocation or modem.
    #[error("{0}")]
    NotFound(String),
    /// The order id is taken by an allocation created from a different request.
    #[error("order_id already used with a different request")]
    OrderConflict,
    /// No online modem with free capacity matches.
    #[error("no online modem with free capacity matches the request")]
    NoCapacity,
    /// The allocation is in a state that does not allow this.
    #[error("{0}")]
    InvalidState(String),
    /// The modem was rotated too recently, or a rotation of it is running (409
    /// `rotation_cooldown`).
    #[error("{message}")]
    RotationCooldown {
        /// Seconds until a rotation may be asked again (`Retry-After`, at least 1).
        retry_after_s: u64,
        /// Why.
        message: String,
    },
    /// The modem's agent is not connected.
    #[error("the agent of this modem is offline")]
    AgentOffline,
    /// The agent did not confirm in time.
    #[error("{0}")]
    AgentTimeout(String),
    /// Several agents report this IMEI and no admin named its owner (409
    /// `duplicate_identity`).
    #[error("{0}")]
    DuplicateIdentity(String),
    /// The agent answered with an error. `code` is the API code (`provision_failed`, …).
    #[error("{message}")]
    AgentRefused {
        /// API error code.
        code: &'static str,
        /// Human message including the agent's error code.
        message: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sealed credential could not be opened.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The operation's task failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AllocError {
    /// The agent's refusal as an API error: `code`, or `box_refused_field` (naming the
    /// field) when the box did not take a field of the write.
    fn refused(code: &'static str, what: &str, error: &CommandError) -> Self {
        if error.code == farmhand_protocol::CommandErrorCode::BoxRefusedField {
            let field = error.field.as_deref().unwrap_or("unknown");
            return AllocError::AgentRefused {
                code: "box_refused_field",
                message: format!(
                    "the seller's box did not take {field} when asked to {what}: {}",
                    error.message
                ),
            };
        }
        AllocError::AgentRefused {
            code,
            message: format!(
                "the agent could not {what}: {}: {}",
                error.code.as_str(),
                error.message
            ),
        }
    }

    fn from_dispatch(error: DispatchError, what: &str) -> Self {
        match error {
            DispatchError::AgentOffline => AllocError::AgentOffline,
            DispatchError::Timeout => AllocError::AgentTimeout(format!(
                "the agent did not confirm {what} before the command's deadline (it was slow, \
                 or disconnected and did not come back in time)"
            )),
            DispatchError::SessionClosed => {
                AllocError::AgentTimeout(format!("the agent disconnected before confirming {what}"))
            }
            // Still 504: the request failed because the agent never confirmed; only now
            // it is known at once that it never will.
            DispatchError::AgentRevoked => {
                AllocError::AgentTimeout(format!("the agent was revoked before confirming {what}"))
            }
            DispatchError::Storage => {
                AllocError::Internal(format!("{what}: the command could not be stored"))
            }
        }
    }
}

/// Whether `POST /v1/allocations` created the allocation or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new allocation (201).
    New,
    /// The same order id and request again (200).
    Existing,
}

/// The allocation engine.
#[derive(Debug)]
pub struct Allocator {
    store: Store,
    fleet: Arc<Fleet>,
    gateway: Gateway,
    cipher: CredentialCipher,
    config: Arc<ServerConfig>,
    locks: KeyedLocks,
    /// Modems with a rotation under way (only one reaches the agent at a time).
    rotating: rotate::InFlight,
    ended: Arc<Notify>,
    /// Wakes the expiry sweeper (an allocation became active or was renewed).
    expiry: Arc<Notify>,
    /// What the expiry sweeper has done (tests wait on it instead of on time).
    expiry_sweeps: Arc<Sweeps>,
    /// What the outage sweeper has done (moves started, in `found`).
    outage_sweeps: Arc<Sweeps>,
    /// Where allocation events go (webhooks).
    events: Events,
    /// Every task the allocator starts, so shutdown can wait for them (they hold the
    /// database open).
    tasks: TaskTracker,
    /// When `allocation.expiring` is due (`expiring`).
    warnings: expiring::Warnings,
    /// The outage sweeper's memory: moves running, degraded outages, moves in flight.
    replacing: outages::Tracker,
    /// Refused releases to send again while their agent stays connected.
    release_retries: release_retry::Schedule,
    /// The plane's clock (the fleet's: one for every rule that decides by time).
    clock: Clock,
    /// What each agent's boxes measurably deliver (rotations and moves are noted here;
    /// probes by `probe`).
    quality: Arc<crate::quality::Quality>,
}

impl Allocator {
    /// Builds the allocator and restores per-modem load from storage. Allocations left
    /// `pending` by a crash are failed: their fate is unknown, and the agent's `reconcile`
    /// on reconnect removes any port they got (their queued `provision` is dropped at
    /// redelivery). Queued commands past their deadline are dropped. Allocations left on
    /// a revoked agent (a crash between the revocation and the end of its allocations)
    /// are released (`revoked`). `ended` is notified whenever an allocation ends (see
    /// `retention`).
    pub async fn new(
        store: Store,
        fleet: Arc<Fleet>,
        gateway: Gateway,
        cipher: CredentialCipher,
        config: Arc<ServerConfig>,
        ended: Arc<Notify>,
        events: Events,
    ) -> Result<Self, StoreError> {
        let shared = store.is_shared();
        let mut left_pending = Vec::new();
        for record in store.live_allocations().await? {
            // In a cluster another node may be provisioning it now: the sweeping node
            // fails it once it is clearly abandoned (`expiry`).
            if record.state == AllocationState::Pending && !shared {
                left_pending.push(record);
            } else {
                fleet.add_load(&record.agent_id, &record.imei);
            }
        }
        let clock = fleet.clock().clone();
        let purged = store
            .purge_expired_commands(crate::ids::unix_ms(clock.now()))
            .await?;
        if purged > 0 {
            warn!(
                purged,
                "dropped queued commands whose deadline passed while the plane was down"
            );
        }
        let allocator = Allocator {
            quality: Arc::new(crate::quality::Quality::new(store.clone())),
            store,
            fleet,
            gateway,
            cipher,
            config,
            locks: KeyedLocks::default(),
            rotating: rotate::InFlight::default(),
            ended,
            expiry: Arc::new(Notify::new()),
            expiry_sweeps: Arc::default(),
            outage_sweeps: Arc::default(),
            events,
            tasks: TaskTracker::new(),
            warnings: expiring::Warnings::default(),
            replacing: outages::Tracker::default(),
            release_retries: release_retry::Schedule::default(),
            clock,
        };
        for mut record in left_pending {
            let why = "the control plane restarted while provisioning";
            allocator.fail_unsettled(&mut record, why).await?;
        }
        allocator.end_revoked_at_start().await?;
        Ok(allocator)
    }

    /// `POST /v1/allocations` for `tenant` on behalf of `actor` (for the audit log).
    pub async fn allocate(
        self: &Arc<Self>,
        request: AllocationRequest,
        tenant: String,
        actor: String,
    ) -> Result<(Created, AllocationRecord), AllocError> {
        let this = self.clone();
        self.detached(async move { this.allocate_inner(request, &tenant, &actor).await })
            .await
    }

    /// `DELETE /v1/allocations/{id}` on behalf of `actor` (for the audit log).
    pub async fn release(
        self: &Arc<Self>,
        allocation_id: &str,
        actor: String,
    ) -> Result<(ReleaseStatus, AllocationRecord), AllocError> {
        let (this, id) = (self.clone(), allocation_id.to_string());
        self.detached(async move { this.release_inner(&id, &actor).await })
            .await
    }

    /// `POST /v1/allocations/{id}/renew`.
    pub async fn renew(
        self: &Arc<Self>,
        allocation_id: &str,
        duration_s: u64,
    ) -> Result<AllocationRecord, AllocError> {
        let (this, id) = (self.clone(), allocation_id.to_string());
        self.detached(async move { this.renew_inner(&id, duration_s).await })
            .await
    }

    /// `POST /v1/allocations/{id}/replace` on behalf of `actor`: moves a live allocation
    /// to another modem (see `replace`).
    pub async fn replace(
        self: &Arc<Self>,
        allocation_id: &str,
        actor: String,
    ) -> Result<AllocationRecord, AllocError> {
        let (this, id) = (self.clone(), allocation_id.to_string());
        self.detached(async move {
            this.replace_inner(&id, replace::Trigger::Requested, &actor)
                .await?
                .ok_or_else(|| AllocError::Internal("the replacement did not happen".into()))
        })
        .await
    }

    /// Moves `allocation_id`, whose port failed its probes on `imei`, to another modem
    /// (`probe`); `Ok(None)` when it is no longer there or no longer live.
    pub async fn replace_degraded(
        self: &Arc<Self>,
        allocation_id: &str,
        imei: &str,
    ) -> Result<Option<AllocationRecord>, AllocError> {
        let (this, id) = (self.clone(), allocation_id.to_string());
        let trigger = replace::Trigger::Degraded {
            imei: imei.to_string(),
        };
        self.detached(async move { this.replace_inner(&id, trigger, "system").await })
            .await
    }

    /// `POST /v1/modems/{imei}/rotate`.
    pub async fn rotate(self: &Arc<Self>, imei: &str) -> Result<Rotation, AllocError> {
        let (this, imei) = (self.clone(), imei.to_string());
        self.detached(async move { this.rotate_inner(&imei).await })
            .await
    }

    /// Runs `work` in its own task so that dropping the caller does not cancel it.
    async fn detached<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, AllocError>> + Send + 'static,
    ) -> Result<T, AllocError> {
        self.tasks
            .spawn(work)
            .await
            .map_err(|e| AllocError::Internal(e.to_string()))?
    }

    /// Waits until this node runs the sweeps over shared state (at once on sled; on
    /// PostgreSQL while it holds the sweeping lock); false when `shutdown` came first.
    async fn until_sweeping(&self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = self.store.until_sweeping() => true,
        }
    }

    /// Starts background work that shutdown waits for (`finish`).
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(work);
    }

    /// Waits (at most `patience`) for the operations still running after the sessions
    /// closed; they end quickly then, because their agents are gone. Their `Arc`s hold the
    /// database open, so a restart in the same process would find it locked.
    pub async fn finish(&self, patience: std::time::Duration) {
        self.tasks.close();
        if tokio::time::timeout(patience, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                running = self.tasks.len(),
                "allocation tasks still running at shutdown"
            );
        }
    }

    /// Each agent's measured quality (`quality`).
    pub fn quality(&self) -> Arc<crate::quality::Quality> {
        self.quality.clone()
    }

    /// The buyer password of `record`, unsealed; `None` once purged.
    pub fn password(&self, record: &AllocationRecord) -> Result<Option<Secret>, AllocError> {
        match &record.password_sealed {
            Some(sealed) => Ok(Some(self.cipher.open(sealed, &record.allocation_id)?)),
            None => Ok(None),
        }
    }

    /// Marks `record` released (flushed, awaited without holding a thread) and frees its
    /// modem slot — once: when another request or node released it first, `record`
    /// becomes what is stored and this returns false.
    async fn mark_released(
        &self,
        record: &mut AllocationRecord,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let from = Expected::of(record);
        released(record, self.clock.now());
        if !self
            .save_reporting(record, Some(from), EventType::AllocationReleased)
            .await?
        {
            if let Some(stored) = self.store.allocation(&record.allocation_id).await? {
                *record = stored;
            }
            return Ok(false);
        }
        self.announce_released(record, actor).await;
        Ok(true)
    }

    /// What follows every durable `released` record (saved with its `allocation.released`,
    /// `save_reporting`): its modem slot is freed, the release is audited, and credential
    /// retention is woken (its clock starts at `released_at`).
    async fn announce_released(&self, record: &AllocationRecord, actor: &str) {
        self.fleet.release_load(&record.agent_id, &record.imei);
        self.audit(actor, AuditAction::AllocationReleased, record)
            .await;
        self.ended.notify_one();
    }

    async fn audit(&self, actor: &str, action: AuditAction, record: &AllocationRecord) {
        audit(&self.store, actor, action, record).await;
    }

    /// Emits `kind` about `record` (see `events`), for an event that reports no change
    /// of the record (a warning, a degradation); a change goes with its event through
    /// [`Allocator::save_reporting`].
    async fn emit(&self, kind: EventType, record: &AllocationRecord) {
        // Building the object costs allocations; with no endpoint for `kind`, skip it.
        if self.events.wants(kind) {
            self.events
                .emit(kind, crate::events::allocation_object(record))
                .await;
        }
        self.after_event(kind, record).await;
    }

    /// Saves `record` with the event `kind` reporting its change, in one durable step
    /// (`Store::save_change`): a change that reached the store is never without its
    /// webhook deliveries, whatever kills the process afterwards. Given `from`, only if the
    /// stored record is still as it expects; false when another node or request changed it
    /// first (nothing written, no event).
    async fn save_reporting(
        &self,
        record: &AllocationRecord,
        from: Option<Expected>,
        kind: EventType,
    ) -> Result<bool, StoreError> {
        let deliveries = if self.events.wants(kind) {
            let object = crate::events::allocation_object(record);
            self.events.prepare(kind, object).await?
        } else {
            Vec::new()
        };
        if !self.store.save_change(record, from, &deliveries).await? {
            return Ok(false);
        }
        if !deliveries.is_empty() {
            self.events.stored();
        }
        self.after_event(kind, record).await;
        Ok(true)
    }

    /// Fails `record`, found still `pending` with nobody left to settle it (`why`): saved
    /// with its `allocation.failed` if it is still pending, audited. False when it was
    /// settled meanwhile. Its modem slot and any port are the caller's.
    async fn fail_unsettled(
        &self,
        record: &mut AllocationRecord,
        why: &str,
    ) -> Result<bool, StoreError> {
        warn!(allocation_id = %record.allocation_id, "{why}: failing an allocation left pending");
        // Found pending: failed only if still so.
        debug_assert_eq!(record.state, AllocationState::Pending);
        let pending = Some(Expected::of(record));
        fail(record, why);
        let failed = self
            .save_reporting(record, pending, EventType::AllocationFailed)
            .await?;
        if failed {
            self.audit("system", AuditAction::AllocationFailed, record)
                .await;
        }
        Ok(failed)
    }

    /// The bookkeeping an event implies: an active allocation's `allocation.expiring` is
    /// scheduled; one that ended no longer needs it (`expiring`).
    async fn after_event(&self, kind: EventType, record: &AllocationRecord) {
        if kind == EventType::AllocationActive {
            self.schedule_expiring(record);
        }
        if matches!(
            kind,
            EventType::AllocationReleased | EventType::AllocationFailed
        ) {
            if let Err(e) = self.store.forget_expiring(&record.allocation_id).await {
                warn!(allocation_id = %record.allocation_id, "cannot forget the expiry warning: {e}");
            }
        }
    }
}

/// Records a state change of `record`: ids and reasons, never its credentials.
async fn audit(store: &Store, actor: &str, action: AuditAction, record: &AllocationRecord) {
    let details = json!({
        "order_id": record.order_id,
        "imei": record.imei,
        "agent_id": record.agent_id,
        "release_reason": record.release_reason,
        "failure": record.failure,
    });
    store
        .audit(
            actor,
            action,
            format!("allocation:{}", record.allocation_id),
            details,
        )
        .await;
}

/// Marks a record released now, `cancelled` unless it already has a reason (the caller
/// persists it, then calls `announce_released`).
fn released(record: &mut AllocationRecord, now: time::OffsetDateTime) {
    record.state = AllocationState::Released;
    record.released_at = Some(now);
    record
        .release_reason
        .get_or_insert(ReleaseReason::Cancelled);
}

/// Marks a record failed (the caller persists it and frees the slot).
fn fail(record: &mut AllocationRecord, why: &str) {
    record.state = AllocationState::Failed;
    record.release_reason = Some(ReleaseReason::Failed);
    record.failure = Some(why.to_string());
}
