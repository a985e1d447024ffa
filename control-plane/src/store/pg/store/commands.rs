//! The command outbox on PostgreSQL: the durable truth of what an agent must still do,
//! whichever node holds its session.

use super::statements::Cached;
use super::{db, from_json, to_json, PgStore};
use crate::store::{PendingCommand, StoreError};

impl PgStore {
    /// Queues a command until its agent answers it (or its deadline passes).
    pub async fn put_pending_command(&self, command: &PendingCommand) -> Result<(), StoreError> {
        let deadline = i64::try_from(command.deadline_ms).unwrap_or(i64::MAX);
        self.client()
            .await?
            .cached_execute(
                "INSERT INTO pending_commands (agent_id, command_id, deadline_ms, body, origin_node)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (agent_id, command_id)
                 DO UPDATE SET deadline_ms = EXCLUDED.deadline_ms, body = EXCLUDED.body,
                   origin_node = EXCLUDED.origin_node",
                &[
                    &command.agent_id,
                    &command.command_id,
                    &deadline,
                    &to_json(&command.body)?,
                    &command.origin_node,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Forgets a command (answered or past its deadline); `false` if it was not there.
    pub async fn remove_pending_command(
        &self,
        agent_id: &str,
        command_id: &str,
    ) -> Result<bool, StoreError> {
        let removed = self
            .client()
            .await?
            .cached_execute(
                "DELETE FROM pending_commands WHERE agent_id = $1 AND command_id = $2",
                &[&agent_id, &command_id],
            )
            .await
            .map_err(db)?;
        Ok(removed > 0)
    }

    /// The commands queued for `agent_id`, by id.
    pub async fn pending_commands(
        &self,
        agent_id: &str,
    ) -> Result<Vec<PendingCommand>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT command_id, deadline_ms, body, origin_node FROM pending_commands
                 WHERE agent_id = $1 ORDER BY command_id",
                &[&agent_id],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let deadline: i64 = row.try_get("deadline_ms").map_err(db)?;
                Ok(PendingCommand {
                    command_id: row.try_get("command_id").map_err(db)?,
                    agent_id: agent_id.to_string(),
                    deadline_ms: u64::try_from(deadline).unwrap_or(0),
                    body: from_json(row.try_get("body").map_err(db)?)?,
                    origin_node: row.try_get("origin_node").map_err(db)?,
                })
            })
            .collect()
    }

    /// Removes every command queued for `agent_id`; how many there were.
    pub async fn purge_agent_commands(&self, agent_id: &str) -> Result<usize, StoreError> {
        let removed = self
            .client()
            .await?
            .cached_execute(
                "DELETE FROM pending_commands WHERE agent_id = $1",
                &[&agent_id],
            )
            .await
            .map_err(db)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }

    /// Removes every command whose deadline is at or before `now_ms`; how many there were.
    pub async fn purge_expired_commands(&self, now_ms: u64) -> Result<usize, StoreError> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let removed = self
            .client()
            .await?
            .cached_execute(
                "DELETE FROM pending_commands WHERE deadline_ms <= $1",
                &[&now],
            )
            .await
            .map_err(db)?;
        Ok(usize::try_from(removed).unwrap_or(usize::MAX))
    }
}
