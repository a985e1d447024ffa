//! Commands survive disconnects and restarts: a command the agent did not answer is
//! redelivered with the same id when it reconnects (also after a plane restart), fails
//! clearly past its deadline, and `reconcile`'s `missing` list is repaired with the same
//! credentials (or the allocation fails when the agent cannot re-create the port).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{
    CommandBody, CommandError, CommandErrorCode, CommandOutput, Outcome, Provisioned, Reconciled,
    Released,
};
use serde_json::json;
use std::sync::Arc;
use support::flows::{allocate, order, post_allocation};
use support::{eventually, modem, FakeAgent, TestPlane};

const IMEI: &str = "350000000000018";

async fn online_agent(plane: &TestPlane) -> (support::Identity, FakeAgent) {
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(plane, &identity).await.unwrap();
    agent.send_inventory(vec![modem(IMEI, "Vodafone")]).await;
    plane.wait_available(IMEI).await;
    (identity, agent)
}

#[tokio::test]
async fn an_unanswered_provision_is_redelivered_with_the_same_id_after_a_reconnect() {
    let plane = Arc::new(TestPlane::start_with(|c| c.provisioning_timeout_s = 30).await);
    let (identity, mut agent) = online_agent(&plane).await;
    let pending = post_allocation(&plane, order("o-redeliver"));
    let first = agent.next_command().await;
    let CommandBody::Provision(p1) = first.body.clone() else {
        panic!("expected provision, got {first:?}")
    };
    assert_eq!(
        plane
            .store()
            .pending_commands(&identity.agent_id)
            .unwrap()
            .len(),
        1,
        "the command is in the durable outbox"
    );
    drop(agent);
    plane.wait_disconnected(&identity.agent_id).await;

    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    let again = agent.next_command().await;
    assert_eq!(
        (&again.id, again.deadline_ms),
        (&first.id, first.deadline_ms)
    );
    let CommandBody::Provision(p2) = again.body else {
        panic!("expected provision, got {again:?}")
    };
    assert_eq!(
        (&p2.allocation_id, &p2.login, p2.password.expose()),
        (&p1.allocation_id, &p1.login, p1.password.expose()),
        "the redelivered provision carries the same credentials"
    );
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: p2.allocation_id.clone(),
        imei: IMEI.into(),
        port_id: "port1".into(),
        http_port: 8001,
        socks_port: 5001,
    });
    agent.answer(&again.id, Outcome::Ok { output }).await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["password"], json!(p1.password.expose()));
    eventually("the answered command leaves the outbox", || async {
        plane
            .store()
            .pending_commands(&identity.agent_id)
            .unwrap()
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_command_past_its_deadline_fails_clearly_and_is_not_redelivered() {
    let plane = Arc::new(TestPlane::start_with(|c| c.provisioning_timeout_s = 2).await);
    let (identity, mut agent) = online_agent(&plane).await;
    let pending = post_allocation(&plane, order("o-deadline"));
    let first = agent.next_command().await;
    assert!(matches!(first.body, CommandBody::Provision(_)));
    drop(agent);
    let r = pending.await.unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (504, "agent_timeout"));
    assert!(r.body.contains("deadline"), "a clear reason: {}", r.body);
    let list = plane
        .get("/v1/allocations?order_id=o-deadline", &plane.market)
        .await
        .json();
    assert_eq!(list["allocations"][0]["state"], "failed");
    assert_eq!(list["allocations"][0]["release_reason"], "failed");
    assert!(plane
        .store()
        .pending_commands(&identity.agent_id)
        .unwrap()
        .is_empty());

    // Back after the deadline: the failed allocation is not desired (its port, if any, is
    // removed by reconcile) and the provision is not sent again.
    plane.wait_disconnected(&identity.agent_id).await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    let reconcile = agent.next_any_command().await;
    let CommandBody::Reconcile(desired) = &reconcile.body else {
        panic!("expected reconcile first, got {reconcile:?}")
    };
    assert!(desired.ports.is_empty(), "{desired:?}");
}

/// Reconnects `identity`, answers its `reconcile` with `missing` and returns the agent.
async fn reconnect_missing(
    plane: &TestPlane,
    identity: &support::Identity,
    agent: FakeAgent,
    missing: &str,
) -> FakeAgent {
    drop(agent);
    plane.wait_disconnected(&identity.agent_id).await;
    let mut agent = FakeAgent::connect(plane, identity).await.unwrap();
    agent.send_inventory(vec![modem(IMEI, "Vodafone")]).await;
    let reconcile = agent.next_any_command().await;
    let CommandBody::Reconcile(desired) = &reconcile.body else {
        panic!("expected reconcile, got {reconcile:?}")
    };
    assert_eq!(desired.ports.len(), 1);
    let output = CommandOutput::Reconcile(Reconciled {
        removed: vec![],
        missing: vec![missing.to_string()],
    });
    agent.answer(&reconcile.id, Outcome::Ok { output }).await;
    agent
}

#[tokio::test]
async fn a_missing_port_is_recreated_with_the_same_credentials() {
    let plane = Arc::new(TestPlane::start().await);
    let (identity, mut agent) = online_agent(&plane).await;
    let a = allocate(&plane, &mut agent, "o-repair").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let mut agent = reconnect_missing(&plane, &identity, agent, &id).await;

    let repair = agent.next_command().await;
    let CommandBody::Provision(p) = repair.body else {
        panic!("expected provision, got {repair:?}")
    };
    assert_eq!(p.allocation_id, id);
    assert_eq!(json!(p.login), a["login"]);
    assert_eq!(json!(p.password.expose()), a["password"]);
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: id.clone(),
        imei: IMEI.into(),
        port_id: "port2".into(),
        http_port: 8002,
        socks_port: 5002,
    });
    agent.answer(&repair.id, Outcome::Ok { output }).await;
    eventually("the new ports are stored", || async {
        plane.allocation(&id).await["http_port"] == 8002
    })
    .await;
    let now = plane.allocation(&id).await;
    assert_eq!(
        (&now["state"], &now["socks_port"], &now["password"]),
        (&json!("active"), &json!(5002), &a["password"])
    );
}

