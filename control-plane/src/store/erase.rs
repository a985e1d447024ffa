//! Seller erasure, in the store: after the allocator has ended the agent's allocations,
//! [`SledStore::erase_seller`] removes or tombstones every record about the agent
//! (`seller::SellerRecords` decides which). What stays is the financial core of the
//! allocations its box served — with the agent's id replaced by a tombstone id and the
//! operational detail (modem, host, ports) cleared — and their usage totals, re-keyed to the
//! tombstone, so a marketplace's books stay whole. Audit entries about the agent keep their
//! time, actor and action; their target and details are replaced by the tombstone.
//! Webhook deliveries already sent lose their body; one still pending is sent as it was
//! (the marketplace is owed the event) and goes with the delivery log's retention.

use super::forget::clear_detail;
use super::retention_queue::from_ms;
use super::seller::{audit_names, served_by};
use super::RetentionKind;
use super::{decode, encode, AllocationRecord, AuditEvent, Delivery, DeliveryState};
use super::{SledStore, StoreError};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::PoisonError;

/// What an erasure did, by kind (counts only: the erased data is not repeated anywhere).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// The id that replaces the agent's in what stays.
    pub tombstone_id: String,
    /// Allocations whose financial core now names the tombstone.
    pub allocations_tombstoned: usize,
    /// Usage totals re-keyed to the tombstone.
    pub usage_tombstoned: usize,
    /// Rotation records deleted.
    pub rotations_deleted: usize,
    /// Modem ownership records deleted.
    pub modem_owners_deleted: usize,
    /// Waiting commands deleted.
    pub commands_deleted: usize,
    /// Enrollment tokens deleted (the one that enrolled it).
    pub tokens_deleted: usize,
    /// Audit entries rewritten to the tombstone.
    pub audit_rewritten: usize,
    /// Sent webhook deliveries whose body was dropped.
    pub deliveries_scrubbed: usize,
    /// Probe records of its ports deleted.
    pub probes_deleted: usize,
    /// Hours of quality figures deleted.
    pub quality_hours_deleted: usize,
    /// Days of its modems' traffic deleted (the allocations' totals stay).
    pub usage_days_deleted: usize,
}

