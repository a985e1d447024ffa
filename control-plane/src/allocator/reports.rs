//! What agents report, given its meaning: the gateway updates the live fleet view and hands
//! the rest up as [`Report`](crate::gateway::Report)s; here they become audit
//! entries, webhook events, stored usage totals and rotation records. Handled in arrival
//! order by the one events task (each is a few local writes), so an agent's
//! `agent.connected` never follows its `agent.disconnected`.
//!
//! - A session opening or ending is audited; webhooks hear `agent.connected` /
//!   `agent.disconnected` (not for sessions the plane closed because it was stopping).
//! - Modem transitions become `modem.online` / `modem.offline`; an IMEI reported by
//!   several agents is logged, audited with the live allocations on it (which stay where
//!   they are) and announced as `modem.duplicate_identity`.
//! - A health crossing is logged and announced, either way.
//! - A rotation the agent did on its own is recorded like a manual one (restarting the
//!   REST cooldown) — only for a modem this agent reports, and never later than now, so an
//!   agent cannot hold the cooldown of someone else's modem or push it into the future.
//! - Usage totals are stored (`store::usage`: only for the agent's own allocations, never
//!   lowering a stored total).
//! - A command the seller's policy refused is audited with the agent's short message (it
//!   says which rule; agents never put credentials in it).

use super::Allocator;
use crate::events::{self, EventType};
use crate::fleet::{Duplicate, HealthCrossing, IdentityChange, IdentityChangeKind, Update};
use crate::gateway::SessionInfo;
use crate::ids::unix_ms;
use crate::store::{AuditAction, RotationRecord};
use farmhand_protocol::{RotationReport, UsageReport};
use serde_json::json;
use tracing::{debug, info, warn};

impl Allocator {
    pub(super) async fn session_opened(&self, session: &SessionInfo, client: &str, version: u32) {
        let agent_id = &session.agent_id;
        self.store
            .audit(
                format!("agent:{agent_id}"),
                AuditAction::AgentConnected,
                format!("agent:{agent_id}"),
                json!({"session_id": session.session_id, "client": client,
                   "protocol_version": version, "agent_version": session.agent_version}),
            )
            .await;
        self.events
            .emit(EventType::AgentConnected, agent_object(session, None))
            .await;
    }

    pub(super) async fn session_closed(&self, session: &SessionInfo, reason: &str, announce: bool) {
        let agent_id = &session.agent_id;
        self.store
            .audit(
                format!("agent:{agent_id}"),
                AuditAction::AgentDisconnected,
                format!("agent:{agent_id}"),
                json!({"session_id": session.session_id, "reason": reason}),
            )
            .await;
        if announce {
            self.events
                .emit(
                    EventType::AgentDisconnected,
                    agent_object(session, Some(reason)),
                )
                .await;
        }
    }

    pub(super) async fn fleet_changed(&self, agent_id: &str, update: Update) {
        self.record_modems(agent_id).await;
        for t in update.transitions {
            let kind = if t.modem.online {
                EventType::ModemOnline
            } else {
                EventType::ModemOffline
            };
            let object = events::modem_object(agent_id, t.site.as_ref(), &t.modem, t.reason);
            self.events.emit(kind, object).await;
        }
        for duplicate in update.duplicates {
            self.report_duplicate(agent_id, duplicate).await;
        }
        for change in update.identity_changes {
            self.report_identity_change(change).await;
        }
    }

    /// Audits and emits a SIM swap, re-plug or move; a SIM swap under a sold modem asks
    /// for its allocations to be probed now (the buyer's carrier identity may have changed).
    async fn report_identity_change(&self, change: IdentityChange) {
        info!(imei = %change.imei, agent_id = %change.agent_id, kind = change.kind.as_str(), "modem identity changed");
        if change.kind == IdentityChangeKind::SimSwapped {
            self.fleet.request_probe(&change.agent_id, &change.imei);
        }
        self.store
            .audit(
                format!("agent:{}", change.agent_id),
                AuditAction::ModemIdentityChanged,
                format!("modem:{}", change.imei),
                json!({"kind": change.kind.as_str(), "from": change.from, "to": change.to}),
            )
            .await;
        self.events
            .emit(EventType::ModemIdentityChanged, events::to_object(&change))
            .await;
    }

    /// Writes `agent_id`'s modems as the fleet has them now to a store that keeps them
    /// (`Store::keeps_modems`).
    pub(super) async fn record_modems(&self, agent_id: &str) {
        if !self.store.keeps_modems() {
            return;
        }
        let modems: Vec<(String, u32, serde_json::Value)> = self
            .fleet
            .agent_modems(agent_id)
            .into_iter()
            .map(|m| {
                let view = serde_json::to_value(&m).unwrap_or_default();
                (m.imei, m.capacity, view)
            })
            .collect();
        if let Err(e) = self.store.record_modems(agent_id, &modems).await {
            warn!(agent_id, "cannot record the agent's modems: {e}");
        }
    }

