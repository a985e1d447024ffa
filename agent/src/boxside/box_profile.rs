//! What this box was seen to do: the box profile. Nobody here has a real ProxySmart box, so
//! every assumption about a write is checked on the box the agent runs on, and what was
//! learned is kept: which reply forms it uses, which write path works, whether it takes the
//! quota, speed limits and expiry, whether it wants matched port pairs or assigns port ids
//! itself, how late writes show, how long a rotation takes.
//!
//! Written by the running agent (`boxside::ports` records what each write showed) and by
//! `farmhand-agent selftest`, possibly at the same time, so every update re-reads the file
//! and changes only what it observed: `<state_dir>/box_profile.json` (0600, no secrets).
//! The capabilities the plane places orders by ([`BoxCapabilities`]) are derived from it,
//! and announced again when they change.

use crate::boxside::proxysmart::ReplyForm;
use farmhand_protocol::BoxCapabilities;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::watch;

/// The profile's file in the state directory.
pub const PROFILE_FILE: &str = "box_profile.json";

/// How ports were written on this box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePath {
    /// `POST /crud/store_port`.
    Json,
    /// The `/conf/add_port` HTML form.
    Form,
}

/// Everything observed so far; `None` = not observed yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoxProfile {
    /// How the box worded successful actions.
    pub reply_forms: BTreeSet<ReplyForm>,
    /// The path the last port was created through.
    pub write_path: Option<WritePath>,
    /// `/crud/store_port` did not create ports (missing, refused, or dropped them).
    pub json_write_refused: Option<bool>,
    /// Free ports come as matched pairs from the HTTP 8001–8999 / SOCKS 5001–5999 pools.
    pub port_pools: Option<bool>,
    /// The box stored a port under an id of its own.
    pub assigns_port_id: Option<bool>,
    /// The box keeps the login and password it is given.
    pub custom_credentials: Option<bool>,
    /// The box stores a traffic quota.
    pub quota: Option<bool>,
    /// The box lists and stores speed limits.
    pub speed_limit: Option<bool>,
    /// The box stores the port expiry.
    pub expiry: Option<bool>,
    /// The box flags a port `IS_EXPIRED` once its expiry has passed (`ports::expiry_watch`).
    pub enforces_expiry: Option<bool>,
    /// The longest a write took to show in the port list, ms.
    pub write_visibility_ms: Option<u64>,
    /// How long the last rotation took until the box showed an IP again, ms.
    pub rotation_ms: Option<u64>,
    /// `show_single_status_json` answers by IMEI.
    pub single_status: Option<bool>,
    /// The box's zone, seconds east of UTC, learned from a port's `CREATED_AT`
    /// (`proxysmart::box_clock`).
    pub utc_offset_s: Option<i64>,
    /// When this profile last changed, Unix ms.
    pub updated_at_ms: u64,
}

impl BoxProfile {
    /// What the plane needs to know to place orders.
    pub fn capabilities(&self) -> BoxCapabilities {
        BoxCapabilities {
            quota: self.quota,
            speed_limit: self.speed_limit,
            expiry: self.expiry,
            enforces_expiry: self.enforces_expiry,
        }
    }
}

/// The shared, persisted profile; updates notify [`BoxProfileHandle::subscribe`]rs when
/// the capabilities change.
#[derive(Debug)]
pub struct BoxProfileHandle {
    path: Option<PathBuf>,
    current: Mutex<BoxProfile>,
    capabilities: watch::Sender<BoxCapabilities>,
}

impl BoxProfileHandle {
    /// The profile of `state_dir` (empty if there is none yet, or it cannot be read).
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(PROFILE_FILE);
        let profile = read(&path).unwrap_or_default();
        Self::with(Some(path), profile)
    }

    /// A profile kept in memory only (tests, and a box without a state dir).
    pub fn in_memory() -> Self {
        Self::with(None, BoxProfile::default())
    }

    fn with(path: Option<PathBuf>, profile: BoxProfile) -> Self {
        let (capabilities, _) = watch::channel(profile.capabilities());
        BoxProfileHandle {
            path,
            current: Mutex::new(profile),
            capabilities,
        }
    }

    /// The profile now.
    pub fn snapshot(&self) -> BoxProfile {
        self.lock().clone()
    }

    /// The capabilities now.
    pub fn capabilities(&self) -> BoxCapabilities {
        self.lock().capabilities()
    }

    /// Receives the capabilities whenever they change.
    pub fn subscribe(&self) -> watch::Receiver<BoxCapabilities> {
        self.capabilities.subscribe()
    }

    /// Applies an observation: re-reads the file (another process may have written it),
    /// changes what `observe` changes, and writes it back when anything changed.
    pub fn update(&self, observe: impl FnOnce(&mut BoxProfile)) {
        let mut current = self.lock();
        if let Some(on_disk) = self.path.as_deref().and_then(read) {
            *current = on_disk;
        }
        let before = current.clone();
        observe(&mut current);
        if *current == before {
            return;
        }
        current.updated_at_ms = crate::base::clock::now_ms();
        if let Some(path) = &self.path {
            let written = serde_json::to_vec_pretty(&*current)
                .map_err(std::io::Error::other)
                .and_then(|bytes| crate::base::files::write_atomic(path, &bytes, 0o600));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot save the box profile; it is kept in memory");
            }
        }
        let capabilities = current.capabilities();
        self.capabilities.send_if_modified(|c| {
            let changed = *c != capabilities;
            *c = capabilities;
            changed
        });
    }

    /// Records the form of a successful reply.
    pub fn saw_reply(&self, form: ReplyForm) {
        if !self.lock().reply_forms.contains(&form) {
            self.update(|p| {
                p.reply_forms.insert(form);
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoxProfile> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a profile file; `None` when it is missing or unreadable (a corrupt one is logged
/// and started afresh).
pub fn read(path: &Path) -> Option<BoxProfile> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(profile) => Some(profile),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable box profile");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_persist_merge_with_other_writers_and_announce_capabilities() {
        let dir = tempfile::tempdir().unwrap();
        let a = BoxProfileHandle::load(dir.path());
        let mut changes = a.subscribe();
        a.update(|p| p.quota = Some(false));
        assert!(changes.has_changed().unwrap());
        assert_eq!(changes.borrow_and_update().quota, Some(false));
        // Another process (selftest) learns something else; neither loses the other's.
        let b = BoxProfileHandle::load(dir.path());
        b.update(|p| p.rotation_ms = Some(12_000));
        a.update(|p| p.speed_limit = Some(true));
        let on_disk = read(&dir.path().join(PROFILE_FILE)).unwrap();
        assert_eq!(on_disk.quota, Some(false));
        assert_eq!(on_disk.rotation_ms, Some(12_000));
        assert_eq!(on_disk.speed_limit, Some(true));
        // An observation that changes nothing writes nothing and announces nothing.
        changes.borrow_and_update();
        a.update(|p| p.quota = Some(false));
        assert!(!changes.has_changed().unwrap());
        a.saw_reply(ReplyForm::Empty);
        assert!(a.snapshot().reply_forms.contains(&ReplyForm::Empty));
    }

    #[test]
    fn a_corrupt_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PROFILE_FILE), b"{not json").unwrap();
        let p = BoxProfileHandle::load(dir.path());
        assert_eq!(p.snapshot(), BoxProfile::default());
        p.update(|p| p.expiry = Some(true));
        assert_eq!(
            BoxProfileHandle::load(dir.path()).snapshot().expiry,
            Some(true)
        );
    }
}
