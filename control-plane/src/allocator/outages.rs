//! The outage sweeper: ONE named task that moves live allocations off modems that have
//! been down too long (`replace`). An allocation is due when its modem has been offline
//! (or missing from its agent's inventory) for `replacement_grace_s` without interruption
//! (`modem_offline`), or its agent disconnected for `agent_lost_window_s`
//! (`agent_offline`; a disconnected agent is not a dead box, so that window is long). The
//! fleet keeps those clocks and resets them when the modem or agent comes back, so a
//! flapping modem never becomes due.
//!
//! The task sleeps until the next allocation becomes due, is woken early by the fleet
//! (a modem went down or came back, an agent left or returned), and re-reads at least
//! every [`MAX_SLEEP`] and at most every [`MIN_GAP`]. When nothing can take a due allocation it stays where it is,
//! `allocation.degraded` is audited and emitted ONCE per outage, and the move is retried
//! every [`retry_interval`] (capacity may free up) until it succeeds or the outage ends.
//! What it remembers is in memory: after a restart the clocks start again from the
//! agents' fresh inventories, which only delays a move.

use super::replace::Trigger;
use super::{AllocError, Allocator};
use crate::clock::Sweeps;
use crate::events::EventType;
use crate::fleet::Outage;
use crate::store::{AllocationRecord, AuditAction, ReplacementReason, StoreError};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Longest sleep between two scans, whatever the next deadline.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Shortest time between two scans: in a large fleet modems flap all the time, and each
/// change wakes the sweeper; a scan reads every live allocation.
const MIN_GAP: Duration = Duration::from_secs(1);

