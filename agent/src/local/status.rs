//! Live status shared between the running agent and whoever asks (tests, and the status
//! file behind `farmhand-agent status`, see `run::status_file`): whether a session is open
//! and how old the last frame is.
//!
//! "Connected" means "a frame arrived recently", not "the socket is open".

use crate::base::clock::now_ms;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Shared, lock-light status of the agent.
#[derive(Debug, Default)]
pub struct AgentStatus {
    connected: AtomicBool,
    last_frame_ms: AtomicU64,
    session_id: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// Woken when a session opens or closes (the status-file writer waits on it).
    changed: Notify,
    /// Where the status file goes; `None` means `<state_dir>/status.json`.
    status_file: Option<PathBuf>,
    /// Where the metrics listener is bound, once it is (`[metrics] listen`).
    metrics_addr: Mutex<Option<SocketAddr>>,
    /// What the plane requires of the box before it sends new orders (its last `welcome`).
    health_limits: Mutex<Option<farmhand_protocol::HealthLimits>>,
}

impl AgentStatus {
    /// A fresh, disconnected status.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh status whose status file is written to `path` instead of the state dir.
    pub fn with_status_file(path: impl Into<PathBuf>) -> Self {
        AgentStatus {
            status_file: Some(path.into()),
            ..Self::default()
        }
    }

    /// The status file chosen with [`AgentStatus::with_status_file`], if any.
    pub fn status_file(&self) -> Option<&Path> {
        self.status_file.as_deref()
    }

    /// Completes when a session opened or closed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// When the last frame from the plane arrived (ms since the epoch), if ever.
    pub fn last_frame_ms(&self) -> Option<u64> {
        match self.last_frame_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(at),
        }
    }

    /// Whether an authenticated session is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// How long ago the last frame from the plane arrived, if ever.
    pub fn last_frame_age(&self) -> Option<Duration> {
        match self.last_frame_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }

    /// The current session id, if connected.
    pub fn session_id(&self) -> Option<String> {
        self.session_id.lock().ok().and_then(|s| s.clone())
    }

    /// Why the last connection attempt or session ended, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|s| s.clone())
    }

    /// The address the metrics listener is bound to (resolves a configured port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr.lock().ok().and_then(|a| *a)
    }

    /// The plane's health limits from the last `welcome`, if it sent any.
    pub fn health_limits(&self) -> Option<farmhand_protocol::HealthLimits> {
        self.health_limits.lock().ok().and_then(|l| *l)
    }

    pub(crate) fn set_health_limits(&self, limits: Option<farmhand_protocol::HealthLimits>) {
        if let Ok(mut l) = self.health_limits.lock() {
            *l = limits;
        }
    }

    pub(crate) fn set_metrics_addr(&self, addr: SocketAddr) {
        if let Ok(mut a) = self.metrics_addr.lock() {
            *a = Some(addr);
        }
    }

    pub(crate) fn frame_received(&self) {
        self.last_frame_ms.store(now_ms().max(1), Ordering::Relaxed);
    }

    pub(crate) fn session_opened(&self, session_id: &str) {
        self.connected.store(true, Ordering::Relaxed);
        if let Ok(mut s) = self.session_id.lock() {
            *s = Some(session_id.to_string());
        }
        self.frame_received();
        self.changed.notify_one();
    }

    pub(crate) fn session_closed(&self, error: Option<String>) {
        self.connected.store(false, Ordering::Relaxed);
        if let Ok(mut s) = self.session_id.lock() {
            *s = None;
        }
        if let Ok(mut e) = self.last_error.lock() {
            *e = error;
        }
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_session_and_frame_age() {
        let s = AgentStatus::new();
        assert!(!s.connected() && s.last_frame_age().is_none());
        s.session_opened("sess-1");
        assert!(s.connected());
        assert_eq!(s.session_id().as_deref(), Some("sess-1"));
        assert!(s.last_frame_age().unwrap() < Duration::from_secs(5));
        s.session_closed(Some("stale".into()));
        assert!(!s.connected() && s.session_id().is_none());
        assert_eq!(s.last_error().as_deref(), Some("stale"));
    }
}
