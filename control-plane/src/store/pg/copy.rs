//! `farmhand-control store copy`: every table of a stopped single node's sled store into
//! PostgreSQL, for an operator moving up from the default backend without losing history.
//!
//! One transaction: the schema is migrated first, a target that holds anything is refused
//! unless `replace` (then emptied first, so running again gives the same database), every
//! row is written, and every table is verified — its row count and a SHA-256 over its rows
//! read back from PostgreSQL must equal those computed from sled — before anything commits.
//! A failure leaves the target as it was.
//!
//! Rows are copied as they are: live allocations keep their modems and ports (the capacity
//! trigger, which checks the live fleet the plane knows, is off for the copy: the state
//! being copied was consistent where it was kept). Audit and delivery sequence numbers are
//! kept too, so an audit cursor a client holds stays valid. Times keep microseconds (what
//! PostgreSQL stores). sled's index tables (order and tenant indexes, the retention queue,
//! the delivery schedule) are not copied: on PostgreSQL they are indexes over the rows.
//! Probe records, quality hours and modems' usage days are copied (minus any whose
//! allocation or agent is no longer kept, which the foreign keys would refuse).

use super::{migrations, PgError};
use crate::store::{
    key_id, token_id, AgentRecord, AllocationRecord, AuditEvent, Delivery, PendingCommand,
    ProbeTrack, RotationRecord, SledStore, StoreError, TokenRecord, UsageTotals, WebhookEndpoint,
};
use deadpool_postgres::Pool;
use ring::digest::{Context, SHA256};
use serde_json::{json, Value};
use std::collections::HashMap;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading sled failed.
    #[error("reading the sled store: {0}")]
    Store(#[from] StoreError),
    /// PostgreSQL failed or refused a row.
    #[error("{0}")]
    Pg(#[from] PgError),
    /// A stored sled value could not be read.
    #[error("table {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The target already holds data and `replace` was not asked for.
    #[error("the target database is not empty (table {0} has rows): copy into an empty database, or pass --replace to empty it first")]
    NotEmpty(&'static str),
    /// What PostgreSQL holds after the copy differs from sled (nothing was committed).
    #[error("verification failed for table {table}: sled has {expected} rows, PostgreSQL {found}, or their checksums differ")]
    Mismatch {
        /// The table.
        table: &'static str,
        /// Rows in sled.
        expected: usize,
        /// Rows in PostgreSQL.
        found: usize,
    },
}

impl From<tokio_postgres::Error> for CopyError {
    fn from(e: tokio_postgres::Error) -> Self {
        CopyError::Pg(PgError::Db(e))
    }
}

/// One copied table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The table.
    pub table: &'static str,
    /// Rows copied (and found back).
    pub rows: usize,
    /// SHA-256 (hex) over its rows, the same from sled and from PostgreSQL.
    pub checksum: String,
}

/// A column's value, typed as PostgreSQL holds it.
#[derive(Debug, Clone)]
enum Col {
    Text(String),
    OptText(Option<String>),
    Bytes(Vec<u8>),
    I64(i64),
    OptI64(Option<i64>),
    I32(i32),
    OptI32(Option<i32>),
    Bool(bool),
    Ts(OffsetDateTime),
    OptTs(Option<OffsetDateTime>),
    Json(Value),
    I64s(Vec<i64>),
}

/// A column's type, to read it back.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    OptText,
    Bytes,
    I64,
    OptI64,
    I32,
    OptI32,
    Bool,
    Ts,
    OptTs,
    Json,
    I64s,
}

