//! End to end: a buyer's curl goes through a port the control plane allocated, and stops
//! working once it is released. Real simulator, control plane, agent and curl on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{curl_via, proxy_urls, within, Origin, Stack, StackOptions};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_curl_and_release() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    stack.wait_until_available(4).await.unwrap();
    let origin = Origin::start("hello through a mobile proxy").await.unwrap();

    let reply = stack.allocate("order-e2e-1").await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let alloc = reply.body.clone();
    assert_eq!(alloc["state"], "active");
    assert_eq!(alloc["order_id"], "order-e2e-1");
    assert_eq!(alloc["agent_id"], stack.agent_id.as_str());
    assert_eq!(alloc["host"], "127.0.0.1");
    assert!(alloc["password"].as_str().unwrap().len() >= 20);
    let imei = alloc["imei"].as_str().unwrap();
    assert!(stack.sim.imeis().iter().any(|i| i == imei));

    // The port exists on the box with the buyer's credentials.
    let port = stack
        .sim
        .ports()
        .into_iter()
        .find(|p| p.imei == imei)
        .expect("port on the box");
    assert_eq!(port.login, alloc["login"].as_str().unwrap());
    assert_eq!(port.http_port as u64, alloc["http_port"].as_u64().unwrap());
    assert!(port.applied);

    let (http, socks) = proxy_urls(&alloc).unwrap();
    let via_http = curl_via(&http, &origin.url()).await.unwrap();
    assert!(via_http.returned(origin.body()), "{via_http:?}");
    let via_socks = curl_via(&socks, &origin.url()).await.unwrap();
    assert!(via_socks.returned(origin.body()), "{via_socks:?}");

    // A wrong password is refused by both proxies.
    let bad_http = http.replace(alloc["password"].as_str().unwrap(), "wrong-password-123456");
    let bad_socks = socks.replace(alloc["password"].as_str().unwrap(), "wrong-password-123456");
    assert_ne!(
        curl_via(&bad_http, &origin.url()).await.unwrap().code,
        Some(0)
    );
    assert_ne!(
        curl_via(&bad_socks, &origin.url()).await.unwrap().code,
        Some(0)
    );

    // GET returns the same allocation.
    let id = alloc["allocation_id"].as_str().unwrap();
    let got = stack
        .market
        .get(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body["http_port"], alloc["http_port"]);

    // Release: 200 released, the port is gone from ProxySmart and curl fails.
    let released = stack
        .market
        .delete(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(released.body["state"], "released");
    assert_eq!(released.body["release_reason"], "cancelled");
    assert!(
        stack.sim.ports().iter().all(|p| p.imei != imei),
        "port still on the box"
    );
    let after = curl_via(&http, &origin.url()).await.unwrap();
    assert_ne!(
        after.code,
        Some(0),
        "proxy still works after release: {after:?}"
    );

    // Releasing again is idempotent.
    let again = stack
        .market
        .delete(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.body["state"], "released");

    // The modem is free again.
    within(Duration::from_secs(5), "modem available again", || async {
        let r = stack.market.get("/v1/modems?available=true").await.ok()?;
        (r.body["modems"].as_array()?.len() == 4).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_order_id_gives_the_same_allocation_and_one_port() {
    let stack = Stack::start(StackOptions {
        modems: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();

    let first = stack.allocate("order-idem").await.unwrap();
    assert_eq!(first.status, 201, "{:?}", first.body);
    let again = stack.allocate("order-idem").await.unwrap();
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["allocation_id"], first.body["allocation_id"]);
    assert_eq!(again.body["password"], first.body["password"]);
    assert_eq!(stack.sim.ports().len(), 1, "one port on the box, not two");

    let listed = stack
        .market
        .get("/v1/allocations?order_id=order-idem")
        .await
        .unwrap();
    assert_eq!(listed.body["allocations"].as_array().unwrap().len(), 1);

    let different = stack
        .market
        .post(
            "/v1/allocations",
            serde_json::json!({"order_id": "order-idem", "duration_s": 3600}),
        )
        .await
        .unwrap();
    assert_eq!(different.status, 409);
    assert_eq!(different.error_code(), Some("order_conflict"));
    assert_eq!(stack.sim.ports().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_when_every_matching_modem_is_taken() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(1).await.unwrap();
    assert_eq!(stack.allocate("order-cap-1").await.unwrap().status, 201);
    let second = stack.allocate("order-cap-2").await.unwrap();
    assert_eq!(second.status, 409, "{:?}", second.body);
    assert_eq!(second.error_code(), Some("no_capacity"));
    let elsewhere = stack
        .market
        .post(
            "/v1/allocations",
            serde_json::json!({"order_id": "order-cap-3", "duration_s": 3600, "country": "FR"}),
        )
        .await
        .unwrap();
    assert_eq!(elsewhere.error_code(), Some("no_capacity"));
    assert_eq!(stack.sim.ports().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_too_slow_gives_504_and_the_late_port_is_removed() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        provisioning_timeout_s: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(1).await.unwrap();

    // Every ProxySmart call now takes 400 ms: a provision (free ports, store, apply, verify…)
    // takes well over the 1 s provisioning timeout, but does complete.
    stack.sim.set_fault(farmhand_testkit::sim::Fault::Latency(
        Duration::from_millis(400),
    ));
    let reply = stack.allocate("order-slow").await.unwrap();
    assert_eq!(reply.status, 504, "{:?}", reply.body);
    assert_eq!(reply.error_code(), Some("agent_timeout"));

    let listed = stack
        .market
        .get("/v1/allocations?order_id=order-slow")
        .await
        .unwrap();
    assert_eq!(listed.body["allocations"][0]["state"], "failed");

    // The agent finishes late and creates the port; the plane has it removed: no orphan.
    within(
        Duration::from_secs(30),
        "the late port to be created and then removed",
        || async {
            let calls = stack.sim.api_calls("/apix/purge_port");
            (calls >= 1 && stack.sim.ports().is_empty()).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        stack.sim.api_calls("/apix/apply_port") >= 1,
        "the port was really created late"
    );
}
