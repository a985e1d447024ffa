//! Command execution against the ProxySmart simulator (`farmhand-sim`) over real HTTP:
//! every command's happy path, idempotency by id and by allocation, cleanup after failures
//! (refused applies, a box that keeps its own credentials or drops the quota), the error
//! codes, and the automatic rotation scheduler (`autorotate`) driving the same rotations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::base::clock::now_ms;
use farmhand_agent::boxside::commands::{CommandContext, Executor};
use farmhand_agent::boxside::proxysmart::ProxysmartClient;
use farmhand_agent::local::journal::Journal;
use farmhand_agent::{Masked, ProxysmartConfig};
use farmhand_protocol::*;
use farmhand_sim::{Fault, Quirks, WriteFault};
use std::sync::Arc;
use std::time::Duration;
use support::{eventually, TestBox, PASSWORD, USER};

struct Agent {
    sim: TestBox,
    exec: Executor,
    /// What the executor runs commands with (the scheduler and the box checks share it).
    ctx: Arc<CommandContext>,
    _dir: tempfile::TempDir,
}

async fn agent() -> Agent {
    agent_with(Duration::from_secs(10)).await
}

/// An agent whose `rotate_ip` waits at most `rotation_timeout` for the new IP.
async fn agent_with(rotation_timeout: Duration) -> Agent {
    let sim = TestBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = ProxysmartClient::new(&ProxysmartConfig::new(
        sim.url(),
        USER,
        Masked::new(PASSWORD),
    ))
    .unwrap();
    let ctx = CommandContext::builder(client, Journal::open(dir.path()).unwrap(), rotation_timeout)
        .build();
    let ctx = Arc::new(ctx);
    Agent {
        sim,
        exec: Executor::new(ctx.clone()),
        ctx,
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
    let body = a.sim.last_store_body();
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
    let imei = a.sim.online.clone();
    let CommandOutput::Provision(p) = ok(a.exec.execute(cmd("c1", provision("al-1", &imei))).await)
    else {
        panic!()
    };
    let port = a.sim.port_named("farmhand-al-1").expect("port on the box");
    assert_eq!(
        (p.http_port, p.socks_port),
        (port.http_port, port.socks_port),
        "the ports the box holds"
    );
    assert_ne!(p.http_port, p.socks_port);
    assert_eq!(port.login, "buyer_1");
    assert_eq!(port.password, "Buyer-Pass-123456789");
    assert_eq!(port.port_id, p.port_id);
    assert_eq!(port.valid_before.len(), 19);
    assert!(port.applied, "apply_port made it live");
    // Same allocation, new command id: the same port, ProxySmart not written again.
    let CommandOutput::Provision(again) =
        ok(a.exec.execute(cmd("c2", provision("al-1", &imei))).await)
    else {
        panic!()
    };
    assert_eq!(again, p);
    assert_eq!(a.sim.api_calls("/crud/store_port"), 1);
    a.sim.assert_no_violations();
}

#[tokio::test]
async fn concurrent_and_later_redeliveries_run_the_command_once() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    let (r1, r2) = tokio::join!(
        a.exec.execute(cmd("c1", provision("al-1", &imei))),
        a.exec.execute(cmd("c1", provision("al-1", &imei)))
    );
    assert_eq!(r1, r2);
    let r3 = a.exec.execute(cmd("c1", provision("al-1", &imei))).await;
    assert_eq!(r3, r1);
    assert_eq!(
        (
            a.sim.api_calls("/crud/store_port"),
            a.sim.api_calls("/apix/show_status_json")
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn provision_refuses_bad_fields_unknown_and_offline_modems() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    let mut bad = provision("al-1", &imei);
    if let CommandBody::Provision(p) = &mut bad {
        p.login = "has space".into();
    }
    assert_eq!(
        err(a.exec.execute(cmd("c1", bad)).await).code,
        CommandErrorCode::InvalidCommand
    );
    let mut past = provision("al-1", &imei);
    if let CommandBody::Provision(p) = &mut past {
        p.expires_at_ms = 1;
    }
    assert_eq!(
        err(a.exec.execute(cmd("c2", past)).await).code,
        CommandErrorCode::InvalidCommand
    );
    assert!(
        a.sim.calls().is_empty(),
        "validation happens before any ProxySmart call"
    );
    let e = err(a
        .exec
        .execute(cmd("c3", provision("al-1", "356999999999999")))
        .await);
    assert_eq!(e.code, CommandErrorCode::UnknownImei);
    let e = err(a
        .exec
        .execute(cmd("c4", provision("al-1", &a.sim.offline)))
        .await);
    assert_eq!(e.code, CommandErrorCode::ModemOffline);
    a.sim.set_free_ports_offered(1);
    let e = err(a.exec.execute(cmd("c5", provision("al-1", &imei))).await);
    assert_eq!(e.code, CommandErrorCode::NoFreePorts);
    assert!(a.sim.ports().is_empty());
}

#[tokio::test]
async fn failures_after_store_leave_no_port_behind() {
    for what in ["busy", "credentials"] {
        let a = agent().await;
        match what {
            // apply_port answers "modem is busy".
            "busy" => a.sim.set_write_fault(Some(WriteFault::ApplyRefused)),
            // store_port keeps a login of the box's own.
            _ => a.sim.set_quirks(Quirks {
                refuses_custom_credentials: true,
                ..Quirks::default()
            }),
        }
        let e = err(a
            .exec
            .execute(cmd("c1", provision("al-1", &a.sim.online)))
            .await);
        match what {
            "busy" => {
                assert_eq!(e.code, CommandErrorCode::ProxysmartRefused, "{what}");
                assert!(e.message.contains(what), "{e:?}");
            }
            _ => {
                assert_eq!(e.code, CommandErrorCode::BoxRefusedField, "{what}");
                assert_eq!(e.field.as_deref(), Some("proxy_login"), "{e:?}");
            }
        }
        assert!(
            a.sim.ports().is_empty(),
            "{what}: the half-created port was purged"
        );
        assert!(!e.message.contains("Buyer-Pass"));
    }
}

#[tokio::test]
async fn provision_sets_the_limits_and_refuses_a_box_that_drops_the_quota() {
    let limited = |allocation: &str, imei: &str| {
        let CommandBody::Provision(mut p) = provision(allocation, imei) else {
            unreachable!()
        };
        p.bandwidth_kbit = Some(800);
        p.traffic_quota_mb = Some(5);
        CommandBody::Provision(p)
    };
    let a = agent().await;
    let imei = a.sim.online.clone();
    let CommandOutput::Provision(p) = ok(a.exec.execute(cmd("c1", limited("al-1", &imei))).await)
    else {
        panic!()
    };
    let body = a.sim.last_store_body();
    assert_eq!(body["bandlimin"], 800);
    assert_eq!(body["bandlimout"], 800);
    assert_eq!(body["bw_quota"], 5);
    assert_eq!(body["QUOTA_TYPE"], "monthly");
    assert_eq!(body["QUOTA_DIRECTION"], "inout");
    let port = a.sim.port(&p.port_id).unwrap();
    assert_eq!(port.quota, "5", "verified by re-reading the port list");
    a.sim.assert_no_violations();

    // A box that stores the port but not its quota: refused, and no port is left behind.
    let a = agent().await;
    a.sim.set_quirks(Quirks {
        drops_quota: true,
        ..Quirks::default()
    });
    let e = err(a.exec.execute(cmd("c1", limited("al-2", &imei))).await);
    assert_eq!(e.code, CommandErrorCode::BoxRefusedField);
    assert_eq!(e.field.as_deref(), Some("bw_quota"), "{e:?}");
    assert!(a.sim.ports().is_empty(), "the port was purged");
    // Without limits, nothing about them is sent.
    a.sim.set_quirks(Quirks::default());
    ok(a.exec.execute(cmd("c2", provision("al-3", &imei))).await);
    assert_no_limits_sent(&a);
}

#[tokio::test]
async fn proxysmart_faults_map_to_precise_codes() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    a.sim.set_fault(Fault::Html);
    assert_eq!(
        err(a.exec.execute(cmd("c1", provision("al-1", &imei))).await).code,
        CommandErrorCode::ProxysmartMalformed
    );
    a.sim.set_fault(Fault::Status500);
    assert_eq!(
        err(a.exec.execute(cmd("c2", provision("al-1", &imei))).await).code,
        CommandErrorCode::ProxysmartUnavailable
    );
    // A faulted box answers everyone alike: heal it so the wrong password is what fails.
    a.sim.set_fault(Fault::None);
    let dir = tempfile::tempdir().unwrap();
    let wrong = ProxysmartClient::new(&ProxysmartConfig::new(
        a.sim.url(),
        USER,
        Masked::new("wrong"),
    ))
    .unwrap();
    let exec = Executor::new(Arc::new(
        CommandContext::builder(
            wrong,
            Journal::open(dir.path()).unwrap(),
            Duration::from_secs(5),
        )
        .build(),
    ));
    let e = err(exec.execute(cmd("c3", provision("al-1", &imei))).await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartUnauthorized);
}

#[tokio::test]
async fn release_removes_the_port_and_is_idempotent() {
    let a = agent().await;
    ok(a.exec
        .execute(cmd("c1", provision("al-1", &a.sim.online)))
        .await);
    let release = || {
        CommandBody::Release(Release {
            allocation_id: "al-1".into(),
        })
    };
    let CommandOutput::Release(r) = ok(a.exec.execute(cmd("c2", release())).await) else {
        panic!()
    };
    assert!(r.existed);
    assert!(a.sim.ports().is_empty());
    let CommandOutput::Release(r) = ok(a.exec.execute(cmd("c3", release())).await) else {
        panic!()
    };
    assert!(!r.existed);
}

#[tokio::test]
async fn reconcile_removes_orphans_reports_missing_and_spares_foreign_ports() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    ok(a.exec.execute(cmd("c1", provision("keep", &imei))).await);
    a.sim.add_foreign_port(&imei, "farmhand-orphan").unwrap();
    a.sim.add_foreign_port(&imei, "my own port").unwrap();
    let desired = ["keep", "lost"].map(|id| DesiredPort {
        allocation_id: id.into(),
        imei: imei.clone(),
    });
    let body = CommandBody::Reconcile(Reconcile {
        ports: desired.to_vec(),
    });
    let CommandOutput::Reconcile(r) = ok(a.exec.execute(cmd("c2", body)).await) else {
        panic!()
    };
    assert_eq!(r.removed, ["orphan"]);
    assert_eq!(r.missing, ["lost"]);
    assert!(a.sim.port_named("farmhand-keep").is_some());
    assert!(
        a.sim.port_named("my own port").is_some(),
        "ports not named farmhand-* are never touched"
    );
    assert!(a.sim.port_named("farmhand-orphan").is_none());
}

