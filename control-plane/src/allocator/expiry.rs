//! The expiry sweeper: ONE named task that sleeps until the earliest `expires_at` of the
//! active allocations (from the store's expiry index, `Store::expiring`, so a wake reads
//! only what is due) and releases those whose time has come (`release_reason: expired`).
//! It is woken early by a `Notify` whenever an allocation becomes active or is renewed (the
//! next deadline may have moved), like mini-redis' purge task, and re-reads at least every
//! [`MAX_SLEEP`] so a wall-clock step or an edit by a tool is noticed.
//!
//! In a cluster the node holding the sweeping lock sweeps, looking at least every second
//! (`Store::sweep_sleep`): the others make allocations it is not woken by.
//!
//! Expiry never depends on the agent being connected: an allocation of an offline agent
//! goes to `releasing` and is finished when the agent reconnects (see `events`).

use super::Allocator;
use crate::clock::Sweeps;
use crate::store::{AllocationState, AuditAction, Expected, ReleaseReason, StoreError};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Longest sleep between two scans, whatever the next deadline.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Added to twice the provisioning timeout before a `pending` allocation counts as
/// abandoned by its node (`fail_abandoned`).
const ABANDON_MARGIN: Duration = Duration::from_secs(10);

impl Allocator {
    /// Wakes the expiry sweeper so it re-reads the deadlines (for an expiry changed
    /// outside the allocator, e.g. by a test or a maintenance tool).
    pub fn expiry_waker(&self) -> Arc<Notify> {
        self.expiry.clone()
    }

    /// What the sweeper has done so far.
    pub fn expiry_sweeps(&self) -> Arc<Sweeps> {
        self.expiry_sweeps.clone()
    }

    /// The sweeper task; runs until `shutdown`.
    pub async fn run_expiry(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if !self.until_sweeping(&shutdown).await {
                return;
            }
            let started = tokio::time::Instant::now();
            let now = self.clock.now();
            let next = self.expire_due(now).await.unwrap_or_else(|e| {
                warn!("expiry sweep failed, retrying: {e}");
                None
            });
            let longest = self.store.sweep_sleep(MAX_SLEEP);
            let latest = now.saturating_add(time::Duration::try_from(longest).unwrap_or_default());
            let wake_at = next.map_or(latest, |at| at.min(latest));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.expiry.notified() => {}
                () = self.clock.sleep_until_time(wake_at) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.store.pace_sweep(started) => {}
            }
        }
    }

    /// Starts the release of every active allocation past its expiry (each in its own
    /// task: one slow agent must not hold up the others) and returns the next deadline.
    async fn expire_due(
        self: &Arc<Self>,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        // The store's expiry index: only the due records are read, not the whole table.
        let (due, next) = self.store.expiring(now).await?;
        self.expiry_sweeps.record(now, due.len());
        for record in due {
            let (this, id) = (self.clone(), record.allocation_id);
            self.spawn(async move { this.expire_one(&id).await });
        }
        if self.store.is_shared() {
            self.fail_abandoned(now).await?;
        }
        Ok(next)
    }

    /// Fails the allocations left `pending` by a node that stopped while provisioning them
    /// (a single node does it when it starts again; in a cluster the others go on). One
    /// is abandoned when twice the provisioning timeout has passed: its own node would
    /// have settled it by then.
    async fn fail_abandoned(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        let patience = 2 * self.config.provisioning_timeout() + ABANDON_MARGIN;
        let cutoff = now - time::Duration::try_from(patience).unwrap_or_default();
        for stale in self.store.pending_before(cutoff).await? {
            let _order = self.locks.lock(&stale.order_id).await;
            let Some(mut record) = self.store.allocation(&stale.allocation_id).await? else {
                continue;
            };
            if record.state != AllocationState::Pending {
                continue;
            }
            let why = "the control-plane node provisioning it stopped";
            if !self.fail_unsettled(&mut record, why).await? {
                continue;
            }
            self.fleet.release_load(&record.agent_id, &record.imei);
            // Its box may have made the port before the node stopped; the agent's session
            // has been taken up elsewhere since, so no reconcile is coming to remove it.
            self.release_port(&record.agent_id, &record.allocation_id);
        }
        Ok(())
    }

    /// `active → releasing (expired)`, then the usual release; re-checked under the order
    /// lock because a renewal may have raced the sweep.
    async fn expire_one(&self, allocation_id: &str) {
        let result = async {
            let order_id = self.find(allocation_id).await?.order_id;
            let _order = self.locks.lock(&order_id).await;
            let mut record = self.find(allocation_id).await?;
            if !record.state.is_live() || record.expires_at > self.clock.now() {
                return Ok(());
            }
            info!(allocation_id, "allocation expired: releasing it");
            let from = Expected::of(&record);
            record.state = AllocationState::Releasing;
            record.release_reason = Some(ReleaseReason::Expired);
            if !self.store.save_change(&record, Some(from), &[]).await? {
                // Changed elsewhere meanwhile (released, renewed): nothing to expire.
                return Ok(());
            }
            self.audit("system", AuditAction::AllocationReleasing, &record)
                .await;
            self.finish_release(record, "system").await.map(|_| ())
        };
        if let Err(e) = result.await {
            warn!(allocation_id, "releasing an expired allocation failed: {e}");
        }
    }
}
