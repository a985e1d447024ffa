//! The seller's own data on the box: `farmhand-agent export` writes everything the agent
//! keeps in its state directory as one JSON document (the data map in docs/privacy.md
//! names the part each file and table lands in; a test checks each is there), and
//! `farmhand-agent erase` deletes it all after a typed confirmation. Both need the agent
//! stopped: the journal is a database only one process may open.
//!
//! The private key is never exported (it is a secret, and the plane holds its public half);
//! erasing deletes it, so the box must be enrolled again to sell.

use crate::boxside::box_profile::PROFILE_FILE;
use crate::local::audit::{audit_path, previous_audit_path};
use crate::local::journal::Journal;
use crate::plane::identity::{IDENTITY_FILE, KEY_FILE};
use anyhow::Context;
use serde_json::{json, Map, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// The document's format name.
pub const FORMAT: &str = "farmhand.agent-export.v1";
/// What `erase` asks the seller to type.
pub const CONFIRMATION: &str = "ERASE";
/// The status file's name in the state directory.
const STATUS_FILE: &str = "status.json";

/// Everything in `state_dir`, as one JSON document.
pub fn export(state_dir: &Path) -> anyhow::Result<Value> {
    anyhow::ensure!(
        state_dir.join("db").exists(),
        "no agent state in {} (is this the agent's state_dir?)",
        state_dir.display()
    );
    let journal = open_stopped(state_dir)?;
    let mut doc = Map::new();
    doc.insert("format".into(), json!(FORMAT));
    doc.insert("state_dir".into(), json!(state_dir.display().to_string()));
    doc.insert(
        "identity".into(),
        json_file(&state_dir.join(IDENTITY_FILE))?,
    );
    doc.insert("journal".into(), Value::Object(journal.dump()?));
    doc.insert("audit".into(), Value::Array(audit_lines(state_dir)?));
    doc.insert(
        "box_profile".into(),
        json_file(&state_dir.join(PROFILE_FILE))?,
    );
    doc.insert("status".into(), json_file(&state_dir.join(STATUS_FILE))?);
    Ok(Value::Object(doc))
}

/// Deletes every file the agent keeps in `state_dir` once `confirm` yields
/// [`CONFIRMATION`]; returns what was deleted. Anything else in the directory stays.
pub fn erase(state_dir: &Path, confirm: impl BufRead) -> anyhow::Result<Vec<PathBuf>> {
    anyhow::ensure!(
        state_dir.is_dir(),
        "{} is not a directory",
        state_dir.display()
    );
    // Refuses while the agent runs, before asking anything.
    drop(open_stopped_if_present(state_dir)?);
    let typed = confirm
        .lines()
        .next()
        .transpose()
        .context("cannot read the confirmation")?
        .unwrap_or_default();
    anyhow::ensure!(
        typed.trim() == CONFIRMATION,
        "not confirmed (type {CONFIRMATION} to erase): nothing was deleted"
    );
    let mut deleted = Vec::new();
    let files = [
        state_dir.join(KEY_FILE),
        state_dir.join(IDENTITY_FILE),
        audit_path(state_dir),
        previous_audit_path(state_dir),
        state_dir.join(PROFILE_FILE),
        state_dir.join(STATUS_FILE),
    ];
    for file in files {
        match std::fs::remove_file(&file) {
            Ok(()) => deleted.push(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot delete {}", file.display())),
        }
    }
    let db = state_dir.join("db");
    if db.exists() {
        std::fs::remove_dir_all(&db).with_context(|| format!("cannot delete {}", db.display()))?;
        deleted.push(db);
    }
    Ok(deleted)
}

/// The journal, or a clear error when the running agent holds it.
fn open_stopped(state_dir: &Path) -> anyhow::Result<Journal> {
    Journal::open(state_dir).map_err(|e| {
        if e.to_string().contains("could not acquire lock") {
            anyhow::anyhow!(
                "the agent is running (it holds {}): stop it first (systemctl stop farmhand-agent)",
                state_dir.join("db").display()
            )
        } else {
            anyhow::Error::new(e).context(format!(
                "cannot open the journal in {}",
                state_dir.display()
            ))
        }
    })
}

fn open_stopped_if_present(state_dir: &Path) -> anyhow::Result<Option<Journal>> {
    if !state_dir.join("db").exists() {
        return Ok(None);
    }
    open_stopped(state_dir).map(Some)
}

/// A JSON file's content; `null` when it does not exist.
fn json_file(path: &Path) -> anyhow::Result<Value> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Every line of the audit files, oldest first (a line that is not JSON is kept as text).
fn audit_lines(state_dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut lines = Vec::new();
    for path in [previous_audit_path(state_dir), audit_path(state_dir)] {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            lines.push(serde_json::from_str(line).unwrap_or_else(|_| json!(line)));
        }
    }
    Ok(lines)
}
