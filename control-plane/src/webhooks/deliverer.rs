//! The deliverer: ONE named task that sleeps until the earliest scheduled delivery (or
//! until an event is enqueued or an attempt finishes), flushes what was emitted, leases
//! due deliveries while fewer than `concurrency` are in flight — at most
//! `endpoint_concurrency` per endpoint, so an endpoint that hangs until the timeout holds
//! a few slots, not all — and runs each attempt in its own task. An attempt's result is
//! stored with the next attempt time or the final state. A delivery whose attempt was cut
//! short by a crash keeps its lease in the store; the leases are released when the task
//! starts, so it is due again at once.
//!
//! On shutdown the loop stops leasing, attempts in flight are abandoned and their
//! deliveries rescheduled for now, so they go out first after a restart (the receiver may
//! then see an event twice — at-least-once).

use super::backoff::{random_unit, RetryPolicy};
use super::client::{self, Attempt, Failure};
use super::{secret_context, signer, Webhooks};
use crate::ids::{now, unix_ms};
use crate::store::{DeliveryState, Lease, LeasedDelivery, StoreError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Longest sleep between two looks at the schedule.
const MAX_IDLE: Duration = Duration::from_secs(60);
/// Pause after a storage error, so a broken store does not spin the loop.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// How often each endpoint's delivery log is trimmed to `deliveries_kept`.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most due entries looked at to find one whose endpoint has a free slot.
const LEASE_SCAN: usize = 10_000;

/// Attempts in flight per endpoint.
type InFlight = Arc<Mutex<HashMap<String, usize>>>;

/// One attempt's share of the limits; dropping it frees both.
struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: InFlight,
    webhook_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.webhook_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.webhook_id);
            }
        }
    }
}

/// What one round found.
enum Round {
    /// Sleep at most this long.
    Sleep(Duration),
    /// Due deliveries wait for a slot: a finishing attempt wakes the loop.
    Full,
}

