//! What the probes found (`probe`), kept so that every node of a cluster answers the same
//! and a restart forgets nothing: per allocation its probe record — the newest results and
//! the judgement (`probe_tracks`: allocation id → [`ProbeTrack`]) — and per agent its
//! hourly quality counters (`agent_quality`: `agent_id/hour` → [`QualityHour`]).
//!
//! A probe record goes with the allocation's operational detail (`allocation_detail_days`
//! after its end, `forget`) and is written only while that detail is kept; quality hours
//! are kept a week (the longest window, `quality`) and only for enrolled agents. Seller
//! erasure deletes both (`erase`). Not flushed: a `kill -9` may lose the last probe's
//! record, never an allocation.

use super::{decode, encode, AllocationRecord, SledStore, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::VecDeque;
use time::OffsetDateTime;

/// How many first-byte latency buckets an hour counts (their bounds are `quality`'s).
pub const LATENCY_BUCKETS: usize = 10;

/// One probe as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Why it failed (`probe::Failure`'s name); `None`: it succeeded.
    pub failure: Option<String>,
    /// Which protocol failed.
    pub protocol: Option<String>,
    /// TCP connect time, ms.
    pub connect_ms: Option<u64>,
    /// First byte, ms.
    pub first_byte_ms: Option<u64>,
    /// The IP the target saw.
    pub egress_ip: Option<String>,
    /// The IP the modem reported.
    pub modem_ip: Option<String>,
    /// The node that ran it (its network path is the one measured).
    #[serde(default)]
    pub node: String,
}

/// One allocation's probe record: the port it describes, the judgement, the newest results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTrack {
    /// The agent whose port was probed (after a move: the new one's).
    pub agent_id: String,
    /// Its modem.
    pub imei: String,
    /// Failures in a row.
    pub failures_in_a_row: u32,
    /// Why it is degraded, while it is.
    pub degraded: Option<String>,
    /// Newest last.
    pub results: VecDeque<ProbeRecord>,
}

/// One hour of one agent's quality counters (what `quality` sums into its figures).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QualityHour {
    /// Probes run.
    pub probes: u64,
    /// Of which succeeded.
    pub probes_ok: u64,
    /// The successes' first byte, by latency bucket.
    pub latency: [u64; LATENCY_BUCKETS],
    /// Rotations finished.
    pub rotations: u64,
    /// Of which brought a new IP.
    pub rotations_changed: u64,
    /// The plane's own rotations that were timed.
    pub rotations_timed: u64,
    /// Their total time to a new IP, ms.
    pub rotation_ms_total: u64,
    /// Allocations moved away.
    pub replacements: u64,
}

impl QualityHour {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &QualityHour) {
        self.probes += other.probes;
        self.probes_ok += other.probes_ok;
        for (total, n) in self.latency.iter_mut().zip(other.latency) {
            *total += n;
        }
        self.rotations += other.rotations;
        self.rotations_changed += other.rotations_changed;
        self.rotations_timed += other.rotations_timed;
        self.rotation_ms_total += other.rotation_ms_total;
        self.replacements += other.replacements;
    }
}

/// An agent's hour: `(agent id, hour since the epoch, counters)`.
pub type AgentHour = (String, i64, QualityHour);

fn quality_key(agent_id: &str, hour: i64) -> Vec<u8> {
    let mut key = format!("{agent_id}/").into_bytes();
    key.extend_from_slice(&hour.to_be_bytes());
    key
}

fn split_quality_key(key: &[u8]) -> Option<(String, i64)> {
    let (agent, hour) = key.split_at_checked(key.len().checked_sub(8)?)?;
    let agent = agent.strip_suffix(b"/")?;
    let hour = i64::from_be_bytes(hour.try_into().ok()?);
    Some((String::from_utf8_lossy(agent).into_owned(), hour))
}

