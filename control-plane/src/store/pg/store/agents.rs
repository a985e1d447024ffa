//! Agents and modem owners on PostgreSQL.

use super::statements::Cached;
use super::{db, PgStore};
use crate::store::{AgentRecord, StoreError};
use deadpool_postgres::GenericClient;

const COLUMNS: &str = "agent_id, public_key, label, hostname, enrolled_at, revoked, approved";

/// Stores a new agent (enrollment, inside its transaction).
pub(super) async fn insert(
    client: &impl GenericClient,
    agent: &AgentRecord,
) -> Result<(), StoreError> {
    client
        .cached_execute(
            &format!("INSERT INTO agents ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
            &[
                &agent.agent_id,
                &agent.public_key,
                &agent.label,
                &agent.hostname,
                &agent.enrolled_at,
                &agent.revoked,
                &agent.approved,
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

impl PgStore {
    /// One agent.
    pub async fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.client()
            .await?
            .cached_query_opt(
                &format!("SELECT {COLUMNS} FROM agents WHERE agent_id = $1"),
                &[&agent_id],
            )
            .await
            .map_err(db)?
            .map(|row| agent(&row))
            .transpose()
    }

    /// Every agent, by id.
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.client()
            .await?
            .cached_query(
                &format!("SELECT {COLUMNS} FROM agents ORDER BY agent_id"),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(agent)
            .collect()
    }

    /// Names `agent_id` the owner of `imei` (a duplicate identity resolved by an admin).
    pub async fn set_modem_owner(&self, imei: &str, agent_id: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .cached_execute(
                "INSERT INTO modem_owners (imei, agent_id) VALUES ($1, $2)
                 ON CONFLICT (imei) DO UPDATE SET agent_id = EXCLUDED.agent_id",
                &[&imei, &agent_id],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Every (IMEI, owner) an admin named, by IMEI.
    pub async fn modem_owners(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query("SELECT imei, agent_id FROM modem_owners ORDER BY imei", &[])
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .collect()
    }

    /// Marks an agent approved for orders; `None` when unknown, else whether it was held
    /// until now.
    pub async fn approve_agent(&self, agent_id: &str) -> Result<Option<bool>, StoreError> {
        // The old value comes from the row as locked by this update, not from a read
        // before it.
        let row = self
            .client()
            .await?
            .cached_query_opt(
                "UPDATE agents a SET approved = true
                 FROM (SELECT agent_id, approved FROM agents WHERE agent_id = $1 FOR UPDATE) old
                 WHERE a.agent_id = old.agent_id
                 RETURNING NOT old.approved",
                &[&agent_id],
            )
            .await
            .map_err(db)?;
        row.map(|r| r.try_get(0).map_err(db)).transpose()
    }

    /// Marks an agent revoked; `false` when the agent is unknown.
    pub async fn revoke_agent(&self, agent_id: &str) -> Result<bool, StoreError> {
        let changed = self
            .client()
            .await?
            .cached_execute(
                "UPDATE agents SET revoked = true WHERE agent_id = $1",
                &[&agent_id],
            )
            .await
            .map_err(db)?;
        Ok(changed > 0)
    }
}

fn agent(row: &tokio_postgres::Row) -> Result<AgentRecord, StoreError> {
    Ok(AgentRecord {
        agent_id: row.try_get("agent_id").map_err(db)?,
        public_key: row.try_get("public_key").map_err(db)?,
        label: row.try_get("label").map_err(db)?,
        hostname: row.try_get("hostname").map_err(db)?,
        enrolled_at: row.try_get("enrolled_at").map_err(db)?,
        revoked: row.try_get("revoked").map_err(db)?,
        approved: row.try_get("approved").map_err(db)?,
    })
}
