//! The gateway's side of sharing work with other nodes (PostgreSQL store): it listens for
//! the cluster's notifications (`pg::listen`) and acts on those about this node —
//! commands another node queued for an agent whose session is here (the allocator sends
//! them, `Work::Queued`), results of commands this node sent to an agent held elsewhere
//! (handed to the waiting dispatcher, or as late results when nobody waits), agents
//! revoked on another node (their session here is closed), keys or webhook endpoints
//! changed on any node, this one included (what the store kept of them is dropped). After a lost listening
//! connection it reads the rows instead, since notifications may have been missed.

use super::{Gateway, GatewayEvent, Work};
use crate::store::pg::listen::{self, Notification};
use crate::store::pg::{channel, ForeignResult};
use farmhand_protocol::CommandResult;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The channels a node listens on.
const CHANNELS: &[&str] = &[
    channel::COMMANDS,
    channel::RESULTS,
    channel::REVOKED,
    channel::CHANGED,
];

impl Gateway {
    /// Acts on the cluster's notifications until `shutdown`; returns at once where the
    /// store is not shared (sled).
    pub async fn run_cluster(self, shutdown: CancellationToken) {
        if !self.ctx.store.is_shared() {
            return;
        }
        let mut notifications =
            listen::spawn(self.ctx.config.store.clone(), CHANNELS, shutdown.clone());
        loop {
            let notification = tokio::select! {
                () = shutdown.cancelled() => return,
                n = notifications.recv() => match n { Some(n) => n, None => return },
            };
            match notification {
                Notification::Resync => self.resync().await,
                Notification::Message { channel, payload } => {
                    self.on_message(&channel, &payload).await;
                }
            }
        }
    }

    async fn on_message(&self, channel_name: &str, payload: &str) {
        debug!(channel = channel_name, payload, "cluster notification");
        match channel_name {
            channel::COMMANDS if self.ctx.registry.session(payload).is_some() => {
                self.queued(payload);
            }
            channel::RESULTS => {
                let Some((origin, command_id)) = payload.split_once(' ') else {
                    return;
                };
                if origin != self.ctx.node_id {
                    return;
                }
                match self.ctx.store.take_result(origin, command_id).await {
                    Ok(Some(result)) => self.deliver(result),
                    Ok(None) => {}
                    Err(e) => warn!(
                        command_id,
                        "cannot read a result another node handed over: {e}"
                    ),
                }
            }
            channel::REVOKED => {
                self.ctx.registry.revoke(payload);
                self.ctx.registry.kick(payload);
            }
            channel::CHANGED => self.ctx.store.changed_elsewhere(),
            _ => {}
        }
    }

    /// Reads what notifications would have said while nobody listened.
    async fn resync(&self) {
        self.ctx.store.changed_elsewhere();
        for (agent_id, _) in self.ctx.registry.sessions() {
            self.queued(&agent_id);
        }
        match self.ctx.store.take_results_for(&self.ctx.node_id).await {
            Ok(results) => results.into_iter().for_each(|r| self.deliver(r)),
            Err(e) => warn!("cannot read the results other nodes handed over: {e}"),
        }
    }

    /// Takes the results whose origin node died while waiting, as late results here.
    pub(super) async fn adopt_orphans(&self, silent: std::time::Duration) {
        match self.ctx.store.take_orphan_results(silent).await {
            Ok(results) => {
                for r in results {
                    self.late(r);
                }
            }
            Err(e) => warn!("cannot read the results of nodes that stopped: {e}"),
        }
    }

    fn queued(&self, agent_id: &str) {
        let work = Work::Queued {
            agent_id: agent_id.to_string(),
        };
        let _ = self.ctx.events.send(GatewayEvent::Work(work));
    }

    /// A result this node waits for: to its dispatcher, or late when nobody waits.
    fn deliver(&self, result: ForeignResult) {
        if !self
            .ctx
            .registry
            .complete_remote(&result.command_id, result.outcome.clone())
        {
            self.late(result);
        }
    }

    fn late(&self, result: ForeignResult) {
        let work = Work::LateResult {
            agent_id: result.agent_id,
            result: CommandResult {
                id: result.command_id,
                outcome: result.outcome,
            },
        };
        let _ = self.ctx.events.send(GatewayEvent::Work(work));
    }
}
