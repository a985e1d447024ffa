//! End to end: per-allocation limits and usage metering, proven with real curl through the
//! simulator's ports. A port over its traffic quota refuses traffic; a speed-limited port
//! is never faster than its limit allows; the usage the agent reports grows with real
//! traffic and survives the box's counter reset and an agent restart; a renewal keeps the
//! limits on a box that forgets what a re-store leaves out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{curl_via, proxy_urls, within, Origin, Stack, StackOptions};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

/// `POST /v1/allocations` with extra fields; the reply must be 201.
async fn allocate(stack: &Stack, order_id: &str, extra: Value) -> Value {
    let mut body = json!({"order_id": order_id, "duration_s": 86_400});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let reply = stack.market.post("/v1/allocations", body).await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body
}

/// The simulator's port of an allocation.
fn sim_port(stack: &Stack, allocation: &Value) -> farmhand_testkit::sim::SimPort {
    let http_port = allocation["http_port"].as_u64().unwrap();
    stack
        .sim
        .ports()
        .into_iter()
        .find(|p| u64::from(p.http_port) == http_port)
        .expect("the allocation's port on the box")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_traffic_and_a_speed_limit_throttles_it() {
    let stack = Stack::start(StackOptions {
        modems: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();

    // A 1 MB quota: a 1.5 MB download is cut short, and then the port refuses traffic.
    let big = Origin::start(&"q".repeat(1_500_000)).await.unwrap();
    let quota = allocate(&stack, "order-quota", json!({"traffic_quota_mb": 1})).await;
    assert_eq!(quota["traffic_quota_mb"], 1);
    assert_eq!(quota["bandwidth_kbit"], Value::Null);
    assert_eq!(
        sim_port(&stack, &quota).quota,
        "1",
        "the agent set the quota"
    );
    let (http, socks) = proxy_urls(&quota).unwrap();
    let first = curl_via(&http, &big.url()).await.unwrap();
    assert!(
        !first.returned(big.body()),
        "1.5 MB went through a 1 MB quota"
    );
    assert!(first.body.len() <= 1_000_000, "{} bytes", first.body.len());
    let port = sim_port(&stack, &quota);
    assert!(port.over_quota, "IS_OVER_QUOTA: {port:?}");
    for proxy in [&http, &socks] {
        let again = curl_via(proxy, &big.url()).await.unwrap();
        assert_ne!(again.code, Some(0), "over quota, yet: {again:?}");
        assert!(again.body.is_empty(), "{} bytes", again.body.len());
    }

    // 2000 kbit/s = 250,000 bytes/s: 750 KB take at least about 3 s. Only an upper bound
    // on the throughput is asserted; a loaded machine can only make it slower.
    let body = "t".repeat(750_000);
    let medium = Origin::start(&body).await.unwrap();
    let slow = allocate(&stack, "order-slow", json!({"bandwidth_kbit": 2000})).await;
    assert_eq!(slow["bandwidth_kbit"], 2000);
    let port = sim_port(&stack, &slow);
    assert_eq!(
        (port.bandlimin.as_str(), port.bandlimout.as_str()),
        ("2000", "2000")
    );
    let (http, _) = proxy_urls(&slow).unwrap();
    let started = Instant::now();
    let fetched = curl_via(&http, &medium.url()).await.unwrap();
    let rate = body.len() as f64 / started.elapsed().as_secs_f64();
    assert!(fetched.returned(&body), "{:?}", fetched.stderr);
    let limit = 2000.0 * 1000.0 / 8.0;
    assert!(
        rate < 2.0 * limit,
        "{rate:.0} B/s through a {limit} B/s limit"
    );
}

/// A box whose `store_port` replaces the whole record would clear, on the renewal's
/// re-store, every limit left out: the agent re-sends the ones it provisioned, so a port
/// over its quota stays refused after a renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_keeps_the_quota_and_speed_limit_on_a_box_that_replaces_ports() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.sim.set_store_port_replaces(true);
    stack.wait_until_available(1).await.unwrap();
    let big = Origin::start(&"r".repeat(1_500_000)).await.unwrap();
    let a = allocate(
        &stack,
        "order-renew-limits",
        json!({"traffic_quota_mb": 1, "bandwidth_kbit": 100_000}),
    )
    .await;
    let id = a["allocation_id"].as_str().unwrap();
    let (http, socks) = proxy_urls(&a).unwrap();
    let first = curl_via(&http, &big.url()).await.unwrap();
    assert!(!first.returned(big.body()), "1.5 MB through a 1 MB quota");
    let before = sim_port(&stack, &a);
    assert!(before.over_quota, "{before:?}");

    let renewed = stack
        .market
        .post(
            &format!("/v1/allocations/{id}/renew"),
            json!({"duration_s": 172_800}),
        )
        .await
        .unwrap();
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert!(
        renewed.body["expires_at"].as_str() > a["expires_at"].as_str(),
        "{:?}",
        renewed.body
    );
    let after = sim_port(&stack, &a);
    assert_ne!(after.valid_before, before.valid_before, "the expiry moved");
    assert_eq!(after.quota, "1", "the renewal kept the quota");
    assert_eq!(
        (after.bandlimin.as_str(), after.bandlimout.as_str()),
        ("100000", "100000"),
        "the renewal kept the speed limit"
    );
    assert!(after.over_quota && after.applied, "{after:?}");
    for proxy in [&http, &socks] {
        let again = curl_via(proxy, &big.url()).await.unwrap();
        assert_ne!(
            again.code,
            Some(0),
            "over quota after renewal, yet: {again:?}"
        );
        assert!(again.body.is_empty(), "{} bytes", again.body.len());
    }
}

/// `GET /v1/allocations/{id}/usage` (marketplace key) → (bytes_in, bytes_out).
async fn usage(stack: &Stack, id: &str) -> (u64, u64) {
    let reply = stack
        .market
        .get(&format!("/v1/allocations/{id}/usage"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["allocation_id"], id);
    let field = |k: &str| reply.body[k].as_u64().unwrap();
    (field("bytes_in"), field("bytes_out"))
}

/// Waits until the usage shows at least `bytes_in`, checking that it never goes down.
async fn usage_reaches(stack: &Stack, id: &str, bytes_in: u64, floor: &mut (u64, u64)) {
    let seen = std::cell::Cell::new(*floor);
    within(PATIENCE, "the reported usage", || async {
        let (now, before) = (usage(stack, id).await, seen.get());
        assert!(
            now.0 >= before.0 && now.1 >= before.1,
            "usage went down: {now:?} after {before:?}"
        );
        seen.set(now);
        (now.0 >= bytes_in).then_some(())
    })
    .await
    .unwrap();
    *floor = seen.get();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_grows_with_traffic_and_survives_a_counter_reset_and_an_agent_restart() {
    let mut stack = Stack::start(StackOptions {
        modems: 1,
        usage_interval: Duration::from_secs(1),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(1).await.unwrap();
    let page = Origin::start(&"u".repeat(200_000)).await.unwrap();
    let a = allocate(&stack, "order-usage", json!({})).await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let reply = stack
        .market
        .get(&format!("/v1/allocations/{id}/usage"))
        .await
        .unwrap();
    assert_eq!(reply.body["measured_at"], Value::Null, "{:?}", reply.body);
    let (http, socks) = proxy_urls(&a).unwrap();
    let mut floor = (0, 0);

    for proxy in [&http, &socks] {
        assert!(curl_via(proxy, &page.url())
            .await
            .unwrap()
            .returned(page.body()));
    }
    usage_reaches(&stack, &id, 400_000, &mut floor).await;
    assert!(
        floor.1 > 0,
        "uploads (the requests) are counted too: {floor:?}"
    );
    let reply = stack
        .market
        .get(&format!("/v1/allocations/{id}/usage"))
        .await
        .unwrap();
    assert!(reply.body["measured_at"].is_string(), "{:?}", reply.body);

    // The box's counters reset (midnight, or a ProxySmart restart): the next traffic adds
    // to the total instead of restarting it.
    stack.sim.reset_traffic();
    assert_eq!(sim_port(&stack, &a).bytes_in, 0);
    assert!(curl_via(&http, &page.url())
        .await
        .unwrap()
        .returned(page.body()));
    let before_reset = floor.0;
    usage_reaches(&stack, &id, before_reset + 200_000, &mut floor).await;

    // The agent restarts on the same state directory; traffic meanwhile still counts.
    stack.stop_agent().await;
    assert!(curl_via(&socks, &page.url())
        .await
        .unwrap()
        .returned(page.body()));
    stack.start_agent();
    let before_restart = floor.0;
    usage_reaches(&stack, &id, before_restart + 200_000, &mut floor).await;
}