impl Webhooks {
    /// The deliverer task; runs until `shutdown`, then waits for its attempts to stop.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.inner.store.release_webhook_leases().await {
            Ok(0) => {}
            Ok(n) => info!(
                n,
                "webhook deliveries interrupted by the last stop are due again"
            ),
            Err(e) => error!("cannot release the leases of interrupted deliveries: {e}"),
        }
        let permits = Arc::new(Semaphore::new(self.inner.config.concurrency));
        let in_flight = InFlight::default();
        let tracker = TaskTracker::new();
        let mut next_prune = Instant::now();
        loop {
            let round = self.round(&permits, &in_flight, &tracker, &shutdown).await;
            if Instant::now() >= next_prune {
                self.prune().await;
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            let pause = match round {
                Round::Sleep(pause) => pause,
                Round::Full => MAX_IDLE,
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(pause.min(MAX_IDLE)) => {}
            }
        }
        tracker.close();
        tracker.wait().await;
    }

    /// Flushes emitted events, starts every due delivery a slot is free for, and says
    /// how long to sleep.
    async fn round(
        &self,
        permits: &Arc<Semaphore>,
        in_flight: &InFlight,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Round {
        if self.inner.unflushed.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.inner.store.durable().await {
                error!("cannot flush webhook events: {e}");
            }
        }
        match self.start_due(permits, in_flight, tracker, shutdown).await {
            Ok(true) => return Round::Full,
            Ok(false) => {}
            Err(e) => {
                error!("cannot read the webhook outbox: {e}");
                return Round::Sleep(ERROR_PAUSE);
            }
        }
        match self.inner.store.next_webhook_due().await {
            Ok(Some(at)) => Round::Sleep(Duration::from_millis(at.saturating_sub(unix_ms(now())))),
            Ok(None) => Round::Sleep(MAX_IDLE),
            Err(e) => {
                error!("cannot read the webhook schedule: {e}");
                Round::Sleep(ERROR_PAUSE)
            }
        }
    }

    /// Leases and starts due deliveries while slots are free; `true` when due deliveries
    /// are left waiting for a slot.
    async fn start_due(
        &self,
        permits: &Arc<Semaphore>,
        in_flight: &InFlight,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<bool, StoreError> {
        // An attempt that is neither answered nor timed out by then is presumed lost.
        let lease = Duration::from_secs(self.inner.config.attempt_timeout_s * 2 + 5);
        let per_endpoint = self.inner.config.endpoint_concurrency;
        loop {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                return Ok(true);
            };
            let now_ms = unix_ms(now());
            let lease_ms = now_ms + u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
            let has_room = |webhook_id: &str| {
                let map = in_flight.lock().unwrap_or_else(PoisonError::into_inner);
                map.get(webhook_id).copied().unwrap_or(0) < per_endpoint
            };
            let job = match self
                .inner
                .store
                .lease_due_delivery(now_ms, lease_ms, LEASE_SCAN, has_room)
                .await?
            {
                Lease::Taken(job) => *job,
                Lease::NothingDue => return Ok(false),
                Lease::Blocked => return Ok(true),
            };
            let webhook_id = job.delivery.webhook_id.clone();
            *in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(webhook_id.clone())
                .or_default() += 1;
            let slot = Slot {
                _permit: permit,
                in_flight: in_flight.clone(),
                webhook_id,
            };
            let (this, stop) = (self.clone(), shutdown.clone());
            tracker.spawn(async move { this.deliver(job, stop, slot).await });
        }
    }

    /// One attempt of one delivery, and its bookkeeping. The slot is freed before the
    /// loop is woken.
    async fn deliver(self, job: LeasedDelivery, shutdown: CancellationToken, slot: Slot) {
        let mut delivery = job.delivery.clone();
        let result = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                delivery.next_attempt_at = Some(now());
                self.settle(&job, &delivery).await;
                return;
            }
            result = self.attempt(&delivery) => result,
        };
        delivery.attempts += 1;
        let finished = now();
        let outcome = match result {
            Ok(status) => {
                delivery.state = DeliveryState::Delivered;
                delivery.last_status = Some(status);
                delivery.last_error = None;
                delivery.next_attempt_at = None;
                delivery.finished_at = Some(finished);
                debug!(webhook_id = %delivery.webhook_id, event_id = %delivery.event_id, attempts = delivery.attempts, "webhook delivered");
                "delivered"
            }
            Err(Failure { status, error }) => {
                delivery.last_status = status;
                delivery.last_error = Some(error);
                let policy = RetryPolicy::new(&self.inner.config);
                delivery.next_attempt_at = policy.next_attempt(
                    delivery.created_at,
                    delivery.attempts,
                    finished,
                    random_unit(),
                );
                if delivery.next_attempt_at.is_some() {
                    info!(webhook_id = %delivery.webhook_id, event_id = %delivery.event_id, attempts = delivery.attempts, "webhook delivery failed, will retry: {}", delivery.last_error.as_deref().unwrap_or(""));
                    "retry"
                } else {
                    delivery.state = DeliveryState::Failed;
                    delivery.finished_at = Some(finished);
                    warn!(webhook_id = %delivery.webhook_id, event_id = %delivery.event_id, attempts = delivery.attempts, "webhook delivery given up after max_age_s: {}", delivery.last_error.as_deref().unwrap_or(""));
                    "failed"
                }
            }
        };
        self.settle(&job, &delivery).await;
        self.inner
            .metrics
            .webhook_attempt(&delivery.event_type, outcome);
        drop(slot);
        self.inner.wake.notify_one();
    }

    /// Signs and POSTs `delivery` to its endpoint.
    async fn attempt(&self, delivery: &crate::store::Delivery) -> Result<u16, Failure> {
        let failure = |error: &str| Failure {
            status: None,
            error: error.to_string(),
        };
        let endpoint = match self
            .inner
            .store
            .webhook_endpoint(&delivery.webhook_id)
            .await
        {
            Ok(Some(endpoint)) => endpoint,
            // Removed while leased: settling will not bring the delivery back.
            Ok(None) => return Err(failure("the webhook was deleted")),
            Err(e) => return Err(failure(&format!("storage error: {e}"))),
        };
        let context = secret_context(&endpoint.webhook_id);
        let secret = self
            .inner
            .cipher
            .open(&endpoint.secret_sealed, &context)
            .map_err(|e| {
                error!(webhook_id = %endpoint.webhook_id, "cannot unseal the signing secret: {e}");
                failure("the signing secret cannot be unsealed (credential key changed?)")
            })?;
        let timestamp = now().unix_timestamp();
        let signature = signer::sign(
            secret.expose().as_bytes(),
            timestamp,
            delivery.body.as_bytes(),
        );
        let attempt = Attempt {
            url: &endpoint.url,
            body: &delivery.body,
            event_id: &delivery.event_id,
            event_type: &delivery.event_type,
            delivery_id: &delivery.delivery_id(),
            number: delivery.attempts + 1,
            signature,
        };
        client::post(&self.inner.client, &self.inner.targets, attempt).await
    }

    async fn settle(&self, job: &LeasedDelivery, delivery: &crate::store::Delivery) {
        if let Err(e) = self.inner.store.settle_delivery(job, delivery).await {
            // The lease expires and the delivery is attempted again: at-least-once holds.
            error!(webhook_id = %delivery.webhook_id, event_id = %delivery.event_id, "cannot store a webhook delivery's result: {e}");
        }
    }

    /// Trims every endpoint's log to `deliveries_kept` finished deliveries.
    async fn prune(&self) {
        let keep = self.inner.config.deliveries_kept;
        let endpoints = match self.inner.store.webhook_endpoints().await {
            Ok(list) => list,
            Err(e) => return warn!("cannot list webhooks to trim their logs: {e}"),
        };
        for endpoint in endpoints {
            match self
                .inner
                .store
                .prune_webhook_deliveries(&endpoint.webhook_id, keep)
                .await
            {
                Ok(0) => {}
                Ok(n) => {
                    debug!(webhook_id = %endpoint.webhook_id, removed = n, "trimmed the delivery log")
                }
                Err(e) => {
                    warn!(webhook_id = %endpoint.webhook_id, "cannot trim the delivery log: {e}")
                }
            }
        }
    }
}
