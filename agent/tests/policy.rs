//! The seller's policy against the ProxySmart simulator over real HTTP, and through the
//! whole agent against a fake plane: each rule is refused with `policy_denied` and audited,
//! excluded modems are never touched nor reported, rotations are spaced per modem, and
//! the per-modem port cap holds even for concurrent provisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::config::policy::Policy;
use farmhand_agent::local::journal::Journal;
use farmhand_agent::AgentConfig;
use farmhand_protocol::*;
use std::sync::Arc;
use std::time::Duration;
use support::executor::{provision, reconcile, release, renew, rotate, Agent, Setup};
use support::plane::{enroll_ok, PlaneConn, WAIT};
use support::{imei_3, run_config, TestBox};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An audited agent under `policy` on a box with two online modems: the one it starts
/// with (`sim.online`) and [`imei_3`], plugged in at start (the one policies exclude).
async fn agent(policy: Policy) -> Agent {
    let a = Setup::default().policy(policy).audited().start().await;
    a.sim.plug_in_third();
    a
}

/// No write named `imei`: no `store_port` for it, no rotation of it.
fn assert_untouched(a: &Agent, imei: &str) {
    let (stored, reset) = (a.sim.stored_imeis(), a.sim.reset_imeis());
    assert!(
        stored.iter().chain(&reset).all(|i| i != imei),
        "{stored:?} {reset:?}"
    );
}

fn pair(id: &str, outcome: &str) -> (String, String) {
    (id.to_string(), outcome.to_string())
}

#[tokio::test]
async fn each_disallowed_command_is_denied_audited_and_never_reaches_proxysmart() {
    let mut policy = Policy::default();
    policy.allow.provision = false;
    policy.allow.rotate_ip = false;
    policy.allow.update_port = false;
    let a = agent(policy).await;
    a.sim
        .add_foreign_port(&a.sim.online, "farmhand-old")
        .unwrap();
    assert!(a
        .denied("c1", provision("al-1", &a.sim.online))
        .await
        .contains("provision"));
    assert!(a
        .denied("c2", rotate(&a.sim.online))
        .await
        .contains("rotate_ip"));
    assert!(a.denied("c3", renew("old")).await.contains("update_port"));
    assert!(
        a.sim.calls().is_empty(),
        "a denied command makes no ProxySmart call"
    );
    // Removals stay allowed while provisioning is off: the seller's ports get cleaned up.
    let CommandOutput::Release(r) = a.ok("c4", release("old")).await else {
        panic!()
    };
    assert!(r.existed);
    assert_eq!(
        a.audited(),
        [
            pair("c1", "policy_denied"),
            pair("c2", "policy_denied"),
            pair("c3", "policy_denied"),
            pair("c4", "ok")
        ]
    );

    let mut policy = Policy::default();
    policy.allow.release = false;
    policy.allow.reconcile = false;
    let a = agent(policy).await;
    a.denied("c1", release("old")).await;
    a.denied("c2", reconcile(&[])).await;
    assert!(a.sim.calls().is_empty());
    assert_eq!(
        a.audited(),
        [pair("c1", "policy_denied"), pair("c2", "policy_denied")]
    );
}

#[tokio::test]
async fn a_moved_allocation_leaves_its_stale_copy_on_an_excluded_modem_alone() {
    let policy = Policy {
        excluded_imeis: [imei_3()].into(),
        ..Policy::default()
    };
    let a = agent(policy).await;
    // A copy of al-1's port on a modem the seller excluded (left there by a move).
    let stale = a.sim.add_foreign_port(&imei_3(), "farmhand-al-1").unwrap();
    let CommandOutput::Provision(p) = a.ok("c1", provision("al-1", &a.sim.online)).await else {
        panic!()
    };
    assert_eq!(
        a.sim.ports().len(),
        2,
        "provision did not purge the excluded copy"
    );
    let CommandOutput::Release(r) = a.ok("c2", release("al-1")).await else {
        panic!()
    };
    assert!(r.existed);
    assert!(a.sim.port(&p.port_id).is_none(), "the journaled port went");
    assert!(
        a.sim.port(&stale.port_id).is_some(),
        "the excluded copy stays"
    );
    assert_untouched(&a, &imei_3());
}

