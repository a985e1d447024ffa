//! Releases always finish: a `release` the agent answered with an error (the box refused,
//! ProxySmart was down) is sent again while the agent stays connected — after 1 s, then
//! doubling to at most 5 min, each delay randomised to 50–100 % so a fleet recovering
//! together is not hit at once — until the port is confirmed gone. Without this a refused
//! release was only retried at the agent's next reconnect, and the buyer's port kept
//! working meanwhile. An agent that disconnects leaves the schedule: its reconnect sends
//! every `releasing` allocation's release anyway (`events`).

use super::Allocator;
use crate::store::AllocationState;
use farmhand_ops::backoff;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The first retry's delay.
const FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two retries.
const LONGEST: Duration = Duration::from_secs(300);

/// Refused releases waiting for their next attempt.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Allocation id → (when to try again, the delay that led there).
    due: Mutex<HashMap<String, (Instant, Duration)>>,
    wake: Notify,
}

impl Schedule {
    /// The release of `allocation_id` was refused: try again later (each refusal doubles
    /// the wait).
    pub(super) fn refused(&self, allocation_id: &str, now: Instant) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let delay = due
            .get(allocation_id)
            .map_or(FIRST, |(_, d)| backoff::doubling(*d, LONGEST, 1));
        let wait = backoff::equal_jitter(delay, backoff::random_unit());
        due.insert(allocation_id.to_string(), (now + wait, delay));
        drop(due);
        self.wake.notify_one();
    }

    /// The release of `allocation_id` finished (or will be retried another way).
    pub(super) fn forget(&self, allocation_id: &str) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        due.remove(allocation_id);
    }

    /// The ids due by `now`, and when the next one after them is.
    fn take_due(&self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let ready = due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let next = due.values().map(|(at, _)| *at).filter(|at| *at > now).min();
        (ready, next)
    }
}

impl Allocator {
    /// Sends the refused releases again when they are due, until `shutdown`.
    pub async fn run_release_retries(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let (ready, next) = self.release_retries.take_due(self.clock.instant());
            for allocation_id in ready {
                if shutdown.is_cancelled() {
                    return;
                }
                self.retry_release(&allocation_id).await;
            }
            let sleep = async {
                match next {
                    Some(at) => self.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.release_retries.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }

    /// One more attempt at a refused release; a refusal reschedules it (`finish_release`).
    async fn retry_release(&self, allocation_id: &str) {
        let schedule = &self.release_retries;
        let Ok(record) = self.find(allocation_id).await else {
            schedule.forget(allocation_id);
            return;
        };
        if record.state != AllocationState::Releasing
            || !self.gateway.is_connected(&record.agent_id)
        {
            schedule.forget(allocation_id);
            return;
        }
        if self
            .gateway
            .has_pending_for(&record.agent_id, allocation_id)
            .await
        {
            // One is on its way already; look again later.
            schedule.refused(allocation_id, self.clock.instant());
            return;
        }
        let _order = self.locks.lock(&record.order_id).await;
        let Ok(current) = self.find(allocation_id).await else {
            return;
        };
        if current.state != AllocationState::Releasing {
            schedule.forget(allocation_id);
            return;
        }
        info!(allocation_id, "sending a refused release again");
        if let Err(e) = self.finish_release(current, "system").await {
            warn!(allocation_id, "the release was refused again: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_double_the_wait_up_to_the_longest_and_forget_ends_them() {
        let schedule = Schedule::default();
        let start = Instant::now();
        let mut expected = FIRST;
        for _ in 0..12 {
            schedule.refused("al_1", start);
            let (at, delay) = schedule.due.lock().unwrap()["al_1"];
            assert_eq!(delay, expected);
            let wait = at - start;
            assert!(
                wait >= delay / 2 && wait <= delay + Duration::from_secs(1),
                "{wait:?} for {delay:?}"
            );
            expected = (expected * 2).min(LONGEST);
        }
        assert_eq!(expected, LONGEST, "the cap was reached");
        let (ready, next) = schedule.take_due(start);
        assert!(ready.is_empty() && next.is_some());
        let (ready, _) = schedule.take_due(start + LONGEST * 2);
        assert_eq!(ready, ["al_1"]);
        schedule.forget("al_1");
        assert_eq!(schedule.take_due(start + LONGEST * 2), (Vec::new(), None));
    }
}