#[tokio::test]
async fn a_port_that_cannot_be_recreated_fails_the_allocation() {
    let plane = Arc::new(TestPlane::start().await);
    let (identity, mut agent) = online_agent(&plane).await;
    let a = allocate(&plane, &mut agent, "o-repair-fails").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let mut agent = reconnect_missing(&plane, &identity, agent, &id).await;

    let repair = agent.next_command().await;
    assert!(matches!(&repair.body, CommandBody::Provision(p) if p.allocation_id == id));
    let error = CommandError::new(CommandErrorCode::NoFreePorts, "no free TCP ports");
    agent.answer(&repair.id, Outcome::Error { error }).await;
    eventually("the allocation fails", || async {
        plane.allocation(&id).await["state"] == "failed"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "failed");
    // Its slot is free again for a new allocation.
    plane.wait_available(IMEI).await;
}

#[tokio::test]
async fn a_release_in_flight_survives_a_plane_restart_and_is_redelivered() {
    let mut plane = Arc::new(TestPlane::start().await);
    let (identity, mut agent) = online_agent(&plane).await;
    let a = allocate(&plane, &mut agent, "o-restart").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let (p, path) = (plane.clone(), format!("/v1/allocations/{id}"));
    let deleting = tokio::spawn(async move { p.delete(&path, &p.market).await });
    let release = agent.next_command().await;
    assert!(matches!(&release.body, CommandBody::Release(r) if r.allocation_id == id));
    drop(agent); // never answers
    let r = deleting.await.unwrap();
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (202, json!("releasing"))
    );
    plane.wait_disconnected(&identity.agent_id).await;

    Arc::get_mut(&mut plane)
        .expect("no other handle")
        .restart()
        .await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    let again = agent.next_command().await;
    assert_eq!(again.id, release.id, "the same command, redelivered");
    let output = CommandOutput::Release(Released {
        allocation_id: id.clone(),
        existed: true,
    });
    agent.answer(&again.id, Outcome::Ok { output }).await;
    eventually("the release completes after the restart", || async {
        plane.allocation(&id).await["state"] == "released"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "cancelled");
}
