//! API keys on PostgreSQL: `api_keys` holds the key's SHA-256, its id, the record and the
//! minute it was last used.

use super::channel;
use super::statements::Cached;
use super::{db, from_json, to_json, PgStore};
use crate::store::keys::LAST_USED_RESOLUTION_S;
use crate::store::{key_id, secret_hash, ApiKeyRecord, KeyInfo, StoreError};
use time::OffsetDateTime;

impl PgStore {
    /// Stores the hash of `key`; returns the key's id.
    pub async fn insert_api_key(
        &self,
        key: &str,
        record: &ApiKeyRecord,
    ) -> Result<String, StoreError> {
        let hash = secret_hash(key);
        let id = key_id(&hash);
        self.client()
            .await?
            .cached_execute(
                "INSERT INTO api_keys (key_hash, key_id, record) VALUES ($1, $2, $3)
                 ON CONFLICT (key_hash) DO UPDATE SET record = EXCLUDED.record
                 RETURNING pg_notify($4, '')",
                &[&hash, &id, &to_json(record)?, &channel::CHANGED],
            )
            .await
            .map_err(db)?;
        // At once here; the other nodes when the statement's notification arrives.
        self.cache.changed();
        Ok(id)
    }

    /// The stored key a request presented, if it is known and not expired at `now`.
    pub async fn find_api_key(
        &self,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyInfo>, StoreError> {
        let hash = secret_hash(key);
        let info = match self.cache.key(&hash) {
            Some(kept) => kept,
            None => {
                let ticket = self.cache.ticket();
                let row = self
                    .client()
                    .await?
                    .cached_query_opt(
                        "SELECT key_id, record, last_used_s FROM api_keys WHERE key_hash = $1",
                        &[&hash],
                    )
                    .await
                    .map_err(db)?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let info = key_info(&row)?;
                self.cache.put_key(hash, info.clone(), ticket);
                info
            }
        };
        if info.record.expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        Ok(Some(info))
    }

    /// Every stored key, expired ones included, by id.
    pub async fn api_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.client()
            .await?
            .cached_query(
                "SELECT key_id, record, last_used_s FROM api_keys ORDER BY key_id",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(key_info)
            .collect()
    }

    /// Whether a key with this id is stored (and so still valid, unless expired).
    /// (Read from the database, never from `cache`: the check after a request must see a
    /// revocation made on any node.)
    pub async fn api_key_exists(&self, key_id: &str) -> Result<bool, StoreError> {
        let row = self
            .client()
            .await?
            .cached_query_opt("SELECT 1 FROM api_keys WHERE key_id = $1", &[&key_id])
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    /// Deletes the key with this id; its record, if there was one.
    pub async fn revoke_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let revoked = self
            .client()
            .await?
            .cached_query_opt(
                "DELETE FROM api_keys WHERE key_id = $1 RETURNING record, pg_notify($2, '')",
                &[&id, &channel::CHANGED],
            )
            .await
            .map_err(db)?
            .map(|row| from_json(row.try_get(0).map_err(db)?))
            .transpose()?;
        // At once here; the other nodes when the statement's notification arrives.
        self.cache.changed();
        Ok(revoked)
    }

    /// Notes that the key with this id authenticated a request at `now` (at most one
    /// write a minute per key).
    pub async fn touch_api_key(&self, id: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        let at = now.unix_timestamp();
        let stale = at - LAST_USED_RESOLUTION_S;
        let written = self
            .client()
            .await?
            .cached_execute(
                "UPDATE api_keys SET last_used_s = $2
                 WHERE key_id = $1 AND (last_used_s IS NULL OR last_used_s <= $3)",
                &[&id, &at, &stale],
            )
            .await
            .map_err(db)?;
        if written > 0 {
            // The copy here shows the old last use (and would have every request ask
            // again).
            self.cache.note_used(id, now);
        }
        Ok(())
    }
}

fn key_info(row: &tokio_postgres::Row) -> Result<KeyInfo, StoreError> {
    let last_used: Option<i64> = row.try_get("last_used_s").map_err(db)?;
    Ok(KeyInfo {
        key_id: row.try_get("key_id").map_err(db)?,
        record: from_json(row.try_get("record").map_err(db)?)?,
        last_used_at: last_used.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
    })
}
