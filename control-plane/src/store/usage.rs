//! Traffic usage per allocation, as agents report it (`usage` messages): key
//! `<allocation_id>/<agent_id>` → the latest totals that agent measured.
//!
//! An agent's totals are monotonic (it keeps them across ProxySmart's counter resets and its
//! own restarts), so each stored total only ever grows: a lower report — reordered, or from
//! an agent that lost its state — never lowers it. Totals are kept per agent because an
//! allocation moved to another box (`replaced`) starts from zero on the new agent; the
//! allocation's usage is the sum over its agents.
//!
//! Only the agent that holds an allocation (or held it before a replacement) can report
//! for it; other entries are ignored, so an agent cannot inflate someone else's usage.
//!
//! What a total grows by is also added to the modem's day (`usage_days`: a seller's payout
//! basis), in the same transaction, so the days add up to the totals.
//!
//! Not flushed on every write: agents repeat their totals every interval, so a report lost
//! to a crash is restored by the next one (sled flushes on its own within half a second).

use super::usage_days::{day_key, day_of, DayUsage};
use super::{decode, encode, SledStore, StoreError};
use farmhand_protocol::{UsageReport, MAX_USAGE_ENTRIES};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

/// What one agent last reported for one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Bytes towards the buyer (downloads).
    pub bytes_in: u64,
    /// Bytes from the buyer (uploads).
    pub bytes_out: u64,
    /// When the agent read the counters, Unix ms (never later than when the plane got it).
    pub measured_at_ms: u64,
}

impl UsageTotals {
    /// `self` raised by `report`: each total is the higher of the two, and the measurement
    /// time the later.
    fn merge(self, report: UsageTotals) -> UsageTotals {
        UsageTotals {
            bytes_in: self.bytes_in.max(report.bytes_in),
            bytes_out: self.bytes_out.max(report.bytes_out),
            measured_at_ms: self.measured_at_ms.max(report.measured_at_ms),
        }
    }
}

fn key(allocation_id: &str, agent_id: &str) -> Vec<u8> {
    format!("{allocation_id}/{agent_id}").into_bytes()
}

/// What became of one `usage` message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageRecorded {
    /// Entries stored.
    pub stored: usize,
    /// Entries for allocations that do not exist or are not this agent's.
    pub ignored: usize,
}

fn abort<T>(e: impl Into<StoreError>) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e.into()))
}

impl SledStore {
    /// Stores every entry of `report` from `agent_id` that is about one of its allocations;
    /// the measurement time is clamped to `now_ms` (an agent's clock may run ahead). What
    /// each total grew by is added to its modem's day (`usage_days`), in the same step.
    pub fn record_usage_report(
        &self,
        agent_id: &str,
        report: &UsageReport,
        now_ms: u64,
    ) -> Result<UsageRecorded, StoreError> {
        let mut recorded = UsageRecorded::default();
        for entry in report.allocations.iter().take(MAX_USAGE_ENTRIES) {
            let Some(imei) = self
                .allocation(&entry.allocation_id)?
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
            self.record_usage_on(&entry.allocation_id, agent_id, Some(&imei), totals)?;
            recorded.stored += 1;
        }
        recorded.ignored += report.allocations.len().saturating_sub(MAX_USAGE_ENTRIES);
        Ok(recorded)
    }

    /// Merges an agent's report for one allocation into what is stored (never lowering it).
    pub fn record_usage(
        &self,
        allocation_id: &str,
        agent_id: &str,
        report: UsageTotals,
    ) -> Result<(), StoreError> {
        self.record_usage_on(allocation_id, agent_id, None, report)
    }