impl Col {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Col::Text(v) => v,
            Col::OptText(v) => v,
            Col::Bytes(v) => v,
            Col::I64(v) => v,
            Col::OptI64(v) => v,
            Col::I32(v) => v,
            Col::OptI32(v) => v,
            Col::Bool(v) => v,
            Col::Ts(v) => v,
            Col::OptTs(v) => v,
            Col::Json(v) => v,
            Col::I64s(v) => v,
        }
    }

    /// The value in the form both sides' checksums use.
    fn canonical(&self) -> Value {
        // PostgreSQL keeps microseconds.
        let ts = |t: &OffsetDateTime| json!((t.unix_timestamp_nanos() / 1000).to_string());
        match self {
            Col::Text(v) => json!(v),
            Col::OptText(v) => json!(v),
            Col::Bytes(v) => json!(crate::ids::hex(v)),
            Col::I64(v) => json!(v),
            Col::OptI64(v) => json!(v),
            Col::I32(v) => json!(v),
            Col::OptI32(v) => json!(v),
            Col::Bool(v) => json!(v),
            Col::Ts(v) => ts(v),
            Col::OptTs(v) => v.as_ref().map_or(Value::Null, ts),
            Col::Json(v) => v.clone(),
            Col::I64s(v) => json!(v),
        }
    }

    fn read(row: &Row, i: usize, kind: Kind) -> Result<Col, tokio_postgres::Error> {
        Ok(match kind {
            Kind::Text => Col::Text(row.try_get(i)?),
            Kind::OptText => Col::OptText(row.try_get(i)?),
            Kind::Bytes => Col::Bytes(row.try_get(i)?),
            Kind::I64 => Col::I64(row.try_get(i)?),
            Kind::OptI64 => Col::OptI64(row.try_get(i)?),
            Kind::I32 => Col::I32(row.try_get(i)?),
            Kind::OptI32 => Col::OptI32(row.try_get(i)?),
            Kind::Bool => Col::Bool(row.try_get(i)?),
            Kind::Ts => Col::Ts(row.try_get(i)?),
            Kind::OptTs => Col::OptTs(row.try_get(i)?),
            Kind::Json => Col::Json(row.try_get(i)?),
            Kind::I64s => Col::I64s(row.try_get(i)?),
        })
    }
}

/// A table: its PostgreSQL columns and its rows computed from sled.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// Its sequence column is kept as in sled (`OVERRIDING SYSTEM VALUE`).
    identity: Option<&'static str>,
    rows: Vec<Vec<Col>>,
}

/// Every table, in an order that satisfies the foreign keys (endpoints before deliveries).
const ORDER: [&str; 15] = [
    "agents",
    "api_keys",
    "enrollment_tokens",
    "allocations",
    "allocation_usage",
    "modem_rotations",
    "modem_owners",
    "pending_commands",
    "audit",
    "webhook_endpoints",
    "webhook_deliveries",
    "webhook_expiring",
    "probe_tracks",
    "agent_quality",
    "modem_usage_days",
];

/// Copies `store` into the database of `pool` (see the module docs).
pub async fn copy(store: &SledStore, pool: &Pool, replace: bool) -> Result<Vec<Copied>, CopyError> {
    migrations::migrate(pool).await?;
    let tables = read_sled(store)?;
    let mut client = pool.get().await.map_err(PgError::from)?;
    let tx = client.transaction().await?;
    for name in ORDER
        .iter()
        .chain(["modems", "agent_sessions", "nodes", "retention_queue"].iter())
    {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {name})"), &[])
            .await?
            .get(0);
        if any && !replace {
            let table = ORDER
                .iter()
                .find(|t| *t == name)
                .copied()
                .unwrap_or("modems");
            return Err(CopyError::NotEmpty(table));
        }
    }
    if replace {
        tx.batch_execute(&format!(
            "TRUNCATE {}, modems, agent_sessions, nodes, retention_queue",
            ORDER.join(", ")
        ))
        .await?;
    }
    tx.batch_execute("ALTER TABLE allocations DISABLE TRIGGER allocations_capacity")
        .await?;
    let mut copied = Vec::new();
    for table in &tables {
        let names: Vec<&str> = table.columns.iter().map(|(n, _)| *n).collect();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let overriding = if table.identity.is_some() {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {} ({}){overriding} VALUES ({})",
                table.name,
                names.join(", "),
                placeholders.join(", ")
            ))
            .await?;
        for row in &table.rows {
            let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(Col::sql).collect();
            tx.execute(&insert, &params).await?;
        }
        if let Some(column) = table.identity {
            // The next sequence number follows the copied ones.
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', '{column}'), \
                     coalesce((SELECT max({column}) FROM {0}), 0) + 1, false)",
                    table.name
                ),
                &[],
            )
            .await?;
        }
        let expected = checksum(&table.rows);
        let back = tx
            .query(
                &format!("SELECT {} FROM {}", names.join(", "), table.name),
                &[],
            )
            .await?;
        let mut found = Vec::with_capacity(back.len());
        for row in &back {
            let cols = table
                .columns
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| Col::read(row, i, *kind))
                .collect::<Result<Vec<_>, _>>()?;
            found.push(cols);
        }
        if found.len() != table.rows.len() || checksum(&found) != expected {
            return Err(CopyError::Mismatch {
                table: table.name,
                expected: table.rows.len(),
                found: found.len(),
            });
        }
        copied.push(Copied {
            table: table.name,
            rows: table.rows.len(),
            checksum: expected,
        });
    }
    // sled's retention queue is not copied: PostgreSQL's is rebuilt from the rows.
    tx.batch_execute(super::store::QUEUE_EXISTING).await?;
    tx.batch_execute("ALTER TABLE allocations ENABLE TRIGGER allocations_capacity")
        .await?;
    tx.commit().await?;
    Ok(copied)
}

