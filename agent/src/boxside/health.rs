//! The box's own health: load, memory, the free space on the agent's state volume and on
//! ProxySmart's, uptime, OS and kernel (`sysinfo`). A box with a full disk, exhausted
//! memory or a pegged CPU serves slow or dead proxies; the plane holds new orders back from
//! a box past its limits, and `status` and `doctor` warn the seller before that.
//!
//! One task measures every `[health] interval_s` (default 60 s) and publishes a new report
//! only when a value moved beyond a threshold ([`moved`]) — the load by a quarter or 20 %,
//! memory or a disk by 5 % of its size, or any value across the plane's limit or twice it
//! (the limits from the last `welcome`) — or at least hourly, so a quiet box sends next to
//! nothing. The session sends the latest report at its start and each new one.

use crate::config::HealthConfig;
use farmhand_protocol::{DiskHealth, HealthLimits, HostHealth};
use std::path::{Path, PathBuf};
use std::time::Duration;
use sysinfo::{DiskRefreshKind, Disks, System};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A report is sent at least this often, moved or not.
const REFRESH: Duration = Duration::from_secs(3600);

/// The latest published report (`None` before the first measurement).
#[derive(Debug, Clone)]
pub struct HealthHandle {
    rx: watch::Receiver<Option<HostHealth>>,
}

impl HealthHandle {
    /// A handle that never publishes (tests, and agents without health reporting).
    pub fn none() -> Self {
        let (_tx, rx) = watch::channel(None);
        HealthHandle { rx }
    }

    /// Receives every published report.
    pub fn subscribe(&self) -> watch::Receiver<Option<HostHealth>> {
        self.rx.clone()
    }

    /// The latest report.
    pub fn latest(&self) -> Option<HostHealth> {
        self.rx.borrow().clone()
    }
}

/// Starts the measuring task; `limits` gives the plane's health limits as last heard.
pub fn spawn(
    state_dir: PathBuf,
    config: HealthConfig,
    limits: impl Fn() -> Option<HealthLimits> + Send + 'static,
    shutdown: CancellationToken,
) -> (HealthHandle, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut probe = Probe::new(state_dir, config.proxysmart_dir);
        let mut last_sent: Option<HostHealth> = None;
        loop {
            let now = probe.measure();
            let stale = last_sent.as_ref().is_none_or(|sent| {
                now.measured_at_ms.saturating_sub(sent.measured_at_ms)
                    >= u64::try_from(REFRESH.as_millis()).unwrap_or(u64::MAX)
            });
            let limits = limits().unwrap_or(HealthLimits::DEFAULT);
            let changed = last_sent.as_ref().is_some_and(|sent| {
                moved(sent, &now) || sides(sent, &limits) != sides(&now, &limits)
            });
            if stale || changed {
                last_sent = Some(now.clone());
                tx.send_replace(Some(now));
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(config.interval) => {}
            }
        }
    });
    (HealthHandle { rx }, task)
}

/// Measures the box; keeps its `sysinfo` handles between readings.
#[derive(Debug)]
pub struct Probe {
    system: Option<System>,
    disks: Option<Disks>,
    watched: [(&'static str, PathBuf); 2],
}

impl Probe {
    /// A probe of the volumes of `state_dir` and `proxysmart_dir`.
    pub fn new(state_dir: PathBuf, proxysmart_dir: PathBuf) -> Self {
        Probe {
            system: System::new().ok(),
            disks: Disks::new().ok(),
            watched: [("state", state_dir), ("proxysmart", proxysmart_dir)],
        }
    }

    /// One measurement now. Values the OS does not give are zero (or absent for names).
    pub fn measure(&mut self) -> HostHealth {
        let (total, available) = match self.system.as_mut() {
            Some(system) => {
                system.refresh_memory();
                (system.total_memory(), system.available_memory())
            }
            None => (0, 0),
        };
        let load = System::load_average().ok();
        let centi = |v: f64| (v * 100.0).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        HostHealth {
            measured_at_ms: crate::base::clock::now_ms(),
            load_centi: load.map_or([0; 3], |l| [centi(l.one), centi(l.five), centi(l.fifteen)]),
            cpus: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            memory_total_bytes: total,
            memory_available_bytes: available,
            disks: self.disks(),
            uptime_s: System::uptime().unwrap_or(0),
            os: System::long_os_version().ok(),
            kernel: System::kernel_version().ok(),
        }
    }

    /// The watched volumes; a volume watched twice (the usual case) is listed once per role.
    fn disks(&mut self) -> Vec<DiskHealth> {
        let Some(disks) = self.disks.as_mut() else {
            return Vec::new();
        };
        disks.refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        self.watched
            .iter()
            .filter_map(|(role, path)| {
                let disk = volume_of(disks, path)?;
                Some(DiskHealth {
                    role: (*role).to_string(),
                    mount: disk.mount_point().display().to_string(),
                    total_bytes: disk.total_space(),
                    available_bytes: disk.available_space(),
                })
            })
            .collect()
    }
}

/// The disk whose mount point is the longest prefix of `path` (resolved).
fn volume_of<'a>(disks: &'a Disks, path: &Path) -> Option<&'a sysinfo::Disk> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
}

