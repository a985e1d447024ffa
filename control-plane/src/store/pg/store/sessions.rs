//! Who holds each agent's session, and which nodes are alive, on PostgreSQL. A session is
//! claimed with a fencing epoch one above the last: the newest session wins, wherever it
//! is; its node renews the lease of all its sessions in one statement, and learns from the
//! answer which ones another node has taken since (it closes those).

use super::statements::Cached;
use super::{db, PgStore};
use crate::store::StoreError;
use serde_json::Value;
use std::time::Duration;

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PgStore {
    /// Claims `agent_id`'s session for `node_id` for `lease`; returns its fencing epoch.
    pub async fn claim_session(
        &self,
        agent_id: &str,
        node_id: &str,
        lease: Duration,
    ) -> Result<u64, StoreError> {
        let epoch: i64 = self
            .client()
            .await?
            .cached_query_one(
                "INSERT INTO agent_sessions (agent_id, node_id, epoch, lease_until)
                 VALUES ($1, $2, 1, now() + make_interval(secs => $3))
                 ON CONFLICT (agent_id) DO UPDATE SET
                   node_id = EXCLUDED.node_id, epoch = agent_sessions.epoch + 1,
                   lease_until = EXCLUDED.lease_until, view = NULL
                 RETURNING epoch",
                &[&agent_id, &node_id, &interval(lease)],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        Ok(u64::try_from(epoch).unwrap_or(0))
    }

    /// Extends the lease of every session `node_id` holds (and its own heartbeat); returns
    /// those it still holds, with their epochs.
    pub async fn renew_sessions(
        &self,
        node_id: &str,
        lease: Duration,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        client
            .cached_execute(
                "INSERT INTO nodes (node_id, started_at, heartbeat_at) VALUES ($1, now(), now())
                 ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()",
                &[&node_id],
            )
            .await
            .map_err(db)?;
        let rows = client
            .cached_query(
                "UPDATE agent_sessions SET lease_until = now() + make_interval(secs => $2)
                 WHERE node_id = $1 RETURNING agent_id, epoch",
                &[&node_id, &interval(lease)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let epoch: i64 = row.try_get(1).map_err(db)?;
                Ok((
                    row.try_get(0).map_err(db)?,
                    u64::try_from(epoch).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Ends `agent_id`'s session if it is still `node_id`'s with `epoch`.
    pub async fn end_session(
        &self,
        agent_id: &str,
        node_id: &str,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        self.client()
            .await?
            .cached_execute(
                "DELETE FROM agent_sessions WHERE agent_id = $1 AND node_id = $2 AND epoch = $3",
                &[&agent_id, &node_id, &epoch],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The node holding `agent_id`'s session under a lease that has not run out.
    pub async fn session_holder(&self, agent_id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .client()
            .await?
            .cached_query_opt(
                "SELECT node_id FROM agent_sessions WHERE agent_id = $1 AND lease_until > now()",
                &[&agent_id],
            )
            .await
            .map_err(db)?;
        row.map(|r| r.try_get(0).map_err(db)).transpose()
    }

    /// Publishes what `node_id` knows of agents whose sessions it holds (`(agent, view)`
    /// each; a session it no longer holds is left alone). One statement.
    pub async fn publish_views(
        &self,
        node_id: &str,
        views: &[(String, Value)],
    ) -> Result<(), StoreError> {
        let (agents, views): (Vec<&str>, Vec<&Value>) =
            views.iter().map(|(a, v)| (a.as_str(), v)).unzip();
        self.client()
            .await?
            .cached_execute(
                "UPDATE agent_sessions s SET view = v.view
                 FROM unnest($2::text[], $3::jsonb[]) AS v (agent_id, view)
                 WHERE s.agent_id = v.agent_id AND s.node_id = $1",
                &[&node_id, &agents, &views],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The agents other nodes than `node_id` hold under a live lease, with what their
    /// node published of each: `(agent, node, view)`.
    pub async fn views_elsewhere(
        &self,
        node_id: &str,
    ) -> Result<Vec<(String, String, Value)>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT agent_id, node_id, view FROM agent_sessions
                 WHERE node_id <> $1 AND lease_until > now() AND view IS NOT NULL",
                &[&node_id],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(db)?,
                    r.try_get(1).map_err(db)?,
                    r.try_get(2).map_err(db)?,
                ))
            })
            .collect()
    }

    /// The setting `name`, storing `proposed` first when it has none (the first node to
    /// start sets it; every node reads the same value).
    pub async fn agreed_setting(&self, name: &str, proposed: &str) -> Result<String, StoreError> {
        let client = self.client().await?;
        client
            .cached_execute(
                "INSERT INTO cluster_settings (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &proposed],
            )
            .await
            .map_err(db)?;
        client
            .cached_query_one(
                "SELECT value FROM cluster_settings WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)
    }

    /// Removes `node_id` and the sessions it holds (a node stopping cleanly).
    pub async fn leave(&self, node_id: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        for table in ["agent_sessions", "nodes"] {
            client
                .cached_execute(
                    &format!("DELETE FROM {table} WHERE node_id = $1"),
                    &[&node_id],
                )
                .await
                .map_err(db)?;
        }
        Ok(())
    }
}
