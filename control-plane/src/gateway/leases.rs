//! Session leases, where sessions are shared between nodes (the PostgreSQL store): every
//! session is claimed in the store with a fencing epoch when it registers (`handshake`),
//! and this task renews all of this node's leases together every [`RENEW_EVERY`]. The
//! answer names the sessions this node still holds; a local session missing from it (or
//! held under another epoch) was taken over by a newer session of the agent on another
//! node, and is closed (`duplicate_agent`), so no two nodes act for one agent for longer
//! than one renewal. While the database cannot be reached, sessions stay up: agents are
//! not disconnected by a database restart.

use super::Gateway;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a claimed session counts as held without a renewal.
pub const SESSION_LEASE: Duration = Duration::from_secs(15);
/// How often the leases are renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);

impl Gateway {
    /// Renews this node's session leases until `shutdown`, closing sessions another node
    /// took over; returns at once where sessions are not shared (sled). On `shutdown`
    /// this node leaves the cluster (its sessions' rows go with it).
    pub async fn run_leases(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                () = tokio::time::sleep(RENEW_EVERY) => {}
            }
            match self
                .ctx
                .store
                .renew_sessions(&self.ctx.node_id, SESSION_LEASE)
                .await
            {
                Ok(None) => return,
                Ok(Some(held)) => {
                    self.fence(&held.into_iter().collect());
                    // Results whose node died waiting: one node takes each, as late.
                    self.adopt_orphans(SESSION_LEASE).await;
                }
                Err(e) => warn!("cannot renew the agents' session leases: {e}"),
            }
        }
        if let Err(e) = self.ctx.store.leave(&self.ctx.node_id).await {
            warn!("cannot record that this node stopped: {e}");
        }
    }

    /// Closes every local session not in `held` (agent id, epoch).
    fn fence(&self, held: &HashSet<(String, u64)>) {
        for (agent_id, handle) in self.ctx.registry.sessions() {
            if handle.epoch != 0 && !held.contains(&(agent_id.clone(), handle.epoch)) {
                info!(agent_id = %agent_id, epoch = handle.epoch, "a newer session of the agent took over on another node: closing this one");
                handle.superseded.cancel();
            }
        }
    }

    /// This node's id in the shared store (`nd_…`).
    pub fn node_id(&self) -> &str {
        &self.ctx.node_id
    }
}