/// What to tell the seller about `health` against the plane's `limits` (its defaults when
/// the agent has not heard them): past a limit, the plane sends the box no new orders;
/// within twice a limit, that is coming.
pub fn warnings(health: &HostHealth, limits: Option<HealthLimits>) -> Vec<String> {
    let limits = limits.unwrap_or(HealthLimits::DEFAULT);
    let past = health.past(&limits);
    if !past.is_empty() {
        return past
            .into_iter()
            .map(|(_, why)| format!("{why}: the marketplace sends this box no new orders"))
            .collect();
    }
    health
        .past(&limits.doubled())
        .into_iter()
        .map(|(_, why)| format!("{why} (doubled): close to the marketplace's limit"))
        .collect()
}

/// One line per figure, for `status` and `doctor`.
pub fn describe(h: &HostHealth) -> Vec<String> {
    let mb = |b: u64| b / 1_000_000;
    let mut lines = vec![
        format!(
            "load {:.2} {:.2} {:.2} on {} CPUs",
            f64::from(h.load_centi[0]) / 100.0,
            f64::from(h.load_centi[1]) / 100.0,
            f64::from(h.load_centi[2]) / 100.0,
            h.cpus
        ),
        format!(
            "memory {} MB available of {} MB",
            mb(h.memory_available_bytes),
            mb(h.memory_total_bytes)
        ),
    ];
    for d in &h.disks {
        lines.push(format!(
            "disk {} ({}): {} MB free of {} MB",
            d.mount,
            d.role,
            mb(d.available_bytes),
            mb(d.total_bytes)
        ));
    }
    lines.push(format!(
        "up {} h; {}; kernel {}",
        h.uptime_s / 3600,
        h.os.as_deref().unwrap_or("unknown OS"),
        h.kernel.as_deref().unwrap_or("unknown")
    ));
    lines
}

/// Which side of the limits (and of twice them) each resource is on.
fn sides(h: &HostHealth, limits: &HealthLimits) -> (usize, usize) {
    (h.past(limits).len(), h.past(&limits.doubled()).len())
}

/// Whether `now` differs from what was last sent enough to send it.
pub fn moved(sent: &HostHealth, now: &HostHealth) -> bool {
    let load = |h: &HostHealth| h.load_centi[0];
    let load_step = (load(sent) / 5).max(25);
    let five_percent = |total: u64| (total / 20).max(1);
    load(sent).abs_diff(load(now)) >= load_step
        || sent
            .memory_available_bytes
            .abs_diff(now.memory_available_bytes)
            >= five_percent(now.memory_total_bytes)
        || sent.disks.len() != now.disks.len()
        || sent.disks.iter().zip(&now.disks).any(|(a, b)| {
            a.mount != b.mount
                || a.available_bytes.abs_diff(b.available_bytes) >= five_percent(b.total_bytes)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_of_this_machine_is_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let mut probe = Probe::new(dir.path().to_path_buf(), PathBuf::from("/"));
        let h = probe.measure();
        assert!(h.memory_total_bytes > 64 * 1024 * 1024, "{h:?}");
        assert!(h.memory_available_bytes <= h.memory_total_bytes);
        assert!(h.cpus >= 1 && h.uptime_s > 0, "{h:?}");
        assert_eq!(h.disks.len(), 2, "{h:?}");
        for d in &h.disks {
            assert!(
                d.total_bytes > 0 && d.available_bytes <= d.total_bytes,
                "{d:?}"
            );
        }
        assert!(h.kernel.is_some());
    }

    fn health(load: u32, memory: u64, disk: u64) -> HostHealth {
        HostHealth {
            measured_at_ms: 0,
            load_centi: [load, 0, 0],
            cpus: 2,
            memory_total_bytes: 1000,
            memory_available_bytes: memory,
            disks: vec![DiskHealth {
                role: "state".into(),
                mount: "/".into(),
                total_bytes: 1000,
                available_bytes: disk,
            }],
            uptime_s: 1,
            os: None,
            kernel: None,
        }
    }

    #[test]
    fn warnings_come_before_the_limit_and_at_it() {
        let limits = Some(HealthLimits {
            min_disk_free_mb: 100,
            min_memory_available_mb: 0,
        });
        let mut h = health(0, 500, 0);
        h.disks[0].total_bytes = 10_000_000_000;
        h.disks[0].available_bytes = 500_000_000;
        assert!(warnings(&h, limits).is_empty());
        h.disks[0].available_bytes = 150_000_000;
        let w = warnings(&h, limits);
        assert!(w[0].contains("close to"), "{w:?}");
        h.disks[0].available_bytes = 50_000_000;
        let w = warnings(&h, limits);
        assert!(w[0].contains("no new orders"), "{w:?}");
        assert!(describe(&h).iter().any(|l| l.contains("50 MB free")));
    }

    #[test]
    fn small_moves_are_not_sent_big_ones_are() {
        let sent = health(100, 500, 500);
        assert!(!moved(&sent, &health(110, 520, 480)));
        assert!(moved(&sent, &health(130, 500, 500)), "load +0.3");
        assert!(moved(&sent, &health(100, 440, 500)), "memory -6 %");
        assert!(moved(&sent, &health(100, 500, 550)), "disk +5 %");
        let idle = health(0, 500, 500);
        assert!(
            !moved(&idle, &health(20, 500, 500)),
            "a quarter is the least step"
        );
    }
}
