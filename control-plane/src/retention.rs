//! Credential retention: buyer passwords are deleted `credential_retention_s` after their
//! allocation ended (released or failed); the allocation keeps every other field and the
//! API then shows `password: null`, `credentials_purged: true`.
//!
//! One named task (`credential-retention`) purges what is due, then sleeps until the next
//! deadline — woken early by a [`Notify`] when an allocation ends (its deadline may be the
//! first one), and at least hourly because deadlines are wall-clock times and the wall
//! clock can jump.

use crate::clock::Clock;
use crate::store::{AuditAction, Store, StoreError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Longest sleep between sweeps.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// Sleep after a storage error before trying again.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

/// The retention sweeper.
#[derive(Debug)]
pub struct Retention {
    store: Store,
    period: time::Duration,
    wake: Arc<Notify>,
    clock: Clock,
}

impl Retention {
    /// Purges credentials `period` after their allocation ended, as `clock` tells.
    pub fn new(store: Store, period: Duration, clock: Clock) -> Self {
        Retention {
            store,
            period: time::Duration::try_from(period).unwrap_or(time::Duration::MAX),
            wake: Arc::new(Notify::new()),
            clock,
        }
    }

    /// Notified whenever an allocation ends, so the task reconsiders its next deadline.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The task: sweep, sleep until the next deadline (or a wake), until `shutdown`.
    ///
    /// A wake sweeps again only when no deadline is known: an allocation that ends now is
    /// due one retention period from now, never before a deadline already ahead, so with
    /// one known the wake needs no scan (a sweep reads every ended record; at thousands of
    /// releases a second, one scan per release was most of the plane's work).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next = None;
        let mut sweep = true;
        loop {
            let now = self.clock.now();
            let pause = if sweep {
                match self.sweep(now) {
                    Ok(found) => {
                        next = found;
                        self.until(next, now)
                    }
                    Err(e) => {
                        warn!("credential retention sweep failed: {e}");
                        next = None;
                        RETRY_AFTER_ERROR
                    }
                }
            } else {
                self.until(next, now)
            };
            sweep = true;
            let wake_at = now.saturating_add(time::Duration::try_from(pause).unwrap_or_default());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => sweep = next.is_none(),
                _ = self.clock.sleep_until_time(wake_at) => {}
            }
        }
    }

    /// Purges every record due at `at`; returns the earliest deadline still ahead.
    pub fn sweep(&self, at: OffsetDateTime) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut next: Option<OffsetDateTime> = None;
        let ended = self
            .store
            .allocations_where(|a| a.password_sealed.is_some() && a.ended_at().is_some())?;
        for record in ended {
            let Some(ended_at) = record.ended_at() else {
                continue;
            };
            let deadline = ended_at.saturating_add(self.period);
            if deadline > at {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                continue;
            }
            if self.store.purge_credentials(&record.allocation_id)? {
                info!(allocation_id = %record.allocation_id, "buyer credentials purged (retention period over)");
                self.store.audit(
                    "system",
                    AuditAction::CredentialsPurged,
                    format!("allocation:{}", record.allocation_id),
                    json!({"order_id": record.order_id, "retention_s": self.period.whole_seconds()}),
                );
            }
        }
        Ok(next)
    }

    /// How long to sleep until `deadline` (capped; no deadline sleeps the cap).
    fn until(&self, deadline: Option<OffsetDateTime>, now: OffsetDateTime) -> Duration {
        let Some(deadline) = deadline else {
            return MAX_SLEEP;
        };
        let left = deadline - now;
        Duration::try_from(left).map_or(Duration::ZERO, |d| d.min(MAX_SLEEP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AllocationRecord, AllocationRequest, AllocationState};
    use time::Duration as Span;

    fn record(id: &str, state: AllocationState, ended: OffsetDateTime) -> AllocationRecord {
        AllocationRecord {
            allocation_id: id.into(),
            order_id: format!("o-{id}"),
            state,
            imei: "350000000000018".into(),
            agent_id: "ag".into(),
            carrier: None,
            country: None,
            host: Some("203.0.113.7".into()),
            http_port: Some(8001),
            socks_port: Some(5001),
            port_id: None,
            login: "fhlogin".into(),
            password_sealed: Some("sealed".into()),
            created_at: ended,
            expires_at: ended + Span::days(30),
            released_at: (state == AllocationState::Released).then_some(ended),
            release_reason: None,
            failure: None,
            request: AllocationRequest {
                order_id: format!("o-{id}"),
                duration_s: 60,
                country: None,
                carrier: None,
                imei: None,
                rotate_every_s: None,
                bandwidth_kbit: None,
                traffic_quota_mb: None,
            },
            tenant: crate::store::DEFAULT_TENANT.into(),
            replacements: Vec::new(),
        }
    }

    #[test]
    fn a_sweep_purges_what_is_due_and_names_the_next_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = crate::ids::now();
        let records = [
            record("old", AllocationState::Released, t - Span::days(2)),
            record("recent", AllocationState::Released, t - Span::hours(1)),
            record("failed", AllocationState::Failed, t - Span::days(3)),
            record("live", AllocationState::Active, t - Span::days(9)),
        ];
        for r in &records {
            store.put_allocation(r).unwrap();
        }
        let day = Duration::from_secs(24 * 3600);
        let retention = Retention::new(store.clone(), day, Clock::system());
        let next = retention.sweep(t).unwrap();
        assert_eq!(next, Some(t - Span::hours(1) + Span::days(1)));
        let sealed = |id: &str| store.allocation(id).unwrap().unwrap().password_sealed;
        assert_eq!(sealed("old"), None);
        assert_eq!(sealed("failed"), None);
        assert!(sealed("recent").is_some() && sealed("live").is_some());
        let kept = store.allocation("old").unwrap().unwrap();
        assert_eq!(
            (kept.login.as_str(), kept.http_port),
            ("fhlogin", Some(8001))
        );
        assert_eq!(retention.sweep(t).unwrap(), next, "idempotent");

        // The boundary, to the second: a day after it ended, not a second before.
        let deadline = next.unwrap();
        assert_eq!(retention.sweep(deadline - Span::seconds(1)).unwrap(), next);
        assert!(sealed("recent").is_some(), "purged a second early");
        assert_eq!(retention.sweep(deadline).unwrap(), None);
        assert_eq!(sealed("recent"), None, "kept past its period");
    }

    #[test]
    fn sleeps_are_capped_and_never_negative() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let retention = Retention::new(store, Duration::from_secs(60), Clock::manual());
        let now = crate::ids::now();
        assert_eq!(retention.until(None, now), MAX_SLEEP);
        let past = Some(now - time::Duration::hours(1));
        assert_eq!(retention.until(past, now), Duration::ZERO);
        let far = Some(now + time::Duration::days(30));
        assert_eq!(retention.until(far, now), MAX_SLEEP);
        let soon = Some(now + time::Duration::seconds(10));
        assert_eq!(retention.until(soon, now), Duration::from_secs(10));
    }
}
