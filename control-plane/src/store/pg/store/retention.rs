//! Retention on PostgreSQL: the queue (`retention_queue`, migration 2) and what the end of
//! each window does, with sled's meaning (`store::forget`). Every write that starts a
//! window queues its record in the same statement, so a record is never left without its
//! entry.

use super::statements::Cached;
use super::{db, PgStore};
use crate::ids::unix_ms;
use crate::store::{clear_detail, from_ms, Queued, RetentionKind, StoreError};
use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

/// Queues every record already in the tables (after `store copy`): what sled's backfill
/// does at open. Idempotent.
pub(crate) const QUEUE_EXISTING: &str = "
INSERT INTO retention_queue (kind, started_ms, record)
SELECT CASE WHEN coalesce(record->'password_sealed', 'null'::jsonb) <> 'null'::jsonb
                 THEN 'credentials'
            WHEN NOT coalesce((record->>'detail_purged')::boolean, false)
                 THEN 'allocation_detail'
            ELSE 'allocation_record' END,
       floor(extract(epoch FROM ended_at) * 1000)::bigint, convert_to(allocation_id, 'UTF8')
  FROM allocations WHERE ended_at IS NOT NULL
UNION ALL
SELECT 'rotation', at_ms, convert_to(agent_id || '/' || imei, 'UTF8') FROM modem_rotations
UNION ALL
SELECT 'webhook_delivery', floor(extract(epoch FROM created_at) * 1000)::bigint, int8send(seq)
  FROM webhook_deliveries
UNION ALL
SELECT 'enrollment_token', floor(extract(epoch FROM expires_at) * 1000)::bigint, token_hash
  FROM enrollment_tokens
ON CONFLICT DO NOTHING";

/// Unix ms as the queue holds them.
pub(super) fn started_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(unix_ms(at)).unwrap_or(i64::MAX)
}

/// The queue key of a rotation record.
pub(super) fn rotation_key(agent_id: &str, imei: &str) -> Vec<u8> {
    format!("{agent_id}/{imei}").into_bytes()
}

async fn queue(
    client: &impl GenericClient,
    kind: RetentionKind,
    started: OffsetDateTime,
    record: &[u8],
) -> Result<(), StoreError> {
    client
        .cached_execute(
            "INSERT INTO retention_queue (kind, started_ms, record) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&kind.as_str(), &started_ms(started), &record],
        )
        .await
        .map_err(db)?;
    Ok(())
}

impl PgStore {
    /// Applies the end of `kind`'s window to `queued`'s record at `now`; returns whether a
    /// record changed. A delivery still pending is queued again from `now`.
    pub async fn forget(
        &self,
        kind: RetentionKind,
        queued: &Queued,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let id = String::from_utf8_lossy(&queued.record);
        match kind {
            RetentionKind::Credentials => self.purge_credentials(&id).await,
            RetentionKind::AllocationDetail => self.purge_allocation_detail(&id).await,
            RetentionKind::AllocationRecord => self.delete_ended_allocation(&id).await,
            RetentionKind::Rotation => {
                let Some((agent_id, imei)) = id.split_once('/') else {
                    return Ok(false);
                };
                let at = started_ms(queued.started);
                let removed = self
                    .client()
                    .await?
                    .cached_execute(
                        "DELETE FROM modem_rotations
                         WHERE agent_id = $1 AND imei = $2 AND at_ms = $3",
                        &[&agent_id, &imei, &at],
                    )
                    .await
                    .map_err(db)?;
                Ok(removed > 0)
            }
            RetentionKind::WebhookDelivery => {
                let Ok(seq) = <[u8; 8]>::try_from(queued.record.as_slice()) else {
                    return Ok(false);
                };
                let seq = i64::from_be_bytes(seq);
                let client = self.client().await?;
                let removed = client
                    .cached_execute(
                        "DELETE FROM webhook_deliveries WHERE seq = $1 AND state <> 'pending'",
                        &[&seq],
                    )
                    .await
                    .map_err(db)?;
                if removed == 0 {
                    let pending = client
                        .cached_query_opt(
                            "SELECT 1 FROM webhook_deliveries WHERE seq = $1",
                            &[&seq],
                        )
                        .await
                        .map_err(db)?;
                    if pending.is_some() {
                        queue(&client, kind, now, &queued.record).await?;
                    }
                }
                Ok(removed > 0)
            }
            RetentionKind::EnrollmentToken => {
                let removed = self
                    .client()
                    .await?
                    .cached_execute(
                        "DELETE FROM enrollment_tokens WHERE token_hash = $1",
                        &[&queued.record],
                    )
                    .await
                    .map_err(db)?;
                Ok(removed > 0)
            }
        }
    }

