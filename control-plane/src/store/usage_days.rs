//! Traffic per modem per day (UTC): `agent_id/IMEI/` + the day (days since the Unix epoch,
//! 8 bytes big-endian) → bytes in and out. What a seller's payout is computed from: each
//! usage report adds what the allocation's totals grew by to the day of the report, in the
//! same transaction as the totals (`usage`), so a modem's days add up to what its
//! allocations used. Kept `[retention] financial_days` (the books), pruned by the retention
//! sweeper; seller erasure deletes them.

use super::{decode, SledStore, StoreError};
use serde::{Deserialize, Serialize};

/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// One modem's traffic on one day, as kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct DayUsage {
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
}

/// One modem's traffic on one day (UTC), all its allocations together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemDay {
    /// The agent (box) whose modem it is.
    pub agent_id: String,
    /// The modem.
    pub imei: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Bytes towards the buyers.
    pub bytes_in: u64,
    /// Bytes from the buyers.
    pub bytes_out: u64,
}

/// The day (since the epoch, UTC) of a Unix-ms time.
pub(crate) fn day_of(ms: u64) -> i64 {
    i64::try_from(ms / DAY_MS).unwrap_or(i64::MAX)
}

pub(super) fn day_key(agent_id: &str, imei: &str, day: i64) -> Vec<u8> {
    let mut key = format!("{agent_id}/{imei}/").into_bytes();
    key.extend_from_slice(&day.to_be_bytes());
    key
}

fn split_day_key(key: &[u8]) -> Option<(String, String, i64)> {
    let (path, day) = key.split_at_checked(key.len().checked_sub(8)?)?;
    let day = i64::from_be_bytes(day.try_into().ok()?);
    let path = std::str::from_utf8(path.strip_suffix(b"/")?).ok()?;
    let (agent, imei) = path.split_once('/')?;
    Some((agent.to_string(), imei.to_string(), day))
}

/// The row under `key` when its day is within `days` (`None` for a key of another shape).
fn day_row(
    key: &[u8],
    raw: &[u8],
    days: std::ops::RangeInclusive<i64>,
) -> Result<Option<ModemDay>, StoreError> {
    let Some((agent_id, imei, day)) = split_day_key(key) else {
        return Ok(None);
    };
    if !days.contains(&day) {
        return Ok(None);
    }
    let usage: DayUsage = decode(raw)?;
    Ok(Some(ModemDay {
        agent_id,
        imei,
        day,
        bytes_in: usage.bytes_in,
        bytes_out: usage.bytes_out,
    }))
}

impl SledStore {
    /// The days `from_day ..= to_day` of `agents`' modems, by agent, modem and day.
    pub fn modem_days(
        &self,
        agents: &[String],
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<ModemDay>, StoreError> {
        let mut found = Vec::new();
        for agent in agents {
            for row in self.usage_days.scan_prefix(format!("{agent}/")) {
                let (key, raw) = row?;
                if let Some(day) = day_row(&key, &raw, from_day..=to_day)? {
                    found.push(day);
                }
            }
        }
        Ok(found)
    }

    /// Every day of every modem (`store copy`).
    pub(crate) fn all_modem_days(&self) -> Result<Vec<ModemDay>, StoreError> {
        let mut found = Vec::new();
        for row in self.usage_days.iter() {
            let (key, raw) = row?;
            if let Some(day) = day_row(&key, &raw, i64::MIN..=i64::MAX)? {
                found.push(day);
            }
        }
        Ok(found)
    }

    /// Deletes the days before `before_day`; returns how many.
    pub fn prune_modem_days(&self, before_day: i64) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for key in self.usage_days.iter().keys() {
            let key = key?;
            if split_day_key(&key).is_some_and(|(_, _, day)| day < before_day) {
                self.usage_days.remove(key)?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Deletes every day of `agent_id`'s modems (seller erasure); returns how many.
    pub(super) fn forget_modem_days_of(&self, agent_id: &str) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for key in self.usage_days.scan_prefix(format!("{agent_id}/")).keys() {
            self.usage_days.remove(key?)?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_keys_split_back_and_days_are_utc() {
        let key = day_key("ag_1", "350000000000018", 20_000);
        assert_eq!(
            split_day_key(&key),
            Some(("ag_1".into(), "350000000000018".into(), 20_000))
        );
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
    }
}
