//! The webhook tables on PostgreSQL: endpoints, deliveries (one row per event and
//! endpoint: the outbox entry while `pending`, then the endpoint's log line) and the
//! expiry warnings sent. A delivery is due at `lease_until` while leased, else at
//! `next_attempt_at`; nodes claim due ones with `FOR UPDATE SKIP LOCKED`, so each attempt
//! is made by one node, and a lease left by a node that died runs out on its own.

use super::channel;
use super::retention::started_ms;
use super::statements::Cached;
use super::{db, from_json, to_json, PgStore};
use crate::ids::unix_ms;
use crate::store::{Delivery, DeliveryState, Lease, LeasedDelivery, StoreError, WebhookEndpoint};
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

const COLUMNS: &str = "seq, webhook_id, event_id, event_type, state, attempts, created_at, \
                       next_attempt_at, finished_at, last_status, last_error, body";
/// When a pending delivery is next looked at: its lease's end while leased.
const DUE: &str = "coalesce(lease_until, next_attempt_at)";

fn at_ms(ms: u64) -> OffsetDateTime {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl PgStore {
    /// Every registered endpoint, by id.
    pub async fn webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>, StoreError> {
        if let Some(kept) = self.cache.endpoints() {
            return Ok(kept);
        }
        let ticket = self.cache.ticket();
        let endpoints = self
            .client()
            .await?
            .cached_query(
                "SELECT record FROM webhook_endpoints ORDER BY webhook_id",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|row| from_json(row.try_get(0).map_err(db)?))
            .collect::<Result<Vec<WebhookEndpoint>, StoreError>>()?;
        self.cache.put_endpoints(endpoints.clone(), ticket);
        Ok(endpoints)
    }

    /// One endpoint.
    pub async fn webhook_endpoint(
        &self,
        webhook_id: &str,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        self.client()
            .await?
            .cached_query_opt(
                "SELECT record FROM webhook_endpoints WHERE webhook_id = $1",
                &[&webhook_id],
            )
            .await
            .map_err(db)?
            .map(|row| from_json(row.try_get(0).map_err(db)?))
            .transpose()
    }

    /// Stores (or overwrites) an endpoint.
    pub async fn put_webhook_endpoint(&self, endpoint: &WebhookEndpoint) -> Result<(), StoreError> {
        self.client()
            .await?
            .cached_execute(
                "INSERT INTO webhook_endpoints (webhook_id, tenant, record) VALUES ($1, $2, $3)
                 ON CONFLICT (webhook_id) DO UPDATE SET
                   tenant = EXCLUDED.tenant, record = EXCLUDED.record
                 RETURNING pg_notify($4, '')",
                &[
                    &endpoint.webhook_id,
                    &endpoint.tenant,
                    &to_json(endpoint)?,
                    &channel::CHANGED,
                ],
            )
            .await
            .map_err(db)?;
        // At once here; the other nodes when the statement's notification arrives.
        self.cache.changed();
        Ok(())
    }

    /// Removes an endpoint and its deliveries (pending ones are never sent); `false` when
    /// there was no such endpoint.
    pub async fn remove_webhook_endpoint(&self, webhook_id: &str) -> Result<bool, StoreError> {
        let removed = self
            .client()
            .await?
            .cached_execute(
                "DELETE FROM webhook_endpoints WHERE webhook_id = $1 RETURNING pg_notify($2, '')",
                &[&webhook_id, &channel::CHANGED],
            )
            .await
            .map_err(db)?;
        // At once here; the other nodes when the statement's notification arrives.
        self.cache.changed();
        Ok(removed > 0)
    }

    /// A new delivery sequence number (unique and increasing across nodes and restarts).
    pub async fn next_delivery_seq(&self) -> Result<u64, StoreError> {
        let seq: i64 = self
            .client()
            .await?
            .cached_query_one(
                "SELECT nextval(pg_get_serial_sequence('webhook_deliveries', 'seq'))",
                &[],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    /// Stores pending deliveries, all in one statement; an event already stored for an
    /// endpoint is not stored twice.
    pub async fn enqueue_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let client = self.client().await?;
        insert_deliveries(&client, deliveries).await
    }

    /// When the earliest pending delivery is due (unix ms), if any.
    pub async fn next_webhook_due(&self) -> Result<Option<u64>, StoreError> {
        let next: Option<OffsetDateTime> = self
            .client()
            .await?
            .cached_query_one(
                &format!("SELECT min({DUE}) FROM webhook_deliveries WHERE state = 'pending'"),
                &[],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok(next.map(unix_ms))
    }

    /// Takes the earliest delivery due at or before `now_ms` whose endpoint `accept`s
    /// another attempt and leases it until `lease_ms`; at most `scan` due deliveries are
    /// looked at. Rows another node is claiming at this moment are skipped.
    pub async fn lease_due_delivery(
        &self,
        now_ms: u64,
        lease_ms: u64,
        scan: usize,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Lease, StoreError> {
        let scan = i64::try_from(scan).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let rows = tx
            .cached_query(
                &format!(
                    "SELECT {COLUMNS} FROM webhook_deliveries
                     WHERE state = 'pending' AND {DUE} <= $1
                     ORDER BY {DUE}, seq LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                &[&at_ms(now_ms), &scan],
            )
            .await
            .map_err(db)?;
        if rows.is_empty() {
            return Ok(Lease::NothingDue);
        }
        for row in &rows {
            let delivery = delivery(row)?;
            if !accept(&delivery.webhook_id) {
                continue;
            }
            let seq = i64::try_from(delivery.seq).unwrap_or(i64::MAX);
            tx.cached_execute(
                "UPDATE webhook_deliveries SET lease_until = $2 WHERE seq = $1",
                &[&seq, &at_ms(lease_ms)],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            let lease = lease_ms.to_be_bytes().to_vec();
            return Ok(Lease::Taken(Box::new(LeasedDelivery { delivery, lease })));
        }
        Ok(Lease::Blocked)
    }

    /// Nothing to do on PostgreSQL, returns 0: another node's attempt may be in flight
    /// under a lease, and a lease left by a node that died runs out on its own (sled's
    /// single node returns its leases at start instead).
    pub async fn release_webhook_leases(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// Ends a lease with the attempt's result: `delivery` is stored and, while it is still
    /// pending, due at its `next_attempt_at`. A delivery whose endpoint was removed
    /// meanwhile is not brought back.
    pub async fn settle_delivery(
        &self,
        _leased: &LeasedDelivery,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let seq = i64::try_from(delivery.seq).unwrap_or(i64::MAX);
        let attempts = i32::try_from(delivery.attempts).unwrap_or(i32::MAX);
        let status = delivery.last_status.map(i32::from);
        self.client()
            .await?
            .cached_execute(
                "UPDATE webhook_deliveries SET state = $2, attempts = $3, next_attempt_at = $4,
                   finished_at = $5, last_status = $6, last_error = $7, lease_until = NULL
                 WHERE seq = $1",
                &[
                    &seq,
                    &delivery.state.as_str(),
                    &attempts,
                    &delivery.next_attempt_at,
                    &delivery.finished_at,
                    &status,
                    &delivery.last_error,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Up to `limit` deliveries of an endpoint, newest first.
    pub async fn webhook_deliveries(
        &self,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.client()
            .await?
            .cached_query(
                &format!(
                    "SELECT {COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1
                     ORDER BY seq DESC LIMIT $2"
                ),
                &[&webhook_id, &limit],
            )
            .await
            .map_err(db)?
            .iter()
            .map(delivery)
            .collect()
    }

    /// Deletes an endpoint's finished deliveries beyond the newest `keep`; pending ones
    /// always stay. Returns how many went.
    pub async fn prune_webhook_deliveries(
        &self,
        webhook_id: &str,
        keep: usize,
    ) -> Result<usize, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let removed = self
            .client()
            .await?
            .cached_execute(
                "DELETE FROM webhook_deliveries WHERE seq IN (
                   SELECT seq FROM webhook_deliveries
                   WHERE webhook_id = $1 AND state <> 'pending'
                   ORDER BY seq DESC OFFSET $2)",
                &[&webhook_id, &keep],
            )
            .await
            .map_err(db)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Deliveries waiting for an attempt (or in one), all endpoints together.
    pub async fn pending_webhook_deliveries(&self) -> Result<usize, StoreError> {
        let n: i64 = self
            .client()
            .await?
            .cached_query_one(
                "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'",
                &[],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The `expires_at` (unix ms) `allocation.expiring` was emitted for, if any.
    pub async fn expiring_sent(&self, allocation_id: &str) -> Result<Option<u64>, StoreError> {
        let row = self
            .client()
            .await?
            .cached_query_opt(
                "SELECT expires_at_ms FROM webhook_expiring WHERE allocation_id = $1",
                &[&allocation_id],
            )
            .await
            .map_err(db)?;
        row.map(|r| {
            let ms: i64 = r.try_get(0).map_err(db)?;
            Ok(u64::try_from(ms).unwrap_or(0))
        })
        .transpose()
    }

    /// Records that `allocation.expiring` was emitted for this `expires_at` (unix ms).
    pub async fn mark_expiring_sent(
        &self,
        allocation_id: &str,
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let ms = i64::try_from(expires_at_ms).unwrap_or(i64::MAX);
        self.client()
            .await?
            .cached_execute(
                "INSERT INTO webhook_expiring (allocation_id, expires_at_ms) VALUES ($1, $2)
                 ON CONFLICT (allocation_id) DO UPDATE SET expires_at_ms = EXCLUDED.expires_at_ms",
                &[&allocation_id, &ms],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Forgets the expiry warning of an allocation that ended.
    pub async fn forget_expiring(&self, allocation_id: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .cached_execute(
                "DELETE FROM webhook_expiring WHERE allocation_id = $1",
                &[&allocation_id],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}

fn delivery(row: &tokio_postgres::Row) -> Result<Delivery, StoreError> {
    let seq: i64 = row.try_get("seq").map_err(db)?;
    let state: String = row.try_get("state").map_err(db)?;
    let attempts: i32 = row.try_get("attempts").map_err(db)?;
    let status: Option<i32> = row.try_get("last_status").map_err(db)?;
    Ok(Delivery {
        seq: u64::try_from(seq).unwrap_or(0),
        webhook_id: row.try_get("webhook_id").map_err(db)?,
        event_id: row.try_get("event_id").map_err(db)?,
        event_type: row.try_get("event_type").map_err(db)?,
        state: from_json::<DeliveryState>(serde_json::Value::String(state))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        created_at: row.try_get("created_at").map_err(db)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(db)?,
        finished_at: row.try_get("finished_at").map_err(db)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error").map_err(db)?,
        body: row.try_get("body").map_err(db)?,
    })
}

/// Inserts `deliveries` (each once: a repeat of one is ignored) and queues their retention,
/// on `client` (a transaction, when they go with a change).
pub(super) async fn insert_deliveries(
    client: &impl GenericClient,
    deliveries: &[Delivery],
) -> Result<(), StoreError> {
    let insert = client
        .prepare(&format!(
            "WITH written AS (
               INSERT INTO webhook_deliveries ({COLUMNS}) OVERRIDING SYSTEM VALUE
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT (webhook_id, event_id) DO NOTHING
               RETURNING seq)
             INSERT INTO retention_queue (kind, started_ms, record)
             SELECT 'webhook_delivery', $13, int8send(seq) FROM written
             ON CONFLICT DO NOTHING"
        ))
        .await
        .map_err(db)?;
    for d in deliveries {
        let seq = i64::try_from(d.seq).unwrap_or(i64::MAX);
        let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
        let status = d.last_status.map(i32::from);
        client
            .execute(
                &insert,
                &[
                    &seq,
                    &d.webhook_id,
                    &d.event_id,
                    &d.event_type,
                    &d.state.as_str(),
                    &attempts,
                    &d.created_at,
                    &d.next_attempt_at,
                    &d.finished_at,
                    &status,
                    &d.last_error,
                    &d.body,
                    &started_ms(d.created_at),
                ],
            )
            .await
            .map_err(db)?;
    }
    Ok(())
}