#[tokio::test]
async fn provision_on_another_modem_moves_the_port_with_the_same_credentials() {
    let a = agent().await;
    let imei_1 = a.sim.online.clone();
    let imei_3 = a.sim.plug_in_third();
    let CommandOutput::Provision(old) =
        ok(a.exec.execute(cmd("c1", provision("al-1", &imei_1))).await)
    else {
        panic!()
    };
    // The plane replaced the allocation onto imei_3 of the same box; the old port cannot
    // be purged right now, which must not fail the move.
    a.sim.set_write_fault(Some(WriteFault::PurgeRefused));
    let CommandOutput::Provision(new) =
        ok(a.exec.execute(cmd("c2", provision("al-1", &imei_3))).await)
    else {
        panic!()
    };
    assert_eq!(new.imei, imei_3);
    assert_ne!(new.port_id, old.port_id);
    let port = a.sim.port(&new.port_id).unwrap();
    assert_eq!(
        (port.imei.as_str(), port.login.as_str()),
        (imei_3.as_str(), "buyer_1")
    );
    assert_eq!(port.password, "Buyer-Pass-123456789");
    assert!(
        a.sim.port(&old.port_id).is_some(),
        "purge refused: old port still there"
    );
    a.sim.set_write_fault(None);
    // Idempotent on the new modem: the journaled port, ProxySmart not written again.
    let stores = a.sim.api_calls("/crud/store_port");
    let CommandOutput::Provision(again) =
        ok(a.exec.execute(cmd("c3", provision("al-1", &imei_3))).await)
    else {
        panic!()
    };
    assert_eq!(again, new);
    assert_eq!(a.sim.api_calls("/crud/store_port"), stores);
    // Reconcile removes the stale port on the old modem and keeps the new one.
    let body = CommandBody::Reconcile(Reconcile {
        ports: vec![DesiredPort {
            allocation_id: "al-1".into(),
            imei: imei_3.clone(),
        }],
    });
    let CommandOutput::Reconcile(r) = ok(a.exec.execute(cmd("c4", body)).await) else {
        panic!()
    };
    assert!(r.missing.is_empty(), "{r:?}");
    assert!(
        a.sim.port(&old.port_id).is_none(),
        "stale port on the old modem removed"
    );
    assert!(a.sim.port(&new.port_id).is_some());
    // Moving back purges the port it leaves at once when ProxySmart lets it.
    let CommandOutput::Provision(back) =
        ok(a.exec.execute(cmd("c5", provision("al-1", &imei_1))).await)
    else {
        panic!()
    };
    let ports = a.sim.ports();
    assert_eq!(ports.len(), 1, "only the port on imei_1 is left");
    assert_eq!(
        (ports[0].port_id.as_str(), ports[0].imei.as_str()),
        (back.port_id.as_str(), imei_1.as_str())
    );
}

