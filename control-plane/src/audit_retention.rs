//! Audit log retention (`[audit] retention_days`): one named task (`audit-retention`)
//! deletes entries older than the retention period, oldest first, at start and then
//! hourly. Each pass removes bounded batches (`BATCH`) and yields between them, so the
//! first pass over a large log does not hold the store or a worker for long; it walks
//! from the front of the log and stops at the first young entry
//! (`Store::prune_audit_before`), so a pass never rescans what it keeps.
//!
//! Deletions are not audited: an entry per deleted entry would grow the log it trims, and
//! what is deleted follows from the configuration alone. Each pass that removed something
//! logs the count at INFO.

use crate::clock::Clock;
use crate::store::{Store, StoreError};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Entries deleted per batch.
pub const BATCH: usize = 1000;
/// Time between passes.
const PASS_INTERVAL: Duration = Duration::from_secs(3600);
/// Time before another try after a storage error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

/// The audit retention sweeper.
#[derive(Debug)]
pub struct AuditRetention {
    store: Store,
    /// `None`: keep every entry (`retention_days = 0`).
    period: Option<time::Duration>,
    clock: Clock,
}

impl AuditRetention {
    /// Deletes entries older than `period` as `clock` tells; `None` keeps them forever.
    pub fn new(store: Store, period: Option<Duration>, clock: Clock) -> Self {
        let period = period.map(|p| time::Duration::try_from(p).unwrap_or(time::Duration::MAX));
        AuditRetention {
            store,
            period,
            clock,
        }
    }

    /// The task: a pass now, then one every hour, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.period.is_none() {
            debug!("audit retention is off (retention_days = 0): entries are kept forever");
            return;
        }
        loop {
            let now = self.clock.now();
            let pause = match self.sweep(now, &shutdown).await {
                Ok(_) => PASS_INTERVAL,
                Err(e) => {
                    warn!("audit retention pass failed: {e}");
                    RETRY_AFTER_ERROR
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.clock.sleep_until_time(now + pause) => {}
            }
        }
    }

    /// One pass: deletes, batch by batch, every entry older than the retention period at
    /// `at` (or until `shutdown`); returns how many went.
    pub async fn sweep(
        &self,
        at: OffsetDateTime,
        shutdown: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let Some(cutoff) = self.period.and_then(|p| at.checked_sub(p)) else {
            return Ok(0);
        };
        let mut removed = 0;
        loop {
            let batch = self.store.prune_audit_before(cutoff, BATCH)?;
            removed += batch;
            if batch < BATCH || shutdown.is_cancelled() {
                break;
            }
            // Let appends and readers in between two batches.
            tokio::task::yield_now().await;
        }
        if removed > 0 {
            info!(
                removed,
                retention_days = self.period.map_or(0, |p| p.whole_days()),
                "audit entries past their retention deleted"
            );
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditAction, AuditEvent};
    use serde_json::json;
    use time::Duration as Span;

    /// A store with `old` entries from 400 days ago, then `young` from now.
    fn store_with(dir: &std::path::Path, old: usize, young: usize) -> Store {
        let store = Store::open(dir).unwrap();
        let t = crate::ids::now();
        let ages =
            std::iter::repeat_n(Span::days(400), old).chain(std::iter::repeat_n(Span::ZERO, young));
        for (i, age) in ages.enumerate() {
            let event = AuditEvent {
                at: t - age,
                actor: "system".into(),
                action: AuditAction::IpRotated,
                target: format!("modem:{i}"),
                details: json!({}),
            };
            store.append_audit(&event).unwrap();
        }
        store
    }

    fn count(store: &Store) -> usize {
        let mut n = 0;
        let mut after = None;
        loop {
            let page = store
                .audit_page(after, OffsetDateTime::UNIX_EPOCH, 1000)
                .unwrap();
            n += page.entries.len();
            after = page.entries.last().map(|e| e.cursor);
            if !page.more {
                return n;
            }
        }
    }

    #[tokio::test]
    async fn a_pass_removes_every_old_entry_over_several_batches_and_keeps_young_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 2 * BATCH + 7, 5);
        let year = Some(Duration::from_secs(365 * 86_400));
        let retention = AuditRetention::new(store.clone(), year, Clock::system());
        let token = CancellationToken::new();
        assert_eq!(
            retention.sweep(crate::ids::now(), &token).await.unwrap(),
            2 * BATCH + 7
        );
        assert_eq!(count(&store), 5);
        let first = store
            .audit_page(None, OffsetDateTime::UNIX_EPOCH, 1)
            .unwrap();
        assert_eq!(
            first.entries[0].event.target,
            format!("modem:{}", 2 * BATCH + 7)
        );
        assert_eq!(
            retention.sweep(crate::ids::now(), &token).await.unwrap(),
            0,
            "idempotent"
        );
    }

    #[tokio::test]
    async fn a_cancelled_pass_stops_after_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 2 * BATCH + 7, 1);
        let retention = AuditRetention::new(
            store.clone(),
            Some(Duration::from_secs(86_400)),
            Clock::system(),
        );
        let token = CancellationToken::new();
        token.cancel();
        assert_eq!(
            retention.sweep(crate::ids::now(), &token).await.unwrap(),
            BATCH
        );
        assert_eq!(count(&store), BATCH + 8);
    }

    #[tokio::test]
    async fn retention_zero_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 30, 2);
        let forever = AuditRetention::new(store.clone(), None, Clock::system());
        let token = CancellationToken::new();
        assert_eq!(forever.sweep(crate::ids::now(), &token).await.unwrap(), 0);
        // The task returns at once rather than waking every hour for nothing.
        tokio::time::timeout(Duration::from_secs(30), forever.run(token))
            .await
            .unwrap();
        assert_eq!(count(&store), 32);
    }

    #[tokio::test]
    async fn an_entry_stays_one_second_inside_its_window_and_goes_one_second_outside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = crate::ids::now();
        // The newest entry is never pruned (it anchors the keys' order): one comes later.
        for (i, at) in [t, t + Span::days(2)].into_iter().enumerate() {
            let event = AuditEvent {
                at,
                actor: "system".into(),
                action: AuditAction::IpRotated,
                target: format!("modem:{i}"),
                details: json!({}),
            };
            store.append_audit(&event).unwrap();
        }
        let day = Duration::from_secs(86_400);
        let retention = AuditRetention::new(store.clone(), Some(day), Clock::system());
        let token = CancellationToken::new();
        let inside = t + Span::days(1) - Span::seconds(1);
        assert_eq!(retention.sweep(inside, &token).await.unwrap(), 0);
        assert_eq!(count(&store), 2, "deleted a second early");
        let outside = t + Span::days(1) + Span::seconds(1);
        assert_eq!(retention.sweep(outside, &token).await.unwrap(), 1);
        assert_eq!(count(&store), 1, "kept a second late");
    }
}
