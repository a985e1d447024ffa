//! Command execution against a fake ProxySmart over real HTTP: every command's happy path,
//! idempotency by id and by allocation, cleanup after failures, and the error codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::commands::{CommandContext, Executor};
use farmhand_agent::journal::{now_ms, Journal};
use farmhand_agent::proxysmart::ProxysmartClient;
use farmhand_agent::{Masked, ProxysmartConfig};
use farmhand_protocol::*;
use std::sync::Arc;
use std::time::Duration;
use support::{FakeBox, Fault, IMEI_1, IMEI_OFFLINE, PASSWORD, USER};

struct Agent {
    fake: FakeBox,
    exec: Executor,
    _dir: tempfile::TempDir,
}

async fn agent() -> Agent {
    let fake = FakeBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = ProxysmartClient::new(&ProxysmartConfig::new(
        &fake.url,
        USER,
        Masked::new(PASSWORD),
    ))
    .unwrap();
    let ctx = CommandContext::new(
        client,
        Journal::open(dir.path()).unwrap(),
        Duration::from_secs(10),
    );
    Agent {
        fake,
        exec: Executor::new(Arc::new(ctx)),
        _dir: dir,
    }
}

fn cmd(id: &str, body: CommandBody) -> Command {
    Command {
        id: id.into(),
        deadline_ms: now_ms() + 60_000,
        body,
    }
}

fn provision(allocation: &str, imei: &str) -> CommandBody {
    CommandBody::Provision(Provision {
        allocation_id: allocation.into(),
        imei: imei.into(),
        login: "buyer_1".into(),
        password: Secret::new("Buyer-Pass-123456789"),
        expires_at_ms: now_ms() + 86_400_000,
        bandwidth_kbit: None,
        traffic_quota_mb: None,
    })
}

fn ok(result: CommandResult) -> CommandOutput {
    match result.outcome {
        Outcome::Ok { output } => output,
        Outcome::Error { error } => panic!("expected success, got {error:?}"),
    }
}

fn err(result: CommandResult) -> CommandError {
    match result.outcome {
        Outcome::Error { error } => error,
        Outcome::Ok { output } => panic!("expected an error, got {output:?}"),
    }
}

#[tokio::test]
async fn provision_creates_applies_and_verifies_a_port_once_per_allocation() {
    let a = agent().await;
    let CommandOutput::Provision(p) =
        ok(a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await)
    else {
        panic!()
    };
    assert_eq!((p.http_port, p.socks_port), (8001, 8002));
    let port = a
        .fake
        .with(|s| s.port_named("farmhand-al-1"))
        .expect("port on the box");
    assert_eq!(port["LOGIN"], "buyer_1");
    assert_eq!(port["PASSWORD"], "Buyer-Pass-123456789");
    assert_eq!(port["portID"], p.port_id.as_str());
    assert_eq!(port["PROXY_VALID_BEFORE"].as_str().unwrap().len(), 19);
    assert!(a.fake.with(|s| s.applied.contains(&p.port_id)));
    // Same allocation, new command id: the same port, ProxySmart not written again.
    let CommandOutput::Provision(again) =
        ok(a.exec.execute(cmd("c2", provision("al-1", IMEI_1))).await)
    else {
        panic!()
    };
    assert_eq!(again, p);
    assert_eq!(a.fake.with(|s| s.calls_to("store_port")), 1);
}

#[tokio::test]
async fn concurrent_and_later_redeliveries_run_the_command_once() {
    let a = agent().await;
    let (r1, r2) = tokio::join!(
        a.exec.execute(cmd("c1", provision("al-1", IMEI_1))),
        a.exec.execute(cmd("c1", provision("al-1", IMEI_1)))
    );
    assert_eq!(r1, r2);
    let r3 = a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await;
    assert_eq!(r3, r1);
    assert_eq!(
        a.fake
            .with(|s| (s.calls_to("store_port"), s.calls_to("status"))),
        (1, 1)
    );
}

#[tokio::test]
async fn provision_refuses_bad_fields_unknown_and_offline_modems() {
    let a = agent().await;
    let mut bad = provision("al-1", IMEI_1);
    if let CommandBody::Provision(p) = &mut bad {
        p.login = "has space".into();
    }
    assert_eq!(
        err(a.exec.execute(cmd("c1", bad)).await).code,
        CommandErrorCode::InvalidCommand
    );
    let mut past = provision("al-1", IMEI_1);
    if let CommandBody::Provision(p) = &mut past {
        p.expires_at_ms = 1;
    }
    assert_eq!(
        err(a.exec.execute(cmd("c2", past)).await).code,
        CommandErrorCode::InvalidCommand
    );
    assert!(
        a.fake.with(|s| s.calls.is_empty()),
        "validation happens before any ProxySmart call"
    );
    let e = err(a
        .exec
        .execute(cmd("c3", provision("al-1", "356999999999999")))
        .await);
    assert_eq!(e.code, CommandErrorCode::UnknownImei);
    let e = err(a
        .exec
        .execute(cmd("c4", provision("al-1", IMEI_OFFLINE)))
        .await);
    assert_eq!(e.code, CommandErrorCode::ModemOffline);
    a.fake.with(|s| s.free = vec![8001]);
    let e = err(a.exec.execute(cmd("c5", provision("al-1", IMEI_1))).await);
    assert_eq!(e.code, CommandErrorCode::NoFreePorts);
    assert!(a.fake.with(|s| s.ports.is_empty()));
}

