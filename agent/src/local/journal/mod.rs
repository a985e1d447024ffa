//! The durable journal (sled, `<state_dir>/db`): each command id's recorded result, the
//! port each allocation owns with its automatic rotation interval (`autorotate`) and the
//! limits it was provisioned with (`update_port` re-sends them), when each
//! modem's last rotation started (the seller's rotation spacing survives a restart), and
//! the box's learned UTC offset (`proxysmart::box_clock`), and the traffic meter's state
//! per allocation (`usage::meter`).
//!
//! Results are written and flushed before the agent answers, so a redelivered command gets
//! the recorded result and ProxySmart is not touched twice. Old command records are pruned on
//! open; port records live until the port is released.

mod dump;
mod records;

use crate::base::clock::now_ms;
pub use records::{MeterState, PortLimits, RotationSchedule};

use farmhand_protocol::{CommandResult, ManagedPort};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// sled's page cache: the journal is small, keep the agent's memory footprint small too.
const CACHE_CAPACITY_BYTES: u64 = 2 * 1024 * 1024;
/// Key (in the default tree) of the learned box UTC offset, seconds as i64 big-endian.
const BOX_UTC_OFFSET_KEY: &[u8] = b"box_utc_offset_s";
/// Command records older than this are pruned at open (the plane never redelivers that late).
pub const COMMAND_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// sled failed (disk full, corruption, another process holds the lock).
    #[error("journal storage: {0}")]
    Storage(#[from] sled::Error),
    /// A record could not be encoded or decoded.
    #[error("journal record: {0}")]
    Record(#[from] serde_json::Error),
}

#[derive(Serialize, Deserialize)]
struct CommandRecord {
    at_ms: u64,
    result: CommandResult,
}

/// The open journal; cheap to clone (sled handles are shared).
#[derive(Debug, Clone)]
pub struct Journal {
    db: sled::Db,
    commands: sled::Tree,
    ports: sled::Tree,
    /// allocation id → [`RotationSchedule`].
    schedules: sled::Tree,
    /// allocation id → [`PortLimits`] (only allocations with a limit).
    limits: sled::Tree,
    /// IMEI → Unix ms when its last rotation started (u64 big-endian).
    rotations: sled::Tree,
    /// allocation id → [`MeterState`].
    meters: sled::Tree,
}

impl Journal {
    /// The names of the tables (sled trees) the journal keeps: what `docs/privacy.md` maps.
    /// The default tree counts as `default` when it holds anything.
    pub fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .filter(|n| n != "__sled__default")
            .collect();
        if !self.db.is_empty() {
            names.push("default".into());
        }
        names
    }

    /// Opens (or creates) the journal in `<state_dir>/db` and prunes old command records.
    pub fn open(state_dir: &Path) -> Result<Journal, JournalError> {
        let db = sled::Config::new()
            .path(state_dir.join("db"))
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // Every write is flushed explicitly; no background flusher thread means the
            // database lock is released as soon as the last handle is dropped.
            .flush_every_ms(None)
            .open()?;
        let journal = Journal {
            commands: db.open_tree("commands")?,
            ports: db.open_tree("ports")?,
            schedules: db.open_tree("rotation_schedules")?,
            limits: db.open_tree("port_limits")?,
            rotations: db.open_tree("last_rotations")?,
            meters: db.open_tree("usage_meters")?,
            db,
        };
        journal.prune(now_ms().saturating_sub(COMMAND_RETENTION.as_millis() as u64))?;
        Ok(journal)
    }

    /// The recorded result of command `id`, if it ran before.
    pub fn result(&self, id: &str) -> Result<Option<CommandResult>, JournalError> {
        match self.commands.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice::<CommandRecord>(&bytes)?.result,
            )),
            None => Ok(None),
        }
    }

    /// Records a result and flushes it to disk.
    pub async fn record_result(&self, result: &CommandResult) -> Result<(), JournalError> {
        let record = CommandRecord {
            at_ms: now_ms(),
            result: result.clone(),
        };
        self.commands
            .insert(result.id.as_bytes(), serde_json::to_vec(&record)?)?;
        self.flush().await?;
        Ok(())
    }

    /// The port recorded for `allocation_id`.
    pub fn port(&self, allocation_id: &str) -> Result<Option<ManagedPort>, JournalError> {
        match self.ports.get(allocation_id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Records (or replaces) the port of `port.allocation_id`, flushed.
    pub async fn put_port(&self, port: &ManagedPort) -> Result<(), JournalError> {
        self.ports
            .insert(port.allocation_id.as_bytes(), serde_json::to_vec(port)?)?;
        self.flush().await?;
        Ok(())
    }

    /// Records the port a provision created with its automatic rotation interval (or none)
    /// and its limits (or none), flushed together; they replace those of an earlier port.
    pub async fn put_provisioned_port(
        &self,
        port: &ManagedPort,
        rotate_every_s: Option<u64>,
        limits: PortLimits,
    ) -> Result<(), JournalError> {
        let key = port.allocation_id.as_bytes();
        if limits.is_empty() {
            self.limits.remove(key)?;
        } else {
            self.limits.insert(key, serde_json::to_vec(&limits)?)?;
        }
        match rotate_every_s {
            Some(every_s) => {
                let schedule = RotationSchedule {
                    allocation_id: port.allocation_id.clone(),
                    imei: port.imei.clone(),
                    every_s,
                };
                self.schedules.insert(key, serde_json::to_vec(&schedule)?)?;
            }
            None => {
                self.schedules.remove(key)?;
            }
        }
        self.put_port(port).await
    }

    /// Forgets the port of `allocation_id`, its rotation schedule and its limits, flushed.
    pub async fn remove_port(&self, allocation_id: &str) -> Result<(), JournalError> {
        self.ports.remove(allocation_id.as_bytes())?;
        self.schedules.remove(allocation_id.as_bytes())?;
        self.limits.remove(allocation_id.as_bytes())?;
        self.flush().await?;
        Ok(())
    }

    /// The limits `allocation_id`'s port was provisioned with; `None` without a limit or
    /// for a port journaled before limits were kept.
    pub fn port_limits(&self, allocation_id: &str) -> Result<Option<PortLimits>, JournalError> {
        match self.limits.get(allocation_id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The rotation schedules of the ports still journaled, ordered by allocation id.
    pub fn rotation_schedules(&self) -> Result<Vec<RotationSchedule>, JournalError> {
        let mut out = Vec::new();
        for value in self.schedules.iter().values() {
            let schedule: RotationSchedule = serde_json::from_slice(&value?)?;
            if self.ports.contains_key(schedule.allocation_id.as_bytes())? {
                out.push(schedule);
            }
        }
        Ok(out)
    }

    /// Remembers that a rotation of `imei` started at `at_ms` (Unix ms), flushed.
    pub async fn put_last_rotation(&self, imei: &str, at_ms: u64) -> Result<(), JournalError> {
        self.rotations
            .insert(imei.as_bytes(), &at_ms.to_be_bytes()[..])?;
        self.flush().await
    }

    /// When each modem's last rotation started (IMEI, Unix ms).
    pub fn last_rotations(&self) -> Result<Vec<(String, u64)>, JournalError> {
        let mut out = Vec::new();
        for entry in self.rotations.iter() {
            let (key, value) = entry?;
            let Ok(bytes) = <[u8; 8]>::try_from(value.as_ref()) else {
                continue;
            };
            out.push((
                String::from_utf8_lossy(&key).into_owned(),
                u64::from_be_bytes(bytes),
            ));
        }
        Ok(out)
    }

    /// The box UTC offset learned earlier, seconds east of UTC.
    pub fn box_utc_offset(&self) -> Result<Option<i64>, JournalError> {
        let value = self.db.get(BOX_UTC_OFFSET_KEY)?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    /// Remembers the learned box UTC offset, flushed.
    pub async fn put_box_utc_offset(&self, seconds: i64) -> Result<(), JournalError> {
        self.db
            .insert(BOX_UTC_OFFSET_KEY, &seconds.to_be_bytes()[..])?;
        self.flush().await
    }

    /// Every allocation's traffic meter state.
    pub fn meter_states(&self) -> Result<Vec<MeterState>, JournalError> {
        self.meters
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// Writes `changed` meter states and drops those of `removed` allocations, flushed once.
    pub async fn update_meter_states(
        &self,
        changed: &[MeterState],
        removed: &[String],
    ) -> Result<(), JournalError> {
        if changed.is_empty() && removed.is_empty() {
            return Ok(());
        }
        for state in changed {
            self.meters
                .insert(state.allocation_id.as_bytes(), serde_json::to_vec(state)?)?;
        }
        for allocation_id in removed {
            self.meters.remove(allocation_id.as_bytes())?;
        }
        self.flush().await
    }

    /// Every managed port, ordered by allocation id.
    pub fn ports(&self) -> Result<Vec<ManagedPort>, JournalError> {
        self.ports
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// Flushes to disk on tokio's blocking pool. Not `sled::Db::flush_async`: that runs the
    /// flush on sled's own I/O pool, and concurrent flushes can occupy every pool thread
    /// waiting for a buffer write that is queued behind them on the same pool — a deadlock
    /// the agent's fuzz test (`agent/tests/fuzz/`) hit with 16 commands in flight.
    async fn flush(&self) -> Result<(), JournalError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(result) => result.map(drop).map_err(JournalError::Storage),
            Err(e) => Err(JournalError::Storage(sled::Error::Io(
                std::io::Error::other(e.to_string()),
            ))),
        }
    }

    /// Removes command records recorded before `cutoff_ms`; returns how many.
    pub fn prune(&self, cutoff_ms: u64) -> Result<usize, JournalError> {
        let mut removed = 0;
        for entry in self.commands.iter() {
            let (key, value) = entry?;
            let old = serde_json::from_slice::<CommandRecord>(&value)
                .map_or(true, |r| r.at_ms < cutoff_ms);
            if old {
                self.commands.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
