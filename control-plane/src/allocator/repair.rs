//! Repairing what `reconcile` found missing: an `active` allocation whose port is gone
//! from the box (ProxySmart reset, disk restored, port deleted by hand) is provisioned
//! again with the SAME allocation id, login, password and limits — the speed limit of the
//! order, and what is left of its traffic quota (`quota_left`: a new port starts a new
//! counter on the box) — so the buyer's proxy lines stay valid; its host and ports are
//! updated. If the agent refuses, the allocation is
//! `failed` (`release_reason: failed`) so the marketplace learns the port is gone. If the
//! agent does not answer, nothing changes: the next reconnect's `reconcile` tries again.

use super::{fail, AllocError, Allocator};
use crate::events::EventType;
use crate::ids::unix_ms;
use crate::store::{AllocationRecord, AuditAction};
use farmhand_protocol::{CommandBody, CommandOutput, Outcome, Provision, Provisioned};
use tracing::{info, warn};

impl Allocator {
    /// Repairs each allocation of `agent_id` that its agent reported `missing`.
    pub(super) async fn repair_missing(&self, agent_id: &str, missing: Vec<String>) {
        for allocation_id in missing {
            if let Err(e) = self.repair_one(agent_id, &allocation_id).await {
                warn!(
                    agent_id,
                    allocation_id, "repairing a missing port failed: {e}"
                );
            }
        }
    }

    async fn repair_one(&self, agent_id: &str, allocation_id: &str) -> Result<(), AllocError> {
        let Some(record) = self.store.allocation(allocation_id).await? else {
            return Ok(());
        };
        let _order = self.locks.lock(&record.order_id).await;
        let record = self.find(allocation_id).await?;
        // Pending ones have their `provision` redelivered; expired ones are the sweeper's.
        if record.agent_id != agent_id
            || !record.state.is_live()
            || record.expires_at <= self.clock.now()
        {
            return Ok(());
        }
        let Some(password) = self.password(&record)? else {
            return self
                .fail_repair(record, "the buyer password is no longer stored")
                .await;
        };
        warn!(
            allocation_id,
            "the agent lost this port: re-creating it with the same credentials"
        );
        let body = CommandBody::Provision(Provision {
            allocation_id: record.allocation_id.clone(),
            imei: record.imei.clone(),
            login: record.login.clone(),
            password,
            expires_at_ms: unix_ms(record.expires_at),
            bandwidth_kbit: record.request.bandwidth_kbit,
            traffic_quota_mb: self.quota_left(&record).await,
            rotate_every_s: record.request.rotate_every_s,
        });
        let timeout = self.config.provisioning_timeout();
        match self.gateway.dispatch(agent_id, body, timeout).await {
            Ok(Outcome::Ok {
                output: CommandOutput::Provision(p),
            }) if p.allocation_id == record.allocation_id => self.repaired(record, &p).await,
            Ok(Outcome::Ok { .. }) => {
                self.fail_repair(record, "the agent answered provision with another op")
                    .await
            }
            Ok(Outcome::Error { error }) => {
                let why = format!(
                    "the port was lost and could not be re-created: {}: {}",
                    error.code.as_str(),
                    error.message
                );
                self.fail_repair(record, &why).await
            }
            Err(e) => {
                info!(
                    allocation_id,
                    "repair not confirmed ({e}); the next reconnect retries"
                );
                Ok(())
            }
        }
    }

    /// The traffic quota for a re-created port: the order's quota minus the usage agents
    /// reported so far (a new port's counter starts at zero on the box), at least 1 MB
    /// (0 would mean "no limit"); `None` when the order has no quota.
    pub(super) async fn quota_left(&self, record: &AllocationRecord) -> Option<u64> {
        let quota_mb = record.request.traffic_quota_mb?;
        let used_bytes = match self.store.usage(&record.allocation_id).await {
            Ok(usage) => usage.map_or(0, |u| u.bytes_in.saturating_add(u.bytes_out)),
            Err(e) => {
                warn!(allocation_id = %record.allocation_id, "cannot read the usage; the new port gets the whole quota: {e}");
                0
            }
        };
        let used_mb = used_bytes.div_ceil(1_000_000);
        Some(quota_mb.saturating_sub(used_mb).max(1))
    }

    /// Stores where the re-created port is (the site's host may have changed too). When the
    /// buyer's endpoint changed (host or port numbers), `allocation.replaced` tells the
    /// marketplace to show the new one: the same action as for a move, and the allocation's
    /// `state` (still `active`) tells the two apart.
    pub(super) async fn repaired(
        &self,
        mut record: AllocationRecord,
        port: &Provisioned,
    ) -> Result<(), AllocError> {
        let before = (record.host.clone(), record.http_port, record.socks_port);
        if let Some(site) = self.fleet.agent(&record.agent_id).and_then(|a| a.site) {
            record.host = Some(site.public_host);
        }
        record.http_port = Some(port.http_port);
        record.socks_port = Some(port.socks_port);
        record.port_id = Some(port.port_id.clone());
        if before != (record.host.clone(), record.http_port, record.socks_port) {
            self.save_reporting(&record, None, EventType::AllocationReplaced)
                .await?;
        } else {
            self.store.save_allocation(&record).await?;
        }
        info!(allocation_id = %record.allocation_id, "missing port re-created");
        self.audit("system", AuditAction::AllocationRepaired, &record)
            .await;
        Ok(())
    }

    /// `active → failed`: the port is gone for good.
    async fn fail_repair(&self, mut record: AllocationRecord, why: &str) -> Result<(), AllocError> {
        warn!(allocation_id = %record.allocation_id, "allocation failed: {why}");
        fail(&mut record, why);
        record.released_at = Some(self.clock.now());
        self.save_reporting(&record, None, EventType::AllocationFailed)
            .await?;
        self.fleet.release_load(&record.agent_id, &record.imei);
        self.audit("system", AuditAction::AllocationFailed, &record)
            .await;
        self.ended.notify_one();
        Ok(())
    }
}