#[tokio::test]
async fn a_failed_move_keeps_the_old_port() {
    let a = agent().await;
    let imei_1 = a.sim.online.clone();
    let CommandOutput::Provision(old) =
        ok(a.exec.execute(cmd("c1", provision("al-1", &imei_1))).await)
    else {
        panic!()
    };
    let e = err(a
        .exec
        .execute(cmd("c2", provision("al-1", &a.sim.offline)))
        .await);
    assert_eq!(e.code, CommandErrorCode::ModemOffline);
    let imei_3 = a.sim.plug_in_third();
    a.sim.set_write_fault(Some(WriteFault::ApplyRefused));
    let e = err(a.exec.execute(cmd("c3", provision("al-1", &imei_3))).await);
    assert_eq!(e.code, CommandErrorCode::ProxysmartRefused);
    assert_eq!(
        a.sim.ports().len(),
        1,
        "the half-created port went, the old one stays"
    );
    assert!(a.sim.port(&old.port_id).is_some());
    a.sim.set_write_fault(None);
    let CommandOutput::Provision(same) =
        ok(a.exec.execute(cmd("c4", provision("al-1", &imei_1))).await)
    else {
        panic!()
    };
    assert_eq!(same, old, "the journal still points at the old port");
}

#[tokio::test]
async fn rotate_ip_waits_for_the_new_address() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    let before = a.sim.modem(&imei).unwrap().ext_ip;
    let CommandOutput::RotateIp(r) = ok(a.exec.execute(cmd("c1", rotate(&imei))).await) else {
        panic!()
    };
    let after = a.sim.modem(&imei).unwrap();
    assert_eq!(after.rotations, 1);
    assert_ne!(after.ext_ip, before, "the box handed out a new address");
    assert_eq!(r.old_ip.as_deref(), Some(before.as_str()));
    assert_eq!(r.new_ip.as_deref(), Some(after.ext_ip.as_str()));
    assert!(r.changed);
    assert_eq!(
        err(a.exec.execute(cmd("c2", rotate("356999999999999"))).await).code,
        CommandErrorCode::UnknownImei
    );
}

