//! The webhook tables (the logic lives in `crate::webhooks`):
//! - `webhook_endpoints`: webhook id → [`WebhookEndpoint`], its signing secret sealed;
//! - `webhook_deliveries`: `<webhook_id>/<seq, 8 bytes BE>` → [`Delivery`]: ONE record per
//!   event and endpoint that is both the outbox entry (while `pending`) and the endpoint's
//!   delivery log (newest first is a reverse prefix scan);
//! - `webhook_due`: `<due unix ms, 8 bytes BE><delivery key>` → empty: when each pending
//!   delivery is next attempted, earliest first. A delivery being attempted is *leased*:
//!   its entry moves to when the attempt is given up for lost, so nothing else picks it
//!   meanwhile; leases left by a crash are released when the deliverer starts;
//! - `webhook_expiring`: allocation id → the `expires_at` (unix ms BE) for which
//!   `allocation.expiring` was emitted (so it is emitted once per expiry value).
//!
//! An event's deliveries and their schedule entries are written in one transaction. A
//! removed endpoint's schedule entries are not searched for: the deliverer drops an entry
//! whose delivery is gone when it comes due.

use super::{decode, encode, SledStore, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};
use std::fmt;
use time::OffsetDateTime;

/// The webhook trees.
#[derive(Debug, Clone)]
pub(super) struct Trees {
    endpoints: sled::Tree,
    pub(super) deliveries: sled::Tree,
    pub(super) due: sled::Tree,
    pub(super) expiring: sled::Tree,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Trees {
            endpoints: db.open_tree("webhook_endpoints")?,
            deliveries: db.open_tree("webhook_deliveries")?,
            due: db.open_tree("webhook_due")?,
            expiring: db.open_tree("webhook_expiring")?,
        })
    }
}

/// A registered webhook endpoint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Its id (`wh_…`).
    pub webhook_id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event types it receives (`*` = all).
    pub events: Vec<String>,
    /// The signing secret, sealed with the credential key (see `credentials`).
    pub secret_sealed: String,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The marketplace tenant it serves: its allocation events only, and modem events
    /// (`None`: an operator's endpoint, which gets every event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("webhook_id", &self.webhook_id)
            .field("events", &self.events)
            .field("secret_sealed", &"***")
            .finish_non_exhaustive()
    }
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; attempted at `next_attempt_at`.
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Given up after `max_age_s`.
    Failed,
}

impl DeliveryState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One event for one endpoint: outbox entry and delivery-log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique, increasing (sled's id generator): orders the log.
    pub seq: u64,
    /// The endpoint.
    pub webhook_id: String,
    /// The event's id (the same for every endpoint).
    pub event_id: String,
    /// The event's type (`allocation.active`, …).
    pub event_type: String,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it is attempted next (pending only).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was delivered or given up.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// HTTP status of the last attempt, if one was received.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The exact JSON body sent (signed as is).
    pub body: String,
}

impl Delivery {
    /// The id the API shows (`dl_` + the sequence number in hex).
    pub fn delivery_id(&self) -> String {
        format!("dl_{:016x}", self.seq)
    }

    fn key(&self) -> Vec<u8> {
        let mut key = prefix(&self.webhook_id);
        key.extend_from_slice(&self.seq.to_be_bytes());
        key
    }
}

/// What [`SledStore::lease_due_delivery`] found.
#[derive(Debug)]
pub enum Lease {
    /// A due delivery, now leased.
    Taken(Box<LeasedDelivery>),
    /// Nothing is due yet.
    NothingDue,
    /// Deliveries are due, but none that `accept` allows (or the scan limit was reached).
    Blocked,
}

/// A delivery taken for an attempt, with its lease in the schedule.
#[derive(Debug)]
pub struct LeasedDelivery {
    /// The delivery as stored when it was leased.
    pub delivery: Delivery,
    /// The backend's handle on the lease (sled: its schedule key).
    pub(crate) lease: Vec<u8>,
}

fn prefix(webhook_id: &str) -> Vec<u8> {
    format!("{webhook_id}/").into_bytes()
}

fn due_key(at_ms: u64, delivery_key: &[u8]) -> Vec<u8> {
    let mut key = at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(delivery_key);
    key
}