#[tokio::test]
async fn excluded_modems_and_their_ports_are_never_touched() {
    let policy = Policy {
        excluded_imeis: [imei_3()].into(),
        ..Policy::default()
    };
    let a = agent(policy).await;
    // A marketplace port made before the seller excluded the modem, and the seller's own.
    a.sim
        .add_foreign_port(&imei_3(), "farmhand-before")
        .unwrap();
    a.sim.add_foreign_port(&imei_3(), "my own port").unwrap();
    assert!(a
        .denied("c1", provision("al-1", &imei_3()))
        .await
        .contains("excluded"));
    a.denied("c2", rotate(&imei_3())).await;
    a.denied("c3", release("before")).await;
    a.denied("c4", renew("before")).await;
    let CommandOutput::Reconcile(r) = a.ok("c5", reconcile(&[("before", &imei_3())])).await else {
        panic!()
    };
    assert!(r.removed.is_empty(), "{r:?}");
    assert_eq!(r.missing, ["before"], "unusable by the marketplace");
    let CommandOutput::Reconcile(r) = a.ok("c6", reconcile(&[])).await else {
        panic!()
    };
    assert!(
        r.removed.is_empty(),
        "an undesired port on an excluded modem stays: {r:?}"
    );
    assert_eq!(a.sim.ports().len(), 2, "both ports are still on the box");
    assert!(
        a.sim.stored_imeis().is_empty(),
        "{:?}",
        a.sim.stored_imeis()
    );
    assert!(a.sim.reset_imeis().is_empty(), "{:?}", a.sim.reset_imeis());
    assert_eq!(
        a.sim.api_calls("/apix/purge_port") + a.sim.api_calls("/crud/store_port"),
        0
    );
    // Other modems work as usual.
    a.ok("c7", provision("al-2", &a.sim.online)).await;
    let outcomes: Vec<String> = a.audited().into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        outcomes,
        [
            "policy_denied",
            "policy_denied",
            "policy_denied",
            "policy_denied",
            "ok",
            "ok",
            "ok"
        ]
    );
}

#[tokio::test]
async fn rotations_of_one_modem_are_spaced_but_other_modems_are_not_held_up() {
    let policy = Policy {
        min_rotation_interval: Duration::from_secs(3600),
        ..Policy::default()
    };
    let a = agent(policy).await;
    a.ok("c1", rotate(&a.sim.online)).await;
    let message = a.denied("c2", rotate(&a.sim.online)).await;
    assert!(message.contains("3600s"), "{message}");
    a.ok("c3", rotate(&imei_3())).await;
    // An offline modem's refused rotation does not start its clock.
    let e = a.run("c4", rotate(&a.sim.offline)).await.outcome;
    assert!(
        matches!(&e, Outcome::Error { error } if error.code == CommandErrorCode::ModemOffline),
        "{e:?}"
    );
    assert_eq!(
        a.sim.reset_imeis(),
        [a.sim.online.clone(), imei_3()],
        "one reset per modem"
    );
    assert!(a.sim.stored_imeis().is_empty());
    assert_eq!(
        a.audited(),
        [
            pair("c1", "ok"),
            pair("c2", "policy_denied"),
            pair("c3", "ok"),
            pair("c4", "modem_offline")
        ]
    );
}

