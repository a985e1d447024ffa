//! Allocations on PostgreSQL: the whole record as JSON, with the fields the invariants and
//! the queries need as columns (state, agent, modem, ports, times). The unique indexes and
//! the capacity trigger of the schema keep one live allocation per order, no shared port
//! and no modem past its capacity, whichever node writes.

use super::retention::started_ms;
use super::statements::Cached;
use super::{db, from_json, to_json, PgStore};
use crate::store::{
    tenant_key, AllocationPage, AllocationRecord, AllocationState, Expected, InsertOutcome,
    RetentionKind, StoreError,
};
use deadpool_postgres::GenericClient;
use farmhand_protocol::DesiredPort;
use std::collections::HashMap;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

/// The states that hold a port on a box (`AllocationState::holds_port`).
const HOLDS_PORT: &str = "('pending', 'active', 'releasing', 'replaced')";
/// The states the expiry sweeper serves (`AllocationState::is_live`).
const IN_SERVICE: &str = "('active', 'replaced')";

/// Writes `record` whole, as a new row or over the stored one; an ended one is queued for
/// the first retention window still ahead of it, in the same statement.
pub(super) async fn upsert(
    client: &impl GenericClient,
    record: &AllocationRecord,
) -> Result<(), StoreError> {
    upsert_raw(client, record, &to_json(record)?)
        .await
        .map_err(db)
}

/// [`upsert`], with the driver's error (its SQLSTATE tells the constraints apart).
async fn upsert_raw(
    client: &impl GenericClient,
    record: &AllocationRecord,
    json: &serde_json::Value,
) -> Result<(), tokio_postgres::Error> {
    write(client, record, json, None).await.map(drop)
}

/// Writes `record` — over the stored one only if that is still as `from` expects, when
/// given (the row's lock makes a concurrent writer wait and look again); false, writing
/// nothing, when it is not. One statement, retention entry included.
async fn write_change(
    client: &impl GenericClient,
    record: &AllocationRecord,
    from: Option<Expected>,
) -> Result<bool, StoreError> {
    let written = write(client, record, &to_json(record)?, from)
        .await
        .map_err(db)?;
    Ok(written > 0)
}

/// The statement of [`upsert_raw`] (`from` = `None`) and [`write_change`]; how many
/// allocation rows it wrote.
async fn write(
    client: &impl GenericClient,
    record: &AllocationRecord,
    json: &serde_json::Value,
    from: Option<Expected>,
) -> Result<i64, tokio_postgres::Error> {
    // The written row, then its retention entry (when it ended), in one statement.
    macro_rules! with_queue {
        ($write:literal) => {
            concat!(
                "WITH written AS (",
                $write,
                " RETURNING allocation_id),
                 queued AS (
                   INSERT INTO retention_queue (kind, started_ms, record)
                   SELECT $14, $15, convert_to(allocation_id, 'UTF8') FROM written
                   WHERE $14::text IS NOT NULL
                   ON CONFLICT DO NOTHING)
                 SELECT count(*) FROM written"
            )
        };
    }
    const UPSERT: &str = with_queue!(
        "INSERT INTO allocations (allocation_id, tenant, order_id, state, agent_id, imei,
           host, http_port, socks_port, created_at, expires_at, ended_at, record)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (allocation_id) DO UPDATE SET
           tenant = EXCLUDED.tenant, order_id = EXCLUDED.order_id,
           state = EXCLUDED.state, agent_id = EXCLUDED.agent_id, imei = EXCLUDED.imei,
           host = EXCLUDED.host, http_port = EXCLUDED.http_port,
           socks_port = EXCLUDED.socks_port, created_at = EXCLUDED.created_at,
           expires_at = EXCLUDED.expires_at, ended_at = EXCLUDED.ended_at,
           record = EXCLUDED.record"
    );
    const UPDATE_IF: &str = with_queue!(
        "UPDATE allocations SET tenant = $2, order_id = $3, state = $4, agent_id = $5,
           imei = $6, host = $7, http_port = $8, socks_port = $9, created_at = $10,
           expires_at = $11, ended_at = $12, record = $13
         WHERE allocation_id = $1 AND state = $16 AND expires_at = $17
           AND coalesce(jsonb_array_length(record->'replacements'), 0) = $18"
    );
    let port = |p: Option<u16>| p.map(i32::from);
    let window = RetentionKind::of_ended(record);
    let kind = window.map(|(kind, _)| kind.as_str());
    let started = window.map(|(_, at)| started_ms(at));
    let (state, ports) = (
        record.state.as_str(),
        (port(record.http_port), port(record.socks_port)),
    );
    let (created, expires, ended) = (
        micros(record.created_at),
        micros(record.expires_at),
        record.ended_at().map(micros),
    );
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &record.allocation_id,
        &record.tenant,
        &record.order_id,
        &state,
        &record.agent_id,
        &record.imei,
        &record.host,
        &ports.0,
        &ports.1,
        &created,
        &expires,
        &ended,
        json,
        &kind,
        &started,
    ];
    let from = from.map(|f| {
        let moves = i32::try_from(f.moves).unwrap_or(i32::MAX);
        (f.state.as_str(), micros(f.expires_at), moves)
    });
    let sql = match &from {
        None => UPSERT,
        Some((state, expires_at, moves)) => {
            params.push(state);
            params.push(expires_at);
            params.push(moves);
            UPDATE_IF
        }
    };
    client.cached_query_one(sql, &params).await?.try_get(0)
}