/// Why an erasure did not run.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// No such agent.
    #[error("no agent {0:?}")]
    Unknown(String),
    /// An allocation of the agent still holds a port: end it first.
    #[error("allocation {0} of the agent is still live")]
    Live(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for EraseError {
    fn from(e: sled::Error) -> Self {
        EraseError::Store(e.into())
    }
}

impl SledStore {
    /// Erases everything about `agent_id` but the tombstoned financial core (see the
    /// module docs); flushed. Refused while one of its allocations holds a port.
    pub fn erase_seller(&self, agent_id: &str, tombstone: &str) -> Result<Erased, EraseError> {
        let records = self
            .seller_records(agent_id)?
            .ok_or_else(|| EraseError::Unknown(agent_id.to_string()))?;
        let live_here = |a: &AllocationRecord| a.agent_id == agent_id && a.state.holds_port();
        if let Some(live) = records.allocations.iter().find(|a| live_here(a)) {
            return Err(EraseError::Live(live.allocation_id.clone()));
        }
        let mut erased = Erased {
            tombstone_id: tombstone.to_string(),
            ..Erased::default()
        };
        // The modems it reported, for audit entries that name a modem only.
        let mut imeis: BTreeSet<String> = records.modem_owners.iter().cloned().collect();
        imeis.extend(records.rotations.iter().map(|(imei, _)| imei.clone()));

        for record in &records.allocations {
            if record.agent_id == agent_id {
                imeis.insert(record.imei.clone());
            }
            for moved in &record.replacements {
                if moved.from_agent_id == agent_id {
                    imeis.insert(moved.from_imei.clone());
                }
                if moved.to_agent_id == agent_id {
                    imeis.insert(moved.to_imei.clone());
                }
            }
            if self.tombstone_allocation(&record.allocation_id, agent_id, tombstone)? {
                erased.allocations_tombstoned += 1;
            }
        }
        imeis.remove("");

        for (allocation_id, totals) in &records.usage {
            self.usage
                .insert(format!("{allocation_id}/{tombstone}"), encode(totals)?)?;
            self.usage.remove(format!("{allocation_id}/{agent_id}"))?;
            erased.usage_tombstoned += 1;
        }
        {
            let mut last = self
                .rotations
                .last
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (imei, rotation) in &records.rotations {
                let key = format!("{agent_id}/{imei}");
                self.rotations.tree.remove(key.as_bytes())?;
                let started = from_ms(rotation.at_ms);
                self.unqueue_retention(RetentionKind::Rotation, started, key.as_bytes())?;
                last.remove(&key);
                erased.rotations_deleted += 1;
            }
        }
        for imei in &records.modem_owners {
            self.modem_owners.remove(imei.as_bytes())?;
            erased.modem_owners_deleted += 1;
        }
        erased.commands_deleted = self.purge_agent_commands(agent_id)?;
        erased.tokens_deleted = self.delete_tokens_of(agent_id)?;
        erased.audit_rewritten = self.tombstone_audit(agent_id, tombstone, &imeis)?;
        erased.deliveries_scrubbed = self.scrub_deliveries(agent_id)?;
        for (allocation_id, _) in &records.probes {
            self.forget_probe_track(allocation_id)?;
            erased.probes_deleted += 1;
        }
        self.agents.remove(agent_id.as_bytes())?;
        // After the agent is gone, so no late addition lands (`add_quality` needs it).
        erased.quality_hours_deleted = self.forget_quality_of(agent_id)?;
        erased.usage_days_deleted = self.forget_modem_days_of(agent_id)?;
        self.flush()?;
        Ok(erased)
    }

    /// Replaces `agent_id` by `tombstone` in one allocation (compare-and-swap: a move of a
    /// live allocation that left this box goes on meanwhile). An allocation that ran here
    /// loses its operational detail; one that moved on to another box keeps its own and
    /// loses only this box's modem from its history.
    fn tombstone_allocation(
        &self,
        allocation_id: &str,
        agent_id: &str,
        tombstone: &str,
    ) -> Result<bool, StoreError> {
        self.rewrite_allocation(allocation_id, |record| {
            if !served_by(record, agent_id) {
                return false;
            }
            for moved in &mut record.replacements {
                if moved.from_agent_id == agent_id {
                    moved.from_agent_id = tombstone.to_string();
                    moved.from_imei.clear();
                }
                if moved.to_agent_id == agent_id {
                    moved.to_agent_id = tombstone.to_string();
                    moved.to_imei.clear();
                }
            }
            if record.agent_id == agent_id {
                record.agent_id = tombstone.to_string();
                clear_detail(record);
            }
            true
        })
    }

    fn delete_tokens_of(&self, agent_id: &str) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for entry in self.tokens.iter() {
            let (hash, raw) = entry?;
            let token: super::TokenRecord = decode(&raw)?;
            if token.agent_id.as_deref() == Some(agent_id) {
                self.tokens.remove(hash)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Rewrites the audit entries about the agent or its modems: same time, actor and
    /// action; target and details name the tombstone only.
    fn tombstone_audit(
        &self,
        agent_id: &str,
        tombstone: &str,
        imeis: &BTreeSet<String>,
    ) -> Result<usize, StoreError> {
        let mut rewritten = 0;
        for entry in self.audit.iter() {
            let (key, raw) = entry?;
            let mut event: AuditEvent = decode(&raw)?;
            let names_modem = event
                .target
                .strip_prefix("modem:")
                .is_some_and(|imei| imeis.contains(imei));
            if !(audit_names(&event, agent_id) || names_modem) {
                continue;
            }
            if event.actor == format!("agent:{agent_id}") {
                event.actor = format!("agent:{tombstone}");
            }
            event.target = format!("agent:{tombstone}");
            event.details = json!({"agent_id": tombstone, "erased": true});
            self.audit.insert(key, encode(&event)?)?;
            rewritten += 1;
        }
        Ok(rewritten)
    }

    /// Drops the body of every sent delivery that names the agent.
    fn scrub_deliveries(&self, agent_id: &str) -> Result<usize, StoreError> {
        let mut scrubbed = 0;
        for entry in self.webhooks.deliveries.iter() {
            let (key, raw) = entry?;
            let mut delivery: Delivery = decode(&raw)?;
            if delivery.state == DeliveryState::Pending || !delivery.body.contains(agent_id) {
                continue;
            }
            delivery.body = json!({"erased": true}).to_string();
            delivery.last_error = None;
            self.webhooks.deliveries.insert(key, encode(&delivery)?)?;
            scrubbed += 1;
        }
        Ok(scrubbed)
    }
}