#[tokio::test]
async fn the_port_cap_counts_marketplace_ports_on_the_modem_even_under_concurrency() {
    let policy = Policy {
        max_ports_per_modem: Some(1),
        ..Policy::default()
    };
    let a = agent(policy).await;
    a.sim
        .add_foreign_port(&a.sim.online, "my own port")
        .unwrap();
    let (r1, r2) = tokio::join!(
        a.run("c1", provision("al-1", &a.sim.online)),
        a.run("c2", provision("al-2", &a.sim.online))
    );
    let (r1, r2) = (r1.outcome, r2.outcome);
    let oks = [&r1, &r2]
        .iter()
        .filter(|r| matches!(r, Outcome::Ok { .. }))
        .count();
    assert_eq!(oks, 1, "exactly one fits: {r1:?} {r2:?}");
    let (winner, loser) = match r1 {
        Outcome::Ok { .. } => ("al-1", "al-2"),
        _ => ("al-2", "al-1"),
    };
    // The same allocation again is the same port, not a second one.
    a.ok("c3", provision(winner, &a.sim.online)).await;
    assert!(a
        .denied("c4", provision(loser, &a.sim.online))
        .await
        .contains("allows 1"));
    // Another modem has its own cap; a release frees the slot.
    a.ok("c5", provision(loser, &imei_3())).await;
    a.ok("c6", release(winner)).await;
    a.ok("c7", provision("al-3", &a.sim.online)).await;
    assert_eq!(a.sim.ports().len(), 3, "mine + al-3 + loser on imei_3");
    let denials = a
        .audited()
        .iter()
        .filter(|(_, o)| o == "policy_denied")
        .count();
    assert_eq!(denials, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_modems_never_reach_the_plane() {
    let dir = tempfile::tempdir().unwrap();
    let public_key = enroll_ok(dir.path()).await;
    let sim = TestBox::start().await;
    let imei_3 = sim.plug_in_third();
    let before = sim.add_foreign_port(&imei_3, "farmhand-before").unwrap();
    // The agent made that port before the seller excluded the modem: it is in the journal.
    let made_before = ManagedPort {
        allocation_id: "before".into(),
        imei: imei_3.clone(),
        port_id: before.port_id.clone(),
        http_port: before.http_port,
        socks_port: before.socks_port,
    };
    Journal::open(dir.path())
        .unwrap()
        .put_port(&made_before)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_url = format!("http://{}", listener.local_addr().unwrap());
    let policy = Policy {
        excluded_imeis: [imei_3.clone()].into(),
        ..Policy::default()
    };
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(farmhand_agent::run(
        AgentConfig {
            policy,
            ..run_config(dir.path(), &plane_url, &sim)
        },
        shutdown.clone(),
    ));
    let frames = Arc::default();
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::clone(&frames)).await;
    conn.welcome().await;
    let AgentMessage::Inventory(inv) = conn.recv().await else {
        panic!("inventory")
    };
    let imeis: Vec<&str> = inv.modems.iter().map(|m| m.imei.as_str()).collect();
    assert_eq!(imeis, [sim.online.as_str(), sim.offline.as_str()]);
    assert!(inv.ports.is_empty(), "{:?}", inv.ports);
    let r = conn.command("c1", reconcile(&[("before", &imei_3)])).await;
    let Outcome::Ok {
        output: CommandOutput::Reconcile(r),
    } = r.outcome
    else {
        panic!("{r:?}")
    };
    assert_eq!(
        (r.removed.len(), r.missing.as_slice()),
        (0, ["before".to_string()].as_slice())
    );
    // Both online modems change; only the visible one is reported.
    for imei in [&sim.online, &imei_3] {
        sim.set_ext_ip(imei, "198.51.100.77").unwrap();
    }
    let changes = conn.changes().await;
    let changed: Vec<&str> = changes.changed.iter().map(|m| m.imei.as_str()).collect();
    assert_eq!(changed, [sim.online.as_str()]);
    drop(conn);
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::clone(&frames)).await;
    conn.welcome().await;
    let AgentMessage::Inventory(inv) = conn.recv().await else {
        panic!("inventory")
    };
    assert!(inv.ports.is_empty(), "{:?}", inv.ports);
    shutdown.cancel();
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    assert_eq!(
        journal.port("before").unwrap(),
        Some(made_before),
        "kept, not reported"
    );
    assert!(sim.port(&before.port_id).is_some());
    let frames = frames.lock().unwrap();
    assert!(frames.len() >= 6);
    assert!(
        frames.iter().all(|f| !f.contains(&imei_3)),
        "an excluded IMEI crossed the wire"
    );
}
