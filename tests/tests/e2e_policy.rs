//! End to end: the seller's local policy holds against the whole stack. A modem the seller
//! excluded never appears in `GET /v1/modems` (nor can it be rotated: the plane has never
//! heard of it), a command the policy refuses reaches the REST caller as an error carrying
//! `policy_denied`, and the agent's local audit records the refusal. The seller's cap on
//! ports per modem reaches the plane with the inventory: a modem at the cap is no longer
//! offered, so an order the agent would refuse is answered `no_capacity` by the plane.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_agent::config::policy::Policy;
use farmhand_agent::local::audit::read_recent;
use farmhand_testkit::harness::{Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_modems_are_invisible_and_denied_commands_say_policy_denied() {
    let excluded = farmhand_testkit::sim::imei(2);
    let mut policy = Policy {
        excluded_imeis: [excluded.clone()].into(),
        max_ports_per_modem: Some(1),
        ..Policy::default()
    };
    policy.allow.rotate_ip = false;
    let stack = Stack::start(StackOptions {
        modems: 3,
        agent_policy: policy,
        configure_plane: |c| c.modem_capacity = 3,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    assert!(
        stack.sim.imeis().contains(&excluded),
        "{:?}",
        stack.sim.imeis()
    );

    let reply = stack.market.get("/v1/modems").await.unwrap();
    assert_eq!(reply.status, 200);
    let listed: Vec<&str> = reply.body["modems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["imei"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(!listed.contains(&excluded.as_str()), "{listed:?}");

    let visible = listed[0].to_string();
    let reply = stack
        .market
        .post(&format!("/v1/modems/{visible}/rotate"), json!({}))
        .await
        .unwrap();
    assert!(
        reply.status.is_server_error(),
        "{} {:?}",
        reply.status,
        reply.body
    );
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("policy_denied"), "{:?}", reply.body);
    assert!(
        stack.sim.modem(&visible).unwrap().ext_ip != "IP_RESET",
        "the modem was not reset"
    );

    let reply = stack
        .market
        .post(&format!("/v1/modems/{excluded}/rotate"), json!({}))
        .await
        .unwrap();
    assert_eq!(reply.status, 404, "{:?}", reply.body);

    // Provisioning is still allowed, and lands on a visible modem: one port on each, as
    // the seller's cap says (the plane's own capacity is 3), then no capacity.
    stack.wait_until_available(2).await.unwrap();
    let capacities: Vec<_> = stack.market.get("/v1/modems").await.unwrap().body["modems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["capacity"].as_u64())
        .collect();
    assert_eq!(capacities, [Some(1), Some(1)]);
    let mut used = Vec::new();
    for order in ["policy-order-1", "policy-order-2"] {
        let reply = stack.allocate(order).await.unwrap();
        assert!(reply.status.is_success(), "{:?}", reply.body);
        used.push(reply.body["imei"].as_str().unwrap().to_string());
    }
    used.sort();
    used.dedup();
    assert_eq!(used.len(), 2, "one port per modem: {used:?}");
    assert!(!used.contains(&excluded), "{used:?}");
    let reply = stack.allocate("policy-order-3").await.unwrap();
    assert_eq!(reply.status, 409, "{:?}", reply.body);
    assert_eq!(reply.error_code(), Some("no_capacity"));

    let audit = read_recent(stack.agent_dir.path(), 0).unwrap();
    let denied: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.outcome == "policy_denied")
        .collect();
    // Only the rotation was refused: no provision ever reached the cap.
    assert_eq!(denied.len(), 1, "{:?}", audit.entries);
    assert_eq!(denied[0].op, "rotate_ip");
    assert_eq!(denied[0].imei.as_deref(), Some(visible.as_str()));
}
