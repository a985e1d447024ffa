//! One seller's records on PostgreSQL: what the export shows and what erasure removes or
//! tombstones, with sled's meaning (`store::seller`, `store::erase`; the same predicates
//! decide what is "about" the agent).

use super::statements::Cached;
use super::{db, from_json, PgStore};
use crate::store::{
    audit_names, clear_detail, served_by, AllocationRecord, AuditCursor, AuditEntry, AuditEvent,
    EraseError, Erased, SellerRecords, StoreError, UsageTotals,
};
use serde_json::{json, Value};
use std::collections::BTreeSet;

impl PgStore {
    /// Everything about `agent_id`; `None` when no such agent is enrolled.
    pub async fn seller_records(
        &self,
        agent_id: &str,
    ) -> Result<Option<SellerRecords>, StoreError> {
        let Some(agent) = self.agent(agent_id).await? else {
            return Ok(None);
        };
        let mut allocations = self
            .records(
                "SELECT record FROM allocations
                 WHERE agent_id = $1 OR position($1 in record::text) > 0
                 ORDER BY allocation_id",
                &[&agent_id],
            )
            .await?;
        allocations.retain(|a| served_by(a, agent_id));
        let client = self.client().await?;
        let mut usage = Vec::new();
        for row in client
            .cached_query(
                "SELECT allocation_id, bytes_in, bytes_out, measured_at_ms FROM allocation_usage
                 WHERE agent_id = $1 ORDER BY allocation_id",
                &[&agent_id],
            )
            .await
            .map_err(db)?
        {
            let n = |i: usize| -> Result<u64, StoreError> {
                let v: i64 = row.try_get(i).map_err(db)?;
                Ok(u64::try_from(v).unwrap_or(0))
            };
            let totals = UsageTotals {
                bytes_in: n(1)?,
                bytes_out: n(2)?,
                measured_at_ms: n(3)?,
            };
            usage.push((row.try_get(0).map_err(db)?, totals));
        }
        let mut rotations = Vec::new();
        for row in client
            .cached_query(
                "SELECT imei FROM modem_rotations WHERE agent_id = $1 ORDER BY imei",
                &[&agent_id],
            )
            .await
            .map_err(db)?
        {
            let imei: String = row.try_get(0).map_err(db)?;
            if let Some(last) = self.last_rotation(agent_id, &imei).await? {
                rotations.push((imei, last));
            }
        }
        let modem_owners = self
            .modem_owners()
            .await?
            .into_iter()
            .filter(|(_, owner)| owner == agent_id)
            .map(|(imei, _)| imei)
            .collect();
        let pending_commands = self.pending_commands(agent_id).await?;
        let audit = self
            .audit_mentioning(agent_id, &BTreeSet::new())
            .await?
            .into_iter()
            .filter(|e| audit_names(&e.event, agent_id))
            .collect();
        Ok(Some(SellerRecords {
            agent,
            allocations,
            usage,
            rotations,
            modem_owners,
            pending_commands,
            audit,
            probes: self.probe_tracks_of(agent_id).await?,
            quality: self.quality_of(agent_id).await?,
            usage_days: self
                .modem_days(&[agent_id.to_string()], i64::MIN, i64::MAX)
                .await?,
        }))
    }