#[tokio::test]
async fn update_port_changes_only_the_expiry() {
    let a = agent().await;
    ok(a.exec
        .execute(cmd("c1", provision("al-1", &a.sim.online)))
        .await);
    let before = a.sim.port_named("farmhand-al-1").unwrap();
    let expires = now_ms() + 10 * 86_400_000;
    let body = CommandBody::UpdatePort(UpdatePort {
        allocation_id: "al-1".into(),
        expires_at_ms: expires,
    });
    ok(a.exec.execute(cmd("c2", body)).await);
    let after = a.sim.port_named("farmhand-al-1").unwrap();
    assert_ne!(after.valid_before, before.valid_before);
    assert_eq!(after.port_id, before.port_id, "portID");
    assert_eq!(after.login, before.login, "LOGIN");
    assert_eq!(after.password, before.password, "PASSWORD");
    assert_eq!(after.http_port, before.http_port, "HTTP_PORT");
    assert_eq!(after.socks_port, before.socks_port, "SOCKS_PORT");
    let body = CommandBody::UpdatePort(UpdatePort {
        allocation_id: "nope".into(),
        expires_at_ms: expires,
    });
    assert_eq!(
        err(a.exec.execute(cmd("c3", body)).await).code,
        CommandErrorCode::InvalidCommand
    );
}

