//! The allocator's side of [`GatewayEvent`]s, consumed by one named task:
//! - an agent came back → redeliver its queued commands (same ids; a `provision` gets its
//!   password back from the sealed record, and is dropped if its allocation is no longer
//!   pending or active), then finish its `releasing` allocations that have no queued
//!   `release`;
//! - its `reconcile` reported allocations `missing` → `repair`;
//! - a late `provision` success for an allocation that is not active (it failed on
//!   timeout) → send `release`, so no orphan port survives; for an active one (a repair
//!   answered late) → store the port;
//! - a late `release` success → mark the allocation released.

use super::Allocator;
use crate::gateway::GatewayEvent;
use crate::store::AllocationState;
use farmhand_protocol::{CommandBody, CommandOutput, CommandResult, Outcome, Provisioned, Release};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

impl Allocator {
    /// Consumes gateway events until `shutdown`; each event is handled in its own task so
    /// one slow agent does not delay the others.
    pub async fn run_events(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<GatewayEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event { Some(e) => e, None => return },
            };
            let this = self.clone();
            tokio::spawn(async move { this.on_event(event).await });
        }
    }

    async fn on_event(&self, event: GatewayEvent) {
        let result = match event {
            GatewayEvent::Connected { agent_id } => self.on_connected(&agent_id).await,
            GatewayEvent::Reconciled { agent_id, missing } => {
                self.repair_missing(&agent_id, missing).await;
                Ok(())
            }
            GatewayEvent::LateResult { agent_id, result } => {
                self.on_late_result(&agent_id, result).await
            }
        };
        if let Err(e) = result {
            warn!("handling a gateway event failed: {e}");
        }
    }

    /// The agent is back (its `reconcile` is already sent): redeliver, then finish releases.
    async fn on_connected(&self, agent_id: &str) -> Result<(), super::AllocError> {
        let sent = self
            .gateway
            .redeliver(agent_id, |body| self.rebuild(body))
            .await?;
        if sent > 0 {
            info!(agent_id, sent, "redelivered queued commands");
        }
        self.finish_releases(agent_id).await
    }

    /// The body to redeliver: a `provision` gets its password back from the sealed record,
    /// and is obsolete (`None`) once its allocation is neither pending nor active.
    fn rebuild(&self, body: CommandBody) -> Option<CommandBody> {
        let CommandBody::Provision(mut p) = body else {
            return Some(body);
        };
        let record = self.store.allocation(&p.allocation_id).ok()??;
        if !matches!(
            record.state,
            AllocationState::Pending | AllocationState::Active
        ) {
            return None;
        }
        p.password = self.password(&record).ok()??;
        Some(CommandBody::Provision(p))
    }

    /// Dispatches `release` for every `releasing` allocation of a reconnected agent that
    /// has no `release` queued already (that one was just redelivered).
    async fn finish_releases(&self, agent_id: &str) -> Result<(), super::AllocError> {
        let releasing = self.store.allocations_where(|a| {
            a.agent_id == agent_id && a.state == AllocationState::Releasing
        })?;
        for record in releasing {
            if self
                .gateway
                .has_pending_for(agent_id, &record.allocation_id)
            {
                continue;
            }
            let _order = self.locks.lock(&record.order_id).await;
            let current = self.find(&record.allocation_id)?;
            if current.state == AllocationState::Releasing {
                info!(allocation_id = %current.allocation_id, "finishing a release after reconnect");
                if let Err(e) = self.finish_release(current, "system").await {
                    warn!(allocation_id = %record.allocation_id, "release after reconnect failed: {e}");
                }
            }
        }
        Ok(())
    }

    async fn on_late_result(
        &self,
        agent_id: &str,
        result: CommandResult,
    ) -> Result<(), super::AllocError> {
        let output = match result.outcome {
            Outcome::Ok { output } => output,
            Outcome::Error { error } => {
                info!(agent_id, command_id = %result.id, code = error.code.as_str(), "late command error ignored");
                return Ok(());
            }
        };
        match output {
            CommandOutput::Provision(p) => self.on_late_provision(agent_id, &p).await,
            CommandOutput::Release(r) => self.on_late_release(&r.allocation_id).await,
            _ => {
                info!(agent_id, command_id = %result.id, "late command result ignored");
                Ok(())
            }
        }
    }

    /// A port was created after we gave up on it: unless its allocation is active, remove
    /// it. For an active one (a repair answered late) the port's whereabouts are stored.
    async fn on_late_provision(
        &self,
        agent_id: &str,
        port: &Provisioned,
    ) -> Result<(), super::AllocError> {
        let allocation_id = port.allocation_id.as_str();
        if let Some(record) = self.settled_active(allocation_id).await? {
            let moved = record.http_port != Some(port.http_port)
                || record.socks_port != Some(port.socks_port);
            return if moved {
                self.repaired(record, port)
            } else {
                Ok(())
            };
        }
        warn!(
            agent_id,
            allocation_id, "late provision of a failed allocation: releasing the orphan port"
        );
        let body = CommandBody::Release(Release {
            allocation_id: allocation_id.to_string(),
        });
        match self
            .gateway
            .dispatch_or_defer(agent_id, body, self.config.command_timeout())
            .await
        {
            Ok(outcome) => info!(allocation_id, ?outcome, "orphan port release answered"),
            // If this fails too, the agent's next reconcile removes the port.
            Err(e) => warn!(allocation_id, "orphan port release failed: {e}"),
        }
        Ok(())
    }

    /// The allocation if it is active, read under its order lock so that a provisioning
    /// still settling (the result raced its timeout) is seen in its final state.
    async fn settled_active(
        &self,
        allocation_id: &str,
    ) -> Result<Option<crate::store::AllocationRecord>, super::AllocError> {
        let Some(record) = self.store.allocation(allocation_id)? else {
            return Ok(None);
        };
        let _order = self.locks.lock(&record.order_id).await;
        let current = self.store.allocation(allocation_id)?;
        Ok(current.filter(|r| r.state == AllocationState::Active))
    }

    async fn on_late_release(&self, allocation_id: &str) -> Result<(), super::AllocError> {
        let order_id = self.find(allocation_id)?.order_id;
        let _order = self.locks.lock(&order_id).await;
        let mut record = self.find(allocation_id)?;
        if record.state == AllocationState::Releasing {
            self.mark_released(&mut record, "system")?;
            info!(allocation_id, "allocation released (late confirmation)");
        }
        Ok(())
    }
}
