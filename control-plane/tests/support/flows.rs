//! Allocation flows with the fake agent answering: start a request in the background,
//! answer `provision` / `release` as the agent would, and collect the REST answer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::{FakeAgent, Response, TestPlane};
use farmhand_protocol::{
    Command, CommandBody, CommandOutput, Outcome, Provision, Provisioned, Reconciled, Released,
    UpdatePort, Updated,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// A DE/Vodafone order for 30 days.
pub fn order(order_id: &str) -> Value {
    json!({"order_id": order_id, "duration_s": 2_592_000, "country": "DE", "carrier": "vodafone", "imei": null})
}

/// Starts `POST /v1/allocations` in the background (the test answers as the agent).
pub fn post_allocation(plane: &Arc<TestPlane>, body: Value) -> tokio::task::JoinHandle<Response> {
    let plane = plane.clone();
    tokio::spawn(async move { plane.post("/v1/allocations", &plane.market, body).await })
}

/// Answers the next `provision` successfully and returns its allocation id.
pub async fn provision_ok(agent: &mut FakeAgent) -> String {
    provisioned(agent).await.allocation_id
}

/// Answers the next `provision` successfully (port 8001/5001) and returns the command, for
/// tests that check what the plane asked for.
pub async fn provisioned(agent: &mut FakeAgent) -> Provision {
    let command = agent.next_command().await;
    answer_provision(agent, command).await
}

/// Answers `command`, a `provision` the test held, successfully (port 8001/5001).
pub async fn answer_provision(agent: &mut FakeAgent, command: Command) -> Provision {
    let CommandBody::Provision(p) = command.body else {
        panic!("expected provision, got {command:?}")
    };
    assert!(p.password.expose().len() >= 20);
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: p.allocation_id.clone(),
        imei: p.imei.clone(),
        port_id: "port1".into(),
        http_port: 8001,
        socks_port: 5001,
    });
    agent.answer(&command.id, Outcome::Ok { output }).await;
    p
}

/// Reconnects `identity` with modem `imei`, answers the plane's `reconcile` (one desired
/// port) with `missing` and returns the agent: the plane then repairs that allocation.
pub async fn reconnect_missing(
    plane: &TestPlane,
    identity: &super::Identity,
    agent: FakeAgent,
    imei: &str,
    missing: &str,
) -> FakeAgent {
    drop(agent);
    plane.wait_disconnected(&identity.agent_id).await;
    let mut agent = FakeAgent::connect(plane, identity).await.unwrap();
    agent
        .send_inventory(vec![super::modem(imei, "Vodafone")])
        .await;
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

/// Answers the next `release` successfully and returns its allocation id.
pub async fn release_ok(agent: &mut FakeAgent) -> String {
    let command = agent.next_command().await;
    let CommandBody::Release(r) = command.body else {
        panic!("expected release, got {command:?}")
    };
    let output = CommandOutput::Release(Released {
        allocation_id: r.allocation_id.clone(),
        existed: true,
    });
    agent.answer(&command.id, Outcome::Ok { output }).await;
    r.allocation_id
}

/// Answers `command`, an `update_port` (a renewal), successfully and returns it.
pub async fn update_ok(agent: &mut FakeAgent, command: Command) -> UpdatePort {
    let CommandBody::UpdatePort(update) = command.body else {
        panic!("expected update_port, got {command:?}")
    };
    let output = CommandOutput::UpdatePort(Updated {
        allocation_id: update.allocation_id.clone(),
    });
    agent.answer(&command.id, Outcome::Ok { output }).await;
    update
}

/// Allocates `order_id` (201) with the agent confirming; returns the allocation object.
pub async fn allocate(plane: &Arc<TestPlane>, agent: &mut FakeAgent, order_id: &str) -> Value {
    let key = plane.market.clone();
    allocate_as(plane, &key, agent, order_id).await
}

/// [`allocate`] with the API key `key` (another tenant's, an admin's).
pub async fn allocate_as(
    plane: &Arc<TestPlane>,
    key: &str,
    agent: &mut FakeAgent,
    order_id: &str,
) -> Value {
    let (p, key, body) = (plane.clone(), key.to_owned(), order(order_id));
    let pending = tokio::spawn(async move { p.post("/v1/allocations", &key, body).await });
    provision_ok(agent).await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

/// Releases `allocation_id` (200) with the agent confirming; returns the allocation object.
pub async fn release(plane: &Arc<TestPlane>, agent: &mut FakeAgent, allocation_id: &str) -> Value {
    let (p, path) = (plane.clone(), format!("/v1/allocations/{allocation_id}"));
    let deleting = tokio::spawn(async move { p.delete(&path, &p.market).await });
    assert_eq!(release_ok(agent).await, allocation_id);
    let r = deleting.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}
