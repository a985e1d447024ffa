//! Allocations: choosing a modem, generating buyer credentials, and driving each allocation
//! through `pending → active → releasing → released` / `pending → failed` /
//! `active → failed` by commanding its agent through the gateway. Also IP rotation and
//! renewal, the handler for what the gateway reports afterwards (late results, agents
//! coming back, `reconcile` findings → `repair`), and the `expiry` sweeper.
//!
//! Every state change is written to the audit log with the caller that caused it
//! (`ROLE:NAME`, or `system` for what happens on its own), and every allocation that ends
//! wakes the credential-retention task (`retention`).
//!
//! Every public operation runs in its own task, so an HTTP client that hangs up cannot
//! cancel it half-way (which would leave an allocation `pending` and its slot reserved).

mod events;
mod expiry;
mod locks;
mod provision;
mod release;
mod renew;
mod repair;
pub mod request;
mod rotate;

pub use release::ReleaseStatus;
pub use rotate::Rotation;

use crate::config::ServerConfig;
use crate::credentials::{CredentialCipher, CredentialError};
use crate::fleet::Fleet;
use crate::gateway::{DispatchError, Gateway};
use crate::store::{
    AllocationRecord, AllocationRequest, AllocationState, AuditAction, ReleaseReason, Store,
    StoreError,
};
use farmhand_protocol::{CommandError, Secret};
use locks::KeyedLocks;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Notify;
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
    /// The modem's agent is not connected.
    #[error("the agent of this modem is offline")]
    AgentOffline,
    /// The agent did not confirm in time.
    #[error("{0}")]
    AgentTimeout(String),
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
    fn refused(code: &'static str, what: &str, error: &CommandError) -> Self {
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
    ended: Arc<Notify>,
    /// Wakes the expiry sweeper (an allocation became active or was renewed).
    expiry: Arc<Notify>,
}

impl Allocator {
    /// Builds the allocator and restores per-modem load from storage. Allocations left
    /// `pending` by a crash are failed: their fate is unknown, and the agent's `reconcile`
    /// on reconnect removes any port they got (their queued `provision` is dropped at
    /// redelivery). Queued commands past their deadline are dropped. `ended` is notified
    /// whenever an allocation ends (see `retention`).
    pub fn new(
        store: Store,
        fleet: Arc<Fleet>,
        gateway: Gateway,
        cipher: CredentialCipher,
        config: Arc<ServerConfig>,
        ended: Arc<Notify>,
    ) -> Result<Self, StoreError> {
        for mut record in store.allocations_where(|a| a.state.holds_port())? {
            if record.state == AllocationState::Pending {
                warn!(allocation_id = %record.allocation_id, "failing an allocation left pending by a restart");
                fail(
                    &mut record,
                    "the control plane restarted while provisioning",
                );
                store.put_allocation(&record)?;
                audit(&store, "system", AuditAction::AllocationFailed, &record);
            } else {
                fleet.add_load(&record.imei);
            }
        }
        let purged = store.purge_expired_commands(crate::ids::unix_ms(crate::ids::now()))?;
        if purged > 0 {
            warn!(
                purged,
                "dropped queued commands whose deadline passed while the plane was down"
            );
        }
        Ok(Allocator {
            store,
            fleet,
            gateway,
            cipher,
            config,
            locks: KeyedLocks::default(),
            ended,
            expiry: Arc::new(Notify::new()),
        })
    }

    /// `POST /v1/allocations` on behalf of `actor` (for the audit log).
    pub async fn allocate(
        self: &Arc<Self>,
        request: AllocationRequest,
        actor: String,
    ) -> Result<(Created, AllocationRecord), AllocError> {
        let this = self.clone();
        detached(async move { this.allocate_inner(request, &actor).await }).await
    }

    /// `DELETE /v1/allocations/{id}` on behalf of `actor` (for the audit log).
    pub async fn release(
        self: &Arc<Self>,
        allocation_id: &str,
        actor: String,
    ) -> Result<(ReleaseStatus, AllocationRecord), AllocError> {
        let (this, id) = (self.clone(), allocation_id.to_string());
        detached(async move { this.release_inner(&id, &actor).await }).await
    }

    /// `POST /v1/allocations/{id}/renew`.
    pub async fn renew(
        self: &Arc<Self>,
        allocation_id: &str,
        duration_s: u64,
    ) -> Result<AllocationRecord, AllocError> {
        let (this, id) = (self.clone(), allocation_id.to_string());
        detached(async move { this.renew_inner(&id, duration_s).await }).await
    }

    /// `POST /v1/modems/{imei}/rotate`.
    pub async fn rotate(self: &Arc<Self>, imei: &str) -> Result<Rotation, AllocError> {
        let (this, imei) = (self.clone(), imei.to_string());
        detached(async move { this.rotate_inner(&imei).await }).await
    }

    /// The buyer password of `record`, unsealed; `None` once purged.
    pub fn password(&self, record: &AllocationRecord) -> Result<Option<Secret>, AllocError> {
        match &record.password_sealed {
            Some(sealed) => Ok(Some(self.cipher.open(sealed, &record.allocation_id)?)),
            None => Ok(None),
        }
    }

    /// Marks `record` released and frees its modem slot.
    fn mark_released(&self, record: &mut AllocationRecord, actor: &str) -> Result<(), StoreError> {
        record.state = AllocationState::Released;
        record.released_at = Some(crate::ids::now());
        record
            .release_reason
            .get_or_insert(ReleaseReason::Cancelled);
        self.store.put_allocation(record)?;
        self.fleet.release_load(&record.imei);
        self.audit(actor, AuditAction::AllocationReleased, record);
        self.ended.notify_one();
        Ok(())
    }

    fn audit(&self, actor: &str, action: AuditAction, record: &AllocationRecord) {
        audit(&self.store, actor, action, record);
    }
}

/// Records a state change of `record`: ids and reasons, never its credentials.
fn audit(store: &Store, actor: &str, action: AuditAction, record: &AllocationRecord) {
    let details = json!({
        "order_id": record.order_id,
        "imei": record.imei,
        "agent_id": record.agent_id,
        "release_reason": record.release_reason,
        "failure": record.failure,
    });
    store.audit(
        actor,
        action,
        format!("allocation:{}", record.allocation_id),
        details,
    );
}

/// Marks a record failed (the caller persists it and frees the slot).
fn fail(record: &mut AllocationRecord, why: &str) {
    record.state = AllocationState::Failed;
    record.release_reason = Some(ReleaseReason::Failed);
    record.failure = Some(why.to_string());
}

/// Runs `work` in its own task so that dropping the caller does not cancel it.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, AllocError>> + Send + 'static,
) -> Result<T, AllocError> {
    tokio::spawn(work)
        .await
        .map_err(|e| AllocError::Internal(e.to_string()))?
}
