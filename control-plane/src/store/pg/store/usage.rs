//! Traffic usage per allocation and agent on PostgreSQL: each stored total only ever
//! grows (`GREATEST` in the upsert), as in sled.

use super::statements::Cached;
use super::{db, PgStore};
use crate::store::{AllocationRecord, StoreError, UsageRecorded, UsageTotals};
use farmhand_protocol::{UsageReport, MAX_USAGE_ENTRIES};

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn small(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Whether `agent_id` holds, or held, `record`'s port.
fn reported_by(record: &AllocationRecord, agent_id: &str) -> bool {
    record.agent_id == agent_id
        || record
            .replacements
            .iter()
            .any(|r| r.from_agent_id == agent_id)
}

impl PgStore {
    /// Stores every entry of `report` from `agent_id` that is about one of its allocations;
    /// the measurement time is clamped to `now_ms` (an agent's clock may run ahead).
    pub async fn record_usage_report(
        &self,
        agent_id: &str,
        report: &UsageReport,
        now_ms: u64,
    ) -> Result<UsageRecorded, StoreError> {
        let mut recorded = UsageRecorded::default();
        for entry in report.allocations.iter().take(MAX_USAGE_ENTRIES) {
            let ours = self
                .allocation(&entry.allocation_id)
                .await?
                .is_some_and(|record| reported_by(&record, agent_id));
            if !ours {
                recorded.ignored += 1;
                continue;
            }
            let totals = UsageTotals {
                bytes_in: entry.bytes_in,
                bytes_out: entry.bytes_out,
                measured_at_ms: report.measured_at_ms.min(now_ms),
            };
            self.record_usage(&entry.allocation_id, agent_id, totals)
                .await?;
            recorded.stored += 1;
        }
        recorded.ignored += report.allocations.len().saturating_sub(MAX_USAGE_ENTRIES);
        Ok(recorded)
    }

    /// Merges an agent's report for one allocation into what is stored (never lowering it).
    pub async fn record_usage(
        &self,
        allocation_id: &str,
        agent_id: &str,
        report: UsageTotals,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .cached_execute(
                "INSERT INTO allocation_usage
                   (allocation_id, agent_id, bytes_in, bytes_out, measured_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (allocation_id, agent_id) DO UPDATE SET
                   bytes_in = GREATEST(allocation_usage.bytes_in, EXCLUDED.bytes_in),
                   bytes_out = GREATEST(allocation_usage.bytes_out, EXCLUDED.bytes_out),
                   measured_at_ms =
                     GREATEST(allocation_usage.measured_at_ms, EXCLUDED.measured_at_ms)",
                &[
                    &allocation_id,
                    &agent_id,
                    &big(report.bytes_in),
                    &big(report.bytes_out),
                    &big(report.measured_at_ms),
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The allocation's usage: the sum over every agent that reported it (the latest
    /// measurement time); `None` before the first report.
    pub async fn usage(&self, allocation_id: &str) -> Result<Option<UsageTotals>, StoreError> {
        let row = self
            .client()
            .await?
            .cached_query_one(
                "SELECT sum(bytes_in)::bigint, sum(bytes_out)::bigint, max(measured_at_ms)
                 FROM allocation_usage WHERE allocation_id = $1",
                &[&allocation_id],
            )
            .await
            .map_err(db)?;
        let at: Option<i64> = row.try_get(2).map_err(db)?;
        let Some(at) = at else {
            return Ok(None);
        };
        let bytes_in: i64 = row.try_get(0).map_err(db)?;
        let bytes_out: i64 = row.try_get(1).map_err(db)?;
        Ok(Some(UsageTotals {
            bytes_in: small(bytes_in),
            bytes_out: small(bytes_out),
            measured_at_ms: small(at),
        }))
    }
}