    /// [`SledStore::record_usage`], adding what the totals grew by to `imei`'s day of the
    /// report, in one transaction.
    fn record_usage_on(
        &self,
        allocation_id: &str,
        agent_id: &str,
        imei: Option<&str>,
        report: UsageTotals,
    ) -> Result<(), StoreError> {
        let key = key(allocation_id, agent_id);
        let day = day_of(report.measured_at_ms);
        let trees = (&self.usage, &self.usage_days, &self.agents);
        let result = trees.transaction(|(usage, days, agents)| {
            let current = match usage.get(&key)? {
                Some(raw) => Some(decode::<UsageTotals>(&raw).or_else(abort)?),
                None => None,
            };
            let merged = current.map_or(report, |c| c.merge(report));
            usage.insert(key.as_slice(), encode(&merged).or_else(abort)?)?;
            let before = current.map_or((0, 0), |c| (c.bytes_in, c.bytes_out));
            let grown = (merged.bytes_in - before.0, merged.bytes_out - before.1);
            let imei = imei.filter(|i| !i.is_empty());
            // A day is kept only for an enrolled agent (nothing lands after an erasure).
            let enrolled = || agents.get(agent_id.as_bytes()).map(|a| a.is_some());
            if let (Some(imei), true) = (imei, grown != (0, 0) && enrolled()?) {
                let day_key = day_key(agent_id, imei, day);
                let mut sum: DayUsage = match days.get(&day_key)? {
                    Some(raw) => decode(&raw).or_else(abort)?,
                    None => DayUsage::default(),
                };
                sum.bytes_in = sum.bytes_in.saturating_add(grown.0);
                sum.bytes_out = sum.bytes_out.saturating_add(grown.1);
                days.insert(day_key, encode(&sum).or_else(abort)?)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// The allocation's usage: the sum over every agent that reported it (the latest
    /// measurement time); `None` before the first report.
    pub fn usage(&self, allocation_id: &str) -> Result<Option<UsageTotals>, StoreError> {
        let mut total: Option<UsageTotals> = None;
        for value in self
            .usage
            .scan_prefix(format!("{allocation_id}/").as_bytes())
            .values()
        {
            let part: UsageTotals = decode(&value?)?;
            total = Some(match total {
                None => part,
                Some(t) => UsageTotals {
                    bytes_in: t.bytes_in.saturating_add(part.bytes_in),
                    bytes_out: t.bytes_out.saturating_add(part.bytes_out),
                    measured_at_ms: t.measured_at_ms.max(part.measured_at_ms),
                },
            });
        }
        Ok(total)
    }

    /// [`SledStore::usage`] of each of `allocation_ids` that has any (one page's worth).
    pub fn usages(
        &self,
        allocation_ids: &[String],
    ) -> Result<std::collections::HashMap<String, UsageTotals>, StoreError> {
        super::each_found(allocation_ids, |id| self.usage(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(bytes_in: u64, bytes_out: u64, measured_at_ms: u64) -> UsageTotals {
        UsageTotals {
            bytes_in,
            bytes_out,
            measured_at_ms,
        }
    }

    #[test]
    fn totals_never_go_down_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.usage("al_1").unwrap(), None);
            store
                .record_usage("al_1", "ag_a", totals(500, 40, 1000))
                .unwrap();
            // A lower (older, or reset) report lowers nothing; a higher one raises.
            store
                .record_usage("al_1", "ag_a", totals(100, 90, 900))
                .unwrap();
            assert_eq!(store.usage("al_1").unwrap(), Some(totals(500, 90, 1000)));
            // Another allocation whose id starts the same is not mixed in.
            store
                .record_usage("al_10", "ag_a", totals(7, 7, 5000))
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.usage("al_1").unwrap(), Some(totals(500, 90, 1000)));
    }

    #[test]
    fn each_report_adds_what_it_grew_by_to_the_modems_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let agent = super::super::AgentRecord {
            agent_id: "ag".into(),
            public_key: vec![1; 32],
            label: String::new(),
            hostname: "box".into(),
            enrolled_at: time::OffsetDateTime::UNIX_EPOCH,
            revoked: false,
            approved: true,
        };
        store.put_agent(&agent).unwrap();
        let record =
            super::super::AllocationRecord::example("al_1", time::OffsetDateTime::UNIX_EPOCH);
        store.insert_allocation(&record).unwrap();
        for (i, o) in [(60, 10), (100, 10), (90, 5)] {
            let report = UsageReport {
                measured_at_ms: 5,
                allocations: vec![farmhand_protocol::AllocationUsage {
                    allocation_id: "al_1".into(),
                    bytes_in: i,
                    bytes_out: o,
                }],
            };
            store.record_usage_report("ag", &report, 10).unwrap();
        }
        let days = store.modem_days(&["ag".into()], 0, 0).unwrap();
        assert_eq!(
            days.iter()
                .map(|d| (d.bytes_in, d.bytes_out))
                .collect::<Vec<_>>(),
            [(100, 10)]
        );
    }

    #[test]
    fn an_allocation_moved_to_another_agent_adds_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .record_usage("al_1", "ag_a", totals(500, 50, 1000))
            .unwrap();
        store
            .record_usage("al_1", "ag_b", totals(20, 2, 3000))
            .unwrap();
        assert_eq!(store.usage("al_1").unwrap(), Some(totals(520, 52, 3000)));
    }
}
