//! The fleet across nodes (PostgreSQL store): every [`MIRROR_EVERY`] this node publishes
//! what it knows of the agents whose sessions it holds (`fleet::AgentSnapshot`, written
//! only when it changed), mirrors the agents other nodes hold into its own fleet view, so
//! `GET /v1/modems`, `/v1/agents` and allocation choice see every connected agent, and
//! reads back the live load of every modem, which other nodes' sales change. Sales stay
//! safe between two readings: the store's capacity constraint refuses a slot another node
//! took, and the allocator then counts that modem full (`Fleet::note_full`).

use super::Gateway;
use crate::fleet::AgentSnapshot;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the fleet view is published and mirrored: how long a modem that connected to
/// another node takes to be sold here.
pub const MIRROR_EVERY: Duration = Duration::from_secs(1);

/// What this task remembers between rounds, to write and apply only what changed.
#[derive(Default)]
struct Seen {
    /// (agent, session epoch) → the view published for it.
    published: HashMap<(String, u64), Value>,
    /// Agent → (node, view) mirrored here.
    mirrored: HashMap<String, (String, Value)>,
}

impl Gateway {
    /// Publishes and mirrors the fleet until `shutdown`; returns at once where the store
    /// is not shared (sled).
    pub async fn run_mirror(self, shutdown: CancellationToken) {
        if !self.ctx.store.is_shared() {
            return;
        }
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = tokio::time::sleep(MIRROR_EVERY) => {}
            }
            self.publish(&mut seen).await;
            self.mirror(&mut seen).await;
            match self.ctx.store.modem_loads().await {
                Ok(loads) => self.ctx.fleet.set_loads(&loads),
                Err(e) => warn!("cannot read the modems' loads: {e}"),
            }
        }
    }

    async fn publish(&self, seen: &mut Seen) {
        let mut now = HashMap::new();
        for (agent_id, handle) in self.ctx.registry.sessions() {
            let Some(snapshot) = self.ctx.fleet.snapshot(&agent_id) else {
                continue;
            };
            match serde_json::to_value(&snapshot) {
                Ok(view) => {
                    now.insert((agent_id, handle.epoch), view);
                }
                Err(e) => warn!(agent_id, "cannot encode the agent's view: {e}"),
            }
        }
        let changed: Vec<(String, Value)> = now
            .iter()
            .filter(|(key, view)| seen.published.get(*key) != Some(*view))
            .map(|((agent_id, _), view)| (agent_id.clone(), view.clone()))
            .collect();
        if changed.is_empty() {
            seen.published = now;
            return;
        }
        match self
            .ctx
            .store
            .publish_views(&self.ctx.node_id, &changed)
            .await
        {
            Ok(()) => seen.published = now,
            // Kept as it was: what failed is written at the next round.
            Err(e) => warn!("cannot publish this node's agents: {e}"),
        }
    }

    async fn mirror(&self, seen: &mut Seen) {
        let views = match self.ctx.store.views_elsewhere(&self.ctx.node_id).await {
            Ok(views) => views,
            Err(e) => {
                // The mirrors stay as they were: the database, not the agents, is away.
                warn!("cannot read the agents other nodes hold: {e}");
                return;
            }
        };
        let mut keep = HashSet::new();
        let mut mirrored = HashMap::new();
        for (agent_id, node, view) in views {
            if self.ctx.registry.is_connected(&agent_id) {
                // A newer session here than the row says: ours counts.
                continue;
            }
            keep.insert(agent_id.clone());
            let unchanged = seen
                .mirrored
                .get(&agent_id)
                .is_some_and(|(n, v)| *n == node && *v == view)
                && self.ctx.fleet.is_connected(&agent_id);
            if unchanged {
                self.ctx.fleet.touch(&agent_id);
            } else {
                match serde_json::from_value::<AgentSnapshot>(view.clone()) {
                    Ok(snapshot) => self.ctx.fleet.mirror(&agent_id, &node, snapshot),
                    Err(e) => {
                        warn!(
                            agent_id,
                            node, "cannot read what another node published: {e}"
                        );
                        continue;
                    }
                }
            }
            mirrored.insert(agent_id, (node, view));
        }
        self.ctx.fleet.unmirror_except(&keep);
        seen.mirrored = mirrored;
    }
}
