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
//! Not flushed on every write: agents repeat their totals every interval, so a report lost
//! to a crash is restored by the next one (sled flushes on its own within half a second).

use super::{decode, encode, AllocationRecord, SledStore, StoreError};
use farmhand_protocol::{UsageReport, MAX_USAGE_ENTRIES};
use serde::{Deserialize, Serialize};

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

/// Whether `agent_id` holds, or held, `record`'s port.
fn reported_by(record: &AllocationRecord, agent_id: &str) -> bool {
    record.agent_id == agent_id
        || record
            .replacements
            .iter()
            .any(|r| r.from_agent_id == agent_id)
}

impl SledStore {
    /// Stores every entry of `report` from `agent_id` that is about one of its allocations;
    /// the measurement time is clamped to `now_ms` (an agent's clock may run ahead).
    pub fn record_usage_report(
        &self,
        agent_id: &str,
        report: &UsageReport,
        now_ms: u64,
    ) -> Result<UsageRecorded, StoreError> {
        let mut recorded = UsageRecorded::default();
        for entry in report.allocations.iter().take(MAX_USAGE_ENTRIES) {
            let ours = self
                .allocation(&entry.allocation_id)?
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
            self.record_usage(&entry.allocation_id, agent_id, totals)?;
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
        let key = key(allocation_id, agent_id);
        loop {
            let current = self.usage.get(&key)?;
            let merged = match &current {
                Some(raw) => decode::<UsageTotals>(raw)?.merge(report),
                None => report,
            };
            let swapped = self
                .usage
                .compare_and_swap(&key, current, Some(encode(&merged)?))?;
            if swapped.is_ok() {
                return Ok(());
            }
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
