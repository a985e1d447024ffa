//! The postgres backend of [`Store`](crate::store::Store), being built table by table
//! (`docs/operations.md`, "PostgreSQL"): each method is one statement or one transaction
//! over the pool, with the same name and meaning as [`SledStore`]'s, and the invariants
//! in the schema (`migrations`) rather than in a lock of this process, so several nodes
//! may share the database. `tests/postgres_store.rs` runs the same scenarios on both
//! backends. What is here today: API keys, enrollment tokens and enrollment, agents and
//! modem owners, modems and their capacity, allocations, rotations, usage, webhook
//! endpoints and deliveries, the command outbox, the audit log, retention, probe records
//! and quality hours, one seller's records (export and erasure), and whole-database reads
//! for the privacy tests.
//!
//! [`SledStore`]: crate::store::SledStore

mod agents;
mod allocations;
mod audit;
mod cache;
mod commands;
mod keys;
mod modems;
mod probes;
mod results;
mod retention;
mod rotations;
mod seller;
mod sessions;
mod statements;
mod tables;
mod tokens;
mod usage;
mod webhooks;

pub use results::{channel, ForeignResult};
pub(crate) use retention::QUEUE_EXISTING;

use crate::store::StoreError;
use deadpool_postgres::{Object, Pool};

/// Handle to the database; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Whether this node holds the sweeping lock (`pg::lock`).
    sweeping: std::sync::Arc<super::lock::Sweeping>,
    /// Keys and webhook endpoints as last read (`cache`).
    cache: std::sync::Arc<cache::Cache>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("connections", &status.size)
            .field("max", &status.max_size)
            .finish()
    }
}

impl PgStore {
    /// The store over `pool`, whose database is migrated (`pg::migrations::migrate`).
    pub fn new(pool: Pool) -> Self {
        PgStore {
            pool,
            sweeping: Default::default(),
            cache: Default::default(),
        }
    }

    /// Keys or webhook endpoints were changed (by another node, or this one: each such
    /// write notifies every node), or this node may have missed word of such a change:
    /// what it kept of them is read again.
    pub fn changed_elsewhere(&self) {
        self.cache.changed();
    }

    /// Whether this node runs the cluster's sweeps now (`pg::lock`).
    pub fn sweeping(&self) -> &super::lock::Sweeping {
        &self.sweeping
    }

    /// Takes and keeps the sweeping lock until `shutdown`.
    pub async fn run_sweep_lock(&self, shutdown: tokio_util::sync::CancellationToken) {
        super::lock::run(self.pool.clone(), self.sweeping.clone(), shutdown).await;
    }

    /// The schema version of the database (`migrations`).
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        super::migrations::schema_version(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// A driver error as the seam reports it: the server refused the statement, or it could
/// not be reached (then the API answers 503 `store_unavailable`).
pub(crate) fn db(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(refused) => StoreError::Database(refused.to_string()),
        None => StoreError::Unavailable(e.to_string()),
    }
}

/// A stored JSON document decoded into `T`.
fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, StoreError> {
    Ok(serde_json::from_value(value)?)
}

/// A value encoded as a JSON document.
fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, StoreError> {
    Ok(serde_json::to_value(value)?)
}
