//! The allocation table (allocation id → record) and its order index (order id → the
//! allocation currently holding that order). A new allocation and its index entry are
//! written in one transaction, so one order id never gets two live allocations.

use super::{decode, encode, Store, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{abort, ConflictableTransactionError, TransactionError};
use sled::Transactional;
use time::OffsetDateTime;

/// Lifecycle of an allocation: `pending → active → releasing → released`, `pending → failed`,
/// `active → failed` (a lost port could not be re-created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationState {
    /// Provision sent, not yet confirmed.
    Pending,
    /// The agent confirmed the port.
    Active,
    /// Release requested, not yet confirmed by the agent.
    Releasing,
    /// The port is gone.
    Released,
    /// Provisioning failed, or a lost port could not be re-created; no port exists (a late
    /// one is released).
    Failed,
}

impl AllocationState {
    /// Every state, for metrics.
    pub const ALL: [AllocationState; 5] = [
        Self::Pending,
        Self::Active,
        Self::Releasing,
        Self::Released,
        Self::Failed,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Releasing => "releasing",
            Self::Released => "released",
            Self::Failed => "failed",
        }
    }

    /// Whether a port may exist on the modem (it counts against the modem's capacity).
    pub fn holds_port(self) -> bool {
        matches!(self, Self::Pending | Self::Active | Self::Releasing)
    }
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The marketplace released it.
    Cancelled,
    /// Its lifetime ended.
    Expired,
    /// Its agent was revoked.
    AgentRevoked,
    /// It was replaced by another allocation.
    Replaced,
    /// Provisioning failed.
    Failed,
}

/// The request that created an allocation, normalised; compared for idempotency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationRequest {
    /// The marketplace's idempotency key.
    pub order_id: String,
    /// Lifetime in seconds.
    pub duration_s: u64,
    /// ISO 3166-1 alpha-2 filter.
    #[serde(default)]
    pub country: Option<String>,
    /// Carrier filter (case-insensitive).
    #[serde(default)]
    pub carrier: Option<String>,
    /// IMEI filter.
    #[serde(default)]
    pub imei: Option<String>,
}

/// One allocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// Its id.
    pub allocation_id: String,
    /// The marketplace's order id.
    pub order_id: String,
    /// Where it is in its lifecycle.
    pub state: AllocationState,
    /// The modem.
    pub imei: String,
    /// The agent of the modem.
    pub agent_id: String,
    /// The modem's carrier when it was chosen.
    pub carrier: Option<String>,
    /// The site's country.
    pub country: Option<String>,
    /// Where buyers connect (set when active).
    pub host: Option<String>,
    /// HTTP proxy port (set when active).
    pub http_port: Option<u16>,
    /// SOCKS5 proxy port (set when active).
    pub socks_port: Option<u16>,
    /// ProxySmart's port id (set when active).
    pub port_id: Option<String>,
    /// The buyer's proxy login.
    pub login: String,
    /// The buyer's proxy password, sealed with AES-256-GCM (see `credentials`); `None`
    /// once the retention period after release has passed (see `retention`).
    pub password_sealed: Option<String>,
    /// When it was requested.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the port stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When the agent confirmed the port gone.
    #[serde(with = "time::serde::rfc3339::option")]
    pub released_at: Option<OffsetDateTime>,
    /// Why it ended (set when release starts or provisioning fails).
    pub release_reason: Option<ReleaseReason>,
    /// Why provisioning failed, for operators.
    pub failure: Option<String>,
    /// The normalised request, for idempotency checks.
    pub request: AllocationRequest,
}

impl AllocationRecord {
    /// When the allocation ended — released, or failed (a provisioning failure ends where
    /// it began; a failed repair when it failed) — which is when its credential retention
    /// period starts; `None` while live.
    pub fn ended_at(&self) -> Option<OffsetDateTime> {
        match self.state {
            AllocationState::Released | AllocationState::Failed => {
                Some(self.released_at.unwrap_or(self.created_at))
            }
            _ => None,
        }
    }
}

/// Result of inserting a new allocation.
#[derive(Debug)]
pub enum InsertOutcome {
    /// Stored, with its order index entry.
    Inserted,
    /// The order id already has a live (not failed) allocation: this one.
    Existing(Box<AllocationRecord>),
}

impl Store {
    /// Inserts a new allocation unless its order id already has a live one; flushes.
    pub fn insert_allocation(
        &self,
        record: &AllocationRecord,
    ) -> Result<InsertOutcome, StoreError> {
        let value = encode(record)?;
        let order_key = record.order_id.as_bytes();
        let result = (&self.allocations, &self.orders).transaction(|(allocations, orders)| {
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
            Ok::<_, ConflictableTransactionError<StoreError>>(InsertOutcome::Inserted)
        });
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        };
        self.flush()?;
        Ok(outcome)
    }

    /// Overwrites an existing allocation (a state change) and flushes.
    pub fn put_allocation(&self, record: &AllocationRecord) -> Result<(), StoreError> {
        self.allocations
            .insert(record.allocation_id.as_bytes(), encode(record)?)?;
        self.flush()
    }

    /// Deletes the sealed password of an ended allocation, keeping every other field;
    /// `false` when there was nothing to purge. Compare-and-swap, so a concurrent write to
    /// the record is never lost.
    pub fn purge_credentials(&self, allocation_id: &str) -> Result<bool, StoreError> {
        let key = allocation_id.as_bytes();
        loop {
            let Some(old) = self.allocations.get(key)? else {
                return Ok(false);
            };
            let mut record: AllocationRecord = decode(&old)?;
            if record.ended_at().is_none() || record.password_sealed.is_none() {
                return Ok(false);
            }
            record.password_sealed = None;
            let swapped =
                self.allocations
                    .compare_and_swap(key, Some(old), Some(encode(&record)?))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(true);
            }
        }
    }

    /// One allocation.
    pub fn allocation(&self, allocation_id: &str) -> Result<Option<AllocationRecord>, StoreError> {
        self.allocations
            .get(allocation_id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// The allocation currently holding `order_id` (the latest attempt).
    pub fn allocation_by_order(
        &self,
        order_id: &str,
    ) -> Result<Option<AllocationRecord>, StoreError> {
        match self.orders.get(order_id.as_bytes())? {
            Some(id) => self.allocations.get(id)?.map(|v| decode(&v)).transpose(),
            None => Ok(None),
        }
    }

    /// Every allocation for which `keep` is true.
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