    async fn report_duplicate(&self, reporter: &str, duplicate: Duplicate) {
        let mut allocations = Vec::new();
        for agent_id in &duplicate.agent_ids {
            match self
                .store
                .agent_allocations(agent_id, |r| r.imei == duplicate.imei)
                .await
            {
                Ok(found) => allocations.extend(found.into_iter().map(|r| r.allocation_id)),
                Err(e) => {
                    warn!(imei = %duplicate.imei, "cannot list the allocations on a duplicate IMEI: {e}")
                }
            }
        }
        warn!(imei = %duplicate.imei, agents = ?duplicate.agent_ids, allocations = allocations.len(),
              "one IMEI reported by several agents: not sold until an admin names its owner");
        self.store
            .audit(
                format!("agent:{reporter}"),
                AuditAction::ModemDuplicateIdentity,
                format!("modem:{}", duplicate.imei),
                json!({"agent_ids": duplicate.agent_ids, "allocations": allocations}),
            )
            .await;
        let object = events::to_object(&events::IdentityEvent {
            imei: duplicate.imei,
            agent_ids: duplicate.agent_ids,
            owner: None,
            live_allocations: Some(allocations.len()),
            resolved: false,
        });
        self.events
            .emit(EventType::ModemDuplicateIdentity, object)
            .await;
    }

    pub(super) async fn health_crossed(&self, agent_id: &str, crossings: Vec<HealthCrossing>) {
        for crossing in crossings {
            let resource = crossing.resource.as_str();
            let kind = if crossing.past {
                warn!(agent_id, resource, reason = %crossing.reason, "box past a health limit: no new allocations there");
                EventType::AgentHealthLimited
            } else {
                info!(agent_id, resource, "box back within the health limits");
                EventType::AgentHealthRecovered
            };
            let object = events::to_object(&events::HealthEvent {
                agent_id: agent_id.to_string(),
                resource: resource.to_string(),
                reason: crossing.reason,
            });
            self.events.emit(kind, object).await;
        }
    }

    pub(super) async fn rotated_on_its_own(&self, agent_id: &str, report: RotationReport) {
        if !self
            .fleet
            .holders(&report.imei)
            .iter()
            .any(|a| a == agent_id)
        {
            warn!(agent_id, imei = %report.imei, "ignored a rotation report for a modem this agent does not report");
            return;
        }
        let clip = |ip: Option<String>| ip.map(|ip| ip.chars().take(64).collect::<String>());
        let record = RotationRecord {
            at_ms: report.at_ms.min(unix_ms(self.clock.now())),
            old_ip: clip(report.old_ip),
            new_ip: clip(report.new_ip),
            changed: report.changed,
            automatic: report.automatic,
        };
        info!(agent_id, imei = %report.imei, changed = record.changed, "the agent rotated a modem on its own");
        self.quality
            .rotated(agent_id, self.clock.now(), record.changed, None);
        let receipt = crate::fleet::RotationReceipt {
            at: crate::store::from_ms(record.at_ms),
            old_ip: record.old_ip.clone(),
            new_ip: record.new_ip.clone(),
            changed: record.changed,
            automatic: record.automatic,
            took_ms: None,
        };
        self.fleet.note_rotation(agent_id, &report.imei, receipt);
        if let Err(e) = self
            .store
            .record_rotation(agent_id, &report.imei, &record)
            .await
        {
            warn!(agent_id, imei = %report.imei, "cannot record the rotation: {e}");
        }
        self.store
            .audit(
                format!("agent:{agent_id}"),
                AuditAction::IpRotated,
                format!("modem:{}", report.imei),
                json!({"old_ip": record.old_ip, "new_ip": record.new_ip,
                   "changed": record.changed, "automatic": record.automatic}),
            )
            .await;
    }

    pub(super) async fn usage(&self, agent_id: &str, report: &UsageReport) {
        match self
            .store
            .record_usage_report(agent_id, report, unix_ms(self.clock.now()))
            .await
        {
            Ok(r) if r.ignored > 0 => {
                debug!(
                    agent_id,
                    stored = r.stored,
                    ignored = r.ignored,
                    "usage report: entries for allocations that are not this agent's were ignored"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(agent_id, "cannot store a usage report: {e}"),
        }
    }

    pub(super) async fn policy_denied(&self, agent_id: &str, command_id: &str, message: &str) {
        let message: String = message.chars().take(200).collect();
        self.store
            .audit(
                format!("agent:{agent_id}"),
                AuditAction::PolicyDenied,
                format!("agent:{agent_id}"),
                json!({"command_id": command_id, "message": message}),
            )
            .await;
    }
}

fn agent_object(session: &SessionInfo, reason: Option<&str>) -> serde_json::Value {
    let s = session;
    events::agent_object(&s.agent_id, &s.label, &s.hostname, &s.agent_version, reason)
}