/// What the sweeper remembers between passes.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    inner: Mutex<TrackerInner>,
    /// Wakes the sweeper when a move ended (its retry time may be the next deadline).
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    /// Allocations with a move running (never two at once).
    running: HashSet<String>,
    /// Allocations reported degraded in their current outage.
    degraded: HashSet<String>,
    /// Allocations whose last attempt failed → when to try again.
    retry_at: HashMap<String, Instant>,
    /// Moves in flight: allocation → (agent, imei) of the target, so a redelivery of
    /// that `provision` is not mistaken for a stale one.
    moving: HashMap<String, (String, String)>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A `provision` of `allocation_id` to `agent_id`/`imei` is being sent.
    pub(super) fn moving(&self, allocation_id: &str, agent_id: &str, imei: &str) {
        self.lock().moving.insert(
            allocation_id.to_string(),
            (agent_id.to_string(), imei.to_string()),
        );
    }

    /// That `provision` was answered or given up.
    pub(super) fn moved(&self, allocation_id: &str) {
        self.lock().moving.remove(allocation_id);
    }

    /// Whether a move of `allocation_id` to `agent_id`/`imei` is in flight.
    pub(super) fn is_moving(&self, allocation_id: &str, agent_id: &str, imei: &str) -> bool {
        self.lock()
            .moving
            .get(allocation_id)
            .is_some_and(|(a, i)| a == agent_id && i == imei)
    }

    /// The allocation is healthy again (or moved): a new outage reports anew.
    pub(super) fn recovered(&self, allocation_id: &str) {
        let mut inner = self.lock();
        inner.degraded.remove(allocation_id);
        inner.retry_at.remove(allocation_id);
    }

    /// Claims the allocation for one move; false when one runs or its retry is not due.
    fn start(&self, allocation_id: &str, now: Instant) -> Result<(), Option<Duration>> {
        let mut inner = self.lock();
        if let Some(at) = inner.retry_at.get(allocation_id) {
            if *at > now {
                return Err(Some(*at - now));
            }
        }
        if !inner.running.insert(allocation_id.to_string()) {
            return Err(None);
        }
        Ok(())
    }

    /// The move ended; `retry` when it should be tried again after `after`.
    fn finish(&self, allocation_id: &str, retry: Option<Duration>, now: Instant) {
        let mut inner = self.lock();
        inner.running.remove(allocation_id);
        if let Some(after) = retry {
            inner
                .retry_at
                .insert(allocation_id.to_string(), now + after);
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Marks the outage degraded; true the first time in this outage.
    fn degrade(&self, allocation_id: &str) -> bool {
        self.lock().degraded.insert(allocation_id.to_string())
    }
}

impl Allocator {
    /// What the outage sweeper has done (`found`: moves started).
    pub fn outage_sweeps(&self) -> Arc<Sweeps> {
        self.outage_sweeps.clone()
    }

    /// Wakes the outage sweeper so it scans now (after a test moved a manual clock).
    pub fn outage_waker(&self) -> Arc<Notify> {
        self.replacing.wake.clone()
    }

    /// The sweeper task; runs until `shutdown` (returns at once when automatic replacement
    /// is off: `replacement_grace_s = 0`).
    pub async fn run_replacement(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(grace) = self.config.replacement_grace() else {
            info!("automatic replacement is off (replacement_grace_s = 0)");
            return;
        };
        loop {
            if !self.until_sweeping(&shutdown).await {
                return;
            }
            let scanned = tokio::time::Instant::now();
            let now = self.clock.instant();
            let wall = self.clock.now();
            let sleep = self
                .replace_due(grace, now, wall)
                .await
                .unwrap_or_else(|e| {
                    warn!("replacement sweep failed, retrying: {e}");
                    retry_interval(grace)
                });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.fleet.health_changes().notified() => {}
                () = self.replacing.wake.notified() => {}
                () = self.clock.sleep_until(now + sleep) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(scanned + MIN_GAP) => {}
            }
        }
    }

    /// Starts a move for every due live allocation (each in its own task) and returns how
    /// long to sleep until the next one is due.
    async fn replace_due(
        self: &Arc<Self>,
        grace: Duration,
        now: Instant,
        expired_by: time::OffsetDateTime,
    ) -> Result<Duration, StoreError> {
        let mut started = 0;
        let mut next = MAX_SLEEP;
        let live = self.store.live_allocations().await?;
        for record in live
            .into_iter()
            .filter(|a| a.state.is_live() && a.expires_at > expired_by)
        {
            let outage = self.fleet.outage(&record.agent_id, &record.imei);
            let reason = match due(outage, grace, self.config.agent_lost_window(), now) {
                Due::Healthy => {
                    self.replacing.recovered(&record.allocation_id);
                    continue;
                }
                Due::In(wait) => {
                    next = next.min(wait);
                    continue;
                }
                Due::Now(reason) => reason,
            };
            match self.replacing.start(&record.allocation_id, now) {
                Ok(()) => {
                    started += 1;
                    let (this, id) = (self.clone(), record.allocation_id);
                    self.spawn(async move { this.replace_outage(&id, reason, grace).await });
                }
                Err(Some(wait)) => next = next.min(wait),
                Err(None) => {}
            }
        }
        self.outage_sweeps.record(expired_by, started);
        // A move in progress or failed is looked at again after the retry interval.
        Ok(next.max(Duration::from_millis(100)))
    }

    /// The reason `record` should move now, if its outage is (still) long enough.
    pub(super) fn outage_reason(&self, record: &AllocationRecord) -> Option<ReplacementReason> {
        let grace = self.config.replacement_grace()?;
        let outage = self.fleet.outage(&record.agent_id, &record.imei);
        match due(
            outage,
            grace,
            self.config.agent_lost_window(),
            self.clock.instant(),
        ) {
            Due::Now(reason) => Some(reason),
            Due::Healthy | Due::In(_) => None,
        }
    }

    /// One automatic move; on failure the allocation stays and is retried later.
    async fn replace_outage(
        &self,
        allocation_id: &str,
        reason: ReplacementReason,
        grace: Duration,
    ) {
        let result = self
            .replace_inner(allocation_id, Trigger::Outage(reason), "system")
            .await;
        let retry = match result {
            Ok(_) => None,
            Err(
                e @ (AllocError::NoCapacity
                | AllocError::AgentRefused { .. }
                | AllocError::AgentOffline),
            ) => {
                self.degraded(allocation_id, reason, &e).await;
                Some(retry_interval(grace))
            }
            Err(e) => {
                warn!(
                    allocation_id,
                    "automatic replacement failed, will retry: {e}"
                );
                Some(retry_interval(grace))
            }
        };
        self.replacing
            .finish(allocation_id, retry, self.clock.instant());
    }

    /// Nothing could take the allocation: audit and emit `allocation.degraded` once per
    /// outage.
    async fn degraded(&self, allocation_id: &str, reason: ReplacementReason, why: &AllocError) {
        if !self.replacing.degrade(allocation_id) {
            return;
        }
        let Ok(record) = self.find(allocation_id).await else {
            return;
        };
        warn!(allocation_id, imei = %record.imei, "allocation degraded: its modem is down and nothing can replace it: {why}");
        self.store
            .audit(
                "system",
                AuditAction::AllocationDegraded,
                format!("allocation:{allocation_id}"),
                json!({
                    "order_id": record.order_id,
                    "imei": record.imei,
                    "agent_id": record.agent_id,
                    "reason": reason,
                    "why": why.to_string(),
                }),
            )
            .await;
        self.emit(EventType::AllocationDegraded, &record).await;
    }
}