fn due_ms(delivery: &Delivery) -> u64 {
    delivery.next_attempt_at.map_or(0, crate::ids::unix_ms)
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// The rows of `deliveries`: (schedule key, delivery key, record).
pub(super) type DeliveryRow = (Vec<u8>, Vec<u8>, Vec<u8>);

pub(super) fn delivery_rows(deliveries: &[Delivery]) -> Result<Vec<DeliveryRow>, StoreError> {
    let mut rows = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let key = delivery.key();
        rows.push((due_key(due_ms(delivery), &key), key, encode(delivery)?));
    }
    Ok(rows)
}

pub(super) fn settled<T>(result: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    match result {
        Ok(value) => Ok(value),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

impl SledStore {
    /// Every registered endpoint.
    pub fn webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        self.webhooks
            .endpoints
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// One endpoint.
    pub fn webhook_endpoint(
        &self,
        webhook_id: &str,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        match self.webhooks.endpoints.get(webhook_id.as_bytes())? {
            Some(raw) => Ok(Some(decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// Stores (or overwrites) an endpoint; flushed.
    pub fn put_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        self.webhooks
            .endpoints
            .insert(endpoint.webhook_id.as_bytes(), encode(endpoint)?)?;
        self.flush()
    }

    /// Removes an endpoint and its deliveries (pending ones are never sent); `false` when
    /// there was no such endpoint. Flushed.
    pub fn remove_webhook_endpoint(&self, webhook_id: &str) -> Result<bool, StoreError> {
        if self
            .webhooks
            .endpoints
            .remove(webhook_id.as_bytes())?
            .is_none()
        {
            return Ok(false);
        }
        for key in self
            .webhooks
            .deliveries
            .scan_prefix(prefix(webhook_id))
            .keys()
        {
            self.webhooks.deliveries.remove(key?)?;
        }
        self.flush()?;
        Ok(true)
    }

    /// A new delivery sequence number (unique and increasing across restarts).
    pub fn next_delivery_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Stores pending deliveries and schedules each at its `next_attempt_at`, all in one
    /// transaction. Not flushed here: the deliverer flushes before it sends (see
    /// `webhooks`), so a burst of events shares one fsync.
    pub fn enqueue_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let rows = delivery_rows(deliveries)?;
        let trees = (&self.webhooks.deliveries, &self.webhooks.due);
        settled(trees.transaction(|(log, due)| -> TxResult {
            for (due_at, key, value) in &rows {
                log.insert(key.as_slice(), value.as_slice())?;
                due.insert(due_at.as_slice(), IVec::default())?;
            }
            Ok(())
        }))?;
        self.queue_delivery_retention(deliveries)
    }

    /// Starts the retention windows of stored `deliveries`.
    pub(super) fn queue_delivery_retention(
        &self,
        deliveries: &[Delivery],
    ) -> Result<(), StoreError> {
        for delivery in deliveries {
            let kind = super::RetentionKind::WebhookDelivery;
            self.queue_retention(kind, delivery.created_at, &delivery.key())?;
        }
        Ok(())
    }

    /// When the earliest pending delivery is due (unix ms), if any.
    pub fn next_webhook_due(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.webhooks.due.first()?.and_then(|(key, _)| be_u64(&key)))
    }

    /// Takes the earliest delivery due at or before `now_ms` whose endpoint `accept`s
    /// another attempt (see `webhooks::deliverer`: a per-endpoint cap) and leases it until
    /// `lease_ms`. At most `scan` due entries are looked at. Schedule entries whose
    /// delivery is gone (its endpoint was removed) are dropped on the way.
    pub fn lease_due_delivery(
        &self,
        now_ms: u64,
        lease_ms: u64,
        scan: usize,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Lease, StoreError> {
        let mut skipped = false;
        for entry in self.webhooks.due.iter().keys().take(scan) {
            let key = entry?;
            if be_u64(&key).is_none_or(|at| at > now_ms) {
                return Ok(if skipped {
                    Lease::Blocked
                } else {
                    Lease::NothingDue
                });
            }
            let delivery_key = key.get(8..).unwrap_or_default().to_vec();
            let webhook_id = delivery_key
                .len()
                .checked_sub(9)
                .and_then(|end| std::str::from_utf8(&delivery_key[..end]).ok())
                .unwrap_or_default();
            if !accept(webhook_id) {
                skipped = true;
                continue;
            }
            let Some(raw) = self.webhooks.deliveries.get(&delivery_key)? else {
                self.webhooks.due.remove(&key)?;
                continue;
            };
            let delivery: Delivery = decode(&raw)?;
            let lease = due_key(lease_ms, &delivery_key);
            settled(self.webhooks.due.transaction(|due| -> TxResult {
                due.remove(&key)?;
                due.insert(lease.as_slice(), IVec::default())?;
                Ok(())
            }))?;
            return Ok(Lease::Taken(Box::new(LeasedDelivery { delivery, lease })));
        }
        Ok(if skipped {
            Lease::Blocked
        } else {
            Lease::NothingDue
        })
    }

    /// Returns every leased delivery to its own schedule (`next_attempt_at`): called when
    /// the deliverer starts, when no attempt can be in flight, so deliveries cut short by
    /// a crash are retried at once instead of when their lease would have run out.
    /// Returns how many were released.
    pub fn release_webhook_leases(&self) -> Result<usize, StoreError> {
        let mut released = 0;
        for entry in self.webhooks.due.iter().keys() {
            let key = entry?;
            let delivery_key = key.get(8..).unwrap_or_default().to_vec();
            let Some(raw) = self.webhooks.deliveries.get(&delivery_key)? else {
                self.webhooks.due.remove(&key)?;
                continue;
            };
            let delivery: Delivery = decode(&raw)?;
            let scheduled = due_key(due_ms(&delivery), &delivery_key);
            if scheduled.as_slice() == key.as_ref() {
                continue;
            }
            settled(self.webhooks.due.transaction(|due| -> TxResult {
                due.remove(&key)?;
                due.insert(scheduled.as_slice(), IVec::default())?;
                Ok(())
            }))?;
            released += 1;
        }
        Ok(released)
    }

    /// Ends a lease with the attempt's result: `delivery` is stored and, while it is still
    /// pending, scheduled at its `next_attempt_at`. A delivery whose endpoint was removed
    /// meanwhile is not brought back.
    pub fn settle_delivery(
        &self,
        leased: &LeasedDelivery,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let key = delivery.key();
        let value = encode(delivery)?;
        let next =
            (delivery.state == DeliveryState::Pending).then(|| due_key(due_ms(delivery), &key));
        let trees = (&self.webhooks.deliveries, &self.webhooks.due);
        settled(trees.transaction(|(log, due)| -> TxResult {
            due.remove(leased.lease.as_slice())?;
            if log.get(key.as_slice())?.is_none() {
                return Ok(());
            }
            log.insert(key.as_slice(), value.as_slice())?;
            if let Some(next) = &next {
                due.insert(next.as_slice(), IVec::default())?;
            }
            Ok(())
        }))
    }

    /// Up to `limit` deliveries of an endpoint, newest first.
    pub fn webhook_deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.webhooks
            .deliveries
            .scan_prefix(prefix(webhook_id))
            .values()
            .rev()
            .take(limit)
            .map(|v| decode(&v?))
            .collect()
    }

    /// Deletes an endpoint's finished deliveries beyond the newest `keep`; pending ones
    /// always stay. Returns how many went.
    pub fn prune_webhook_deliveries(
        &self,
        webhook_id: &str,
        keep: usize,
    ) -> Result<usize, StoreError> {
        let mut kept = 0;
        let mut removed = 0;
        for entry in self
            .webhooks
            .deliveries
            .scan_prefix(prefix(webhook_id))
            .rev()
        {
            let (key, raw) = entry?;
            let delivery: Delivery = decode(&raw)?;
            if delivery.state == DeliveryState::Pending {
                continue;
            }
            kept += 1;
            if kept > keep {
                self.webhooks.deliveries.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deliveries waiting for an attempt (or in one), all endpoints together.
    pub fn pending_webhook_deliveries(&self) -> usize {
        self.webhooks.due.len()
    }

    /// The `expires_at` (unix ms) `allocation.expiring` was emitted for, if any.
    pub fn expiring_sent(&self, allocation_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .webhooks
            .expiring
            .get(allocation_id.as_bytes())?
            .and_then(|v| be_u64(&v)))
    }

    /// Records that `allocation.expiring` was emitted for this `expires_at` (unix ms).
    pub fn mark_expiring_sent(
        &self,
        allocation_id: &str,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.webhooks
            .expiring
            .insert(allocation_id.as_bytes(), &expires_at_ms.to_be_bytes())?;
        Ok(())
    }

    /// Forgets the expiry warning of an allocation that ended.
    pub fn forget_expiring(&self, allocation_id: &str) -> Result<(), StoreError> {
        self.webhooks.expiring.remove(allocation_id.as_bytes())?;
        Ok(())
    }

    /// Forces emitted events to disk without blocking the runtime.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.durable().await?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "webhooks_tests.rs"]
mod tests;