/// SHA-256 over the rows' canonical forms, in sorted order (sled's and PostgreSQL's row
/// orders differ).
fn checksum(rows: &[Vec<Col>]) -> String {
    let mut lines: Vec<String> = rows
        .iter()
        .map(|row| Value::Array(row.iter().map(Col::canonical).collect()).to_string())
        .collect();
    lines.sort();
    let mut digest = Context::new(&SHA256);
    for line in &lines {
        digest.update(line.as_bytes());
        digest.update(b"\n");
    }
    crate::ids::hex(digest.finish().as_ref())
}

fn decode<T: serde::de::DeserializeOwned>(table: &'static str, raw: &[u8]) -> Result<T, CopyError> {
    serde_json::from_slice(raw).map_err(|e| CopyError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

fn be_i64(table: &'static str, raw: &[u8]) -> Result<i64, CopyError> {
    <[u8; 8]>::try_from(raw)
        .map(i64::from_be_bytes)
        .map_err(|_| CopyError::Corrupt {
            table,
            detail: format!("an 8-byte number was {} bytes", raw.len()),
        })
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn to_value(table: &'static str, value: &impl serde::Serialize) -> Result<Value, CopyError> {
    serde_json::to_value(value).map_err(|e| CopyError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

fn port(p: Option<u16>) -> Col {
    Col::OptI32(p.map(i32::from))
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Every table's rows, computed from sled.
fn read_sled(store: &SledStore) -> Result<Vec<Table>, CopyError> {
    use Col::*;
    let mut tables = Vec::new();

    let mut rows = Vec::new();
    for (_, v) in store.raw_rows("agents")? {
        let a: AgentRecord = decode("agents", &v)?;
        rows.push(vec![
            Text(a.agent_id),
            Bytes(a.public_key),
            Text(a.label),
            Text(a.hostname),
            Ts(a.enrolled_at),
            Bool(a.revoked),
            Bool(a.approved),
        ]);
    }
    tables.push(Table {
        name: "agents",
        columns: &[
            ("agent_id", Kind::Text),
            ("public_key", Kind::Bytes),
            ("label", Kind::Text),
            ("hostname", Kind::Text),
            ("enrolled_at", Kind::Ts),
            ("revoked", Kind::Bool),
            ("approved", Kind::Bool),
        ],
        identity: None,
        rows,
    });

    let mut used: HashMap<Vec<u8>, i64> = HashMap::new();
    for (k, v) in store.raw_rows("api_key_usage")? {
        used.insert(k, be_i64("api_key_usage", &v)?);
    }
    let mut rows = Vec::new();
    for (k, v) in store.raw_rows("api_keys")? {
        let record: Value = decode("api_keys", &v)?;
        rows.push(vec![
            Text(key_id(&k)),
            Json(record),
            OptI64(used.get(&k).copied()),
            Bytes(k),
        ]);
    }
    tables.push(Table {
        name: "api_keys",
        columns: &[
            ("key_id", Kind::Text),
            ("record", Kind::Json),
            ("last_used_s", Kind::OptI64),
            ("key_hash", Kind::Bytes),
        ],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for (k, v) in store.raw_rows("enrollment_tokens")? {
        let t: TokenRecord = decode("enrollment_tokens", &v)?;
        rows.push(vec![
            Text(token_id(&k)),
            Bytes(k),
            Text(t.label),
            Ts(t.created_at),
            Ts(t.expires_at),
            Bool(t.used),
            OptText(t.agent_id),
        ]);
    }
    tables.push(Table {
        name: "enrollment_tokens",
        columns: &[
            ("token_id", Kind::Text),
            ("token_hash", Kind::Bytes),
            ("label", Kind::Text),
            ("created_at", Kind::Ts),
            ("expires_at", Kind::Ts),
            ("used", Kind::Bool),
            ("agent_id", Kind::OptText),
        ],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for (_, v) in store.raw_rows("allocations")? {
        let a: AllocationRecord = decode("allocations", &v)?;
        let record: Value = decode("allocations", &v)?;
        rows.push(vec![
            Text(a.allocation_id.clone()),
            Text(a.tenant.clone()),
            Text(a.order_id.clone()),
            Text(a.state.as_str().to_string()),
            Text(a.agent_id.clone()),
            Text(a.imei.clone()),
            OptText(a.host.clone()),
            port(a.http_port),
            port(a.socks_port),
            Ts(a.created_at),
            Ts(a.expires_at),
            OptTs(a.ended_at()),
            Json(record),
        ]);
    }
    tables.push(Table {
        name: "allocations",
        columns: &[
            ("allocation_id", Kind::Text),
            ("tenant", Kind::Text),
            ("order_id", Kind::Text),
            ("state", Kind::Text),
            ("agent_id", Kind::Text),
            ("imei", Kind::Text),
            ("host", Kind::OptText),
            ("http_port", Kind::OptI32),
            ("socks_port", Kind::OptI32),
            ("created_at", Kind::Ts),
            ("expires_at", Kind::Ts),
            ("ended_at", Kind::OptTs),
            ("record", Kind::Json),
        ],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for (k, v) in store.raw_rows("allocation_usage")? {
        let key = text(&k);
        let (allocation, agent) = key.split_once('/').unwrap_or((key.as_str(), ""));
        let u: UsageTotals = decode("allocation_usage", &v)?;
        rows.push(vec![
            Text(allocation.to_string()),
            Text(agent.to_string()),
            I64(i64_of(u.bytes_in)),
            I64(i64_of(u.bytes_out)),
            I64(i64_of(u.measured_at_ms)),
        ]);
    }
    tables.push(Table {
        name: "allocation_usage",
        columns: &[
            ("allocation_id", Kind::Text),
            ("agent_id", Kind::Text),
            ("bytes_in", Kind::I64),
            ("bytes_out", Kind::I64),
            ("measured_at_ms", Kind::I64),
        ],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for (k, v) in store.raw_rows("modem_rotations")? {
        let key = text(&k);
        // A bare IMEI: a record from before modems were told apart by agent.
        let (agent, imei) = key.split_once('/').unwrap_or(("", key.as_str()));
        let r: RotationRecord = decode("modem_rotations", &v)?;
        rows.push(vec![
            Text(agent.to_string()),
            Text(imei.to_string()),
            I64(i64_of(r.at_ms)),
            OptText(r.old_ip),
            OptText(r.new_ip),
            Bool(r.changed),
            Bool(r.automatic),
        ]);
    }
    tables.push(Table {
        name: "modem_rotations",
        columns: &[
            ("agent_id", Kind::Text),
            ("imei", Kind::Text),
            ("at_ms", Kind::I64),
            ("old_ip", Kind::OptText),
            ("new_ip", Kind::OptText),
            ("changed", Kind::Bool),
            ("automatic", Kind::Bool),
        ],
        identity: None,
        rows,
    });

    let rows = store
        .raw_rows("modem_owners")?
        .into_iter()
        .map(|(k, v)| vec![Text(text(&k)), Text(text(&v))])
        .collect();
    tables.push(Table {
        name: "modem_owners",
        columns: &[("imei", Kind::Text), ("agent_id", Kind::Text)],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for (_, v) in store.raw_rows("pending_commands")? {
        let c: PendingCommand = decode("pending_commands", &v)?;
        rows.push(vec![
            Text(c.agent_id),
            Text(c.command_id),
            I64(i64_of(c.deadline_ms)),
            Json(to_value("pending_commands", &c.body)?),
        ]);
    }
    tables.push(Table {
        name: "pending_commands",
        columns: &[
            ("agent_id", Kind::Text),
            ("command_id", Kind::Text),
            ("deadline_ms", Kind::I64),
            ("body", Kind::Json),
        ],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for (k, v) in store.raw_rows("audit")? {
        let e: AuditEvent = decode("audit", &v)?;
        let action = to_value("audit", &e.action)?;
        rows.push(vec![
            I64(be_i64("audit", &k)?),
            Ts(e.at),
            Text(e.actor),
            Text(action.as_str().unwrap_or_default().to_string()),
            Text(e.target),
            Json(e.details),
        ]);
    }
    tables.push(Table {
        name: "audit",
        columns: &[
            ("seq", Kind::I64),
            ("at", Kind::Ts),
            ("actor", Kind::Text),
            ("action", Kind::Text),
            ("target", Kind::Text),
            ("details", Kind::Json),
        ],
        identity: Some("seq"),
        rows,
    });

    let mut rows = Vec::new();
    for (_, v) in store.raw_rows("webhook_endpoints")? {
        let e: WebhookEndpoint = decode("webhook_endpoints", &v)?;
        let record: Value = decode("webhook_endpoints", &v)?;
        rows.push(vec![Text(e.webhook_id), OptText(e.tenant), Json(record)]);
    }
    tables.push(Table {
        name: "webhook_endpoints",
        columns: &[
            ("webhook_id", Kind::Text),
            ("tenant", Kind::OptText),
            ("record", Kind::Json),
        ],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for (_, v) in store.raw_rows("webhook_deliveries")? {
        let d: Delivery = decode("webhook_deliveries", &v)?;
        rows.push(vec![
            I64(i64_of(d.seq)),
            Text(d.webhook_id),
            Text(d.event_id),
            Text(d.event_type),
            Text(d.state.as_str().to_string()),
            I32(i32::try_from(d.attempts).unwrap_or(i32::MAX)),
            Ts(d.created_at),
            OptTs(d.next_attempt_at),
            OptTs(d.finished_at),
            OptI32(d.last_status.map(i32::from)),
            OptText(d.last_error),
            Text(d.body),
        ]);
    }
    tables.push(Table {
        name: "webhook_deliveries",
        columns: &[
            ("seq", Kind::I64),
            ("webhook_id", Kind::Text),
            ("event_id", Kind::Text),
            ("event_type", Kind::Text),
            ("state", Kind::Text),
            ("attempts", Kind::I32),
            ("created_at", Kind::Ts),
            ("next_attempt_at", Kind::OptTs),
            ("finished_at", Kind::OptTs),
            ("last_status", Kind::OptI32),
            ("last_error", Kind::OptText),
            ("body", Kind::Text),
        ],
        identity: Some("seq"),
        rows,
    });

    let mut rows = Vec::new();
    for (k, v) in store.raw_rows("webhook_expiring")? {
        rows.push(vec![Text(text(&k)), I64(be_i64("webhook_expiring", &v)?)]);
    }
    tables.push(Table {
        name: "webhook_expiring",
        columns: &[("allocation_id", Kind::Text), ("expires_at_ms", Kind::I64)],
        identity: None,
        rows,
    });

    // Probe records of allocations, and quality hours of agents, that are no longer kept
    // (none, unless a write raced a deletion) would break the foreign keys: not copied.
    let allocations: std::collections::HashSet<Vec<u8>> = store
        .raw_rows("allocations")?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut rows = Vec::new();
    for (k, v) in store.raw_rows("probe_tracks")? {
        if !allocations.contains(&k) {
            continue;
        }
        let track: ProbeTrack = decode("probe_tracks", &v)?;
        rows.push(vec![
            Text(text(&k)),
            Text(track.agent_id.clone()),
            Json(to_value("probe_tracks", &track)?),
        ]);
    }
    tables.push(Table {
        name: "probe_tracks",
        columns: &[
            ("allocation_id", Kind::Text),
            ("agent_id", Kind::Text),
            ("track", Kind::Json),
        ],
        identity: None,
        rows,
    });

    let agents: std::collections::HashSet<Vec<u8>> = store
        .raw_rows("agents")?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut rows = Vec::new();
    for (agent, hour, c) in store.quality_hours(None, i64::MIN)? {
        if !agents.contains(agent.as_bytes()) {
            continue;
        }
        rows.push(vec![
            Text(agent),
            I64(hour),
            I64(i64_of(c.probes)),
            I64(i64_of(c.probes_ok)),
            I64s(c.latency.iter().map(|n| i64_of(*n)).collect()),
            I64(i64_of(c.rotations)),
            I64(i64_of(c.rotations_changed)),
            I64(i64_of(c.rotations_timed)),
            I64(i64_of(c.rotation_ms_total)),
            I64(i64_of(c.replacements)),
        ]);
    }
    tables.push(Table {
        name: "agent_quality",
        columns: &[
            ("agent_id", Kind::Text),
            ("hour", Kind::I64),
            ("probes", Kind::I64),
            ("probes_ok", Kind::I64),
            ("latency", Kind::I64s),
            ("rotations", Kind::I64),
            ("rotations_changed", Kind::I64),
            ("rotations_timed", Kind::I64),
            ("rotation_ms_total", Kind::I64),
            ("replacements", Kind::I64),
        ],
        identity: None,
        rows,
    });

    let mut rows = Vec::new();
    for d in store.all_modem_days()? {
        if !agents.contains(d.agent_id.as_bytes()) {
            continue;
        }
        rows.push(vec![
            Text(d.agent_id),
            Text(d.imei),
            I64(d.day),
            I64(i64_of(d.bytes_in)),
            I64(i64_of(d.bytes_out)),
        ]);
    }
    tables.push(Table {
        name: "modem_usage_days",
        columns: &[
            ("agent_id", Kind::Text),
            ("imei", Kind::Text),
            ("day", Kind::I64),
            ("bytes_in", Kind::I64),
            ("bytes_out", Kind::I64),
        ],
        identity: None,
        rows,
    });

    debug_assert!(tables.iter().map(|t| t.name).eq(ORDER.iter().copied()));
    Ok(tables)
}
