//! Durable state. [`Store`] (`seam`) is the asynchronous API every other layer calls;
//! [`SledStore`] is its embedded backend: sled in `<data_dir>/db`, one tree per table
//! (`keys`, `tokens`, `agents`, `allocations`, `commands`, `audit`, `webhooks`,
//! `rotations`, `usage`, `probes`), values in JSON. Writes the API confirms to a caller are flushed
//! before the answer goes out, and so is every state change the plane must find again
//! after `kill -9` (allocations, agents, keys, pending commands). Only hashes of API keys
//! and enrollment tokens are stored.
mod agents;
mod allocation_record;
mod allocations;
mod audit;
mod audit_page;
mod audit_prune;
mod commands;
mod durable;
mod erase;
mod forget;
mod keys;
mod live;
pub mod pg;
mod probes;
mod retention_queue;
mod rotations;
mod seam;
mod seller;
mod tokens;
mod usage;
mod usage_days;
mod webhooks;

pub use agents::AgentRecord;
pub use allocation_record::{
    AllocationPage, AllocationRecord, AllocationRequest, AllocationState, Expected, InsertOutcome,
    ReleaseReason, Replacement, ReplacementReason,
};
pub(crate) use allocations::tenant_key;
pub use audit::{AuditAction, AuditEvent};
pub use audit_page::{AuditCursor, AuditEntry, AuditPage, InvalidCursor};
pub use commands::PendingCommand;
pub use erase::{EraseError, Erased};
pub(crate) use forget::clear_detail;
pub(crate) use keys::key_id;
pub use keys::{valid_tenant, ApiKeyRecord, KeyInfo, Role, DEFAULT_TENANT};
pub use probes::{AgentHour, ProbeRecord, ProbeTrack, QualityHour, LATENCY_BUCKETS};
pub(crate) use retention_queue::from_ms;
pub use retention_queue::{Queued, RetentionKind};
pub use rotations::RotationRecord;
pub use seam::Store;
pub use seller::SellerRecords;
pub(crate) use seller::{audit_names, served_by};
pub(crate) use tokens::token_id;
pub use tokens::{valid_label, EnrollError, TokenRecord};
pub use usage::{UsageRecorded, UsageTotals};
pub(crate) use usage_days::day_of;
pub use usage_days::ModemDay;
pub use webhooks::{Delivery, DeliveryState, Lease, LeasedDelivery, WebhookEndpoint};

use ring::digest::{digest, SHA256};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// A row as stored: key and value bytes.
pub type RawRow = (Vec<u8>, Vec<u8>);

/// Why storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually a running control plane) holds the database lock.
    #[error("the database at {path} is locked: the control plane is running: stop it first")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// sled failed (I/O, corruption).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// The database could not be reached (PostgreSQL down or restarting, or no
    /// connection free in time).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database refused a statement.
    #[error("database error: {0}")]
    Database(String),
    /// A stored value could not be decoded.
    #[error("stored value is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// The sled backend of [`Store`]; cheap to clone (sled trees are reference-counted).
#[derive(Clone, Debug)]
pub struct SledStore {
    db: sled::Db,
    keys: sled::Tree,
    /// API-key hash → when it last authenticated a request (see `keys`).
    key_usage: sled::Tree,
    tokens: sled::Tree,
    agents: sled::Tree,
    allocations: sled::Tree,
    orders: sled::Tree,
    /// IMEI → the agent an admin named its owner (duplicate identities).
    modem_owners: sled::Tree,
    /// Tenant, creation time, allocation id → nothing: paging (see `allocations`).
    by_tenant: sled::Tree,
    commands: sled::Tree,
    audit: sled::Tree,
    /// IMEI → the modem's last IP rotation, mirrored in memory (see `rotations`).
    rotations: Arc<rotations::Rotations>,
    /// `<allocation_id>/<agent_id>` → traffic totals (see `usage`).
    usage: sled::Tree,
    /// `<agent_id>/<IMEI>/<day>` → traffic that day (see `usage_days`).
    usage_days: sled::Tree,
    /// The last audit key handed out (see `audit`).
    audit_last: Arc<AtomicU64>,
    /// Live allocations by agent and by expiry (see `live`).
    live: Arc<live::LiveIndex>,
    /// The group-commit flusher behind `flush` and `durable` (see `durable`).
    commit: Arc<durable::GroupCommit>,
    /// Webhook endpoints, deliveries (log and outbox), their schedule, and expiry warnings
    /// sent (see `webhooks`).
    webhooks: Arc<webhooks::Trees>,
    /// Records by retention window start (see `retention_queue`).
    retention_queue: sled::Tree,
    /// Probe records and quality hours (see `probes`).
    probes: Arc<probes::Trees>,
}

