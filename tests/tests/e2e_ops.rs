//! End to end: the operator commands against a real simulator, control plane and agent.
//! `farmhand-agent doctor` passes on a healthy box (plain HTTP and TLS with a CA) and names
//! what is broken (wrong ProxySmart password, plane down, untrusted certificate, open state
//! dir); the status file behind `farmhand-agent status` follows the running agent (modems,
//! a new port) and disappears when it stops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_agent::cli::check::{Check, Outcome};
use farmhand_agent::cli::doctor::diagnose;
use farmhand_agent::cli::status;
use farmhand_agent::run::status_file::{self, STATUS_FILE};
use farmhand_agent::AgentConfig;
use farmhand_testkit::harness::{within, Stack, StackOptions, StackTls, TestCa};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Writes `config` as the TOML file an operator would, with the ProxySmart password in
/// its own file.
fn write_config(dir: &Path, config: &AgentConfig, password: &str) -> PathBuf {
    let password_file = dir.join("proxysmart.password");
    std::fs::write(&password_file, password).unwrap();
    let cp = &config.control_plane;
    let mut plane = format!(
        "url = {:?}\ninsecure_plaintext = {}\n",
        cp.url, cp.insecure_plaintext
    );
    if let Some(ca) = &cp.ca_file {
        plane += &format!("ca_file = {:?}\n", ca.display().to_string());
    }
    if let Some(pin) = &cp.pin_sha256 {
        plane += &format!("pin_sha256 = \"{pin}\"\n");
    }
    let text = format!(
        "state_dir = {:?}\n[control_plane]\n{plane}[proxysmart]\nurl = {:?}\nusername = \"proxy\"\n\
         password_file = {:?}\n[site]\npublic_host = \"127.0.0.1\"\ncountry = \"DE\"\n",
        config.state_dir.display().to_string(),
        config.proxysmart.url,
        password_file.display().to_string(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What the package does for /var/lib/farmhand (a temp dir is created 0755).
fn make_private(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn outcome<'a>(checks: &'a [Check], name: &str) -> &'a Outcome {
    &checks.iter().find(|c| c.name == name).unwrap().outcome
}

fn assert_fails(checks: &[Check], name: &str, detail: &str, fix: &str) {
    match outcome(checks, name) {
        Outcome::Fail { detail: d, fix: f } => {
            assert!(d.contains(detail), "{name}: {d:?} lacks {detail:?}");
            assert!(f.contains(fix), "{name}: fix {f:?} lacks {fix:?}");
        }
        other => panic!("{name} should fail, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_a_healthy_box_and_names_what_is_broken() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    make_private(stack.agent_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &stack.agent_config(), "proxy");

    let checks = diagnose(&config).await;
    let failed: Vec<_> = checks.iter().filter(|c| c.outcome.failed()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(matches!(outcome(&checks, "tls"), Outcome::Skip(_)));
    assert!(matches!(outcome(&checks, "identity"), Outcome::Ok(s) if s.contains(&stack.agent_id)));
    let proxysmart = outcome(&checks, "proxysmart");
    assert!(
        matches!(proxysmart, Outcome::Ok(s) if s.contains("(4 modems)")),
        "{proxysmart:?}"
    );
    assert!(matches!(outcome(&checks, "clock"), Outcome::Ok(_)));

    // A wrong ProxySmart password: only that check fails, with a hint about the file.
    let wrong = write_config(dir.path(), &stack.agent_config(), "not-the-password");
    let checks = diagnose(&wrong).await;
    assert_fails(&checks, "proxysmart", "credentials", "password_file");
    assert!(!outcome(&checks, "control plane").failed());

    // A state dir others can read.
    let state = stack.agent_dir.path();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let checks = diagnose(&config).await;
    assert_fails(&checks, "state dir", "0755", "chmod 700");
    make_private(state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_an_unreachable_control_plane() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = stack.agent_config();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    agent.control_plane.url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let checks = diagnose(&write_config(dir.path(), &agent, "proxy")).await;
    assert_fails(
        &checks,
        "control plane",
        "cannot connect",
        "control_plane.url",
    );
    assert!(outcome(&checks, "agent endpoint").failed());
    assert!(matches!(outcome(&checks, "clock"), Outcome::Skip(_)));
    assert!(!outcome(&checks, "proxysmart").failed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_verifies_tls_with_the_agents_trust_settings() {
    let stack = Stack::start(StackOptions {
        tls: StackTls::Ca,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    make_private(stack.agent_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let checks = diagnose(&write_config(dir.path(), &stack.agent_config(), "proxy")).await;
    assert!(
        matches!(outcome(&checks, "tls"), Outcome::Ok(s) if s.contains("CA file")),
        "{checks:#?}"
    );
    assert!(!checks.iter().any(|c| c.outcome.failed()), "{checks:#?}");

    // Another CA than the one that signed the plane's certificate.
    let other = dir.path().join("other-ca.pem");
    TestCa::new("not the plane's CA")
        .unwrap()
        .write_cert(&other)
        .unwrap();
    let mut agent = stack.agent_config();
    agent.control_plane.ca_file = Some(other);
    let checks = diagnose(&write_config(dir.path(), &agent, "proxy")).await;
    assert_fails(&checks, "tls", "not trusted", "ca_file");
    assert_fails(&checks, "agent endpoint", "not trusted", "ca_file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_file_follows_the_running_agent() {
    let mut stack = Stack::start(StackOptions::default()).await.unwrap();
    let path = stack.agent_dir.path().join(STATUS_FILE);
    let report = within(WAIT, "a connected status with 4 modems", || async {
        let r = status_file::read(&path).ok()?;
        (r.connected && r.modems.len() == 4).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(report.agent_id, stack.agent_id);
    assert_eq!(report.control_plane_url, stack.plane_url);
    assert!(report.proxysmart_reachable && report.last_frame_at_ms.is_some());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    let allocation = stack.allocate("ops-order-1").await.unwrap();
    assert_eq!(allocation.status, 201, "{:?}", allocation.body);
    let id = allocation.body["allocation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = within(WAIT, "the new port in the status file", || async {
        let r = status_file::read(&path).ok()?;
        r.ports.iter().any(|p| p.allocation_id == id).then_some(r)
    })
    .await
    .unwrap();
    let now = farmhand_agent::base::clock::now_ms();
    let text = status::render(&report, &path, now);
    assert!(
        text.contains(&id) && text.contains("connected (session"),
        "{text}"
    );
    assert!(status::healthy(&report, now));
    assert_eq!(status::run(Some(&path), None, false).unwrap(), 0);

    stack.stop_agent().await;
    assert!(!path.exists(), "status file left after a clean stop");
    assert_eq!(status::run(Some(&path), None, false).unwrap(), 1);
}
