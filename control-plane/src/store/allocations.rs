//! The allocation table (allocation id → record), its order index (tenant and order id →
//! the allocation currently holding that order) and its tenant index (tenant, creation
//! time, id → nothing: the tenant's allocations oldest first, for paging). A new
//! allocation and its index entries are written in one transaction, so one order id never
//! gets two live allocations. Order ids are per tenant: two marketplaces may use the same
//! one. The default tenant's order keys are the bare order id, as before tenants existed.

use super::{
    decode, encode, AllocationPage, AllocationRecord, AllocationState, Expected, InsertOutcome,
    SledStore, StoreError, DEFAULT_TENANT,
};
use farmhand_protocol::DesiredPort;
use serde::Deserialize;
use sled::transaction::{abort, ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;

impl SledStore {
    /// Inserts a new allocation unless its order id already has a live one. **Not
    /// flushed**: a `pending` record needs no durability of its own — after a crash a
    /// pending allocation is failed anyway, and if the record itself was lost its port (if
    /// the agent made one) is an orphan the agent's next `reconcile` removes; the caller
    /// never got a 201. It becomes durable with its next state change's flush.
    pub fn insert_allocation(
        &self,
        record: &AllocationRecord,
    ) -> Result<InsertOutcome, StoreError> {
        let value = encode(record)?;
        let order_key = order_key(&record.tenant, &record.order_id);
        let order_key = order_key.as_slice();
        let tenant_key = tenant_key(record);
        let mut live = self.live.lock();
        let trees = (&self.allocations, &self.orders, &self.by_tenant);
        let result = trees.transaction(|(allocations, orders, by_tenant)| {
            if let Some(existing_id) = orders.get(order_key)? {
                if let Some(raw) = allocations.get(&existing_id)? {
                    let existing: AllocationRecord = decode(&raw).or_else(abort)?;
                    // A failed attempt holds no port, so the order may be tried again.
                    if existing.state != AllocationState::Failed {
                        return Ok(InsertOutcome::Existing(Box::new(existing)));
                    }
                }
            }
            allocations.insert(record.allocation_id.as_bytes(), value.as_slice())?;
            orders.insert(order_key, record.allocation_id.as_bytes())?;
            by_tenant.insert(tenant_key.as_slice(), &[])?;
            Ok::<_, ConflictableTransactionError<StoreError>>(InsertOutcome::Inserted)
        });
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        };
        if matches!(outcome, InsertOutcome::Inserted) {
            live.note(record);
            live.counted(None, record.state);
        }
        Ok(outcome)
    }

    /// Overwrites an existing allocation (a state change) and flushes (blocking; see
    /// `SledStore::flush`).
    pub fn put_allocation(&self, record: &AllocationRecord) -> Result<(), StoreError> {
        self.write_allocation(record)?;
        self.flush()
    }

    /// Like [`SledStore::put_allocation`], awaiting the flush instead of blocking a thread.
    pub async fn save_allocation(&self, record: &AllocationRecord) -> Result<(), StoreError> {
        self.write_allocation(record)?;
        self.durable().await
    }

    /// [`SledStore::save_allocation`] with the webhook deliveries of the event reporting
    /// the change, in one transaction (flushed together: a change that reached the disk
    /// has its deliveries there too) — and, given `from`, only if the stored record is
    /// still as it expects (state, expiry and moves; false, writing nothing, when it is not).
    pub async fn save_change(
        &self,
        record: &AllocationRecord,
        from: Option<Expected>,
        deliveries: &[super::Delivery],
    ) -> Result<bool, StoreError> {
        if !self.write_with(record, deliveries, from)? {
            return Ok(false);
        }
        self.durable().await?;
        Ok(true)
    }

    /// Writes `record` and `deliveries` in one transaction (when the stored record is as
    /// `from` expects, if given), with the live index locked. Not flushed.
    fn write_with(
        &self,
        record: &AllocationRecord,
        deliveries: &[super::Delivery],
        from: Option<Expected>,
    ) -> Result<bool, StoreError> {
        let value = encode(record)?;
        let rows = super::webhooks::delivery_rows(deliveries)?;
        let live = self.live.lock();
        if let Some(from) = from {
            let stored = self.allocations.get(record.allocation_id.as_bytes())?;
            if stored.as_deref().and_then(stored_expected) != Some(from) {
                return Ok(false);
            }
        }
        let key = record.allocation_id.as_bytes();
        let previous = if rows.is_empty() {
            // Nothing to write with it: a plain insert, as before events went with changes
            // (a sled transaction over three trees costs more on the hot path).
            self.allocations.insert(key, value)?
        } else {
            let trees = (
                &self.allocations,
                &self.webhooks.deliveries,
                &self.webhooks.due,
            );
            super::webhooks::settled(trees.transaction(|(allocations, log, due)| {
                for (due_at, delivery_key, delivery) in &rows {
                    log.insert(delivery_key.as_slice(), delivery.as_slice())?;
                    due.insert(due_at.as_slice(), sled::IVec::default())?;
                }
                Ok(allocations.insert(key, value.as_slice())?)
            }))?
        };
        self.wrote_allocation(live, record, previous)?;
        self.queue_delivery_retention(deliveries)?;
        Ok(true)
    }

    /// Writes `record` and updates the live index under its lock (see `live`).
    fn write_allocation(&self, record: &AllocationRecord) -> Result<(), StoreError> {
        let value = encode(record)?;
        let live = self.live.lock();
        let previous = self
            .allocations
            .insert(record.allocation_id.as_bytes(), value)?;
        self.wrote_allocation(live, record, previous)
    }

    /// What follows writing `record` over `previous`: its indexes, counts and retention.
    fn wrote_allocation(
        &self,
        mut live: std::sync::MutexGuard<'_, super::live::Live>,
        record: &AllocationRecord,
        previous: Option<sled::IVec>,
    ) -> Result<(), StoreError> {
        if previous.is_none() {
            // Written without `insert_allocation` (tests, repairs): index it too.
            self.by_tenant.insert(tenant_key(record), &[])?;
        }
        let before = previous
            .as_deref()
            .and_then(stored_expected)
            .map(|e| e.state);
        live.note(record);
        live.counted(before, record.state);
        drop(live);
        if !before.is_some_and(|s| matches!(s, AllocationState::Released | AllocationState::Failed))
        {
            // It ends now (or was written ended): its retention windows start.
            self.queue_ended(record)?;
        }
        Ok(())
    }

    /// Rewrites allocation `id` with `change`, which says whether it changed anything;
    /// returns whether a change was written. Compare-and-swap: on a concurrent write
    /// `change` runs again on the newer record, so that write is never lost. For changes
    /// that keep the record's state and modem (the live index is not touched). Not flushed.
    pub(super) fn rewrite_allocation(
        &self,
        allocation_id: &str,
        mut change: impl FnMut(&mut AllocationRecord) -> bool,
    ) -> Result<bool, StoreError> {
        let key = allocation_id.as_bytes();
        loop {
            let Some(old) = self.allocations.get(key)? else {
                return Ok(false);
            };
            let mut record: AllocationRecord = decode(&old)?;
            if !change(&mut record) {
                return Ok(false);
            }
            let new = encode(&record)?;
            if self
                .allocations
                .compare_and_swap(key, Some(old), Some(new))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// Deletes the sealed password of an ended allocation, keeping every other field;
    /// `false` when there was nothing to purge. Not flushed: the retention pass that
    /// calls it ends with one flush for its whole batch.
    pub fn purge_credentials(&self, allocation_id: &str) -> Result<bool, StoreError> {
        self.rewrite_allocation(allocation_id, |record| {
            if record.ended_at().is_none() || record.password_sealed.is_none() {
                return false;
            }
            record.password_sealed = None;
            true
        })
    }

    /// One allocation.
    pub fn allocation(&self, allocation_id: &str) -> Result<Option<AllocationRecord>, StoreError> {
        self.allocations
            .get(allocation_id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// How many allocations are in each state (kept as they change, never a scan).
    pub fn allocation_counts(&self) -> Vec<(AllocationState, u64)> {
        self.live.lock().counts()
    }

    /// Up to `limit` allocations of `tenant` (every tenant: `None`, tenant by tenant) for
    /// which `keep` is true, oldest first, after `cursor`. At most `examine` index entries
    /// are read whatever matches, so a page costs the same however large the table: a page
    /// may come back short (even empty) with a `next_cursor` to go on from.
    pub fn allocations_page(
        &self,
        tenant: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
        examine: usize,
        mut keep: impl FnMut(&AllocationRecord) -> bool,
    ) -> Result<AllocationPage, StoreError> {
        let prefix = tenant
            .map(|t| [t.as_bytes(), b"\0"].concat())
            .unwrap_or_default();
        let start = match cursor {
            Some(c) => std::ops::Bound::Excluded(c.to_vec()),
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let mut records = Vec::new();
        let mut last = None;
        let mut more = false;
        let entries = self.by_tenant.range((start, std::ops::Bound::Unbounded));
        for (examined, entry) in entries.enumerate() {
            let (key, _) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            if records.len() == limit || examined == examine {
                more = true;
                break;
            }
            // Tenant names hold no NUL: the first one ends the tenant; 8 bytes of time follow.
            let id = key
                .iter()
                .position(|b| *b == 0)
                .and_then(|sep| key.get(sep + 9..))
                .unwrap_or_default();
            if let Some(record) = self.allocation(&String::from_utf8_lossy(id))? {
                if keep(&record) {
                    records.push(record);
                }
            }
            last = Some(key);
        }
        let next_cursor = if more {
            last.map(|k| crate::ids::hex(&k))
        } else {
            None
        };
        Ok(AllocationPage {
            records,
            next_cursor,
        })
    }

    /// Builds the tenant index of a database written before it existed (once, at open).
    pub(super) fn index_tenants(&self) -> Result<(), StoreError> {
        if !self.by_tenant.is_empty() || self.allocations.is_empty() {
            return Ok(());
        }
        for value in self.allocations.iter().values() {
            let record: AllocationRecord = decode(&value?)?;
            self.by_tenant.insert(tenant_key(&record), &[])?;
        }
        Ok(())
    }

    /// The allocation of `tenant` currently holding `order_id` (the latest attempt).
    pub fn allocation_by_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Option<AllocationRecord>, StoreError> {
        match self.orders.get(order_key(tenant, order_id))? {
            Some(id) => self.allocations.get(id)?.map(|v| decode(&v)).transpose(),
            None => Ok(None),
        }
    }

    /// The allocations of `agent_id` that hold a port (see `live`) for which `keep` is
    /// true; reads only those records.
    pub fn agent_allocations(
        &self,
        agent_id: &str,
        keep: impl FnMut(&AllocationRecord) -> bool,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        let ids = self.live.lock().of_agent(agent_id);
        self.allocations_by_id(ids, keep)
    }

    /// The ports `agent_id` should have (its `reconcile`): pending and live (active,
    /// replaced) allocations keep theirs; anything else on the box that this agent created
    /// (failed, releasing, released, or moved to another agent) is an orphan. Only this
    /// agent's records in the live index are read.
    pub fn desired_ports(&self, agent_id: &str) -> Result<Vec<DesiredPort>, StoreError> {
        let wanted =
            |a: &AllocationRecord| a.state == AllocationState::Pending || a.state.is_live();
        Ok(self
            .agent_allocations(agent_id, wanted)?
            .into_iter()
            .map(|a| DesiredPort {
                allocation_id: a.allocation_id,
                imei: a.imei,
            })
            .collect())
    }

    /// Every allocation that holds a port (see `live`).
    pub fn live_allocations(&self) -> Result<Vec<AllocationRecord>, StoreError> {
        let ids = self.live.lock().all();
        self.allocations_by_id(ids, |_| true)
    }

    /// The in-service allocations whose `expires_at` is at or before `now`, and the first
    /// `expires_at` after it.
    pub fn expiring(
        &self,
        now: OffsetDateTime,
    ) -> Result<(Vec<AllocationRecord>, Option<OffsetDateTime>), StoreError> {
        let (ids, next) = self.live.lock().expiring(now);
        Ok((self.allocations_by_id(ids, |_| true)?, next))
    }

    fn allocations_by_id(
        &self,
        ids: Vec<String>,
        mut keep: impl FnMut(&AllocationRecord) -> bool,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.allocation(&id)? {
                if keep(&record) {
                    out.push(record);
                }
            }
        }
        Ok(out)
    }

    /// Every allocation for which `keep` is true (a scan of the whole table, ended ones
    /// included: prefer `agent_allocations`, `live_allocations` or `expiring`).
    pub fn allocations_where(
        &self,
        mut keep: impl FnMut(&AllocationRecord) -> bool,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        let mut out = Vec::new();
        for value in self.allocations.iter().values() {
            let record: AllocationRecord = decode(&value?)?;
            if keep(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }
}

/// The order index key of `order_id` in `tenant` (order ids are printable: no NUL).
pub(super) fn order_key(tenant: &str, order_id: &str) -> Vec<u8> {
    if tenant == DEFAULT_TENANT {
        return order_id.as_bytes().to_vec();
    }
    [tenant.as_bytes(), b"\0", order_id.as_bytes()].concat()
}

/// The tenant index key of `record`: tenant, NUL, creation time (big-endian µs), id.
pub(crate) fn tenant_key(record: &AllocationRecord) -> Vec<u8> {
    let micros = u64::try_from(record.created_at.unix_timestamp_nanos() / 1000).unwrap_or(0);
    [
        record.tenant.as_bytes(),
        b"\0",
        &micros.to_be_bytes(),
        record.allocation_id.as_bytes(),
    ]
    .concat()
}

/// The state, expiry and number of moves of a stored record, decoding nothing else.
fn stored_expected(raw: &[u8]) -> Option<Expected> {
    #[derive(Deserialize)]
    struct StateOnly {
        state: AllocationState,
        #[serde(with = "time::serde::rfc3339")]
        expires_at: OffsetDateTime,
        #[serde(default)]
        replacements: Vec<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<StateOnly>(raw)
        .ok()
        .map(|s| Expected {
            state: s.state,
            expires_at: s.expires_at,
            moves: s.replacements.len(),
        })
}