impl SledStore {
    /// The names of the tables (sled trees) this store keeps: what `docs/privacy.md` maps.
    /// The default tree counts as `default` when it holds anything.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .filter(|n| n != "__sled__default")
            .collect();
        if !self.db.is_empty() {
            names.push("default".into());
        }
        names
    }

    /// The tables with `needle` in a key or a value (privacy tests: where a piece of data
    /// ended up). Reads every row.
    pub fn tables_containing(&self, needle: &[u8]) -> Result<Vec<String>, StoreError> {
        let has = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        let mut found = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            for row in tree.iter() {
                let (key, value) = row?;
                if has(&key) || has(&value) {
                    found.push(String::from_utf8_lossy(&name).into_owned());
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Every row of table `name`, in key order, as stored (`pg::copy` reads the whole store
    /// this way). An unknown name reads as an empty table.
    pub fn raw_rows(&self, name: &str) -> Result<Vec<RawRow>, StoreError> {
        let exists = self
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes());
        if !exists {
            return Ok(Vec::new());
        }
        let tree = self.db.open_tree(name)?;
        tree.iter()
            .map(|row| {
                let (k, v) = row?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// How many rows table `name` holds (tests: what a deletion left behind).
    #[cfg(test)]
    pub(crate) fn rows(&self, name: &str) -> usize {
        self.db.open_tree(name).map_or(0, |t| t.len())
    }

    /// Opens (or creates) the database in `<data_dir>/db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("db");
        let deadline = std::time::Instant::now() + LOCK_RETRY;
        let db = loop {
            match sled::open(&path).map_err(|e| classify_open_error(e, &path)) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => break opened?,
            }
        };
        let audit = db.open_tree("audit")?;
        let allocations = db.open_tree("allocations")?;
        let store = SledStore {
            live: Arc::new(live::LiveIndex::build(&allocations)?),
            commit: Arc::new(durable::GroupCommit::start(db.clone()).map_err(sled::Error::Io)?),
            audit_last: Arc::new(AtomicU64::new(audit::last_key(&audit)?)),
            audit,
            keys: db.open_tree("api_keys")?,
            key_usage: db.open_tree("api_key_usage")?,
            tokens: db.open_tree("enrollment_tokens")?,
            agents: db.open_tree("agents")?,
            allocations,
            orders: db.open_tree("allocation_orders")?,
            modem_owners: db.open_tree("modem_owners")?,
            by_tenant: db.open_tree("allocations_by_tenant")?,
            commands: db.open_tree("pending_commands")?,
            rotations: Arc::new(rotations::Rotations::open(&db)?),
            usage: db.open_tree("allocation_usage")?,
            usage_days: db.open_tree("modem_usage_days")?,
            webhooks: Arc::new(webhooks::Trees::open(&db)?),
            retention_queue: db.open_tree("retention_queue")?,
            probes: Arc::new(probes::Trees::open(&db)?),
            db,
        };
        store.index_tenants()?;
        store.backfill_retention()?;
        Ok(store)
    }

    /// Forces every write so far to disk, blocking: concurrent callers share one flush
    /// (group commit, see `durable`), and on a multi-threaded runtime the worker's other
    /// tasks move to another thread meanwhile.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.commit.wait_blocking()?;
        Ok(())
    }

    /// Forces every write so far to disk without blocking the caller's thread (group
    /// commit, see `durable`).
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.commit.wait().await?;
        Ok(())
    }
}

/// sled reports a held lock as a generic I/O error; recognise it so the operator is told
/// what to do instead of reading an errno.
/// How long `open` retries a held lock before reporting it. sled unlocks the database when
/// its last I/O thread lets go of the file, which can be a moment after the previous handle
/// in this process was dropped (an in-process restart; a test reopening its store).
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

fn classify_open_error(e: sled::Error, path: &Path) -> StoreError {
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        _ => StoreError::Sled(e),
    }
}

/// SHA-256 of a secret; the only form in which keys and tokens are stored.
pub(crate) fn secret_hash(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// A short public name for a secret (the first 48 bits of its SHA-256 in hex): lets the
/// audit log tie "token issued" to "token used" without revealing the token.
pub fn fingerprint(secret: &str) -> String {
    crate::ids::hex(&secret_hash(secret)[..6])
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(value)?)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// What `read` finds for each of `ids`, by id (one page's worth of single reads on sled).
fn each_found<T>(
    ids: &[String],
    mut read: impl FnMut(&str) -> Result<Option<T>, StoreError>,
) -> Result<std::collections::HashMap<String, T>, StoreError> {
    let mut found = std::collections::HashMap::new();
    for id in ids {
        if let Some(value) = read(id)? {
            found.insert(id.clone(), value);
        }
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every byte of every file under `dir` (for "this secret is stored nowhere" checks).
    pub(crate) fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(all_bytes(&path));
            } else {
                out.extend(std::fs::read(&path).unwrap());
            }
        }
        out
    }

    #[test]
    fn a_second_open_reports_the_lock_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        assert!(err.to_string().contains("stop it first"));
    }

    #[test]
    fn an_open_waits_out_a_lock_that_is_being_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path()).unwrap();
        // The first handle goes while the second open is (very likely) already retrying.
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = SledStore::open(dir.path());
        holder.join().unwrap();
        assert!(second.is_ok(), "{:?}", second.err());
    }
}
