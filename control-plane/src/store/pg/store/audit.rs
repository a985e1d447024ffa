//! The audit log on PostgreSQL: `seq` (an identity column, carried over from sled's keys
//! by `store copy`) is an entry's cursor and its order.

use super::statements::Cached;
use super::{db, from_json, to_json, PgStore};
use crate::store::{AuditAction, AuditCursor, AuditEntry, AuditEvent, AuditPage, StoreError};
use serde_json::Value;
use time::OffsetDateTime;

impl PgStore {
    /// Appends an event; a failure is logged, not returned, because the action it
    /// describes has already happened and must not be reported as failed.
    pub async fn audit(
        &self,
        actor: impl Into<String>,
        action: AuditAction,
        target: impl Into<String>,
        details: Value,
    ) {
        let event = AuditEvent {
            at: crate::ids::now(),
            actor: actor.into(),
            action,
            target: target.into(),
            details,
        };
        if let Err(e) = self.append_audit(&event).await {
            tracing::error!(action = ?event.action, "cannot append to the audit log: {e}");
        }
    }

    /// Appends an event.
    pub async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let action = to_json(&event.action)?;
        let action = action.as_str().unwrap_or_default();
        self.client()
            .await?
            .cached_execute(
                "INSERT INTO audit (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
                &[&event.at, &event.actor, &action, &event.target, &event.details],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Up to `limit` events at or after `since`, oldest first.
    pub async fn audit_since(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let page = self.audit_page(None, since, limit).await?;
        Ok(page.entries.into_iter().map(|e| e.event).collect())
    }

    /// Up to `limit` entries after `after` (exclusive) and at or after `since`
    /// (inclusive), oldest first; `more` tells whether another matching entry follows.
    pub async fn audit_page(
        &self,
        after: Option<AuditCursor>,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<AuditPage, StoreError> {
        let after = after.map_or(0, |c| i64::try_from(c.position()).unwrap_or(i64::MAX));
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT seq, at, actor, action, target, details FROM audit
                 WHERE seq > $1 AND at >= $2 ORDER BY seq LIMIT $3",
                &[&after, &since, &fetch],
            )
            .await
            .map_err(db)?;
        let more = rows.len() > limit;
        let entries = rows
            .iter()
            .take(limit)
            .map(|row| {
                let seq: i64 = row.try_get("seq").map_err(db)?;
                let action: String = row.try_get("action").map_err(db)?;
                Ok(AuditEntry {
                    cursor: AuditCursor::at(u64::try_from(seq).unwrap_or(0)),
                    event: AuditEvent {
                        at: row.try_get("at").map_err(db)?,
                        actor: row.try_get("actor").map_err(db)?,
                        action: from_json(Value::String(action))?,
                        target: row.try_get("target").map_err(db)?,
                        details: row.try_get("details").map_err(db)?,
                    },
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(AuditPage { entries, more })
    }

    /// Deletes up to `max` of the oldest entries from before `cutoff` (never the newest
    /// entry); returns how many went. Fewer than `max` means none older is left.
    pub async fn prune_audit_before(
        &self,
        cutoff: OffsetDateTime,
        max: usize,
    ) -> Result<usize, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let removed = self
            .client()
            .await?
            .cached_execute(
                "DELETE FROM audit WHERE seq IN (
                   SELECT seq FROM audit
                   WHERE at < $1 AND seq < (SELECT max(seq) FROM audit)
                   ORDER BY at LIMIT $2)",
                &[&cutoff, &max],
            )
            .await
            .map_err(db)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}
