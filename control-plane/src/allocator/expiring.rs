//! `allocation.expiring`: ONE named task that sleeps until the earliest warning time
//! (`expires_at − [webhooks] expiring_lead_s`) of the in-service allocations and emits the
//! event for those whose time has come — once per allocation and `expires_at` value: a
//! renewal moves `expires_at` and so re-arms it. An allocation created or renewed with
//! less than the lead time left is warned at once.
//!
//! The schedule is in memory ([`Warnings`]: fed when an allocation becomes active or is
//! renewed, rebuilt from the live allocations when the task starts); what was sent is
//! durable (`store::webhooks`, allocation id → `expires_at`), so a restart neither repeats
//! nor loses a warning. A warning whose allocation ended, or whose `expires_at` moved, is
//! dropped when it comes due.
//!
//! In a cluster the node holding the sweeping lock warns; allocations made or renewed on
//! other nodes reach its schedule by a look at the store's expiry index every
//! [`RESCAN`] (what expires within the lead time and one more rescan).

use super::Allocator;
use crate::events::EventType;
use crate::ids::unix_ms;
use crate::store::{AllocationRecord, StoreError};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Longest sleep between two looks at the schedule (a wall-clock step is noticed).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How often, in a cluster, the sweeping node reads what other nodes scheduled.
const RESCAN: Duration = Duration::from_secs(10);

/// The in-memory schedule: (warning time, allocation id), earliest first.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    queue: Mutex<BTreeSet<(OffsetDateTime, String)>>,
    wake: Notify,
}

impl Allocator {
    /// The lead time, `None` when `allocation.expiring` is switched off.
    fn expiring_lead(&self) -> Option<time::Duration> {
        let lead = self.config.webhooks.expiring_lead_s;
        (lead > 0).then(|| time::Duration::seconds(i64::try_from(lead).unwrap_or(i64::MAX)))
    }

    /// Schedules the warning of `record`'s current `expires_at` (after activation or a
    /// renewal).
    pub(super) fn schedule_expiring(&self, record: &AllocationRecord) {
        let Some(lead) = self.expiring_lead() else {
            return;
        };
        let at = record.expires_at.saturating_sub(lead);
        self.warnings
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((at, record.allocation_id.clone()));
        self.warnings.wake.notify_one();
    }

    /// The warning task; runs until `shutdown`.
    pub async fn run_expiring(self: Arc<Self>, shutdown: CancellationToken) {
        if self.expiring_lead().is_none() {
            return;
        }
        if let Err(e) = self.schedule_live().await {
            warn!("cannot schedule expiry warnings of existing allocations: {e}");
        }
        let longest =
            time::Duration::try_from(self.store.sweep_sleep(MAX_SLEEP)).unwrap_or_default();
        let mut rescanned: Option<OffsetDateTime> = None;
        loop {
            if !self.until_sweeping(&shutdown).await {
                return;
            }
            let now = self.clock.now();
            let rescan = time::Duration::try_from(RESCAN).unwrap_or_default();
            if self.store.is_shared() && rescanned.is_none_or(|at| now - at >= rescan) {
                if let Err(e) = self.schedule_elsewhere(now, rescan).await {
                    warn!("cannot read the allocations other nodes scheduled: {e}");
                }
                rescanned = Some(now);
            }
            let latest = now.saturating_add(longest);
            let wake_at = self.warn_due(now).await.map_or(latest, |at| at.min(latest));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.warnings.wake.notified() => {}
                () = self.clock.sleep_until_time(wake_at) => {}
            }
        }
    }

    /// Schedules every in-service allocation not yet warned for its `expires_at`.
    async fn schedule_live(&self) -> Result<(), StoreError> {
        for record in self.store.live_allocations().await? {
            let sent = self.store.expiring_sent(&record.allocation_id).await?;
            if record.state.is_live() && sent != Some(unix_ms(record.expires_at)) {
                self.schedule_expiring(&record);
            }
        }
        Ok(())
    }

    /// Schedules the in-service allocations that expire within the lead time and `window`
    /// (read from the store's expiry index: in a cluster, some were made elsewhere).
    async fn schedule_elsewhere(
        &self,
        now: OffsetDateTime,
        window: time::Duration,
    ) -> Result<(), StoreError> {
        let Some(lead) = self.expiring_lead() else {
            return Ok(());
        };
        let (soon, _) = self.store.expiring(now + lead + window).await?;
        for record in soon.iter().filter(|r| r.state.is_live()) {
            self.schedule_expiring(record);
        }
        Ok(())
    }

    /// Emits the warnings whose time has come; returns the next warning time.
    async fn warn_due(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        loop {
            let (at, id) = {
                let mut queue = self
                    .warnings
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match queue.first() {
                    Some((at, _)) if *at > now => return Some(*at),
                    None => return None,
                    Some(_) => queue.pop_first()?,
                }
            };
            if let Err(e) = self.warn_one(at, &id, now).await {
                warn!(allocation_id = %id, "cannot send the expiry warning: {e}");
            }
        }
    }

    /// Emits `allocation.expiring` for `allocation_id` if it is still in service, still
    /// expires when the warning at `at` was scheduled for, and was not warned for it yet.
    async fn warn_one(
        &self,
        at: OffsetDateTime,
        allocation_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let Some(record) = self.store.allocation(allocation_id).await? else {
            return Ok(());
        };
        let Some(lead) = self.expiring_lead() else {
            return Ok(());
        };
        let expires_ms = unix_ms(record.expires_at);
        let current = record.expires_at.saturating_sub(lead) == at;
        if !record.state.is_live() || !current || record.expires_at <= now {
            return Ok(());
        }
        if self.store.expiring_sent(allocation_id).await? == Some(expires_ms) {
            return Ok(());
        }
        self.emit(EventType::AllocationExpiring, &record).await;
        self.store
            .mark_expiring_sent(allocation_id, expires_ms)
            .await
    }
}
