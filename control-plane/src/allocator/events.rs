//! The allocator's side of [`GatewayEvent`]s, consumed by one named task (reports —
//! audits, events, usage, rotations — are handled in `reports`, in arrival order):
//! - an agent came back → redeliver its queued commands (same ids; a `provision` gets its
//!   password back from the sealed record, and is dropped if its allocation is no longer
//!   pending or live or has moved to another modem; a `release` of an allocation that is
//!   live on that very agent — it moved back there — is dropped), then finish its
//!   `releasing` allocations that have no queued `release`;
//! - its `reconcile` reported allocations `missing` → `repair`;
//! - a late `provision` success for an allocation that is not live (it failed on timeout)
//!   or lives on another agent now (it was replaced) → send `release`, so no orphan port
//!   survives; for a live one on the same modem (a repair answered late) → store the port;
//!   on the same agent but another modem (a move answered late) → `reassert`;
//! - a late `release` success from the allocation's current agent → mark it released.

use super::Allocator;
use crate::gateway::{GatewayEvent, Report, Work};
use crate::store::AllocationState;
use farmhand_protocol::{CommandBody, CommandOutput, CommandResult, Outcome, Provisioned, Release};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

impl Allocator {
    /// Consumes gateway events until `shutdown`: reports in arrival order, work each in its
    /// own task.
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
            match event {
                // A few local writes, handled here in arrival order.
                GatewayEvent::Report(report) => self.on_report(report).await,
                // What may wait on an agent runs in its own task, so one slow agent does not
                // delay the others.
                GatewayEvent::Work(work) => {
                    let this = self.clone();
                    self.spawn(async move { this.on_work(work).await });
                }
            }
        }
    }

    async fn on_report(&self, report: Report) {
        match report {
            Report::Opened {
                session,
                client,
                version,
            } => self.session_opened(&session, &client, version).await,
            Report::Closed {
                session,
                reason,
                announce,
            } => self.session_closed(&session, &reason, announce).await,
            Report::FleetChanged { agent_id, update } => {
                self.fleet_changed(&agent_id, update).await
            }
            Report::HealthCrossed {
                agent_id,
                crossings,
            } => self.health_crossed(&agent_id, crossings).await,
            Report::Rotated { agent_id, report } => {
                self.rotated_on_its_own(&agent_id, report).await
            }
            Report::Usage { agent_id, report } => self.usage(&agent_id, &report).await,
            Report::PolicyDenied {
                agent_id,
                command_id,
                message,
            } => self.policy_denied(&agent_id, &command_id, &message).await,
        }
    }

    async fn on_work(&self, work: Work) {
        let result = match work {
            Work::Connected { agent_id } => self.on_connected(&agent_id).await,
            Work::Queued { agent_id } => self
                .gateway
                .redeliver(&agent_id, true, |body| self.rebuild(&agent_id, body))
                .await
                .map(drop)
                .map_err(Into::into),
            Work::Reconciled { agent_id, missing } => {
                self.repair_missing(&agent_id, missing).await;
                Ok(())
            }
            Work::LateResult { agent_id, result } => self.on_late_result(&agent_id, result).await,
        };
        if let Err(e) = result {
            warn!("handling a gateway event failed: {e}");
        }
    }

    /// The agent is back (its `reconcile` is already sent): redeliver, then finish releases.
    async fn on_connected(&self, agent_id: &str) -> Result<(), super::AllocError> {
        let sent = self
            .gateway
            .redeliver(agent_id, false, |body| self.rebuild(agent_id, body))
            .await?;
        if sent > 0 {
            info!(agent_id, sent, "redelivered queued commands");
        }
        self.finish_releases(agent_id).await
    }

    /// The body to redeliver to `agent_id`: a `provision` gets its password back from the
    /// sealed record, and is obsolete (`None`) once its allocation is neither pending nor
    /// live, or is on another modem than the command's (unless that move is in flight). A
    /// `release` of an allocation that is live on this agent is obsolete too: it was for
    /// a port the allocation has since moved back onto.
    async fn rebuild(&self, agent_id: &str, body: CommandBody) -> Option<CommandBody> {
        let mut p = match body {
            CommandBody::Provision(p) => p,
            CommandBody::Release(r) => {
                let live_here = self
                    .store
                    .allocation(&r.allocation_id)
                    .await
                    .ok()?
                    .is_some_and(|a| a.state.is_live() && a.agent_id == agent_id);
                return (!live_here).then_some(CommandBody::Release(r));
            }
            other => return Some(other),
        };
        let record = self.store.allocation(&p.allocation_id).await.ok()??;
        let wanted = record.state == AllocationState::Pending || record.state.is_live();
        let here = (record.agent_id == agent_id && record.imei == p.imei)
            || self
                .replacing
                .is_moving(&p.allocation_id, agent_id, &p.imei);
        if !wanted || !here {
            return None;
        }
        p.password = self.password(&record).ok()??;
        Some(CommandBody::Provision(p))
    }

    /// Dispatches `release` for every `releasing` allocation of a reconnected agent that
    /// has no `release` queued already (that one was just redelivered).
    async fn finish_releases(&self, agent_id: &str) -> Result<(), super::AllocError> {
        let releasing = self
            .store
            .agent_allocations(agent_id, |a| a.state == AllocationState::Releasing)
            .await?;
        for record in releasing {
            if self
                .gateway
                .has_pending_for(agent_id, &record.allocation_id)
                .await
            {
                continue;
            }
            let _order = self.locks.lock(&record.order_id).await;
            let current = self.find(&record.allocation_id).await?;
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
            CommandOutput::Release(r) => self.on_late_release(agent_id, &r.allocation_id).await,
            _ => {
                info!(agent_id, command_id = %result.id, "late command result ignored");
                Ok(())
            }
        }
    }

    /// A port was created after we gave up on it: unless its allocation is live on this
    /// agent, remove it. For a live one on the same modem (a repair answered late) the
    /// port's whereabouts are stored; on another modem of the same agent (a move answered
    /// late: the agent moved the port) the port is put back where the record says.
    async fn on_late_provision(
        &self,
        agent_id: &str,
        port: &Provisioned,
    ) -> Result<(), super::AllocError> {
        let allocation_id = port.allocation_id.as_str();
        if let Some(record) = self.settled_live(allocation_id).await? {
            if record.agent_id == agent_id && record.imei != port.imei {
                return self.reassert(allocation_id).await;
            }
            if record.agent_id == agent_id {
                let moved = record.http_port != Some(port.http_port)
                    || record.socks_port != Some(port.socks_port);
                return if moved {
                    self.repaired(record, port).await
                } else {
                    Ok(())
                };
            }
        }
        warn!(
            agent_id,
            allocation_id,
            "late provision of a failed or moved allocation: releasing the orphan port"
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

    /// The allocation if it is live, read under its order lock so that a provisioning
    /// still settling (the result raced its timeout) is seen in its final state.
    async fn settled_live(
        &self,
        allocation_id: &str,
    ) -> Result<Option<crate::store::AllocationRecord>, super::AllocError> {
        let Some(record) = self.store.allocation(allocation_id).await? else {
            return Ok(None);
        };
        let _order = self.locks.lock(&record.order_id).await;
        let current = self.store.allocation(allocation_id).await?;
        Ok(current.filter(|r| r.state.is_live()))
    }

    /// A release confirmed late; it completes the allocation only if it came from the
    /// allocation's current agent (the agent it moved away from also gets `release`).
    async fn on_late_release(
        &self,
        agent_id: &str,
        allocation_id: &str,
    ) -> Result<(), super::AllocError> {
        let order_id = self.find(allocation_id).await?.order_id;
        let _order = self.locks.lock(&order_id).await;
        let mut record = self.find(allocation_id).await?;
        if record.state == AllocationState::Releasing && record.agent_id == agent_id {
            self.mark_released(&mut record, "system").await?;
            info!(allocation_id, "allocation released (late confirmation)");
        }
        Ok(())
    }
}
