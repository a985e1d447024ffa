//! The local audit end to end with real processes: `farmhand-agent run` (with a policy in
//! its config file, against the ProxySmart simulator) serves a fake plane, and
//! `farmhand-agent audit` — a second process — reads what it did while it is still
//! running: the policy denial, the provision and the release, never the buyer's password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use support::executor::{provision, release, rotate, BUYER_PASSWORD};
use support::plane::{enroll_ok, PlaneConn};
use support::{TestBox, PASSWORD};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const AGENT: &str = env!("CARGO_BIN_EXE_farmhand-agent");

/// Kills the agent process when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn write_config(dir: &Path, plane_url: &str, proxysmart_url: &str) -> std::path::PathBuf {
    let password_file = dir.join("proxysmart.password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        r#"state_dir = "{state}"
[control_plane]
url = "{plane_url}"
insecure_plaintext = true
[proxysmart]
url = "{proxysmart_url}"
username = "proxy"
password_file = "{pw}"
poll_interval_s = 1
[site]
public_host = "203.0.113.7"
country = "DE"
[policy.allow]
rotate_ip = false
"#,
        state = dir.join("state").display(),
        pw = password_file.display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    path
}

async fn audit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(AGENT)
        .arg("audit")
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seller_reads_the_audit_while_the_agent_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let public_key = enroll_ok(&state).await;
    let sim = TestBox::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_url = format!("http://{}", listener.local_addr().unwrap());
    let config = write_config(dir.path(), &plane_url, &sim.url());
    let mut agent = Running(
        Command::new(AGENT)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    );
    let mut conn = PlaneConn::accept(&listener, &public_key, Default::default()).await;
    conn.welcome().await;
    let AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory")
    };
    let r = conn.command("cmd-1", rotate(&sim.online)).await;
    assert!(
        matches!(&r.outcome, Outcome::Error { error } if error.code == CommandErrorCode::PolicyDenied),
        "{r:?}"
    );
    let r = conn.command("cmd-2", provision("al-1", &sim.online)).await;
    assert!(matches!(r.outcome, Outcome::Ok { .. }), "{r:?}");
    let r = conn.command("cmd-3", release("al-1")).await;
    assert!(matches!(r.outcome, Outcome::Ok { .. }), "{r:?}");

    // The agent still runs (and holds its sled lock) while a second process reads.
    let config_arg = config.to_str().unwrap();
    let (ok, out, err) = audit(&["--config", config_arg, "--json"]).await;
    assert!(ok, "{err}");
    let entries: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap();
            (s("command_id"), s("op"), s("outcome"))
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("cmd-1", "rotate_ip", "policy_denied"),
            ("cmd-2", "provision", "ok"),
            ("cmd-3", "release", "ok")
        ]
    );
    assert_eq!(entries[1]["imei"], sim.online.as_str());
    assert_eq!(entries[1]["allocation_id"], "al-1");
    assert!(!out.contains(BUYER_PASSWORD) && !out.contains(PASSWORD));

    let (ok, table, _) = audit(&["--state-dir", state.to_str().unwrap(), "--limit", "1"]).await;
    assert!(ok);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("TIME") && lines[1].contains("cmd-3"),
        "{table}"
    );
    let audit_file = state.join("audit.jsonl");
    let mode = std::fs::metadata(&audit_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let raw = std::fs::read_to_string(&audit_file).unwrap();
    assert!(
        !raw.contains(BUYER_PASSWORD),
        "a password reached the audit file"
    );
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent kept running"
    );

    // Unhappy paths: no audit yet is not an error; an unreadable config is.
    let empty = tempfile::tempdir().unwrap();
    let (ok, out, err) = audit(&["--state-dir", empty.path().to_str().unwrap()]).await;
    assert!(
        ok && out.is_empty() && err.contains("no audit yet"),
        "{err}"
    );
    let (ok, _, err) = audit(&["--config", "/nonexistent/agent.toml"]).await;
    assert!(!ok && err.contains("/nonexistent/agent.toml"), "{err}");
}
