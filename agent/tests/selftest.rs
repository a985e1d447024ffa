//! `farmhand-agent selftest` against the simulator as a healthy box, as a field box, and as
//! boxes that drop the quota, keep their own credentials or have no JSON write: the right
//! verdict per capability, the box profile written, and never a scratch port left behind —
//! also when the real binary is killed half-way (the next run removes it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::boxside::box_profile::{self, BoxProfile, WritePath};
use farmhand_agent::cli::check::{Check, Outcome};
use farmhand_agent::cli::selftest::{selftest, to_json, Report};
use farmhand_agent::AgentConfig;
use farmhand_sim::{Quirks, SimConfig};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{agent_config, eventually, TestBox};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_farmhand-agent");

async fn run(box_: &TestBox, dir: &Path, rotate: bool) -> Report {
    let config = AgentConfig::load(&agent_config(dir, box_, "")).unwrap();
    selftest(&config, rotate, &CancellationToken::new()).await
}

fn verdict<'a>(report: &'a Report, name: &str) -> &'a Outcome {
    &report
        .checks
        .iter()
        .find(|c: &&Check| c.name == name)
        .unwrap_or_else(|| panic!("no {name} verdict in {:#?}", report.checks))
        .outcome
}

fn passed(report: &Report, name: &str) -> bool {
    matches!(verdict(report, name), Outcome::Ok(_))
}

fn scratch_ports(box_: &TestBox) -> usize {
    box_.ports()
        .iter()
        .filter(|p| p.port_name.starts_with("farmhand-selftest-"))
        .count()
}

fn profile(dir: &Path) -> BoxProfile {
    box_profile::read(&dir.join("state").join(box_profile::PROFILE_FILE)).expect("a profile")
}

#[tokio::test]
async fn a_healthy_box_passes_every_capability_and_keeps_nothing() {
    let box_ = TestBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let report = run(&box_, dir.path(), true).await;
    for name in [
        "status",
        "ports",
        "default login",
        "create port",
        "proxy",
        "expiry",
        "quota",
        "speed limit",
        "remove port",
        "rotation",
    ] {
        assert!(passed(&report, name), "{name}: {:#?}", report.checks);
    }
    assert!(!report.failed());
    assert_eq!(box_.ports().len(), 0, "nothing left on the box");
    let p = profile(dir.path());
    assert_eq!(
        (p.quota, p.speed_limit, p.expiry),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(p.write_path, Some(WritePath::Json));
    assert!(p.rotation_ms.is_some());
    let json: serde_json::Value = serde_json::from_str(&to_json(&report)).unwrap();
    assert_eq!(json["box_profile"]["quota"], true);
    assert!(json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["check"] == "quota"));
    box_.assert_no_violations();
}

#[tokio::test]
async fn a_field_box_is_written_the_way_it_wants() {
    let box_ = TestBox::start_with(SimConfig {
        quirks: Quirks {
            busy_first_reset: false,
            ..Quirks::field()
        },
        rotation_delay: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = run(&box_, dir.path(), false).await;
    for name in ["create port", "proxy", "expiry", "quota", "remove port"] {
        assert!(passed(&report, name), "{name}: {:#?}", report.checks);
    }
    assert!(
        matches!(verdict(&report, "speed limit"), Outcome::Skip(_)),
        "a field box lists no speed limits: they cannot be told"
    );
    let p = profile(dir.path());
    assert_eq!(p.assigns_port_id, Some(true), "{p:?}");
    assert_eq!(p.port_pools, Some(true));
    assert!(p.write_visibility_ms.unwrap_or(0) >= 500, "{p:?}");
    assert_eq!(p.quota, Some(true), "bw_quota shown as a number");
    assert_eq!(scratch_ports(&box_), 0);
    box_.assert_no_violations();
}

#[tokio::test]
async fn quirky_boxes_get_the_right_verdicts_and_keep_nothing() {
    // Drops the quota: a warning, the profile says so, the port is still removed.
    let box_ = TestBox::start_with(SimConfig {
        quirks: Quirks {
            drops_quota: true,
            ..Quirks::default()
        },
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = run(&box_, dir.path(), false).await;
    assert!(
        matches!(verdict(&report, "quota"), Outcome::Warn { .. }),
        "{:#?}",
        report.checks
    );
    assert_eq!(profile(dir.path()).quota, Some(false));
    assert_eq!(box_.ports().len(), 0);

    // Keeps credentials of its own: the port cannot be sold, and none is left.
    let box_ = TestBox::start_with(SimConfig {
        quirks: Quirks {
            refuses_custom_credentials: true,
            ..Quirks::default()
        },
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = run(&box_, dir.path(), false).await;
    match verdict(&report, "create port") {
        Outcome::Fail { detail, .. } => assert!(detail.contains("proxy_login"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(report.failed());
    assert_eq!(profile(dir.path()).custom_credentials, Some(false));
    assert_eq!(box_.ports().len(), 0);

    // No JSON write: the port goes through the box's form, and the profile remembers it.
    let box_ = TestBox::start_with(SimConfig {
        quirks: Quirks {
            no_json_write: true,
            panel_login: true,
            ..Quirks::default()
        },
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let report = run(&box_, dir.path(), false).await;
    assert!(passed(&report, "create port"), "{:#?}", report.checks);
    let p = profile(dir.path());
    assert_eq!(
        (p.write_path, p.json_write_refused),
        (Some(WritePath::Form), Some(true))
    );
    assert_eq!(box_.ports().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selftest_killed_half_way_leaves_its_port_to_the_next_run() {
    // Writes show 3 s late: the selftest is still waiting for its port when it is killed.
    let box_ = TestBox::start_with(SimConfig {
        quirks: Quirks {
            write_delay: Duration::from_secs(3),
            ..Quirks::default()
        },
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), &box_, "write_visibility_s = 10");
    let mut child = Command::new(BIN)
        .args(["selftest", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the scratch port is stored", || {
        std::future::ready(scratch_ports(&box_) == 1)
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(scratch_ports(&box_), 1, "SIGKILL ran no cleanup");
    eventually("the box lists the port", || {
        std::future::ready(box_.listed_ports().len() == 1)
    })
    .await;

    box_.set_quirks(Quirks::default());
    let mut again = Command::new(BIN);
    again.args(["selftest", "--config", config.to_str().unwrap()]);
    // The simulator runs on this test's runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || again.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("removed 1 scratch port"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(scratch_ports(&box_), 0);
    assert_eq!(box_.ports().len(), 0);
}
