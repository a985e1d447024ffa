//! Retention: one named task (`retention`) ends every record's retention window on time —
//! the windows of `[retention]`, one per kind of record (docs/privacy.md). Each kind is a
//! queue ordered by when its window started (`store::retention_queue`); a pass walks each
//! queue from the front up to "now minus the window", applies the end of the window
//! (`Store::forget`), removes the entry, and stops at the first young one, so it never
//! rescans what it keeps. Deletions go in batches of [`BATCH`] with a yield between them,
//! so a first pass over years of records does not hold the store or a worker for long.
//! The audit log is trimmed the same way from its own front (`Store::prune_audit_before`),
//! and the modems' usage days by their day (`Store::prune_modem_days`, `financial_days`).
//!
//! After a pass the task sleeps until the earliest window still ahead ends, at most an
//! hour (wall-clock deadlines, and the wall clock can jump). An allocation that ends
//! wakes it ([`Retention::waker`]): its credentials' deadline may come first.
//!
//! Purging a buyer's credentials is audited per allocation (marketplaces promise it);
//! the other kinds are not — an entry per deleted record would grow the log being kept
//! small, and what goes follows from the configuration alone. A pass that removed
//! something logs the counts at INFO.

use crate::clock::Clock;
use crate::config::RetentionConfig;
use crate::store::{AuditAction, RetentionKind, Store, StoreError};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[cfg(test)]
mod tests;

/// Records handled per batch.
pub const BATCH: usize = 1000;
/// Longest sleep between passes.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Sleep after a storage error before trying again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Records changed or deleted, by kind (`audit` for audit entries).
    pub forgotten: BTreeMap<&'static str, usize>,
    /// When the earliest window still ahead ends (audit aside: it is trimmed hourly).
    pub next: Option<OffsetDateTime>,
}

/// The retention sweeper.
#[derive(Debug)]
pub struct Retention {
    store: Store,
    config: RetentionConfig,
    wake: Arc<Notify>,
    clock: Clock,
}

impl Retention {
    /// Ends windows as `config` sets them, on `clock`.
    pub fn new(store: Store, config: RetentionConfig, clock: Clock) -> Self {
        Retention {
            store,
            config,
            wake: Arc::new(Notify::new()),
            clock,
        }
    }

    /// Notified whenever an allocation ends, so the task reconsiders its next deadline.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// `kind`'s window; `None` keeps that kind forever.
    fn window(&self, kind: RetentionKind) -> Option<time::Duration> {
        let c = &self.config;
        let window = match kind {
            RetentionKind::Credentials => Some(c.credentials()),
            RetentionKind::AllocationDetail => RetentionConfig::days(c.allocation_detail_days),
            RetentionKind::AllocationRecord => RetentionConfig::days(c.financial_days),
            RetentionKind::Rotation => RetentionConfig::days(c.rotation_days),
            RetentionKind::WebhookDelivery => RetentionConfig::days(c.webhook_delivery_days),
            RetentionKind::EnrollmentToken => RetentionConfig::days(c.enrollment_token_days),
        };
        window.map(span)
    }

