//! Commands across nodes on PostgreSQL: NOTIFY wakes the node a row concerns (the one
//! holding an agent's session for a queued command, the one waiting for a result); the
//! rows are the durable truth, read when woken and after a lost listening connection.

use super::statements::Cached;
use super::{db, from_json, to_json, PgStore};
use crate::store::StoreError;
use farmhand_protocol::Outcome;
use std::time::Duration;

/// The channels nodes listen on (`pg::listen`), with what their payload names.
pub mod channel {
    /// A command was queued for an agent (payload: the agent id).
    pub const COMMANDS: &str = "farmhand_commands";
    /// A result reached the database (payload: `<origin node> <command id>`).
    pub const RESULTS: &str = "farmhand_results";
    /// An agent was revoked (payload: the agent id).
    pub const REVOKED: &str = "farmhand_revoked";
    /// API keys or webhook endpoints changed (no payload): copies kept of them are stale.
    pub const CHANGED: &str = "farmhand_changed";
}

/// A result waiting for the node that sent the command.
#[derive(Debug, Clone)]
pub struct ForeignResult {
    /// The command.
    pub command_id: String,
    /// The agent that answered.
    pub agent_id: String,
    /// What it answered.
    pub outcome: Outcome,
}

impl PgStore {
    /// Wakes the nodes listening on `channel` with `payload`.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .cached_execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Stores the result of a command `origin_node` waits for and wakes it; the command
    /// leaves the outbox in the same transaction.
    pub async fn put_result(
        &self,
        origin_node: &str,
        agent_id: &str,
        command_id: &str,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.cached_execute(
            "INSERT INTO command_results (command_id, agent_id, origin_node, result)
             VALUES ($1, $2, $3, $4) ON CONFLICT (command_id) DO NOTHING",
            &[&command_id, &agent_id, &origin_node, &to_json(outcome)?],
        )
        .await
        .map_err(db)?;
        tx.cached_execute(
            "DELETE FROM pending_commands WHERE agent_id = $1 AND command_id = $2",
            &[&agent_id, &command_id],
        )
        .await
        .map_err(db)?;
        let payload = format!("{origin_node} {command_id}");
        tx.cached_execute("SELECT pg_notify($1, $2)", &[&channel::RESULTS, &payload])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// Takes the stored result of `command_id` for `origin_node` (once: the row goes).
    pub async fn take_result(
        &self,
        origin_node: &str,
        command_id: &str,
    ) -> Result<Option<ForeignResult>, StoreError> {
        self.take_results(
            "DELETE FROM command_results WHERE origin_node = $1 AND command_id = $2
             RETURNING command_id, agent_id, result",
            &[&origin_node, &command_id],
        )
        .await
        .map(|mut taken| taken.pop())
    }

    /// Takes every stored result for `origin_node` (after its listening connection was
    /// lost, notifications may have been missed).
    pub async fn take_results_for(
        &self,
        origin_node: &str,
    ) -> Result<Vec<ForeignResult>, StoreError> {
        self.take_results(
            "DELETE FROM command_results WHERE origin_node = $1
             RETURNING command_id, agent_id, result",
            &[&origin_node],
        )
        .await
    }

    /// Takes the results whose origin node has not been heard of for `silent` (it died
    /// waiting): whoever takes one handles it as a late result. Each row goes to one node.
    pub async fn take_orphan_results(
        &self,
        silent: Duration,
    ) -> Result<Vec<ForeignResult>, StoreError> {
        let silent = silent.as_secs_f64();
        self.take_results(
            "DELETE FROM command_results r
             WHERE r.at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = r.origin_node
                               AND n.heartbeat_at > now() - make_interval(secs => $1))
             RETURNING command_id, agent_id, result",
            &[&silent],
        )
        .await
    }

    async fn take_results(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<ForeignResult>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(sql, params)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(ForeignResult {
                    command_id: row.try_get(0).map_err(db)?,
                    agent_id: row.try_get(1).map_err(db)?,
                    outcome: from_json(row.try_get(2).map_err(db)?)?,
                })
            })
            .collect()
    }
}