impl PgStore {
    /// Inserts a new allocation unless its order id already has a live one (then that
    /// one). Two nodes inserting one order at once: the unique index lets one in; two
    /// selling a modem's last slot: the capacity trigger lets one in (`ModemFull`).
    pub async fn insert_allocation(
        &self,
        record: &AllocationRecord,
    ) -> Result<InsertOutcome, StoreError> {
        // One statement: the unique index and the capacity trigger decide, not a read first.
        let client = self.client().await?;
        let inserted = upsert_raw(&client, record, &to_json(record)?).await;
        drop(client);
        match inserted {
            Ok(()) => Ok(InsertOutcome::Inserted),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                // The order already has a live allocation (maybe another node's, inserted
                // a moment ago): that one is the answer.
                match self
                    .allocation_by_order(&record.tenant, &record.order_id)
                    .await?
                {
                    Some(existing) => Ok(InsertOutcome::Existing(Box::new(existing))),
                    None => Err(db(e)),
                }
            }
            Err(e) if e.code() == Some(&SqlState::CHECK_VIOLATION) => Ok(InsertOutcome::ModemFull),
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                Ok(InsertOutcome::ModemUnknown)
            }
            Err(e) => Err(db(e)),
        }
    }

    /// Writes an allocation (a state change).
    pub async fn save_allocation(&self, record: &AllocationRecord) -> Result<(), StoreError> {
        let client = self.client().await?;
        upsert(&client, record).await
    }

    /// [`PgStore::save_allocation`] with the webhook deliveries of the event reporting the
    /// change, in one transaction — and, given `from`, only if the stored record is still
    /// as it expects (state, expiry and moves: of two nodes making the same transition one wins;
    /// false, writing nothing, for the other).
    pub async fn save_change(
        &self,
        record: &AllocationRecord,
        from: Option<Expected>,
        deliveries: &[crate::store::Delivery],
    ) -> Result<bool, StoreError> {
        if deliveries.is_empty() {
            // One statement: no transaction around it.
            let client = self.client().await?;
            return write_change(&client, record, from).await;
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        if !write_change(&tx, record, from).await? {
            return Ok(false);
        }
        super::webhooks::insert_deliveries(&tx, deliveries).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Rewrites allocation `id` with `change`, which says whether it changed anything;
    /// returns whether a change was written. The row is locked while `change` runs.
    pub(super) async fn rewrite_allocation(
        &self,
        allocation_id: &str,
        change: impl FnOnce(&mut AllocationRecord) -> bool,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .cached_query_opt(
                "SELECT record FROM allocations WHERE allocation_id = $1 FOR UPDATE",
                &[&allocation_id],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let mut record: AllocationRecord = from_json(row.try_get(0).map_err(db)?)?;
        if !change(&mut record) {
            return Ok(false);
        }
        upsert(&tx, &record).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Deletes the sealed password of an ended allocation, keeping every other field;
    /// `false` when there was nothing to purge.
    pub async fn purge_credentials(&self, allocation_id: &str) -> Result<bool, StoreError> {
        self.rewrite_allocation(allocation_id, |record| {
            if record.ended_at().is_none() || record.password_sealed.is_none() {
                return false;
            }
            record.password_sealed = None;
            true
        })
        .await
    }

    /// One allocation.
    pub async fn allocation(
        &self,
        allocation_id: &str,
    ) -> Result<Option<AllocationRecord>, StoreError> {
        self.records(
            "SELECT record FROM allocations WHERE allocation_id = $1",
            &[&allocation_id],
        )
        .await
        .map(|mut found| found.pop())
    }

    /// How many allocations are in each state (every state, ended ones included).
    pub async fn allocation_counts(&self) -> Result<Vec<(AllocationState, u64)>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT state, count(*) FROM allocations GROUP BY state",
                &[],
            )
            .await
            .map_err(db)?;
        let mut counts: Vec<(AllocationState, u64)> =
            AllocationState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let state: String = row.try_get(0).map_err(db)?;
            let n: i64 = row.try_get(1).map_err(db)?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == state) {
                slot.1 = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    /// Up to `limit` allocations of `tenant` (every tenant: `None`, tenant by tenant) for
    /// which `keep` is true, oldest first, after `cursor` (the key `SledStore` pages by:
    /// tenant, NUL, creation time in µs, id — so a cursor is the same on both backends).
    /// At most `examine` rows are read whatever matches.
    pub async fn allocations_page(
        &self,
        tenant: Option<&str>,
        cursor: Option<&[u8]>,
        limit: usize,
        examine: usize,
        mut keep: impl FnMut(&AllocationRecord) -> bool,
    ) -> Result<AllocationPage, StoreError> {
        let (after_tenant, after_at, after_id) = match cursor.and_then(parse_cursor) {
            Some((t, at, id)) => (t, at, id),
            None => (String::new(), OffsetDateTime::UNIX_EPOCH, String::new()),
        };
        let fetch = i64::try_from(examine).unwrap_or(i64::MAX - 1) + 1;
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT record FROM allocations
                 WHERE ($1::text IS NULL OR tenant = $1)
                   AND (tenant, created_at, allocation_id) > ($2, $3, $4)
                 ORDER BY tenant, created_at, allocation_id LIMIT $5",
                &[&tenant, &after_tenant, &after_at, &after_id, &fetch],
            )
            .await
            .map_err(db)?;
        let mut records = Vec::new();
        let mut last = None;
        let mut more = false;
        for (examined, row) in rows.iter().enumerate() {
            if records.len() == limit || examined == examine {
                more = true;
                break;
            }
            let record: AllocationRecord = from_json(row.try_get(0).map_err(db)?)?;
            last = Some(tenant_key(&record));
            if keep(&record) {
                records.push(record);
            }
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

    /// The allocation of `tenant` currently holding `order_id` (the latest attempt).
    pub async fn allocation_by_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Option<AllocationRecord>, StoreError> {
        self.records(
            "SELECT record FROM allocations WHERE tenant = $1 AND order_id = $2
             ORDER BY (state <> 'failed') DESC, created_at DESC, allocation_id DESC LIMIT 1",
            &[&tenant, &order_id],
        )
        .await
        .map(|mut found| found.pop())
    }

    /// The allocations of `agent_id` that hold a port for which `keep` is true, by id.
    pub async fn agent_allocations(
        &self,
        agent_id: &str,
        keep: impl FnMut(&AllocationRecord) -> bool,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        let sql = format!(
            "SELECT record FROM allocations WHERE agent_id = $1 AND state IN {HOLDS_PORT}
             ORDER BY allocation_id"
        );
        let mut found = self.records(&sql, &[&agent_id]).await?;
        found.retain(keep);
        Ok(found)
    }

    /// The ports `agent_id` should have (its `reconcile`): its pending and live ones.
    pub async fn desired_ports(&self, agent_id: &str) -> Result<Vec<DesiredPort>, StoreError> {
        let wanted =
            |a: &AllocationRecord| a.state == AllocationState::Pending || a.state.is_live();
        Ok(self
            .agent_allocations(agent_id, wanted)
            .await?
            .into_iter()
            .map(|a| DesiredPort {
                allocation_id: a.allocation_id,
                imei: a.imei,
            })
            .collect())
    }

    /// Every allocation that holds a port.
    pub async fn live_allocations(&self) -> Result<Vec<AllocationRecord>, StoreError> {
        let sql = format!("SELECT record FROM allocations WHERE state IN {HOLDS_PORT}");
        self.records(&sql, &[]).await
    }

    /// The `pending` allocations created before `cutoff`.
    pub async fn pending_before(
        &self,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        let sql = "SELECT record FROM allocations WHERE state = 'pending' AND created_at < $1
                   ORDER BY created_at";
        self.records(sql, &[&cutoff]).await
    }

    /// Live allocations per modem, `(agent, IMEI) → count`, as the capacity trigger counts
    /// them: what every node has sold on each.
    pub async fn modem_loads(&self) -> Result<HashMap<(String, String), u32>, StoreError> {
        let sql = format!(
            "SELECT agent_id, imei, count(*) FROM allocations WHERE state IN {HOLDS_PORT}
             GROUP BY agent_id, imei"
        );
        let rows = self
            .client()
            .await?
            .cached_query(&sql, &[])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(2).map_err(db)?;
                Ok((
                    (r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?),
                    u32::try_from(n).unwrap_or(u32::MAX),
                ))
            })
            .collect()
    }

    /// The in-service allocations whose `expires_at` is at or before `now` (by expiry),
    /// and the first `expires_at` after it.
    pub async fn expiring(
        &self,
        now: OffsetDateTime,
    ) -> Result<(Vec<AllocationRecord>, Option<OffsetDateTime>), StoreError> {
        let due = format!(
            "SELECT record FROM allocations WHERE state IN {IN_SERVICE} AND expires_at <= $1
             ORDER BY expires_at, allocation_id"
        );
        let due = self.records(&due, &[&now]).await?;
        // The record's own time, not the column's (cut to µs): the sweeper sleeps until it.
        let next = format!(
            "SELECT record FROM allocations WHERE state IN {IN_SERVICE} AND expires_at > $1
             ORDER BY expires_at LIMIT 1"
        );
        let next = self.records(&next, &[&now]).await?.pop();
        Ok((due, next.map(|r| r.expires_at)))
    }

    /// Every allocation for which `keep` is true (the whole table, ended ones included).
    pub async fn allocations_where(
        &self,
        keep: impl FnMut(&AllocationRecord) -> bool,
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        let mut found = self
            .records("SELECT record FROM allocations ORDER BY allocation_id", &[])
            .await?;
        found.retain(keep);
        Ok(found)
    }

    /// The records a query selects (its first column).
    pub(super) async fn records(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<AllocationRecord>, StoreError> {
        self.client()
            .await?
            .cached_query(sql, params)
            .await
            .map_err(db)?
            .iter()
            .map(|row| from_json(row.try_get(0).map_err(db)?))
            .collect()
    }
}

/// `at` cut to whole microseconds, as the columns hold times: PostgreSQL would round the
/// nanoseconds, and a row rounded up would come again after its own paging cursor, or
/// expire a moment after sled would.
fn micros(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at)
}

/// A paging cursor: tenant, NUL, creation time (big-endian µs), id.
fn parse_cursor(cursor: &[u8]) -> Option<(String, OffsetDateTime, String)> {
    let sep = cursor.iter().position(|b| *b == 0)?;
    let tenant = std::str::from_utf8(&cursor[..sep]).ok()?;
    let micros: [u8; 8] = cursor.get(sep + 1..sep + 9)?.try_into().ok()?;
    let micros = i128::from(u64::from_be_bytes(micros));
    let at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).ok()?;
    let id = std::str::from_utf8(cursor.get(sep + 9..)?).ok()?;
    Some((tenant.to_string(), at, id.to_string()))
}
