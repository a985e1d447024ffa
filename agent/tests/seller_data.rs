//! The seller's own data on the box, with the real binary: `farmhand-agent export` writes
//! every file and table the data map lists (docs/privacy.md, its export column) and no
//! secret; `farmhand-agent erase` deletes them all only after the typed confirmation. Both
//! refuse while the agent runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::local::journal::Journal;
use farmhand_test_support::data_map_exports;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use support::executor::BUYER_PASSWORD;
use support::plane::{running_with_a_port, Stage};
use support::PASSWORD;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_farmhand-agent");

/// Runs the binary with `args`, `stdin` typed in; (success, stdout, stderr).
async fn farmhand(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(AGENT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_complete_by_the_data_map_and_erase_asks_first() {
    let stage = Stage::start().await;
    let (dir, state) = (&stage.dir, stage.dir.path().to_path_buf());
    let state_arg = state.to_str().unwrap().to_string();
    let (agent, _session) = running_with_a_port(&stage).await;

    // While the agent runs, both refuse and say why; nothing is deleted.
    let (ok, _, err) = farmhand(&["export", "--state-dir", &state_arg], "").await;
    assert!(!ok && err.contains("the agent is running"), "{err}");
    let (ok, _, err) = farmhand(&["erase", "--state-dir", &state_arg, "--yes"], "").await;
    assert!(!ok && err.contains("the agent is running"), "{err}");
    assert!(state.join("agent.key").exists());

    agent.stop().await;
    let before = files(&state);
    let tables = Journal::open(&state).unwrap().table_names();
    let key = std::fs::read(state.join("agent.key")).unwrap();
    let (ok, out, err) = farmhand(&["export", "--state-dir", &state_arg], "").await;
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["format"], "farmhand.agent-export.v1");

    // Complete by the data map: each file there and each table of the journal is in its
    // part, with its content.
    let map = data_map_exports("Agent");
    assert!(map.len() > 10, "the map was not read: {map:?}");
    for (location, part) in &map {
        let Some(part) = part else { continue };
        if let Some(table) = location.strip_prefix("tree ") {
            if tables.iter().any(|t| t == table) {
                assert!(doc[part][table].is_array(), "{location} is not in {part}");
            }
        } else if let Some(file) = location.strip_prefix("file ") {
            if before.iter().any(|f| f == file) {
                let value = &doc[part.as_str()];
                let filled = !value.is_null() && value.as_array().is_none_or(|a| !a.is_empty());
                assert!(filled, "{location} exists but {part} is empty: {value}");
            }
        }
    }
    assert_eq!(doc["journal"]["ports"][0]["key"], "al-1");
    assert!(doc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["op"] == "provision"));
    // …and no secret: not the agent's key, the ProxySmart password or a buyer's.
    for (what, secret) in [
        ("the ProxySmart password", PASSWORD),
        ("a buyer password", BUYER_PASSWORD),
    ] {
        assert!(!out.contains(secret), "the export holds {what}");
    }
    let key_text = String::from_utf8_lossy(&key).trim().to_string();
    assert!(!out.contains(&key_text), "the export holds the private key");

    // --out writes the same, 0600.
    let out_file = dir.path().join("export.json");
    let (ok, _, err) = farmhand(
        &[
            "export",
            "--state-dir",
            &state_arg,
            "--out",
            out_file.to_str().unwrap(),
        ],
        "",
    )
    .await;
    assert!(ok, "{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_file(&out_file).unwrap();

    // Erase asks first: anything but ERASE deletes nothing.
    let (ok, _, err) = farmhand(&["erase", "--state-dir", &state_arg], "yes\n").await;
    assert!(!ok && err.contains("nothing was deleted"), "{err}");
    assert_eq!(files(&state), before);
    let (ok, out, err) = farmhand(&["erase", "--state-dir", &state_arg], "ERASE\n").await;
    assert!(ok, "{err}");
    assert!(out.contains("deleted"), "{out}");
    let left: Vec<String> = files(&state)
        .into_iter()
        .filter(|f| map.contains_key(&format!("file {f}")))
        .collect();
    assert!(left.is_empty(), "erase left {left:?}");
}
