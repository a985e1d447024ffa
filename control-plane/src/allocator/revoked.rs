//! Ending the allocations of a revoked agent. A revoked agent can never connect again, so
//! nothing on its box can be changed or confirmed any more, and no buyer should be left
//! waiting on it: every allocation of the agent that still holds a port is `released` at
//! once, through the same `mark_released` as every other release (slot freed, audited,
//! `allocation.released` emitted, credential retention started):
//! - `active` / `replaced` with `release_reason: agent_revoked`;
//! - `releasing` with the reason it was already being released for (`cancelled`,
//!   `expired`): the marketplace or the expiry sweeper ended it before, only the agent's
//!   confirmation is missing, and it can no longer come;
//! - `pending` is left to its provisioning, which fails at once: the agent's commands are
//!   dropped first (below), so it ends `failed` (504 `agent_timeout`, "revoked before
//!   confirming"). Anything else in flight on the agent (a renewal, a repair) fails the
//!   same way, then the allocation is ended here — each allocation is ended in its own
//!   task under its order lock, so one in flight delays only itself.
//!
//! Before any of that, the agent's commands go (`Gateway::revoked`): every dispatcher
//! waiting on one returns `AgentRevoked` at once, then its outbox (`pending_commands`) is
//! emptied and flushed — it could only be delivered to a session, and there will be none.
//! Waiting is not tied to the session for most commands: `provision`, `update_port`,
//! `rotate_ip` and the session's own `reconcile` wait across a disconnect until their
//! deadline (the agent may come back), so the kick alone left them hanging there. A
//! `release` (`dispatch_or_defer`) already returns when the session closes, as `releasing`
//! (202); its queued copy is dropped with the rest and the allocation ends here.
//!
//! Durable by order: the revocation is flushed before anything here runs, and when the
//! allocator opens it ends every allocation still on a revoked agent and empties its
//! outbox (`end_revoked_at_start`), so a crash half-way leaves none live after a restart.
//! The replacement sweeper leaves them alone (`replace` refuses an allocation whose agent
//! is revoked), and a move that lands on an agent revoked meanwhile is ended too.
//!
//! The port itself stays on the seller's box (nobody can tell the agent to remove it): it
//! keeps working there until its expiry on the box, or until the box's next agent's first
//! `reconcile` removes it as an orphan.

