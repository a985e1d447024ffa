//! Reading the audit back for `farmhand-agent audit`: the newest entries of
//! `audit.jsonl.1` and `audit.jsonl`, oldest first, as a table or as JSON lines. Reading
//! needs no lock, so it works while the agent runs.

use super::{audit_path, previous_audit_path, AuditEntry, AuditError};
use crate::config::{ConfigError, FileConfig};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// What was read.
#[derive(Debug, Default)]
pub struct AuditRead {
    /// The newest entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Lines that were not entries (a line being written right now, or damage).
    pub skipped: usize,
    /// Whether any audit file exists yet.
    pub found: bool,
}

/// What `farmhand-agent audit` prints: the output, and a note for stderr (no audit yet,
/// or lines skipped).
pub fn show(
    state_dir: &Path,
    limit: usize,
    json: bool,
) -> Result<(String, Option<String>), AuditError> {
    let read = read_recent(state_dir, limit)?;
    let path = audit_path(state_dir);
    if !read.found {
        let note = format!("no audit yet: {} does not exist", path.display());
        return Ok((String::new(), Some(note)));
    }
    let out = match json {
        true => render_json(&read.entries),
        false => render_table(&read.entries),
    };
    let note = (read.skipped > 0).then(|| {
        format!(
            "{} line(s) of {} were not audit entries (one may be being written now)",
            read.skipped,
            path.display()
        )
    });
    Ok((out, note))
}

/// The `state_dir` of the config file at `config`. Reads nothing else (in particular not
/// the ProxySmart password file), so a seller can read the audit without that access.
pub fn state_dir_of(config: &Path) -> Result<PathBuf, ConfigError> {
    let text = std::fs::read_to_string(config).map_err(|source| ConfigError::Read {
        path: config.to_path_buf(),
        source,
    })?;
    Ok(FileConfig::parse(config, &text)?.state_dir().to_path_buf())
}

/// The newest `limit` entries in `state_dir` (all of them when `limit` is 0).
pub fn read_recent(state_dir: &Path, limit: usize) -> Result<AuditRead, AuditError> {
    let current = audit_path(state_dir);
    let previous = previous_audit_path(state_dir);
    let mut read = AuditRead::default();
    let mut newest = VecDeque::new();
    for path in [previous, current] {
        read_file(&path, limit, &mut newest, &mut read)?;
    }
    read.entries = newest.into();
    Ok(read)
}

fn read_file(
    path: &Path,
    limit: usize,
    newest: &mut VecDeque<AuditEntry>,
    read: &mut AuditRead,
) -> Result<(), AuditError> {
    let error = |source| AuditError {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(error(e)),
    };
    read.found = true;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(error)?;
        match serde_json::from_str::<AuditEntry>(&line) {
            Ok(entry) => {
                if limit > 0 && newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(entry);
            }
            Err(_) if line.trim().is_empty() => {}
            Err(_) => read.skipped += 1,
        }
    }
    Ok(())
}

/// One JSON object per line, as stored.
pub fn render_json(entries: &[AuditEntry]) -> String {
    entries
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
        .collect()
}

/// An aligned table with a header line.
pub fn render_table(entries: &[AuditEntry]) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    // Hand-edited or damaged files are rendered safely too.
    let clean = |s: String| s.chars().map(super::printable).collect::<String>();
    let mut rows = vec![[
        "TIME",
        "COMMAND",
        "OP",
        "ALLOCATION",
        "IMEI",
        "OUTCOME",
        "DETAIL",
    ]
    .map(String::from)];
    rows.extend(entries.iter().map(|e| {
        [
            e.at.clone(),
            e.command_id.clone(),
            e.op.clone(),
            dash(&e.allocation_id),
            dash(&e.imei),
            e.outcome.clone(),
            dash(&e.detail),
        ]
        .map(clean)
    }));
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (cell, w) in row.iter().zip(widths) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(&row[6]);
        out.push('\n');
    }
    out
}
