//! Enrollment tokens on PostgreSQL. Consuming a token and creating its agent are one
//! transaction with the token's row locked, so a token enrolls at most one agent even when
//! two nodes receive it at once.

use super::retention::started_ms;
use super::statements::Cached;
use super::{db, PgStore};
use crate::store::{secret_hash, token_id, AgentRecord, EnrollError, StoreError, TokenRecord};
use time::OffsetDateTime;

const COLUMNS: &str = "token_id, label, created_at, expires_at, used, agent_id";

impl PgStore {
    /// Every stored enrollment token (used and expired ones included), with its id,
    /// oldest first.
    pub async fn enrollment_tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        self.client()
            .await?
            .cached_query(
                &format!("SELECT {COLUMNS} FROM enrollment_tokens ORDER BY created_at, token_id"),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(token_of)
            .collect()
    }

    /// Deletes the token with this id unless it was used. `Ok(None)`: unknown;
    /// `Ok(Some(record))` with `used` set: it was used and stays.
    pub async fn revoke_enrollment_token(
        &self,
        id: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .cached_query_opt(
                &format!("SELECT {COLUMNS} FROM enrollment_tokens WHERE token_id = $1 FOR UPDATE"),
                &[&id],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (_, record) = token_of(&row)?;
        if !record.used {
            tx.cached_execute("DELETE FROM enrollment_tokens WHERE token_id = $1", &[&id])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Some(record))
    }

    /// Stores the hash of `token`.
    pub async fn insert_enrollment_token(
        &self,
        token: &str,
        record: &TokenRecord,
    ) -> Result<(), StoreError> {
        let hash = secret_hash(token);
        self.client()
            .await?
            .cached_execute(
                "WITH written AS (
                   INSERT INTO enrollment_tokens
                     (token_hash, token_id, label, created_at, expires_at, used, agent_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   RETURNING token_hash)
                 INSERT INTO retention_queue (kind, started_ms, record)
                 SELECT 'enrollment_token', $8, token_hash FROM written
                 ON CONFLICT DO NOTHING",
                &[
                    &hash,
                    &token_id(&hash),
                    &record.label,
                    &record.created_at,
                    &record.expires_at,
                    &record.used,
                    &record.agent_id,
                    &started_ms(record.expires_at),
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Atomically marks `token` used and stores `agent` labelled with the token's label.
    pub async fn enroll(
        &self,
        token: &str,
        agent: AgentRecord,
        now: OffsetDateTime,
    ) -> Result<AgentRecord, EnrollError> {
        let hash = secret_hash(token);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let row = tx
            .cached_query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE"
                ),
                &[&hash],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Err(EnrollError::InvalidToken);
        };
        let (_, record) = token_of(&row)?;
        if record.used || record.expires_at <= now {
            return Err(EnrollError::InvalidToken);
        }
        tx.cached_execute(
            "UPDATE enrollment_tokens SET used = true, agent_id = $2 WHERE token_hash = $1",
            &[&hash, &agent.agent_id],
        )
        .await
        .map_err(db)?;
        let agent = AgentRecord {
            label: record.label,
            ..agent
        };
        super::agents::insert(&tx, &agent).await?;
        tx.commit().await.map_err(db)?;
        Ok(agent)
    }
}

fn token_of(row: &tokio_postgres::Row) -> Result<(String, TokenRecord), StoreError> {
    Ok((
        row.try_get("token_id").map_err(db)?,
        TokenRecord {
            label: row.try_get("label").map_err(db)?,
            created_at: row.try_get("created_at").map_err(db)?,
            expires_at: row.try_get("expires_at").map_err(db)?,
            used: row.try_get("used").map_err(db)?,
            agent_id: row.try_get("agent_id").map_err(db)?,
        },
    ))
}