    /// Audit entries whose actor, target or details contain `agent_id`, or whose target is
    /// one of `imeis` (a superset of what is about the agent), oldest first.
    async fn audit_mentioning(
        &self,
        agent_id: &str,
        imeis: &BTreeSet<String>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let targets: Vec<String> = imeis.iter().map(|i| format!("modem:{i}")).collect();
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT seq, at, actor, action, target, details FROM audit
                 WHERE position($1 in actor || target || details::text) > 0
                    OR target = ANY($2)
                 ORDER BY seq",
                &[&agent_id, &targets],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq").map_err(db)?;
                let action: String = row.try_get("action").map_err(db)?;
                Ok(AuditEntry {
                    cursor: AuditCursor::at(u64::try_from(seq).unwrap_or(0)),
                    event: AuditEvent {
                        at: row.try_get("at").map_err(db)?,
                        actor: row.try_get("actor").map_err(db)?,
                        action: from_json(Value::String(action))?,
                        target: row.try_get("target").map_err(db)?,
                        details: row.try_get("details").map_err(db)?,
                    },
                })
            })
            .collect()
    }

    /// Erases everything about `agent_id` but the tombstoned financial core (see
    /// `store::erase`), the deletions and rewrites in one transaction. Refused while one
    /// of its allocations holds a port.
    pub async fn erase_seller(
        &self,
        agent_id: &str,
        tombstone: &str,
    ) -> Result<Erased, EraseError> {
        let records = self
            .seller_records(agent_id)
            .await?
            .ok_or_else(|| EraseError::Unknown(agent_id.to_string()))?;
        let live_here = |a: &AllocationRecord| a.agent_id == agent_id && a.state.holds_port();
        if let Some(live) = records.allocations.iter().find(|a| live_here(a)) {
            return Err(EraseError::Live(live.allocation_id.clone()));
        }
        let mut erased = Erased {
            tombstone_id: tombstone.to_string(),
            ..Erased::default()
        };
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
            if self
                .tombstone_allocation(&record.allocation_id, agent_id, tombstone)
                .await?
            {
                erased.allocations_tombstoned += 1;
            }
        }
        imeis.remove("");
        let audit: Vec<AuditEntry> = self
            .audit_mentioning(agent_id, &imeis)
            .await?
            .into_iter()
            .filter(|e| {
                let names_modem = e
                    .event
                    .target
                    .strip_prefix("modem:")
                    .is_some_and(|imei| imeis.contains(imei));
                audit_names(&e.event, agent_id) || names_modem
            })
            .collect();

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        erased.usage_tombstoned = count(
            tx.cached_execute(
                "UPDATE allocation_usage SET agent_id = $2 WHERE agent_id = $1",
                &[&agent_id, &tombstone],
            )
            .await
            .map_err(db)?,
        );
        tx.cached_execute(
            "DELETE FROM retention_queue WHERE kind = 'rotation'
               AND position(convert_to($1 || '/', 'UTF8') in record) = 1",
            &[&agent_id],
        )
        .await
        .map_err(db)?;
        let delete = |table: &'static str| {
            let tx = &tx;
            async move {
                tx.cached_execute(
                    &format!("DELETE FROM {table} WHERE agent_id = $1"),
                    &[&agent_id],
                )
                .await
                .map(count)
                .map_err(db)
            }
        };
        erased.rotations_deleted = delete("modem_rotations").await?;
        erased.modem_owners_deleted = delete("modem_owners").await?;
        erased.commands_deleted = delete("pending_commands").await?;
        erased.tokens_deleted = delete("enrollment_tokens").await?;
        erased.probes_deleted = delete("probe_tracks").await?;
        // The agent's row goes at the end of this transaction, its quality hours with it
        // (foreign key); counted here.
        erased.quality_hours_deleted = delete("agent_quality").await?;
        erased.usage_days_deleted = delete("modem_usage_days").await?;
        let actor = format!("agent:{agent_id}");
        for entry in &audit {
            let seq = i64::try_from(entry.cursor.position()).unwrap_or(i64::MAX);
            let new_actor = if entry.event.actor == actor {
                format!("agent:{tombstone}")
            } else {
                entry.event.actor.clone()
            };
            tx.cached_execute(
                "UPDATE audit SET actor = $2, target = $3, details = $4 WHERE seq = $1",
                &[
                    &seq,
                    &new_actor,
                    &format!("agent:{tombstone}"),
                    &json!({"agent_id": tombstone, "erased": true}),
                ],
            )
            .await
            .map_err(db)?;
            erased.audit_rewritten += 1;
        }
        erased.deliveries_scrubbed = count(
            tx.cached_execute(
                "UPDATE webhook_deliveries SET body = $2, last_error = NULL
                 WHERE state <> 'pending' AND position($1 in body) > 0",
                &[&agent_id, &json!({"erased": true}).to_string()],
            )
            .await
            .map_err(db)?,
        );
        delete("agents").await?;
        tx.commit().await.map_err(db)?;
        Ok(erased)
    }

    /// Replaces `agent_id` by `tombstone` in one allocation (see `store::erase`).
    async fn tombstone_allocation(
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
        .await
    }
}
