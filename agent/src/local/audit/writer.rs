//! Appending to the audit file: opened with `O_APPEND` and mode 0600, one JSON object per
//! line written with a single `write` and synced, and renamed to `audit.jsonl.1` once it
//! passes [`MAX_AUDIT_BYTES`](super::MAX_AUDIT_BYTES).

use super::{audit_path, AuditEntry, MAX_AUDIT_BYTES};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The audit file could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("audit log {}: {source}", path.display())]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The open audit log; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Writer>>,
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
}

impl AuditLog {
    /// Opens (or creates) `<state_dir>/audit.jsonl` for appending, mode 0600.
    pub fn open(state_dir: &Path) -> Result<AuditLog, AuditError> {
        let path = audit_path(state_dir);
        let writer = Writer::open(&path).map_err(|source| AuditError {
            path: path.clone(),
            source,
        })?;
        Ok(AuditLog {
            inner: Arc::new(Mutex::new(writer)),
        })
    }

    /// Appends one entry and syncs it to disk.
    pub async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let inner = self.inner.clone();
        let mut line = serde_json::to_string(entry).unwrap_or_default();
        line.push('\n');
        let joined = tokio::task::spawn_blocking(move || {
            let mut writer = inner.lock().map_err(|_| {
                (
                    PathBuf::new(),
                    std::io::Error::other("audit writer poisoned"),
                )
            })?;
            writer
                .append(line.as_bytes())
                .map_err(|e| (writer.path.clone(), e))
        })
        .await;
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err((path, source))) => Err(AuditError { path, source }),
            Err(e) => Err(AuditError {
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

impl Writer {
    fn open(path: &Path) -> std::io::Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        // `mode` applies only when the file is created; tighten a file made by hand.
        let meta = file.metadata()?;
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size: meta.len(),
        })
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > MAX_AUDIT_BYTES {
            self.rotate()?;
        }
        // One write of the whole line on an O_APPEND file: a reader never sees two entries
        // interleaved, at most a last line still being written (which it skips).
        self.file.write_all(line)?;
        self.file.sync_data()?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, PathBuf::from(old))?;
        *self = Writer::open(&self.path)?;
        Ok(())
    }
}
