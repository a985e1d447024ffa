//! Traffic usage per allocation and agent on PostgreSQL: each stored total only ever
//! grows (`GREATEST` in the upsert), as in sled; what it grows by is added to the modem's
//! day (`modem_usage_days`) in the same statement.

use super::statements::Cached;
use super::{db, PgStore};
use crate::store::{ModemDay, StoreError, UsageRecorded, UsageTotals};
use farmhand_protocol::{UsageReport, MAX_USAGE_ENTRIES};
use std::collections::HashMap;

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn small(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl PgStore {
    /// Stores every entry of `report` from `agent_id` that is about one of its allocations;
    /// the measurement time is clamped to `now_ms` (an agent's clock may run ahead). What
    /// each total grew by is added to its modem's day, in the same statement.
    pub async fn record_usage_report(
        &self,
        agent_id: &str,
        report: &UsageReport,
        now_ms: u64,
    ) -> Result<UsageRecorded, StoreError> {
        let mut recorded = UsageRecorded::default();
        for entry in report.allocations.iter().take(MAX_USAGE_ENTRIES) {
            let Some(imei) = self
                .allocation(&entry.allocation_id)
                .await?
                .and_then(|record| record.modem_of(agent_id))
            else {
                recorded.ignored += 1;
                continue;
            };
            let totals = UsageTotals {
                bytes_in: entry.bytes_in,
                bytes_out: entry.bytes_out,
                measured_at_ms: report.measured_at_ms.min(now_ms),
            };
            self.record_usage_on(&entry.allocation_id, agent_id, &imei, totals)
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
        self.record_usage_on(allocation_id, agent_id, "", report)
            .await
    }

    /// [`PgStore::record_usage`], adding what the totals grew by to `imei`'s day of the
    /// report (none when `imei` is empty), in one statement. The stored row is locked
    /// first, so two reports at once each add only their own growth.
    async fn record_usage_on(
        &self,
        allocation_id: &str,
        agent_id: &str,
        imei: &str,
        report: UsageTotals,
    ) -> Result<(), StoreError> {
        let day = crate::store::day_of(report.measured_at_ms);
        self.client()
            .await?
            .cached_execute(
                "WITH before AS (
                   SELECT bytes_in, bytes_out FROM allocation_usage
                   WHERE allocation_id = $1 AND agent_id = $2 FOR UPDATE),
                 merged AS (
                   -- From `before`, so the row is read (and locked) before it is written: a
                   -- row this very statement updated would be invisible to its FOR UPDATE.
                   INSERT INTO allocation_usage
                     (allocation_id, agent_id, bytes_in, bytes_out, measured_at_ms)
                   SELECT $1, $2, $3, $4, $5 FROM (SELECT count(*) FROM before) AS locked
                   ON CONFLICT (allocation_id, agent_id) DO UPDATE SET
                     bytes_in = GREATEST(allocation_usage.bytes_in, EXCLUDED.bytes_in),
                     bytes_out = GREATEST(allocation_usage.bytes_out, EXCLUDED.bytes_out),
                     measured_at_ms =
                       GREATEST(allocation_usage.measured_at_ms, EXCLUDED.measured_at_ms)
                   RETURNING bytes_in, bytes_out),
                 grown AS (
                   SELECT merged.bytes_in - coalesce((SELECT bytes_in FROM before), 0) AS d_in,
                          merged.bytes_out - coalesce((SELECT bytes_out FROM before), 0) AS d_out
                   FROM merged)
                 INSERT INTO modem_usage_days (agent_id, imei, day, bytes_in, bytes_out)
                 SELECT $2, $6, $7, d_in, d_out FROM grown
                 WHERE $6 <> '' AND (d_in > 0 OR d_out > 0)
                   AND EXISTS (SELECT 1 FROM agents WHERE agent_id = $2)
                 ON CONFLICT (agent_id, imei, day) DO UPDATE SET
                   bytes_in = modem_usage_days.bytes_in + EXCLUDED.bytes_in,
                   bytes_out = modem_usage_days.bytes_out + EXCLUDED.bytes_out",
                &[
                    &allocation_id,
                    &agent_id,
                    &big(report.bytes_in),
                    &big(report.bytes_out),
                    &big(report.measured_at_ms),
                    &imei,
                    &day,
                ],
            )
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The days `from_day ..= to_day` of `agents`' modems, by agent, modem and day.
    pub async fn modem_days(
        &self,
        agents: &[String],
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<ModemDay>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT agent_id, imei, day, bytes_in, bytes_out FROM modem_usage_days
                 WHERE agent_id = ANY($1) AND day BETWEEN $2 AND $3
                 ORDER BY agent_id, imei, day",
                &[&agents, &from_day, &to_day],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(ModemDay {
                    agent_id: row.try_get(0).map_err(db)?,
                    imei: row.try_get(1).map_err(db)?,
                    day: row.try_get(2).map_err(db)?,
                    bytes_in: small(row.try_get(3).map_err(db)?),
                    bytes_out: small(row.try_get(4).map_err(db)?),
                })
            })
            .collect()
    }

    /// Deletes the days before `before_day`; returns how many.
    pub async fn prune_modem_days(&self, before_day: i64) -> Result<usize, StoreError> {
        let deleted = self
            .client()
            .await?
            .cached_execute(
                "DELETE FROM modem_usage_days WHERE day < $1",
                &[&before_day],
            )
            .await
            .map_err(db)?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// The allocation's usage: the sum over every agent that reported it (the latest
    /// measurement time); `None` before the first report.
    pub async fn usage(&self, allocation_id: &str) -> Result<Option<UsageTotals>, StoreError> {
        let mut one = self.usages(&[allocation_id.to_string()]).await?;
        Ok(one.remove(allocation_id))
    }

    /// The usage of each of `allocation_ids` that has any, in one statement.
    pub async fn usages(
        &self,
        allocation_ids: &[String],
    ) -> Result<HashMap<String, UsageTotals>, StoreError> {
        let rows = self
            .client()
            .await?
            .cached_query(
                "SELECT allocation_id, sum(bytes_in)::bigint, sum(bytes_out)::bigint,
                   max(measured_at_ms)
                 FROM allocation_usage WHERE allocation_id = ANY($1) GROUP BY allocation_id",
                &[&allocation_ids],
            )
            .await
            .map_err(db)?;
        let mut found = HashMap::new();
        for row in rows {
            let (bytes_in, bytes_out, at): (i64, i64, i64) = (
                row.try_get(1).map_err(db)?,
                row.try_get(2).map_err(db)?,
                row.try_get(3).map_err(db)?,
            );
            let totals = UsageTotals {
                bytes_in: small(bytes_in),
                bytes_out: small(bytes_out),
                measured_at_ms: small(at),
            };
            found.insert(row.try_get(0).map_err(db)?, totals);
        }
        Ok(found)
    }
}