impl SledStore {
    /// Writes `allocation_id`'s probe record; false (nothing written) when the allocation
    /// is gone or its detail was purged (read in the same transaction as the write, so a
    /// purge or an erasure meanwhile leaves no record behind).
    pub fn save_probe_track(
        &self,
        allocation_id: &str,
        track: &ProbeTrack,
    ) -> Result<bool, StoreError> {
        let raw = encode(track)?;
        let key = allocation_id.as_bytes();
        let result =
            (&self.allocations, &self.probes.tracks).transaction(|(allocations, tracks)| {
                let Some(stored) = allocations.get(key)? else {
                    return Ok(false);
                };
                let record: AllocationRecord =
                    decode(&stored).map_err(ConflictableTransactionError::Abort)?;
                if record.detail_purged {
                    return Ok(false);
                }
                tracks.insert(key, raw.as_slice())?;
                Ok(true)
            });
        match result {
            Ok(written) => Ok(written),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// `allocation_id`'s probe record, if it was probed.
    pub fn probe_track(&self, allocation_id: &str) -> Result<Option<ProbeTrack>, StoreError> {
        self.probes
            .tracks
            .get(allocation_id.as_bytes())?
            .map(|raw| decode(&raw))
            .transpose()
    }

    /// The probe records of those of `allocation_ids` that have one (one page's worth).
    pub fn probe_tracks(
        &self,
        allocation_ids: &[String],
    ) -> Result<std::collections::HashMap<String, ProbeTrack>, StoreError> {
        super::each_found(allocation_ids, |id| self.probe_track(id))
    }

    /// Deletes `allocation_id`'s probe record (its detail is purged, or it is gone).
    pub(super) fn forget_probe_track(&self, allocation_id: &str) -> Result<(), StoreError> {
        self.probes.tracks.remove(allocation_id.as_bytes())?;
        Ok(())
    }

    /// The probe records describing `agent_id`'s ports.
    pub(super) fn probe_tracks_of(
        &self,
        agent_id: &str,
    ) -> Result<Vec<(String, ProbeTrack)>, StoreError> {
        let mut found = Vec::new();
        for row in self.probes.tracks.iter() {
            let (key, raw) = row?;
            let track: ProbeTrack = decode(&raw)?;
            if track.agent_id == agent_id {
                found.push((String::from_utf8_lossy(&key).into_owned(), track));
            }
        }
        Ok(found)
    }

    /// Adds each `(agent, hour, counts)` to what is kept for that hour, all or none (one
    /// transaction, which also reads whether each agent is still enrolled: one no longer
    /// enrolled gets nothing, so nothing lands after an erasure). A kept hour that cannot be
    /// read is replaced. Returns how many hours were written.
    pub fn add_quality(&self, hours: &[AgentHour]) -> Result<usize, StoreError> {
        let result = (&self.agents, &self.probes.quality).transaction(|(agents, quality)| {
            let mut written = 0;
            for (agent_id, hour, counts) in hours {
                if agents.get(agent_id.as_bytes())?.is_none() {
                    continue;
                }
                let key = quality_key(agent_id, *hour);
                let mut sum: QualityHour = match quality.get(&key)? {
                    Some(raw) => decode(&raw).unwrap_or_default(),
                    None => QualityHour::default(),
                };
                sum.add(counts);
                let raw = encode(&sum).map_err(ConflictableTransactionError::Abort)?;
                quality.insert(key, raw)?;
                written += 1;
            }
            Ok(written)
        });
        match result {
            Ok(written) => Ok(written),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// The hours from `from_hour` on of `agents` (every agent when `None`).
    pub fn quality_hours(
        &self,
        agents: Option<&[String]>,
        from_hour: i64,
    ) -> Result<Vec<AgentHour>, StoreError> {
        let rows: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match agents {
            None => Box::new(self.probes.quality.iter()),
            Some(ids) => Box::new(
                ids.iter()
                    .flat_map(|id| self.probes.quality.scan_prefix(format!("{id}/")))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
        };
        let mut found = Vec::new();
        for row in rows {
            let (key, raw) = row?;
            let Some((agent, hour)) = split_quality_key(&key) else {
                continue;
            };
            if hour >= from_hour {
                found.push((agent, hour, decode(&raw)?));
            }
        }
        Ok(found)
    }

    /// Deletes the hours before `before_hour`; returns how many.
    pub fn prune_quality(&self, before_hour: i64) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for key in self.probes.quality.iter().keys() {
            let key = key?;
            if split_quality_key(&key).is_some_and(|(_, hour)| hour < before_hour) {
                self.probes.quality.remove(key)?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Deletes every hour of `agent_id` (seller erasure); returns how many.
    pub(super) fn forget_quality_of(&self, agent_id: &str) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for key in self
            .probes
            .quality
            .scan_prefix(format!("{agent_id}/"))
            .keys()
        {
            self.probes.quality.remove(key?)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Every hour kept of `agent_id` (seller export).
    pub(super) fn quality_of(&self, agent_id: &str) -> Result<Vec<AgentHour>, StoreError> {
        self.quality_hours(Some(&[agent_id.to_string()]), i64::MIN)
    }
}

/// The two trees (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Trees {
    pub(super) tracks: sled::Tree,
    pub(super) quality: sled::Tree,
}

impl Trees {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Trees {
            tracks: db.open_tree("probe_tracks")?,
            quality: db.open_tree("agent_quality")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_keys_split_back() {
        let key = quality_key("ag_1/x", 494_000);
        assert_eq!(split_quality_key(&key), Some(("ag_1/x".into(), 494_000)));
        assert_eq!(split_quality_key(b"short"), None);
    }
}
