//! The records the journal keeps beside command results, as the modules that write them
//! share them: a port's limits (`provision` writes them, `update_port` re-sends them,
//! `ports` checks them on the box), an allocation's automatic rotation schedule (read by
//! `autorotate`) and the traffic meter's state per allocation (`usage::meter` does the
//! arithmetic). They live here, below those modules, so the journal imports none of them.

use serde::{Deserialize, Serialize};

/// An allocation's speed limit and traffic quota as provisioned are journaled with its
/// port and removed with it: a renewal re-stores the port, and a box may clear the limits a
/// re-store leaves out (the buyer would get unlimited traffic), so `update_port` re-sends
/// them. Ports journaled before limits were kept have no record: renewed without limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLimits {
    /// Speed limit both ways, kbit/s (`provision.bandwidth_kbit`).
    #[serde(default)]
    pub bandwidth_kbit: Option<u64>,
    /// Traffic quota, MB (`provision.traffic_quota_mb`).
    #[serde(default)]
    pub traffic_quota_mb: Option<u64>,
}

impl PortLimits {
    /// Whether there is no limit at all (then nothing is journaled).
    pub fn is_empty(&self) -> bool {
        self.bandwidth_kbit.is_none() && self.traffic_quota_mb.is_none()
    }
}

/// An allocation's automatic rotation, journaled with its port and removed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSchedule {
    /// The allocation that asked for it.
    pub allocation_id: String,
    /// The modem its port is on.
    pub imei: String,
    /// Rotate at least this often, seconds (`provision.rotate_every_s`).
    pub every_s: u64,
}

/// The meter's memory of one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterState {
    /// The allocation.
    pub allocation_id: String,
    /// The port whose counters `last_*` are.
    pub port_id: String,
    /// The last reading of that port's download counter.
    pub last_in: u64,
    /// The last reading of that port's upload counter.
    pub last_out: u64,
    /// Downloads counted before the counter's last reset (or before the port changed).
    pub base_in: u64,
    /// Uploads counted before the last reset.
    pub base_out: u64,
    /// When the allocation last had a port (Unix ms), for pruning.
    pub seen_at_ms: u64,
}

impl MeterState {
    /// A state for a port not read yet.
    pub fn new(allocation_id: &str, port_id: &str, now_ms: u64) -> Self {
        MeterState {
            allocation_id: allocation_id.to_string(),
            port_id: port_id.to_string(),
            last_in: 0,
            last_out: 0,
            base_in: 0,
            base_out: 0,
            seen_at_ms: now_ms,
        }
    }

    /// Downloads so far.
    pub fn total_in(&self) -> u64 {
        self.base_in.saturating_add(self.last_in)
    }

    /// Uploads so far.
    pub fn total_out(&self) -> u64 {
        self.base_out.saturating_add(self.last_out)
    }
}