/// The test box replaces the whole record on a re-store (the pessimistic reading of the
/// spec): a renewal that left the limits out would clear them.
#[tokio::test]
async fn update_port_sends_the_provisioned_limits_again() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    let CommandBody::Provision(mut p) = provision("al-1", &imei) else {
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
    let body = a.sim.last_store_body();
    assert_eq!(
        (&body["bandlimin"], &body["bandlimout"]),
        (&800.into(), &800.into())
    );
    assert_eq!(body["bw_quota"], 5);
    assert_eq!(body["QUOTA_TYPE"], "monthly");
    assert_eq!(body["QUOTA_DIRECTION"], "inout");
    let port = a.sim.port_named("farmhand-al-1").unwrap();
    assert_eq!(port.quota, "5", "the quota survived the renewal");

    // A box that drops the quota on the re-store: the renewal is refused, not silently
    // turned into unlimited traffic.
    a.sim.set_quirks(Quirks {
        drops_quota: true,
        ..Quirks::default()
    });
    let e = err(a.exec.execute(cmd("c3", renew("al-1"))).await);
    assert_eq!(e.code, CommandErrorCode::BoxRefusedField);
    assert_eq!(e.field.as_deref(), Some("bw_quota"), "{e:?}");

    // A port without limits is renewed without any.
    a.sim.set_quirks(Quirks::default());
    ok(a.exec.execute(cmd("c4", provision("al-2", &imei))).await);
    ok(a.exec.execute(cmd("c5", renew("al-2"))).await);
    assert_no_limits_sent(&a);
    a.sim.assert_no_violations();
}

fn rotate(imei: &str) -> CommandBody {
    CommandBody::RotateIp(RotateIp { imei: imei.into() })
}

#[tokio::test]
async fn rotate_ip_tells_a_same_ip_and_an_unsettled_read_back_apart() {
    let a = agent_with(Duration::from_secs(3)).await;
    let imei = a.sim.online.clone();
    let ip = a.sim.modem(&imei).unwrap().ext_ip;
    // The carrier hands back the same address: success, changed = false.
    a.sim.arm_same_ip_rotation(&imei).unwrap();
    let CommandOutput::RotateIp(same) = ok(a.exec.execute(cmd("c1", rotate(&imei))).await) else {
        panic!()
    };
    assert_eq!(same.old_ip.as_deref(), Some(ip.as_str()));
    assert_eq!(same.new_ip.as_deref(), Some(ip.as_str()));
    assert!(!same.changed);
    // The modem never shows a settled IP before the timeout: success (the reset was
    // requested), but no new IP is claimed.
    a.sim.set_rotation_delay(Duration::from_secs(3600));
    let CommandOutput::RotateIp(unsettled) = ok(a.exec.execute(cmd("c2", rotate(&imei))).await)
    else {
        panic!()
    };
    assert_eq!(unsettled.old_ip.as_deref(), Some(ip.as_str()));
    assert_eq!(unsettled.new_ip, None);
    assert!(!unsettled.changed);
    assert_eq!(a.sim.resets_of(&imei), 2);
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
    let imei_1 = a.sim.online.clone();
    let imei_3 = a.sim.plug_in_third();
    let ip_before = a.sim.modem(&imei_1).unwrap().ext_ip;
    let stop = tokio_util::sync::CancellationToken::new();
    let (reports, scheduler) =
        farmhand_agent::boxside::autorotate::spawn(a.ctx.clone(), stop.clone());
    ok(a.exec
        .execute(cmd("c1", provision_rotating("al-1", &imei_1, 1)))
        .await);
    let mut reports = reports.take().expect("no session holds the reports");
    let first = next_report(&mut reports).await;
    assert_eq!(first.imei, imei_1);
    assert!(first.automatic);
    assert_eq!(first.old_ip.as_deref(), Some(ip_before.as_str()));
    assert!(
        first.new_ip.is_some() && first.new_ip != first.old_ip,
        "{first:?}"
    );
    assert!(first.changed);
    assert!(first.at_ms <= now_ms() && first.at_ms + 60_000 > now_ms());
    let second = next_report(&mut reports).await;
    assert_eq!(second.imei, imei_1, "it keeps rotating on schedule");
    assert_eq!(
        second.old_ip, first.new_ip,
        "the address reported is the one the box shows"
    );

    // Releasing the port stops its schedule; another modem's schedule keeps running.
    ok(a.exec
        .execute(cmd(
            "c2",
            CommandBody::Release(Release {
                allocation_id: "al-1".into(),
            }),
        ))
        .await);
    let resets_at_release = a.sim.resets_of(&imei_1);
    ok(a.exec
        .execute(cmd("c3", provision_rotating("al-3", &imei_3, 1)))
        .await);
    let mut seen_3 = 0;
    while seen_3 < 2 {
        if next_report(&mut reports).await.imei == imei_3 {
            seen_3 += 1;
        }
    }
    assert!(
        a.sim.resets_of(&imei_1) <= resets_at_release + 1,
        "at most a rotation already starting when the port went"
    );
    stop.cancel();
    scheduler.await.unwrap();
}

