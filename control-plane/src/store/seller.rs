//! Everything the store holds about one seller's box (an agent): what the seller export
//! shows and what seller erasure removes or tombstones. One place decides what "about
//! this agent" means for each table, so export and erasure cannot disagree.
//!
//! Scans whole tables (allocations, usage, rotations, the audit log, probe records): export and erasure
//! are rare admin operations, and an index per agent would cost every write.

use super::{decode, AgentRecord, AllocationRecord, AuditEntry, AuditEvent, PendingCommand};
use super::{AgentHour, ModemDay, ProbeTrack, RotationRecord, SledStore, StoreError, UsageTotals};

/// What the store holds about one agent.
#[derive(Debug, Clone)]
pub struct SellerRecords {
    /// Its identity.
    pub agent: AgentRecord,
    /// Allocations on its modems, now or before a replacement moved them.
    pub allocations: Vec<AllocationRecord>,
    /// Traffic totals it reported: (allocation id, totals).
    pub usage: Vec<(String, UsageTotals)>,
    /// Its modems' last rotations: (IMEI, record).
    pub rotations: Vec<(String, RotationRecord)>,
    /// IMEIs an admin named it the owner of.
    pub modem_owners: Vec<String>,
    /// Commands waiting for it.
    pub pending_commands: Vec<PendingCommand>,
    /// Audit entries about it (see `audit_names`).
    pub audit: Vec<AuditEntry>,
    /// Probe records of its ports: (allocation id, record).
    pub probes: Vec<(String, ProbeTrack)>,
    /// Its hourly quality figures.
    pub quality: Vec<AgentHour>,
    /// Its modems' traffic per day.
    pub usage_days: Vec<ModemDay>,
}

/// Whether `record` ran (or runs) on `agent_id`'s box.
pub(crate) fn served_by(record: &AllocationRecord, agent_id: &str) -> bool {
    record.agent_id == agent_id
        || record
            .replacements
            .iter()
            .any(|r| r.from_agent_id == agent_id || r.to_agent_id == agent_id)
}

/// Whether an audit entry is about `agent_id`: the agent acted, was acted on, or its
/// details name it anywhere (agent ids are random, so a match is never a coincidence).
pub(crate) fn audit_names(event: &AuditEvent, agent_id: &str) -> bool {
    let agent = format!("agent:{agent_id}");
    event.actor == agent || event.target == agent || event.details.to_string().contains(agent_id)
}

impl SledStore {
    /// Everything about `agent_id`; `None` when no such agent is enrolled.
    pub fn seller_records(&self, agent_id: &str) -> Result<Option<SellerRecords>, StoreError> {
        let Some(agent) = self.agent(agent_id)? else {
            return Ok(None);
        };
        let allocations = self.allocations_where(|a| served_by(a, agent_id))?;
        let mut usage = Vec::new();
        let suffix = format!("/{agent_id}");
        for entry in self.usage.iter() {
            let (key, raw) = entry?;
            let key = String::from_utf8_lossy(&key);
            if let Some(allocation_id) = key.strip_suffix(&suffix) {
                usage.push((allocation_id.to_string(), decode(&raw)?));
            }
        }
        let prefix = format!("{agent_id}/");
        let mut rotations = Vec::new();
        for entry in self.rotations.tree.scan_prefix(prefix.as_bytes()) {
            let (key, raw) = entry?;
            let imei = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            rotations.push((imei, decode(&raw)?));
        }
        let modem_owners = self
            .modem_owners()?
            .into_iter()
            .filter(|(_, owner)| owner == agent_id)
            .map(|(imei, _)| imei)
            .collect();
        let pending_commands = self.pending_commands(agent_id)?;
        let audit = self.audit_about(agent_id)?;
        let probes = self.probe_tracks_of(agent_id)?;
        let quality = self.quality_of(agent_id)?;
        let usage_days = self.modem_days(&[agent_id.to_string()], i64::MIN, i64::MAX)?;
        Ok(Some(SellerRecords {
            agent,
            allocations,
            usage,
            rotations,
            modem_owners,
            pending_commands,
            audit,
            probes,
            quality,
            usage_days,
        }))
    }

    /// Every audit entry about `agent_id`, oldest first.
    fn audit_about(&self, agent_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let page = self.audit_page(after, time::OffsetDateTime::UNIX_EPOCH, 1000)?;
            after = page.entries.last().map(|e| e.cursor);
            found.extend(
                page.entries
                    .into_iter()
                    .filter(|e| audit_names(&e.event, agent_id)),
            );
            if !page.more {
                return Ok(found);
            }
        }
    }
}
