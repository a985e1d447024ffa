//! The status file behind `farmhand-agent status`: the running agent writes a JSON
//! [`StatusReport`] (connection, agent id, modems, managed ports) to `<state_dir>/status.json`
//! or the path given with `run --status-file`, on every session or inventory change and at
//! least every [`REFRESH`]. The file is written atomically (temporary sibling + rename) with
//! mode 0644 so an unprivileged user can read it, and holds nothing secret: no key, no
//! ProxySmart credential, no buyer password. It is removed when the agent stops cleanly.

use crate::base::clock::now_ms;
use crate::boxside::inventory::InventoryHandle;
use crate::local::journal::Journal;
use crate::local::status::AgentStatus;
use farmhand_protocol::{HealthLimits, HostHealth, ManagedPort, Modem};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// File name of the status file inside the state directory (the default location).
pub const STATUS_FILE: &str = "status.json";
/// The file is rewritten at least this often, so its age tells whether the agent is alive.
pub const REFRESH: Duration = Duration::from_secs(5);
/// A status file older than this is stale: the agent is stopped, hung or crashed.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// What the status file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the agent wrote this report, ms since the epoch.
    pub updated_at_ms: u64,
    /// The agent's process id.
    pub pid: u32,
    /// `--version` of the running agent.
    pub agent_version: String,
    /// The enrolled agent id.
    pub agent_id: String,
    /// The control plane's base URL from the config.
    pub control_plane_url: String,
    /// Whether an authenticated session is open.
    pub connected: bool,
    /// The current session id.
    pub session_id: Option<String>,
    /// When the last frame from the plane arrived (the last sync), ms since the epoch.
    pub last_frame_at_ms: Option<u64>,
    /// Why the last connection attempt or session failed.
    pub last_error: Option<String>,
    /// Whether the last ProxySmart poll succeeded.
    pub proxysmart_reachable: bool,
    /// Why the last ProxySmart poll failed.
    pub proxysmart_error: Option<String>,
    /// The box's modems (the last known ones while ProxySmart is unreachable).
    pub modems: Vec<Modem>,
    /// Ports this agent created and manages.
    pub ports: Vec<ManagedPort>,
    /// The box's health as last measured.
    #[serde(default)]
    pub health: Option<HostHealth>,
    /// What the plane requires of the box before it sends new orders (its last `welcome`).
    #[serde(default)]
    pub health_limits: Option<HealthLimits>,
}

/// Where the running agent's status comes from.
#[derive(Debug, Clone)]
pub struct StatusSource {
    /// The enrolled agent id.
    pub agent_id: String,
    /// The control plane's base URL.
    pub control_plane_url: String,
    /// Session state.
    pub status: Arc<AgentStatus>,
    /// Modems.
    pub inventory: InventoryHandle,
    /// Managed ports.
    pub journal: Journal,
    /// The box's health.
    pub health: crate::boxside::health::HealthHandle,
}

impl StatusSource {
    /// The report as of now.
    pub fn report(&self) -> StatusReport {
        let snapshot = self.inventory.current();
        StatusReport {
            updated_at_ms: now_ms(),
            pid: std::process::id(),
            agent_version: crate::base::version::LONG_VERSION.to_string(),
            agent_id: self.agent_id.clone(),
            control_plane_url: self.control_plane_url.clone(),
            connected: self.status.connected(),
            session_id: self.status.session_id(),
            last_frame_at_ms: self.status.last_frame_ms(),
            last_error: self.status.last_error(),
            proxysmart_reachable: snapshot.reachable,
            proxysmart_error: snapshot.last_error,
            modems: snapshot.modems,
            ports: self.journal.ports().unwrap_or_default(),
            health: self.health.latest(),
            health_limits: self.status.health_limits(),
        }
    }
}

/// The status file path: the one chosen on the command line, else `<state_dir>/status.json`.
pub fn path_for(status: &AgentStatus, state_dir: &Path) -> PathBuf {
    status
        .status_file()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| state_dir.join(STATUS_FILE))
}

/// Starts the writer task; it stops (and removes the file) when `shutdown` is cancelled.
pub fn spawn_writer(
    path: PathBuf,
    source: StatusSource,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(write_loop(path, source, shutdown))
}

async fn write_loop(path: PathBuf, source: StatusSource, shutdown: CancellationToken) {
    let mut inventory = source.inventory.subscribe();
    let mut warned = false;
    loop {
        match write_atomic(&path, &source.report()) {
            Ok(()) => warned = false,
            // Once per failure streak: a read-only or missing directory must not flood the log.
            Err(e) if !warned => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = source.status.changed() => {}
            changed = inventory.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Writes `report` to `path` atomically with mode 0644 (whatever the umask).
pub fn write_atomic(path: &Path, report: &StatusReport) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    crate::base::files::write_atomic(path, &bytes, 0o644)
}

/// Reads and parses a status file.
pub fn read(path: &Path) -> std::io::Result<StatusReport> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxside::inventory::Snapshot;
    use std::os::unix::fs::MetadataExt;

    fn source(dir: &Path) -> (tokio::sync::watch::Sender<Snapshot>, StatusSource) {
        let (tx, inventory) = InventoryHandle::manual(Snapshot::default());
        let source = StatusSource {
            agent_id: "ag-1".into(),
            control_plane_url: "http://plane".into(),
            status: Arc::new(AgentStatus::new()),
            inventory,
            journal: Journal::open(dir).unwrap(),
            health: crate::boxside::health::HealthHandle::none(),
        };
        (tx, source)
    }

    #[test]
    fn writes_a_world_readable_file_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (_tx, source) = source(dir.path());
        let path = dir.path().join(STATUS_FILE);
        let report = source.report();
        write_atomic(&path, &report).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        assert_eq!(read(&path).unwrap(), report);
        assert!(!report.connected && report.agent_id == "ag-1");
    }

    #[tokio::test]
    async fn rewrites_on_session_change_and_removes_the_file_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (_tx, source) = source(dir.path());
        let path = dir.path().join("custom.json");
        let stop = CancellationToken::new();
        let task = spawn_writer(path.clone(), source.clone(), stop.clone());
        source.status.session_opened("sess-9");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !read(&path).is_ok_and(|r| r.connected) {
            assert!(tokio::time::Instant::now() < deadline, "never rewritten");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(read(&path).unwrap().session_id.as_deref(), Some("sess-9"));
        stop.cancel();
        task.await.unwrap();
        assert!(!path.exists());
    }
}
