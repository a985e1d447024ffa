//! Command execution against a fake ProxySmart over real HTTP: every command's happy path,
//! idempotency by id and by allocation, cleanup after failures, the error codes, and the
//! automatic rotation scheduler (`autorotate`) driving the same rotations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::commands::{CommandContext, Executor};
use farmhand_agent::journal::{now_ms, Journal};
use farmhand_agent::proxysmart::ProxysmartClient;
use farmhand_agent::{Masked, ProxysmartConfig};
use farmhand_protocol::*;
use std::sync::Arc;
use std::time::Duration;
use support::{wait_until, FakeBox, Fault, IMEI_1, IMEI_3, IMEI_OFFLINE, PASSWORD, USER};

struct Agent {
    fake: FakeBox,
    exec: Executor,
    _dir: tempfile::TempDir,
}

async fn agent() -> Agent {
    agent_with(Duration::from_secs(10)).await
}

/// An agent whose `rotate_ip` waits at most `rotation_timeout` for the new IP.
async fn agent_with(rotation_timeout: Duration) -> Agent {
    let fake = FakeBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = ProxysmartClient::new(&ProxysmartConfig::new(
        &fake.url,
        USER,
        Masked::new(PASSWORD),
    ))
    .unwrap();
    let ctx = CommandContext::new(client, Journal::open(dir.path()).unwrap(), rotation_timeout);
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
        rotate_every_s: None,
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

/// The last `store_port` the box got carried no limit field at all.
fn assert_no_limits_sent(a: &Agent) {
    let body = a.fake.with(|s| s.store_bodies.last().cloned()).unwrap();
    for key in [
        "bandlimin",
        "bandlimout",
        "bw_quota",
        "QUOTA_TYPE",
        "QUOTA_DIRECTION",
    ] {
        assert!(body.get(key).is_none(), "{key} sent without a limit");
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
async fn provision_sets_the_limits_and_refuses_a_box_that_drops_the_quota() {
    let limited = |allocation: &str| {
        let CommandBody::Provision(mut p) = provision(allocation, IMEI_1) else {
            unreachable!()
        };
        p.bandwidth_kbit = Some(800);
        p.traffic_quota_mb = Some(5);
        CommandBody::Provision(p)
    };
    let a = agent().await;
    let CommandOutput::Provision(p) = ok(a.exec.execute(cmd("c1", limited("al-1"))).await) else {
        panic!()
    };
    let body = a.fake.with(|s| s.store_bodies.last().cloned()).unwrap();
    assert_eq!(body["bandlimin"], 800);
    assert_eq!(body["bandlimout"], 800);
    assert_eq!(body["bw_quota"], 5);
    assert_eq!(body["QUOTA_TYPE"], "lifetime");
    assert_eq!(body["QUOTA_DIRECTION"], "in+out");
    let port = a.fake.with(|s| s.ports[&p.port_id].clone());
    assert_eq!(port["QUOTA"], "5", "verified by re-reading the port list");
    assert!(a.fake.with(|s| s.violations.is_empty()));

    // A box that stores the port but not its quota: refused, and no port is left behind.
    let a = agent().await;
    a.fake.with(|s| s.fault = Fault::DropsQuota);
    let e = err(a.exec.execute(cmd("c1", limited("al-2"))).await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartRefused);
    assert!(e.message.contains("bw_quota"), "{e:?}");
    assert!(a.fake.with(|s| s.ports.is_empty()), "the port was purged");
    // Without limits, nothing about them is sent.
    a.fake.with(|s| s.fault = Fault::None);
    ok(a.exec.execute(cmd("c2", provision("al-3", IMEI_1))).await);
    assert_no_limits_sent(&a);
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
async fn provision_on_another_modem_moves_the_port_with_the_same_credentials() {
    let a = agent().await;
    a.fake.add_online_modem(IMEI_3, "198.51.100.3");
    let CommandOutput::Provision(old) =
        ok(a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await)
    else {
        panic!()
    };
    // The plane replaced the allocation onto IMEI_3 of the same box; the old port cannot
    // be purged right now, which must not fail the move.
    a.fake.with(|s| s.fault = Fault::PurgeRefused);
    let CommandOutput::Provision(new) =
        ok(a.exec.execute(cmd("c2", provision("al-1", IMEI_3))).await)
    else {
        panic!()
    };
    assert_eq!(new.imei, IMEI_3);
    assert_ne!(new.port_id, old.port_id);
    a.fake.with(|s| {
        let port = &s.ports[&new.port_id];
        assert_eq!(
            (port["IMEI"].as_str(), port["LOGIN"].as_str()),
            (Some(IMEI_3), Some("buyer_1"))
        );
        assert_eq!(port["PASSWORD"], "Buyer-Pass-123456789");
        assert!(
            s.ports.contains_key(&old.port_id),
            "purge refused: old port still there"
        );
        s.fault = Fault::None;
    });
    // Idempotent on the new modem: the journaled port, ProxySmart not written again.
    let stores = a.fake.with(|s| s.calls_to("store_port"));
    let CommandOutput::Provision(again) =
        ok(a.exec.execute(cmd("c3", provision("al-1", IMEI_3))).await)
    else {
        panic!()
    };
    assert_eq!(again, new);
    assert_eq!(a.fake.with(|s| s.calls_to("store_port")), stores);
    // Reconcile removes the stale port on the old modem and keeps the new one.
    let body = CommandBody::Reconcile(Reconcile {
        ports: vec![DesiredPort {
            allocation_id: "al-1".into(),
            imei: IMEI_3.into(),
        }],
    });
    let CommandOutput::Reconcile(r) = ok(a.exec.execute(cmd("c4", body)).await) else {
        panic!()
    };
    assert!(r.missing.is_empty(), "{r:?}");
    a.fake.with(|s| {
        assert!(
            !s.ports.contains_key(&old.port_id),
            "stale port on the old modem removed"
        );
        assert!(s.ports.contains_key(&new.port_id));
    });
    // Moving back purges the port it leaves at once when ProxySmart lets it.
    let CommandOutput::Provision(back) =
        ok(a.exec.execute(cmd("c5", provision("al-1", IMEI_1))).await)
    else {
        panic!()
    };
    a.fake.with(|s| {
        assert_eq!(s.ports.len(), 1, "only the port on IMEI_1 is left");
        assert_eq!(s.ports[&back.port_id]["IMEI"], IMEI_1);
    });
}

#[tokio::test]
async fn a_failed_move_keeps_the_old_port() {
    let a = agent().await;
    let CommandOutput::Provision(old) =
        ok(a.exec.execute(cmd("c1", provision("al-1", IMEI_1))).await)
    else {
        panic!()
    };
    let e = err(a
        .exec
        .execute(cmd("c2", provision("al-1", IMEI_OFFLINE)))
        .await);
    assert_eq!(e.code, CommandErrorCode::ModemOffline);
    a.fake.add_online_modem(IMEI_3, "198.51.100.3");
    a.fake.with(|s| s.fault = Fault::ApplyRefused);
    let e = err(a.exec.execute(cmd("c3", provision("al-1", IMEI_3))).await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartRefused);
    a.fake.with(|s| {
        assert_eq!(
            s.ports.len(),
            1,
            "the half-created port went, the old one stays"
        );
        assert!(s.ports.contains_key(&old.port_id));
        s.fault = Fault::None;
    });
    let CommandOutput::Provision(same) =
        ok(a.exec.execute(cmd("c4", provision("al-1", IMEI_1))).await)
    else {
        panic!()
    };
    assert_eq!(same, old, "the journal still points at the old port");
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

/// The fake box replaces the whole record on a re-store (the pessimistic reading of the
/// spec): a renewal that left the limits out would clear them.
#[tokio::test]
async fn update_port_sends_the_provisioned_limits_again() {
    let a = agent().await;
    let CommandBody::Provision(mut p) = provision("al-1", IMEI_1) else {
        unreachable!()
    };
    p.bandwidth_kbit = Some(800);
    p.traffic_quota_mb = Some(5);
    ok(a.exec.execute(cmd("c1", CommandBody::Provision(p))).await);
    let renew = |allocation: &str| {
        CommandBody::UpdatePort(UpdatePort {
            allocation_id: allocation.into(),
            expires_at_ms: now_ms() + 10 * 86_400_000,
        })
    };
    ok(a.exec.execute(cmd("c2", renew("al-1"))).await);
    let body = a.fake.with(|s| s.store_bodies.last().cloned()).unwrap();
    assert_eq!(
        (&body["bandlimin"], &body["bandlimout"]),
        (&800.into(), &800.into())
    );
    assert_eq!(body["bw_quota"], 5);
    assert_eq!(body["QUOTA_TYPE"], "lifetime");
    assert_eq!(body["QUOTA_DIRECTION"], "in+out");
    let port = a.fake.with(|s| s.port_named("farmhand-al-1")).unwrap();
    assert_eq!(port["QUOTA"], "5", "the quota survived the renewal");

    // A box that drops the quota on the re-store: the renewal is refused, not silently
    // turned into unlimited traffic.
    a.fake.with(|s| s.fault = Fault::DropsQuota);
    let e = err(a.exec.execute(cmd("c3", renew("al-1"))).await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartRefused);
    assert!(e.message.contains("bw_quota"), "{e:?}");

    // A port without limits is renewed without any.
    a.fake.with(|s| s.fault = Fault::None);
    ok(a.exec.execute(cmd("c4", provision("al-2", IMEI_1))).await);
    ok(a.exec.execute(cmd("c5", renew("al-2"))).await);
    assert_no_limits_sent(&a);
    assert!(a.fake.with(|s| s.violations.is_empty()));
}

fn rotate(imei: &str) -> CommandBody {
    CommandBody::RotateIp(RotateIp { imei: imei.into() })
}

fn resets_of(a: &Agent, imei: &str) -> usize {
    a.fake
        .with(|s| s.resets.iter().filter(|i| *i == imei).count())
}

#[tokio::test]
async fn rotate_ip_tells_a_same_ip_and_an_unsettled_read_back_apart() {
    let a = agent_with(Duration::from_secs(3)).await;
    // The carrier hands back the same address: success, changed = false.
    a.fake
        .with(|s| s.rotation_plan = Some((2, "198.51.100.1".into())));
    let CommandOutput::RotateIp(same) = ok(a.exec.execute(cmd("c1", rotate(IMEI_1))).await) else {
        panic!()
    };
    assert_eq!(same.old_ip.as_deref(), Some("198.51.100.1"));
    assert_eq!(same.new_ip.as_deref(), Some("198.51.100.1"));
    assert!(!same.changed);
    // The modem never shows a settled IP before the timeout: success (the reset was
    // requested), but no new IP is claimed.
    a.fake
        .with(|s| s.rotation_plan = Some((u32::MAX, "198.51.100.7".into())));
    let CommandOutput::RotateIp(unsettled) = ok(a.exec.execute(cmd("c2", rotate(IMEI_1))).await)
    else {
        panic!()
    };
    assert_eq!(unsettled.old_ip.as_deref(), Some("198.51.100.1"));
    assert_eq!(unsettled.new_ip, None);
    assert!(!unsettled.changed);
    assert_eq!(resets_of(&a, IMEI_1), 2);
}

async fn next_report(reports: &mut tokio::sync::mpsc::Receiver<RotationReport>) -> RotationReport {
    tokio::time::timeout(Duration::from_secs(30), reports.recv())
        .await
        .expect("a rotation report in time")
        .expect("the report channel is open")
}

fn provision_rotating(allocation: &str, imei: &str, every_s: u64) -> CommandBody {
    let CommandBody::Provision(mut p) = provision(allocation, imei) else {
        unreachable!()
    };
    p.rotate_every_s = Some(every_s);
    CommandBody::Provision(p)
}

#[tokio::test]
async fn automatic_rotation_runs_while_the_port_lives_and_is_reported() {
    let a = agent().await;
    a.fake.add_online_modem(support::IMEI_3, "198.51.100.3");
    let ctx = a.exec.context().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let scheduler = farmhand_agent::autorotate::spawn(ctx.clone(), stop.clone());
    ok(a.exec
        .execute(cmd("c1", provision_rotating("al-1", IMEI_1, 1)))
        .await);
    let mut reports = ctx
        .autorotation
        .reports()
        .expect("no session holds the reports");
    let first = next_report(&mut reports).await;
    assert_eq!(first.imei, IMEI_1);
    assert!(first.automatic);
    assert_eq!(first.old_ip.as_deref(), Some("198.51.100.1"));
    assert_eq!(first.new_ip.as_deref(), Some("198.51.100.99"));
    assert!(first.changed);
    assert!(first.at_ms <= now_ms() && first.at_ms + 60_000 > now_ms());
    let second = next_report(&mut reports).await;
    assert_eq!(second.imei, IMEI_1, "it keeps rotating on schedule");

    // Releasing the port stops its schedule; another modem's schedule keeps running.
    ok(a.exec
        .execute(cmd(
            "c2",
            CommandBody::Release(Release {
                allocation_id: "al-1".into(),
            }),
        ))
        .await);
    let resets_at_release = resets_of(&a, IMEI_1);
    ok(a.exec
        .execute(cmd("c3", provision_rotating("al-3", support::IMEI_3, 1)))
        .await);
    let mut seen_3 = 0;
    while seen_3 < 2 {
        if next_report(&mut reports).await.imei == support::IMEI_3 {
            seen_3 += 1;
        }
    }
    assert!(
        resets_of(&a, IMEI_1) <= resets_at_release + 1,
        "at most a rotation already starting when the port went"
    );
    stop.cancel();
    scheduler.await.unwrap();
}

#[tokio::test]
async fn a_manual_rotation_never_overlaps_an_automatic_one() {
    let a = agent_with(Duration::from_secs(5)).await;
    // Rotations never settle: the automatic one holds the modem for the whole timeout.
    a.fake
        .with(|s| s.rotation_plan = Some((u32::MAX, "198.51.100.7".into())));
    let stop = tokio_util::sync::CancellationToken::new();
    let _scheduler = farmhand_agent::autorotate::spawn(a.exec.context().clone(), stop.clone());
    ok(a.exec
        .execute(cmd("c1", provision_rotating("al-1", IMEI_1, 1)))
        .await);
    wait_until("the automatic rotation starts", || {
        resets_of(&a, IMEI_1) == 1
    })
    .await;
    let e = err(a.exec.execute(cmd("c2", rotate(IMEI_1))).await);
    assert_eq!(e.code, CommandErrorCode::RotationInProgress, "{e:?}");
    assert_eq!(
        resets_of(&a, IMEI_1),
        1,
        "the manual rotation did not reach ProxySmart"
    );
    stop.cancel();
}