#[tokio::test]
async fn failures_after_store_leave_no_port_behind() {
    for (fault, what) in [(Fault::ApplyRefused, "busy"), (Fault::DropsLogin, "LOGIN")] {
        let a = agent().await;
        a.fake.with(|s| s.fault = fault);
        let e = err(a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await);
        assert_eq!(e.code, CommandErrorCode::ProxysmartRefused, "{fault:?}");
        assert!(e.message.contains(what), "{e:?}");
        assert!(
            a.fake.with(|s| s.ports.is_empty()),
            "{fault:?}: the half-created port was purged"
        );
        assert!(!e.message.contains("Buyer-Pass"));
    }
}

#[tokio::test]
async fn proxysmart_faults_map_to_precise_codes() {
    let a = agent().await;
    a.fake.with(|s| s.fault = Fault::Html);
    assert_eq!(
        err(a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await).code,
        CommandErrorCode::ProxysmartMalformed
    );
    a.fake.with(|s| s.fault = Fault::ServerError);
    assert_eq!(
        err(a.exec.execute(cmd("c2", provision("al-1", IMEI_1))).await).code,
        CommandErrorCode::ProxysmartUnavailable
    );
    let dir = tempfile::tempdir().unwrap();
    let wrong = ProxysmartClient::new(&ProxysmartConfig::new(
        &a.fake.url,
        USER,
        Masked::new("wrong"),
    ))
    .unwrap();
    let exec = Executor::new(Arc::new(CommandContext::new(
        wrong,
        Journal::open(dir.path()).unwrap(),
        Duration::from_secs(5),
    )));
    let e = err(exec.execute(cmd("c3", provision("al-1", IMEI_1))).await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartUnauthorized);
}

#[tokio::test]
async fn release_removes_the_port_and_is_idempotent() {
    let a = agent().await;
    ok(a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await);
    let release = || {
        CommandBody::Release(Release {
            allocation_id: "al-1".into(),
        })
    };
    let CommandOutput::Release(r) = ok(a.exec.execute(cmd("c2", release())).await) else {
        panic!()
    };
    assert!(r.existed);
    assert!(a.fake.with(|s| s.ports.is_empty()));
    let CommandOutput::Release(r) = ok(a.exec.execute(cmd("c3", release())).await) else {
        panic!()
    };
    assert!(!r.existed);
}

#[tokio::test]
async fn reconcile_removes_orphans_reports_missing_and_spares_foreign_ports() {
    let a = agent().await;
    ok(a.exec.execute(cmd("c1", provision("keep", IMEI_1))).await);
    a.fake.with(|s| {
        s.add_port("portorphan01", "farmhand-orphan", IMEI_1, 8100, 8101);
        s.add_port("portseller01", "my own port", IMEI_1, 8200, 8201);
    });
    let desired = ["keep", "lost"].map(|id| DesiredPort {
        allocation_id: id.into(),
        imei: IMEI_1.into(),
    });
    let body = CommandBody::Reconcile(Reconcile {
        ports: desired.to_vec(),
    });
    let CommandOutput::Reconcile(r) = ok(a.exec.execute(cmd("c2", body)).await) else {
        panic!()
    };
    assert_eq!(r.removed, ["orphan"]);
    assert_eq!(r.missing, ["lost"]);
    a.fake.with(|s| {
        assert!(s.port_named("farmhand-keep").is_some());
        assert!(
            s.port_named("my own port").is_some(),
            "ports not named farmhand-* are never touched"
        );
        assert!(s.port_named("farmhand-orphan").is_none());
    });
}

#[tokio::test]
async fn rotate_ip_waits_for_the_new_address() {
    let a = agent().await;
    let body = CommandBody::RotateIp(RotateIp {
        imei: IMEI_1.into(),
    });
    let CommandOutput::RotateIp(r) = ok(a.exec.execute(cmd("c1", body)).await) else {
        panic!()
    };
    assert_eq!(r.old_ip.as_deref(), Some("198.51.100.1"));
    assert_eq!(r.new_ip.as_deref(), Some("198.51.100.99"));
    assert!(r.changed);
    let body = CommandBody::RotateIp(RotateIp {
        imei: "356999999999999".into(),
    });
    assert_eq!(
        err(a.exec.execute(cmd("c2", body)).await).code,
        CommandErrorCode::UnknownImei
    );
}

#[tokio::test]
async fn update_port_changes_only_the_expiry() {
    let a = agent().await;
    ok(a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await);
    let before = a.fake.with(|s| s.port_named("farmhand-al-1")).unwrap();
    let expires = now_ms() + 10 * 86_400_000;
    let body = CommandBody::UpdatePort(UpdatePort {
        allocation_id: "al-1".into(),
        expires_at_ms: expires,
    });
    ok(a.exec.execute(cmd("c2", body)).await);
    let after = a.fake.with(|s| s.port_named("farmhand-al-1")).unwrap();
    assert_ne!(after["PROXY_VALID_BEFORE"], before["PROXY_VALID_BEFORE"]);
    for field in ["portID", "LOGIN", "PASSWORD", "HTTP_PORT", "SOCKS_PORT"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    let body = CommandBody::UpdatePort(UpdatePort {
        allocation_id: "nope".into(),
        expires_at_ms: expires,
    });
    assert_eq!(
        err(a.exec.execute(cmd("c3", body)).await).code,
        CommandErrorCode::InvalidCommand
    );
}