use super::{released, AllocError, Allocator};
use crate::events::EventType;
use crate::store::{AllocationRecord, AllocationState, ReleaseReason, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use tracing::{info, warn};

impl Allocator {
    /// `DELETE /v1/agents/{id}` on behalf of `actor`, after the revocation was flushed and
    /// the session closed: fails the commands waiting on the agent and empties its outbox
    /// (durably), then ends every allocation of `agent_id` in the background (each in its
    /// own task, once the command in flight on it has returned).
    pub async fn agent_revoked(
        self: &Arc<Self>,
        agent_id: &str,
        actor: &str,
    ) -> Result<(), AllocError> {
        self.gateway.revoked(agent_id).await?;
        let records = self.store.agent_allocations(agent_id, |_| true).await?;
        info!(
            agent_id,
            allocations = records.len(),
            "ending the allocations of a revoked agent"
        );
        for record in records {
            let this = self.clone();
            let (agent_id, actor) = (agent_id.to_string(), actor.to_string());
            self.spawn(async move {
                let id = record.allocation_id;
                if let Err(e) = this.end_revoked_one(&id, &agent_id, &actor).await {
                    // The allocation stays as it is until the next start ends it.
                    warn!(allocation_id = %id, "ending an allocation of a revoked agent failed: {e}");
                }
            });
        }
        Ok(())
    }

    /// Seller erasure's first step, after the agent was revoked: like
    /// [`Allocator::agent_revoked`], but each allocation is ended before this returns, so
    /// the store can erase what is left.
    pub async fn end_for_erasure(
        self: &Arc<Self>,
        agent_id: &str,
        actor: &str,
    ) -> Result<usize, AllocError> {
        self.gateway.revoked(agent_id).await?;
        let records = self
            .store
            .agent_allocations(agent_id, |r| r.state.holds_port())
            .await?;
        for record in &records {
            self.end_revoked_one(&record.allocation_id, agent_id, actor)
                .await?;
        }
        Ok(records.len())
    }

    /// Ends `allocation_id` under its order lock if it is still on `agent_id`.
    async fn end_revoked_one(
        &self,
        allocation_id: &str,
        agent_id: &str,
        actor: &str,
    ) -> Result<(), AllocError> {
        let order_id = self.find(allocation_id).await?.order_id;
        let _order = self.locks.lock(&order_id).await;
        let record = self.find(allocation_id).await?;
        // It may have moved to another agent meanwhile (a replacement that was in flight).
        if record.agent_id == agent_id {
            self.end_revoked(record, actor).await?;
        }
        Ok(())
    }

    /// Releases `record`, whose agent is revoked, if it still holds a port there (see the
    /// module comment for which states). The caller holds the order lock.
    pub(super) async fn end_revoked(
        &self,
        mut record: AllocationRecord,
        actor: &str,
    ) -> Result<AllocationRecord, StoreError> {
        if !ends_on_revocation(record.state) {
            return Ok(record);
        }
        set_reason(&mut record);
        info!(allocation_id = %record.allocation_id, agent_id = %record.agent_id, "agent revoked: allocation released");
        self.mark_released(&mut record, actor).await?;
        Ok(record)
    }

    /// Whether `agent_id` is revoked (an unknown agent is not).
    pub(super) async fn is_revoked(&self, agent_id: &str) -> Result<bool, StoreError> {
        Ok(self.store.agent(agent_id).await?.is_some_and(|a| a.revoked))
    }

    /// At open, before any task runs: releases every allocation left on a revoked agent
    /// and drops its queued commands (the plane stopped between a revocation and their
    /// end). Pending ones were failed just before.
    pub(super) async fn end_revoked_at_start(&self) -> Result<(), StoreError> {
        let revoked: HashSet<String> = self
            .store
            .agents()
            .await?
            .into_iter()
            .filter(|a| a.revoked)
            .map(|a| a.agent_id)
            .collect();
        if revoked.is_empty() {
            return Ok(());
        }
        let mut dropped = 0;
        for agent_id in &revoked {
            dropped += self.store.purge_agent_commands(agent_id).await?;
        }
        if dropped > 0 {
            warn!(dropped, "dropped the queued commands of revoked agents");
            self.store.durable().await?;
        }
        for mut record in self.store.live_allocations().await? {
            if !revoked.contains(&record.agent_id) || !ends_on_revocation(record.state) {
                continue;
            }
            warn!(allocation_id = %record.allocation_id, agent_id = %record.agent_id, "releasing an allocation left on a revoked agent by a restart");
            set_reason(&mut record);
            released(&mut record, self.clock.now());
            self.save_reporting(&record, None, EventType::AllocationReleased)
                .await?;
            self.announce_released(&record, "system").await;
        }
        Ok(())
    }
}

/// Whether an allocation in `state` on a revoked agent is released now: it holds a port
/// and is not waiting for a provisioning that will fail by itself.
fn ends_on_revocation(state: AllocationState) -> bool {
    state.is_live() || state == AllocationState::Releasing
}

/// A live allocation ends because of the revocation; a `releasing` one keeps the reason it
/// was being released for.
fn set_reason(record: &mut AllocationRecord) {
    if record.state.is_live() || record.release_reason.is_none() {
        record.release_reason = Some(ReleaseReason::AgentRevoked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_releasing_allocations_end_pending_ones_fail_on_their_own() {
        let ends: Vec<AllocationState> = AllocationState::ALL
            .into_iter()
            .filter(|s| ends_on_revocation(*s))
            .collect();
        assert_eq!(
            ends,
            [
                AllocationState::Active,
                AllocationState::Releasing,
                AllocationState::Replaced
            ]
        );
    }
}
