//! The demo binary, run as a real process: `--once` proves the stack and exits 0; without it
//! the stack stays up and prints the lines scripts pick up, then exits cleanly on Ctrl-C.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::Api;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const DEMO: &str = env!("CARGO_BIN_EXE_farmhand-demo");

#[tokio::test]
async fn demo_once_proves_the_stack_and_exits_zero() {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(DEMO)
            .args(["--once", "--modems", "2"])
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .expect("demo finished in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("buyer's proxy: http://"), "{stdout}");
    assert!(stdout.contains("Hello from the other side"), "{stdout}");
    assert!(stdout.contains("demo complete"), "{stdout}");
    assert!(!stdout.contains("READY"), "--once must not keep serving");
}

#[tokio::test]
async fn demo_serves_until_interrupted_and_prints_script_lines() {
    let mut child = Command::new(DEMO)
        .args(["--modems", "2"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut vars = HashMap::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "READY" {
                return;
            }
            if let Some((k, v)) = line.split_once('=') {
                vars.insert(k.to_owned(), v.to_owned());
            }
        }
        panic!("demo ended before READY");
    })
    .await
    .expect("READY in time");

    // The printed URL and keys work.
    let url = &vars["FARMHAND_URL"];
    let admin = Api::new(url, Some(&vars["FARMHAND_ADMIN_KEY"]));
    assert_eq!(admin.get("/v1/agents").await.unwrap().status, 200);
    let market = admin.with_key(Some(&vars["FARMHAND_MARKETPLACE_KEY"]));
    let modems = market.get("/v1/modems").await.unwrap();
    assert_eq!(modems.body["modems"].as_array().unwrap().len(), 2);
    assert!(vars["PROXYSMART_URL"].starts_with("http://127.0.0.1:"));

    // Ctrl-C: a clean exit.
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exited")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
