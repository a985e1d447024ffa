//! Each modem's last IP rotation on PostgreSQL, keyed by (agent, IMEI); a row with an
//! empty agent is a record from before modems were told apart by agent (`store copy`),
//! read as any agent's, as sled does.

use super::retention::rotation_key;
use super::statements::Cached;
use super::{db, PgStore};
use crate::store::{RotationRecord, StoreError};
use std::collections::HashMap;

const COLUMNS: &str = "agent_id, imei, at_ms, old_ip, new_ip, changed, automatic";

impl PgStore {
    /// The last rotation recorded for `imei` of `agent_id`.
    pub async fn last_rotation(
        &self,
        agent_id: &str,
        imei: &str,
    ) -> Result<Option<RotationRecord>, StoreError> {
        Ok(self
            .last_rotations([(agent_id, imei)])
            .await?
            .pop()
            .flatten())
    }

    /// The last rotation of each (agent, IMEI), in their order (one query for the list).
    pub async fn last_rotations<'a>(
        &self,
        modems: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Vec<Option<RotationRecord>>, StoreError> {
        let modems: Vec<(&str, &str)> = modems.into_iter().collect();
        let imeis: Vec<&str> = modems.iter().map(|(_, imei)| *imei).collect();
        let rows = self
            .client()
            .await?
            .cached_query(
                &format!("SELECT {COLUMNS} FROM modem_rotations WHERE imei = ANY($1)"),
                &[&imeis],
            )
            .await
            .map_err(db)?;
        let mut found: HashMap<(String, String), RotationRecord> = HashMap::new();
        for row in &rows {
            let agent: String = row.try_get("agent_id").map_err(db)?;
            let imei: String = row.try_get("imei").map_err(db)?;
            found.insert((agent, imei), rotation(row)?);
        }
        Ok(modems
            .iter()
            .map(|(agent, imei)| {
                found
                    .get(&(agent.to_string(), imei.to_string()))
                    .or_else(|| found.get(&(String::new(), imei.to_string())))
                    .cloned()
            })
            .collect())
    }

    /// Records a rotation of `imei` of `agent_id` unless a later one is already recorded.
    /// Returns whether it was stored.
    pub async fn record_rotation(
        &self,
        agent_id: &str,
        imei: &str,
        record: &RotationRecord,
    ) -> Result<bool, StoreError> {
        let at = i64::try_from(record.at_ms).unwrap_or(i64::MAX);
        let stored: i64 = self
            .client()
            .await?
            .cached_query_one(
                &format!(
                    "WITH written AS (
                       INSERT INTO modem_rotations ({COLUMNS})
                       VALUES ($1, $2, $3, $4, $5, $6, $7)
                       ON CONFLICT (agent_id, imei) DO UPDATE SET
                         at_ms = EXCLUDED.at_ms, old_ip = EXCLUDED.old_ip,
                         new_ip = EXCLUDED.new_ip, changed = EXCLUDED.changed,
                         automatic = EXCLUDED.automatic
                       WHERE modem_rotations.at_ms <= EXCLUDED.at_ms
                       RETURNING at_ms),
                     queued AS (
                       INSERT INTO retention_queue (kind, started_ms, record)
                       SELECT 'rotation', at_ms, $8 FROM written
                       ON CONFLICT DO NOTHING)
                     SELECT count(*) FROM written"
                ),
                &[
                    &agent_id,
                    &imei,
                    &at,
                    &record.old_ip,
                    &record.new_ip,
                    &record.changed,
                    &record.automatic,
                    &rotation_key(agent_id, imei),
                ],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok(stored > 0)
    }
}

fn rotation(row: &tokio_postgres::Row) -> Result<RotationRecord, StoreError> {
    let at: i64 = row.try_get("at_ms").map_err(db)?;
    Ok(RotationRecord {
        at_ms: u64::try_from(at).unwrap_or(0),
        old_ip: row.try_get("old_ip").map_err(db)?,
        new_ip: row.try_get("new_ip").map_err(db)?,
        changed: row.try_get("changed").map_err(db)?,
        automatic: row.try_get("automatic").map_err(db)?,
    })
}