#[tokio::test]
async fn a_manual_rotation_never_overlaps_an_automatic_one() {
    let a = agent_with(Duration::from_secs(5)).await;
    let imei = a.sim.online.clone();
    // Rotations never settle: the automatic one holds the modem for the whole timeout.
    a.sim.set_rotation_delay(Duration::from_secs(3600));
    let stop = tokio_util::sync::CancellationToken::new();
    let _scheduler = farmhand_agent::boxside::autorotate::spawn(a.ctx.clone(), stop.clone());
    ok(a.exec
        .execute(cmd("c1", provision_rotating("al-1", &imei, 1)))
        .await);
    eventually("the automatic rotation starts", || {
        std::future::ready(a.sim.resets_of(&imei) == 1)
    })
    .await;
    let e = err(a.exec.execute(cmd("c2", rotate(&imei))).await);
    assert_eq!(e.code, CommandErrorCode::RotationInProgress, "{e:?}");
    assert_eq!(
        a.sim.resets_of(&imei),
        1,
        "the manual rotation did not reach ProxySmart"
    );
    stop.cancel();
}

/// Whether the box ends a port at its expiry is read from the port list: past the expiry
/// (and a grace), a box that enforces it shows `IS_EXPIRED: 1`; one that ignores it does not,
/// and the box profile says so (`enforces_expiry`), which the plane then shows.
#[tokio::test]
async fn the_box_profile_notes_whether_the_box_enforces_port_expiry() {
    let a = agent().await;
    let imei = a.sim.online.clone();
    let CommandOutput::Provision(p) =
        ok(a.exec.execute(cmd("c1", provision("al-exp", &imei))).await)
    else {
        panic!("provision output")
    };
    let ports = a.ctx.ports();
    let observe = || farmhand_agent::boxside::ports::expiry_watch::observe(ports, now_ms());
    assert_eq!(
        observe().await.unwrap(),
        None,
        "an hour left: nothing to tell yet"
    );
    // The expiry passed long ago (the test box is on UTC).
    a.sim
        .set_valid_before(&p.port_id, "2026-01-01T00:00")
        .unwrap();
    assert_eq!(observe().await.unwrap(), Some(true));
    assert_eq!(ports.profile().capabilities().enforces_expiry, Some(true));
    // The same port on a box that ignores expiry: still shown as not expired.
    a.sim.set_quirks(Quirks {
        ignores_expiry: true,
        ..Quirks::default()
    });
    assert_eq!(observe().await.unwrap(), Some(false));
    assert_eq!(ports.profile().capabilities().enforces_expiry, Some(false));
}
