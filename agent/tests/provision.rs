//! Provision, release and reconcile through the command executor against the ProxySmart
//! simulator (`farmhand-sim`) over real HTTP: the happy path, idempotency by command id
//! and by allocation, validation before any ProxySmart call, cleanup after a failure (a
//! refused apply, a box that keeps its own credentials), moving a port to another modem,
//! and reconcile's orphans, missing ports and foreign ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::*;
use farmhand_sim::{Quirks, WriteFault};
use support::executor::{
    cmd, err, ok, provision, reconcile, release, Agent, BUYER_LOGIN, BUYER_PASSWORD,
};

#[tokio::test]
async fn provision_creates_applies_and_verifies_a_port_once_per_allocation() {
    let a = Agent::start().await;
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
    assert_eq!(port.login, BUYER_LOGIN);
    assert_eq!(port.password, BUYER_PASSWORD);
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
    let a = Agent::start().await;
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
    let a = Agent::start().await;
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
        let a = Agent::start().await;
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
async fn release_removes_the_port_and_is_idempotent() {
    let a = Agent::start().await;
    ok(a.exec
        .execute(cmd("c1", provision("al-1", &a.sim.online)))
        .await);
    let CommandOutput::Release(r) = ok(a.exec.execute(cmd("c2", release("al-1"))).await) else {
        panic!()
    };
    assert!(r.existed);
    assert!(a.sim.ports().is_empty());
    let CommandOutput::Release(r) = ok(a.exec.execute(cmd("c3", release("al-1"))).await) else {
        panic!()
    };
    assert!(!r.existed);
}

#[tokio::test]
async fn reconcile_removes_orphans_reports_missing_and_spares_foreign_ports() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    ok(a.exec.execute(cmd("c1", provision("keep", &imei))).await);
    a.sim.add_foreign_port(&imei, "farmhand-orphan").unwrap();
    a.sim.add_foreign_port(&imei, "my own port").unwrap();
    let body = reconcile(&[("keep", &imei), ("lost", &imei)]);
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

/// The plane sends `reconcile` (its desired set read then) as a session opens, and an order
/// placed right after comes as a `provision` behind it. When the provision runs first and
/// the reconcile waits for it, the new port is not among the desired ones but is not an
/// orphan: kept. A port provisioned before the reconcile arrived and not desired goes.
#[tokio::test]
async fn a_reconcile_keeps_what_was_provisioned_after_it_arrived() {
    let a = Agent::start().await;
    let imei = a.sim.online.clone();
    let before = cmd("c1", provision("before", &imei));
    a.ctx.arrived(&before);
    ok(a.exec.execute(before).await);
    let reconcile = cmd("c2", reconcile(&[]));
    let after = cmd("c3", provision("after", &imei));
    a.ctx.arrived(&reconcile);
    a.ctx.arrived(&after);
    // The provision runs first (it arrived second).
    ok(a.exec.execute(after).await);
    let CommandOutput::Reconcile(r) = ok(a.exec.execute(reconcile).await) else {
        panic!()
    };
    assert_eq!(r.removed, ["before"]);
    assert!(a.sim.port_named("farmhand-after").is_some(), "kept");
    assert!(a.sim.port_named("farmhand-before").is_none());
    assert!(
        a.ctx.journal().port("after").unwrap().is_some(),
        "still managed"
    );
}

#[tokio::test]
async fn provision_on_another_modem_moves_the_port_with_the_same_credentials() {
    let a = Agent::start().await;
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
        (imei_3.as_str(), BUYER_LOGIN)
    );
    assert_eq!(port.password, BUYER_PASSWORD);
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
    let body = reconcile(&[("al-1", &imei_3)]);
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
    let a = Agent::start().await;
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