    /// Clears an ended allocation's operational detail, keeping its financial core.
    /// Its probe record goes with it (also when the detail is already gone).
    pub async fn purge_allocation_detail(&self, allocation_id: &str) -> Result<bool, StoreError> {
        let purged = self
            .rewrite_allocation(allocation_id, |record| {
                if record.ended_at().is_none() || record.detail_purged {
                    return false;
                }
                clear_detail(record);
                true
            })
            .await?;
        // Also when the detail was already gone: a pass that failed between the two is
        // finished by the next.
        self.client()
            .await?
            .cached_execute(
                "DELETE FROM probe_tracks p USING allocations a
                 WHERE p.allocation_id = $1 AND a.allocation_id = p.allocation_id
                   AND coalesce((a.record->>'detail_purged')::boolean, false)",
                &[&allocation_id],
            )
            .await
            .map_err(db)?;
        Ok(purged)
    }

    /// Deletes an ended allocation with its usage totals and expiry mark (its probe record
    /// goes by foreign key).
    pub async fn delete_ended_allocation(&self, allocation_id: &str) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let removed = tx
            .cached_execute(
                "DELETE FROM allocations WHERE allocation_id = $1 AND ended_at IS NOT NULL",
                &[&allocation_id],
            )
            .await
            .map_err(db)?;
        if removed == 0 {
            return Ok(false);
        }
        for table in ["allocation_usage", "webhook_expiring"] {
            tx.cached_execute(
                &format!("DELETE FROM {table} WHERE allocation_id = $1"),
                &[&allocation_id],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    /// Up to `max` records of `kind` whose window started at or before `cutoff`, oldest
    /// first.
    pub async fn retention_due(
        &self,
        kind: RetentionKind,
        cutoff: OffsetDateTime,
        max: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT started_ms, record FROM retention_queue
                 WHERE kind = $1 AND started_ms <= $2
                 ORDER BY started_ms, record LIMIT $3",
                &[&kind.as_str(), &started_ms(cutoff), &max],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let ms: i64 = row.try_get(0).map_err(db)?;
                let started = from_ms(u64::try_from(ms).unwrap_or(0));
                Ok(Queued::new(kind, started, row.try_get(1).map_err(db)?))
            })
            .collect()
    }

    /// When the oldest queued record of `kind` started its window, if any is queued.
    pub async fn oldest_queued(
        &self,
        kind: RetentionKind,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let oldest: Option<i64> = self
            .client()
            .await?
            .cached_query_one(
                "SELECT min(started_ms) FROM retention_queue WHERE kind = $1",
                &[&kind.as_str()],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok(oldest.map(|ms| from_ms(u64::try_from(ms).unwrap_or(0))))
    }

    /// Removes a handled record's queue entry.
    pub async fn retention_done(&self, queued: &Queued) -> Result<(), StoreError> {
        let Some(kind) = queued.kind() else {
            return Ok(());
        };
        self.client()
            .await?
            .cached_execute(
                "DELETE FROM retention_queue WHERE kind = $1 AND started_ms = $2 AND record = $3",
                &[&kind.as_str(), &started_ms(queued.started), &queued.record],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// How many records of `kind` are queued.
    pub async fn retention_queued(&self, kind: RetentionKind) -> Result<usize, StoreError> {
        let n: i64 = self
            .client()
            .await?
            .cached_query_one(
                "SELECT count(*) FROM retention_queue WHERE kind = $1",
                &[&kind.as_str()],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// After `kind`'s window ended for `queued`: queues the record's next window, from the
    /// same start.
    pub async fn retention_next(
        &self,
        kind: RetentionKind,
        queued: &Queued,
    ) -> Result<(), StoreError> {
        let Some(next) = kind.next() else {
            return Ok(());
        };
        let client = self.client().await?;
        queue(&client, next, queued.started, &queued.record).await
    }
}
