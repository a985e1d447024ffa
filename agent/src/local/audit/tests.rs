//! Unit tests for `audit`: entries never carry the password, the file is 0600 and
//! append-only, partial lines are skipped, the limit keeps the newest, rotation keeps history.

use super::*;
use farmhand_protocol::{
    CommandError, CommandErrorCode, Provision, Provisioned, Reconcile, Reconciled, Secret,
};
use std::os::unix::fs::PermissionsExt;

const PASSWORD: &str = "Buyer-Secret-Pass-99";

fn provision(id: &str) -> Command {
    Command {
        id: id.into(),
        deadline_ms: 1,
        body: CommandBody::Provision(Provision {
            allocation_id: "al-1".into(),
            imei: "356000000000001".into(),
            login: "buyer".into(),
            password: Secret::new(PASSWORD),
            expires_at_ms: 1,
            bandwidth_kbit: None,
            traffic_quota_mb: None,
            rotate_every_s: None,
        }),
    }
}

fn ok_provision() -> Outcome {
    Outcome::Ok {
        output: CommandOutput::Provision(Provisioned {
            allocation_id: "al-1".into(),
            imei: "356000000000001".into(),
            port_id: "port0123456789".into(),
            http_port: 8001,
            socks_port: 8002,
        }),
    }
}

fn denied() -> Outcome {
    Outcome::Error {
        error: CommandError::new(CommandErrorCode::PolicyDenied, "not allowed"),
    }
}

#[test]
fn entries_name_the_command_and_never_the_password() {
    let e = AuditEntry::new(&provision("c1"), &ok_provision());
    assert_eq!(
        (e.command_id.as_str(), e.op.as_str(), e.outcome.as_str()),
        ("c1", "provision", "ok")
    );
    assert_eq!(e.allocation_id.as_deref(), Some("al-1"));
    assert_eq!(e.imei.as_deref(), Some("356000000000001"));
    assert!(e.detail.as_deref().unwrap().contains("http 8001"));
    assert!(e.at.ends_with('Z') && e.at.len() >= 20, "{}", e.at);
    let json = serde_json::to_string(&e).unwrap();
    assert!(
        !json.contains(PASSWORD) && !json.contains("buyer"),
        "{json}"
    );
    let e = AuditEntry::new(&provision("c2"), &denied());
    assert_eq!(e.outcome, "policy_denied");
    assert_eq!(e.detail.as_deref(), Some("not allowed"));
}

#[test]
fn hostile_values_are_clipped_and_made_printable() {
    let mut c = provision(&"x".repeat(10_000));
    if let CommandBody::Provision(p) = &mut c.body {
        p.imei = "\u{1b}[31mred\n".into();
    }
    let e = AuditEntry::new(&c, &denied());
    assert_eq!(e.command_id.chars().count(), MAX_FIELD_CHARS + 1);
    assert!(e.command_id.ends_with('…'));
    let imei = e.imei.unwrap();
    assert!(!imei.chars().any(char::is_control), "{imei:?}");
    let reconcile = Command {
        id: "c".into(),
        deadline_ms: 1,
        body: CommandBody::Reconcile(Reconcile { ports: vec![] }),
    };
    let ok = Outcome::Ok {
        output: CommandOutput::Reconcile(Reconciled {
            removed: vec!["a".repeat(100); 100],
            missing: vec![],
        }),
    };
    let detail = AuditEntry::new(&reconcile, &ok).detail.unwrap();
    assert_eq!(detail.chars().count(), MAX_DETAIL_CHARS + 1);
}

#[tokio::test]
async fn appends_survive_reopen_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.append(&AuditEntry::new(&provision("c1"), &ok_provision()))
        .await
        .unwrap();
    drop(log);
    let log = AuditLog::open(dir.path()).unwrap();
    log.append(&AuditEntry::new(&provision("c2"), &denied()))
        .await
        .unwrap();
    let path = audit_path(dir.path());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let read = read_recent(dir.path(), 0).unwrap();
    let ids: Vec<&str> = read.entries.iter().map(|e| e.command_id.as_str()).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert!(read.found && read.skipped == 0);
}

#[tokio::test]
async fn a_loose_existing_file_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(dir.path());
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    AuditLog::open(dir.path()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn reader_keeps_the_newest_and_skips_partial_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    for i in 0..5 {
        let entry = AuditEntry::new(&provision(&format!("c{i}")), &denied());
        log.append(&entry).await.unwrap();
    }
    // A line being written right now: no newline, not yet valid JSON.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(audit_path(dir.path()))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"at\":\"2026").unwrap();
    let read = read_recent(dir.path(), 2).unwrap();
    let ids: Vec<&str> = read.entries.iter().map(|e| e.command_id.as_str()).collect();
    assert_eq!(ids, ["c3", "c4"]);
    assert_eq!(read.skipped, 1);
    let table = render_table(&read.entries);
    assert!(table.starts_with("TIME"), "{table}");
    assert_eq!(table.lines().count(), 3);
    assert!(table.contains("policy_denied") && table.contains("al-1"));
    let json = render_json(&read.entries);
    let back: Vec<AuditEntry> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, read.entries);
}

#[test]
fn missing_audit_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let read = read_recent(dir.path(), 10).unwrap();
    assert!(!read.found && read.entries.is_empty());
}

#[tokio::test]
async fn a_full_file_is_rotated_and_both_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = audit_path(dir.path());
    let old = AuditEntry::new(&provision("old"), &denied());
    let line = serde_json::to_string(&old).unwrap() + "\n";
    // Pad the file to just under the limit with valid entries, then append one more.
    let count = (MAX_AUDIT_BYTES as usize / line.len()) + 1;
    std::fs::write(&path, line.repeat(count - 1)).unwrap();
    let log = AuditLog::open(dir.path()).unwrap();
    log.append(&AuditEntry::new(&provision("new"), &denied()))
        .await
        .unwrap();
    let rotated = dir.path().join("audit.jsonl.1");
    assert!(rotated.exists());
    assert!(std::fs::metadata(&path).unwrap().len() < line.len() as u64 * 2);
    let read = read_recent(dir.path(), 2).unwrap();
    let ids: Vec<&str> = read.entries.iter().map(|e| e.command_id.as_str()).collect();
    assert_eq!(ids, ["old", "new"]);
}
