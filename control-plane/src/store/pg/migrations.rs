//! The schema on PostgreSQL: versioned SQL files in `control-plane/migrations/`, built into
//! the binary and applied in order by `farmhand-control migrate` (and at `serve` start-up
//! on the postgres backend). One transaction applies every missing migration under an
//! advisory lock, so nodes starting together apply each exactly once and a failure leaves
//! the schema as it was. Each applied migration is recorded with a SHA-256 of its text: a
//! database that ran a different text under a known version, or a newer version than this
//! binary knows, is refused rather than guessed at.

use super::PgError;
use deadpool_postgres::Pool;
use ring::digest::{digest, SHA256};

/// Every migration: version, name, SQL. Append only; never edit one that shipped.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "retention_queue",
        include_str!("../../../migrations/0002_retention_queue.sql"),
    ),
    (
        3,
        "command_results",
        include_str!("../../../migrations/0003_command_results.sql"),
    ),
    (
        4,
        "session_views",
        include_str!("../../../migrations/0004_session_views.sql"),
    ),
    (
        5,
        "allocations_by_order",
        include_str!("../../../migrations/0005_allocations_by_order.sql"),
    ),
    (
        6,
        "probes",
        include_str!("../../../migrations/0006_probes.sql"),
    ),
    (
        7,
        "modem_usage_days",
        include_str!("../../../migrations/0007_modem_usage_days.sql"),
    ),
];

/// The advisory lock key migrations hold (any constant: "farmhand" in ASCII).
const LOCK_KEY: i64 = 0x6661_726d_6861_6e64;

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version before (0: an empty database).
    pub from: i32,
    /// The version now.
    pub to: i32,
}

/// The newest version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |(v, _, _)| *v)
}

fn checksum(sql: &str) -> String {
    crate::ids::hex(digest(&SHA256, sql.as_bytes()).as_ref())
}

/// Applies every missing migration (see the module docs).
pub async fn migrate(pool: &Pool) -> Result<Migrated, PgError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<(i32, String)> = tx
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let from = applied.last().map_or(0, |(v, _)| *v);
    if from > latest() {
        return Err(PgError::Schema(format!(
            "the database's schema is version {from}, newer than this binary's {}: upgrade this node",
            latest()
        )));
    }
    for (version, stored) in &applied {
        let known = MIGRATIONS.iter().find(|(v, _, _)| v == version);
        if known.is_none_or(|(_, _, sql)| checksum(sql) != *stored) {
            return Err(PgError::Schema(format!(
                "schema migration {version} in the database differs from this binary's: \
                 it was not applied by this release"
            )));
        }
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > from) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[version, name, &checksum(sql)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Migrated { from, to: latest() })
}

/// The database's schema version (0 before the first migration).
pub async fn schema_version(pool: &Pool) -> Result<i32, PgError> {
    let client = pool.get().await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get(0))
}
