//! The seller's box itself: what it has left (memory, disk) and how busy it is (load),
//! which the agent reports so the plane stops sending new orders to a box that is about to
//! serve slow or dead proxies, and the limits the plane applies, which it tells the agent
//! so the seller sees them coming.

use serde::{Deserialize, Serialize};

/// One measurement of the box, sent (`health`) when a value moved beyond a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostHealth {
    /// When it was measured, Unix ms (the agent's clock).
    pub measured_at_ms: u64,
    /// Load averages over 1, 5 and 15 minutes, in hundredths (a load of 0.57 is 57).
    pub load_centi: [u32; 3],
    /// Logical CPUs (a load equal to this keeps every CPU busy).
    pub cpus: u32,
    /// Memory in all, bytes.
    pub memory_total_bytes: u64,
    /// Memory available to new work (not just free: caches count), bytes.
    pub memory_available_bytes: u64,
    /// The volumes the agent watches.
    pub disks: Vec<DiskHealth>,
    /// Seconds since the box booted.
    pub uptime_s: u64,
    /// The operating system, e.g. "Debian GNU/Linux 12 (bookworm)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The kernel release, e.g. "6.1.0-18-arm64".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// One watched volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskHealth {
    /// Why it is watched: `state` (the agent's state directory: its journal) or
    /// `proxysmart` (ProxySmart's own files). Both can be the same volume.
    pub role: String,
    /// Where the volume is mounted.
    pub mount: String,
    /// Its size, bytes.
    pub total_bytes: u64,
    /// What is left for new data, bytes.
    pub available_bytes: u64,
}

/// What the plane requires of a box before it sends it new orders (`welcome`): below either,
/// the box keeps its allocations but gets no new one until it recovers. 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthLimits {
    /// Least free space on every watched volume, MB (10^6 bytes).
    pub min_disk_free_mb: u64,
    /// Least available memory, MB.
    pub min_memory_available_mb: u64,
}

impl HealthLimits {
    /// The plane's defaults: 512 MB free on each watched volume, 64 MB of memory.
    pub const DEFAULT: HealthLimits = HealthLimits {
        min_disk_free_mb: 512,
        min_memory_available_mb: 64,
    };

    /// Each limit doubled: where the agent starts warning the seller.
    pub fn doubled(&self) -> HealthLimits {
        HealthLimits {
            min_disk_free_mb: self.min_disk_free_mb.saturating_mul(2),
            min_memory_available_mb: self.min_memory_available_mb.saturating_mul(2),
        }
    }
}

/// A resource a box can run short of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthResource {
    /// Free disk space on a watched volume.
    Disk,
    /// Available memory.
    Memory,
}

impl HealthResource {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthResource::Disk => "disk",
            HealthResource::Memory => "memory",
        }
    }
}

impl HostHealth {
    /// The resources past `limits`, with a sentence for people: the one rule the plane (to
    /// hold orders back) and the agent (to tell the seller) both apply.
    pub fn past(&self, limits: &HealthLimits) -> Vec<(HealthResource, String)> {
        let mb = 1_000_000;
        let mut out = Vec::new();
        let min_disk = limits.min_disk_free_mb.saturating_mul(mb);
        for disk in self.disks.iter().filter(|_| min_disk > 0) {
            if disk.available_bytes < min_disk {
                out.push((
                    HealthResource::Disk,
                    format!(
                        "{} MB free on {} ({}), the limit is {} MB",
                        disk.available_bytes / mb,
                        disk.mount,
                        disk.role,
                        limits.min_disk_free_mb
                    ),
                ));
            }
        }
        let min_memory = limits.min_memory_available_mb.saturating_mul(mb);
        if min_memory > 0 && self.memory_available_bytes < min_memory {
            out.push((
                HealthResource::Memory,
                format!(
                    "{} MB of memory available, the limit is {} MB",
                    self.memory_available_bytes / mb,
                    limits.min_memory_available_mb
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(disk_free_mb: u64, memory_mb: u64) -> HostHealth {
        HostHealth {
            measured_at_ms: 0,
            load_centi: [10, 20, 30],
            cpus: 4,
            memory_total_bytes: 4_000_000_000,
            memory_available_bytes: memory_mb * 1_000_000,
            disks: vec![DiskHealth {
                role: "state".into(),
                mount: "/".into(),
                total_bytes: 32_000_000_000,
                available_bytes: disk_free_mb * 1_000_000,
            }],
            uptime_s: 100,
            os: None,
            kernel: None,
        }
    }

    #[test]
    fn limits_are_judged_at_their_boundary() {
        let limits = HealthLimits {
            min_disk_free_mb: 500,
            min_memory_available_mb: 64,
        };
        assert!(health(500, 64).past(&limits).is_empty());
        let past = health(499, 63).past(&limits);
        let kinds: Vec<HealthResource> = past.iter().map(|p| p.0).collect();
        assert_eq!(kinds, [HealthResource::Disk, HealthResource::Memory]);
        assert!(
            past[0].1.contains("499 MB free on / (state)"),
            "{}",
            past[0].1
        );
        assert!(
            health(0, 0).past(&HealthLimits::default()).is_empty(),
            "0 = no limit"
        );
    }

    #[test]
    fn a_report_round_trips_and_absent_fields_stay_absent() {
        let h = health(1000, 1000);
        let text = serde_json::to_string(&h).unwrap();
        assert!(!text.contains("\"os\""));
        assert_eq!(serde_json::from_str::<HostHealth>(&text).unwrap(), h);
    }
}