    /// The task: a pass, then sleep until the next deadline (or a wake), until `shutdown`.
    ///
    /// A wake needs no pass: an allocation that ends now is first due one credentials
    /// window from now, so the sleep is shortened to that at most.
    pub async fn run(self, shutdown: CancellationToken) {
        let shortest = span(self.config.credentials());
        let mut pass = true;
        let mut next = None;
        loop {
            // In a cluster, one node at a time forgets (the holder of the sweeping lock).
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = self.store.until_sweeping() => {}
            }
            let started = tokio::time::Instant::now();
            let now = self.clock.now();
            let mut pause = self.store.sweep_sleep(MAX_SLEEP);
            if self.store.is_shared() {
                // Other nodes end allocations without waking this one.
                pass = true;
            }
            if pass {
                match self.sweep(now, &shutdown).await {
                    Ok(done) => next = done.next,
                    Err(e) => {
                        warn!("retention pass failed: {e}");
                        next = None;
                        pause = RETRY_AFTER_ERROR;
                    }
                }
            }
            if let Some(at) = next {
                pause = pause.min(Duration::try_from(at - now).unwrap_or(Duration::ZERO));
            }
            let wake_at = now.saturating_add(span(pause));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {
                    let due = self.clock.now().saturating_add(shortest);
                    next = Some(next.map_or(due, |n: OffsetDateTime| n.min(due)));
                    pass = false;
                }
                _ = self.clock.sleep_until_time(wake_at) => pass = true,
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = self.store.pace_sweep(started) => {}
            }
        }
    }

    /// One pass at `at` (or until `shutdown`, between batches): every record whose window
    /// ended by `at` is forgotten.
    pub async fn sweep(
        &self,
        at: OffsetDateTime,
        shutdown: &CancellationToken,
    ) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        for kind in RetentionKind::ALL {
            let Some(window) = self.window(kind) else {
                continue;
            };
            let cutoff = at.checked_sub(window).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let mut forgotten = 0;
            loop {
                let due = self.store.retention_due(kind, cutoff, BATCH).await?;
                for queued in &due {
                    if self.store.forget(kind, queued, at).await? {
                        forgotten += 1;
                        if kind == RetentionKind::Credentials {
                            self.audit_purge(&queued.record).await;
                        }
                    }
                    self.store.retention_next(kind, queued).await?;
                    self.store.retention_done(queued).await?;
                }
                if due.len() < BATCH || shutdown.is_cancelled() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            if let Some(started) = self.store.oldest_queued(kind).await? {
                let due = started.saturating_add(window);
                pass.next = Some(pass.next.map_or(due, |n| n.min(due)));
            }
            if forgotten > 0 {
                pass.forgotten.insert(kind.as_str(), forgotten);
            }
        }
        let audit = self.trim_audit(at, shutdown).await?;
        if audit > 0 {
            pass.forgotten.insert("audit", audit);
        }
        let days = self.trim_usage_days(at).await?;
        if days > 0 {
            pass.forgotten.insert("modem_usage_days", days);
        }
        if !pass.forgotten.is_empty() {
            self.store.durable().await?;
            info!(forgotten = ?pass.forgotten, "records past their retention window forgotten");
        }
        Ok(pass)
    }

    /// Deletes audit entries older than `audit_days`, batch by batch.
    async fn trim_audit(
        &self,
        at: OffsetDateTime,
        shutdown: &CancellationToken,
    ) -> Result<usize, StoreError> {
        let Some(window) = RetentionConfig::days(self.config.audit_days) else {
            return Ok(0);
        };
        let Some(cutoff) = at.checked_sub(span(window)) else {
            return Ok(0);
        };
        let mut removed = 0;
        loop {
            let batch = self.store.prune_audit_before(cutoff, BATCH).await?;
            removed += batch;
            if batch < BATCH || shutdown.is_cancelled() {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Deletes the modems' usage days older than `financial_days` (the books).
    async fn trim_usage_days(&self, at: OffsetDateTime) -> Result<usize, StoreError> {
        let Some(window) = RetentionConfig::days(self.config.financial_days) else {
            return Ok(0);
        };
        let Some(cutoff) = at.checked_sub(span(window)) else {
            return Ok(0);
        };
        let before_day = cutoff.unix_timestamp().div_euclid(86_400);
        self.store.prune_modem_days(before_day).await
    }

    async fn audit_purge(&self, allocation_id: &[u8]) {
        let id = String::from_utf8_lossy(allocation_id);
        info!(allocation_id = %id, "buyer credentials purged (retention period over)");
        self.store
            .audit(
                "system",
                AuditAction::CredentialsPurged,
                format!("allocation:{id}"),
                json!({"retention_s": self.config.credentials_s}),
            )
            .await;
    }
}

fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}
