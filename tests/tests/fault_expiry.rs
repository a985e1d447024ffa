//! Port expiry that does not depend on the control plane being up: the agent writes
//! ProxySmart's own `PROXY_VALID_BEFORE` in the box's local time (learned from `CREATED_AT`
//! on a box that is not on UTC), renewals move it, and an allocation that expires while its
//! agent is offline is released when the agent comes back.
//!
//! The second test takes a little over a minute: 60 s is the shortest `duration_s` the REST
//! contract allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_support;

use farmhand_testkit::harness::{within, Stack, StackOptions};
use fault_support::{agent_connected, allocation, ports_of};
use serde_json::{json, Value};
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// UTC+03:00.
const BOX_OFFSET_S: i32 = 3 * 3600;

/// `expires_at` as a box `offset_s` east of UTC prints it, to the minute the agent writes
/// (rounded up, so the buyer never loses time).
fn box_local(alloc: &Value, offset_s: i32) -> String {
    let at = OffsetDateTime::parse(alloc["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    let minute_ms = (ms + 59_999) / 60_000 * 60_000;
    let rounded = OffsetDateTime::from_unix_timestamp_nanos(minute_ms * 1_000_000).unwrap();
    let local = rounded + time::Duration::seconds(offset_s.into());
    local
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap()
}

fn valid_before(stack: &Stack, id: &str) -> String {
    let ports = ports_of(&stack.sim, id);
    assert_eq!(ports.len(), 1, "{ports:?}");
    ports[0].valid_before.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_expiry_is_written_in_the_boxs_local_time() {
    let stack = Stack::start(StackOptions {
        modems: 2,
        box_utc_offset_s: BOX_OFFSET_S,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();
    let stores = stack.sim.api_calls("/crud/store_port");
    let first = stack.allocate("zone-1").await.unwrap();
    assert_eq!(first.status, 201, "{:?}", first.body);
    let id = first.body["allocation_id"].as_str().unwrap();
    assert_eq!(
        valid_before(&stack, id),
        box_local(&first.body, BOX_OFFSET_S)
    );
    // The first port taught the agent the zone (one corrective re-store); the next needs
    // no correction.
    assert_eq!(stack.sim.api_calls("/crud/store_port") - stores, 2);
    let second = stack.allocate("zone-2").await.unwrap();
    assert_eq!(second.status, 201, "{:?}", second.body);
    let id2 = second.body["allocation_id"].as_str().unwrap();
    assert_eq!(
        valid_before(&stack, id2),
        box_local(&second.body, BOX_OFFSET_S)
    );
    assert_eq!(stack.sim.api_calls("/crud/store_port") - stores, 3);

    // A renewal moves the box's expiry too, in the same zone.
    let renewed = stack
        .market
        .post(
            &format!("/v1/allocations/{id}/renew"),
            json!({"duration_s": 172_800}),
        )
        .await
        .unwrap();
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_ne!(renewed.body["expires_at"], first.body["expires_at"]);
    assert_eq!(
        valid_before(&stack, id),
        box_local(&renewed.body, BOX_OFFSET_S)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_that_expires_while_its_agent_is_offline_is_released_on_reconnect() {
    let mut stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(1).await.unwrap();
    let reply = stack
        .market
        .post(
            "/v1/allocations",
            json!({"order_id": "expire-1", "duration_s": 60}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let id = reply.body["allocation_id"].as_str().unwrap().to_owned();
    // ProxySmart itself will stop the port on time, control plane or not.
    assert_eq!(valid_before(&stack, &id), box_local(&reply.body, 0));

    stack.stop_agent().await;
    agent_connected(&stack.admin, &stack.agent_id, false, Duration::from_secs(5)).await;
    within(
        Duration::from_secs(75),
        "the plane to expire the allocation",
        || async {
            let alloc = allocation(&stack.market, &id).await;
            (alloc["state"] != "active").then_some(())
        },
    )
    .await
    .unwrap();
    let alloc = allocation(&stack.market, &id).await;
    assert_eq!(alloc["state"], "releasing", "{alloc}");
    assert_eq!(
        ports_of(&stack.sim, &id).len(),
        1,
        "the box was not reachable"
    );

    stack.start_agent();
    within(
        Duration::from_secs(20),
        "the release on reconnect",
        || async {
            let alloc = allocation(&stack.market, &id).await;
            (alloc["state"] == "released" && ports_of(&stack.sim, &id).is_empty()).then_some(alloc)
        },
    )
    .await
    .map(|alloc| assert_eq!(alloc["release_reason"], "expired", "{alloc}"))
    .unwrap();
}