/// Whether an outage calls for a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Modem online and agent connected (or its absence is not counted).
    Healthy,
    /// Down, and due after this long unless it comes back.
    In(Duration),
    /// Down long enough.
    Now(ReplacementReason),
}

fn due(outage: Outage, grace: Duration, lost_window: Option<Duration>, now: Instant) -> Due {
    let left = |since: Instant, window: Duration| window.saturating_sub(now - since);
    let modem = outage.modem_offline_since.map(|since| left(since, grace));
    let agent = outage
        .agent_away_since
        .zip(lost_window)
        .map(|(since, window)| left(since, window));
    match (modem, agent) {
        (Some(Duration::ZERO), _) => Due::Now(ReplacementReason::ModemOffline),
        (_, Some(Duration::ZERO)) => Due::Now(ReplacementReason::AgentOffline),
        (Some(a), Some(b)) => Due::In(a.min(b)),
        (Some(a), None) | (None, Some(a)) => Due::In(a),
        (None, None) => Due::Healthy,
    }
}

/// How often a due allocation that could not be moved is tried again: a quarter of the
/// grace period, between 1 s and a minute.
fn retry_interval(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_secs(1), MAX_SLEEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(300);
    const LOST: Option<Duration> = Some(Duration::from_secs(900));

    fn outage(modem_s: Option<u64>, agent_s: Option<u64>, now: Instant) -> Outage {
        let ago = |s: u64| now.checked_sub(Duration::from_secs(s));
        Outage {
            modem_offline_since: modem_s.and_then(ago),
            agent_away_since: agent_s.and_then(ago),
        }
    }

    #[test]
    fn due_after_the_grace_or_the_lost_window_not_before() {
        let now = Instant::now() + Duration::from_secs(3600);
        assert_eq!(due(outage(None, None, now), GRACE, LOST, now), Due::Healthy);
        assert_eq!(
            due(outage(Some(100), None, now), GRACE, LOST, now),
            Due::In(Duration::from_secs(200))
        );
        assert_eq!(
            due(outage(Some(300), None, now), GRACE, LOST, now),
            Due::Now(ReplacementReason::ModemOffline)
        );
        // A disconnected agent waits for the (longer) lost window, not the grace period.
        assert_eq!(
            due(outage(None, Some(600), now), GRACE, LOST, now),
            Due::In(Duration::from_secs(300))
        );
        assert_eq!(
            due(outage(None, Some(900), now), GRACE, LOST, now),
            Due::Now(ReplacementReason::AgentOffline)
        );
        assert_eq!(
            due(outage(None, Some(900), now), GRACE, None, now),
            Due::Healthy
        );
        // Both down: the modem's own report wins.
        assert_eq!(
            due(outage(Some(400), Some(1000), now), GRACE, LOST, now),
            Due::Now(ReplacementReason::ModemOffline)
        );
        assert_eq!(
            due(outage(Some(250), Some(880), now), GRACE, LOST, now),
            Due::In(Duration::from_secs(20))
        );
    }

    #[test]
    fn retries_are_bounded() {
        assert_eq!(
            retry_interval(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(retry_interval(GRACE), Duration::from_secs(60));
        assert_eq!(
            retry_interval(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn one_move_at_a_time_and_retries_wait() {
        let tracker = Tracker::default();
        let now = Instant::now();
        assert_eq!(tracker.start("a", now), Ok(()));
        assert_eq!(tracker.start("a", now), Err(None), "already running");
        tracker.finish("a", Some(Duration::from_secs(5)), now);
        assert!(
            matches!(tracker.start("a", now), Err(Some(_))),
            "retry not due"
        );
        assert!(tracker.degrade("a"));
        assert!(!tracker.degrade("a"), "degraded once per outage");
        tracker.recovered("a");
        assert_eq!(tracker.start("a", now), Ok(()));
        assert!(tracker.degrade("a"), "a new outage reports again");
    }
}
