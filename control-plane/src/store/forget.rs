//! What the end of a retention window does to each kind of record ([`RetentionKind`]):
//! the sweeper (`retention`) calls [`SledStore::forget`] for every queued record that is due.
//! Each action is idempotent (a record already gone or already cleared is a no-op) and
//! written compare-and-swap or in one transaction, so a concurrent write is never lost.
//!
//! An ended allocation's **financial core** — id, order id, tenant, state, agent, carrier
//! and country, times, release reason, the request's terms (duration, limits), the
//! replacement history without IMEIs, and its usage totals — outlives its operational
//! detail, so a marketplace's books stay whole for `financial_days`.

use super::allocations::{order_key, tenant_key};
use super::retention_queue::{from_ms, Queued};
use super::{decode, AllocationRecord, Delivery, DeliveryState, RetentionKind};
use super::{RotationRecord, SledStore, StoreError};
use std::sync::PoisonError;
use time::OffsetDateTime;

impl SledStore {
    /// Applies the end of `kind`'s window to `queued`'s record at `now`; returns whether a
    /// record changed. A record that must outlive its window (a delivery still pending)
    /// is queued again from `now`.
    pub fn forget(
        &self,
        kind: RetentionKind,
        queued: &Queued,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let id = String::from_utf8_lossy(&queued.record);
        match kind {
            RetentionKind::Credentials => self.purge_credentials(&id),
            RetentionKind::AllocationDetail => self.purge_allocation_detail(&id),
            RetentionKind::AllocationRecord => self.delete_ended_allocation(&id),
            RetentionKind::Rotation => self.forget_rotation(&queued.record, queued.started),
            RetentionKind::WebhookDelivery => self.forget_delivery(&queued.record, now),
            RetentionKind::EnrollmentToken => Ok(self.tokens.remove(&queued.record)?.is_some()),
        }
    }

    /// Clears an ended allocation's operational detail, keeping its financial core.
    /// Its probe record goes with it (also when the detail is already gone: a pass that
    /// failed between the two is finished by the next).
    pub fn purge_allocation_detail(&self, allocation_id: &str) -> Result<bool, StoreError> {
        let purged = self.rewrite_allocation(allocation_id, |record| {
            if record.ended_at().is_none() || record.detail_purged {
                return false;
            }
            clear_detail(record);
            true
        })?;
        let gone = purged
            || self
                .allocation(allocation_id)?
                .is_none_or(|r| r.detail_purged);
        if gone {
            self.forget_probe_track(allocation_id)?;
        }
        Ok(purged)
    }

    /// Deletes an ended allocation with its index entries, usage totals, expiry mark and
    /// probe record.
    pub fn delete_ended_allocation(&self, allocation_id: &str) -> Result<bool, StoreError> {
        let key = allocation_id.as_bytes();
        let Some(raw) = self.allocations.get(key)? else {
            return Ok(false);
        };
        let record: AllocationRecord = decode(&raw)?;
        if record.ended_at().is_none() {
            return Ok(false);
        }
        let order = order_key(&record.tenant, &record.order_id);
        let mut live = self.live.lock();
        if self
            .allocations
            .compare_and_swap(key, Some(raw), None::<&[u8]>)?
            .is_err()
        {
            // Written meanwhile: the next pass looks again.
            return Ok(false);
        }
        live.forgotten(record.state);
        drop(live);
        // The order index points at the order's newest attempt; leave a newer one alone.
        let _ = self
            .orders
            .compare_and_swap(&order, Some(key), None::<&[u8]>)?;
        self.by_tenant.remove(tenant_key(&record))?;
        for usage in self.usage.scan_prefix(format!("{allocation_id}/")).keys() {
            self.usage.remove(usage?)?;
        }
        self.forget_expiring(allocation_id)?;
        self.forget_probe_track(allocation_id)?;
        Ok(true)
    }

    /// Deletes the rotation record under `key` if it is still the one from `started` (a
    /// later rotation replaced it and has its own window).
    fn forget_rotation(&self, key: &[u8], started: OffsetDateTime) -> Result<bool, StoreError> {
        let mut last = self
            .rotations
            .last
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(raw) = self.rotations.tree.get(key)? else {
            return Ok(false);
        };
        let stored: RotationRecord = decode(&raw)?;
        if from_ms(stored.at_ms) != started {
            return Ok(false);
        }
        self.rotations.tree.remove(key)?;
        last.remove(String::from_utf8_lossy(key).as_ref());
        Ok(true)
    }

    /// Deletes a finished delivery; a pending one is queued again from `now`.
    fn forget_delivery(&self, key: &[u8], now: OffsetDateTime) -> Result<bool, StoreError> {
        let Some(raw) = self.webhooks.deliveries.get(key)? else {
            return Ok(false);
        };
        let delivery: Delivery = decode(&raw)?;
        if delivery.state == DeliveryState::Pending {
            self.queue_retention(RetentionKind::WebhookDelivery, now, key)?;
            return Ok(false);
        }
        Ok(self
            .webhooks
            .deliveries
            .compare_and_swap(key, Some(raw), None::<&[u8]>)?
            .is_ok())
    }
}

/// Clears what only operating the port needed: which modem, where buyers connected, the
/// login and password, ProxySmart's port id, the failure text.
pub(crate) fn clear_detail(record: &mut AllocationRecord) {
    record.imei.clear();
    record.request.imei = None;
    record.host = None;
    record.http_port = None;
    record.socks_port = None;
    record.port_id = None;
    record.login.clear();
    record.password_sealed = None;
    record.failure = None;
    for moved in &mut record.replacements {
        moved.from_imei.clear();
        moved.to_imei.clear();
    }
    record.detail_purged = true;
}
