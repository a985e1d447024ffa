//! The seller's local audit: one line per command the agent executed on this box (time,
//! command id, op, allocation/IMEI, outcome code, a short detail; never a password),
//! policy denials included, so a seller can see exactly what the marketplace did.
//!
//! It is an append-only JSON-lines file, `<state_dir>/audit.jsonl` (mode 0600), not a sled
//! tree: sled holds an exclusive lock while the agent runs, and the seller must be able to
//! read the audit (`farmhand-agent audit`) at any time. `writer` appends, `reader` reads
//! the newest entries back and renders them.

mod reader;
mod writer;

pub use reader::{read_recent, render_json, render_table, show, state_dir_of, AuditRead};
pub use writer::{AuditError, AuditLog};

use farmhand_protocol::{Command, CommandBody, CommandOutput, Outcome};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The audit file's name inside the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// Past this size the file is renamed to `audit.jsonl.1` (replacing an older one) and a new
/// file is started, so the audit cannot fill the disk; the reader reads both.
pub const MAX_AUDIT_BYTES: u64 = 16 * 1024 * 1024;
/// Longest id, allocation id or IMEI kept in an entry: they come from the plane, and a
/// malformed one must not bloat the audit. As long as the longest valid command id
/// (`commands::validate` checks that it never exceeds this), so valid ones are kept whole.
pub const MAX_FIELD_CHARS: usize = 128;
/// Longest detail kept in an entry.
const MAX_DETAIL_CHARS: usize = 240;

/// The path of the audit file in `state_dir`.
pub fn audit_path(state_dir: &Path) -> PathBuf {
    state_dir.join(AUDIT_FILE)
}

/// The previous audit file in `state_dir` (`audit.jsonl.1`, see `writer`).
pub fn previous_audit_path(state_dir: &Path) -> PathBuf {
    state_dir.join(format!("{AUDIT_FILE}.1"))
}

/// One audited command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When the command finished, RFC 3339 UTC.
    pub at: String,
    /// The command id.
    pub command_id: String,
    /// The op (`provision`, `release`, …).
    pub op: String,
    /// The allocation the command concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_id: Option<String>,
    /// The modem the command concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    /// `ok` or the error code (`policy_denied`, `invalid_command`, …).
    pub outcome: String,
    /// What happened, for people: the port created, the IPs, the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEntry {
    /// The entry for `command` with `outcome`, stamped now. Reads only ids, never the
    /// password.
    pub fn new(command: &Command, outcome: &Outcome) -> AuditEntry {
        let (allocation_id, imei) = subject(&command.body);
        let (outcome, detail) = match outcome {
            Outcome::Ok { output } => ("ok".to_string(), success_detail(output)),
            Outcome::Error { error } => (error.code.as_str().to_string(), error.message.clone()),
        };
        AuditEntry {
            at: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            command_id: clip(&command.id, MAX_FIELD_CHARS),
            op: command.body.op().to_string(),
            allocation_id: allocation_id.map(|a| clip(a, MAX_FIELD_CHARS)),
            imei: imei.map(|i| clip(i, MAX_FIELD_CHARS)),
            outcome,
            detail: Some(clip(&detail, MAX_DETAIL_CHARS)).filter(|d| !d.is_empty()),
        }
    }
}

/// The allocation and modem a command names.
fn subject(body: &CommandBody) -> (Option<&str>, Option<&str>) {
    match body {
        CommandBody::Provision(p) => (Some(&p.allocation_id), Some(&p.imei)),
        CommandBody::Release(r) => (Some(&r.allocation_id), None),
        CommandBody::RotateIp(r) => (None, Some(&r.imei)),
        CommandBody::UpdatePort(u) => (Some(&u.allocation_id), None),
        CommandBody::Reconcile(_) => (None, None),
    }
}

fn success_detail(output: &CommandOutput) -> String {
    let ip = |ip: &Option<String>| ip.clone().unwrap_or_else(|| "unknown".into());
    match output {
        CommandOutput::Provision(p) => format!(
            "port {} on {}: http {} socks {}",
            p.port_id, p.imei, p.http_port, p.socks_port
        ),
        CommandOutput::Release(r) if r.existed => "port removed".into(),
        CommandOutput::Release(_) => "no port to remove".into(),
        CommandOutput::RotateIp(r) => format!("{} -> {}", ip(&r.old_ip), ip(&r.new_ip)),
        CommandOutput::UpdatePort(_) => "expiry updated".into(),
        CommandOutput::Reconcile(r) => format!(
            "removed [{}]; missing [{}]",
            r.removed.join(", "),
            r.missing.join(", ")
        ),
    }
}

/// At most `max` characters of `s`, marked when cut, with control characters replaced:
/// values from the plane end up on the seller's terminal, and must not carry escapes.
fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(printable).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// `c`, or U+FFFD if it is a control character.
pub(crate) fn printable(c: char) -> char {
    if c.is_control() {
        char::REPLACEMENT_CHARACTER
    } else {
        c
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
