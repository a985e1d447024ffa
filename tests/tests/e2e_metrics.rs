//! End to end: after one provision through the whole stack, the control plane's `/metrics`
//! counts the allocation, the command and the REST request (by matched route) and has a
//! round-trip histogram; the agent's metrics listener counts the executed command and the
//! ProxySmart calls. Both pages are valid Prometheus text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{metric, within, Stack, StackOptions};
use std::time::Duration;

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let text = response.text().await.unwrap();
    farmhand_ops::metrics::validate(&text).unwrap_or_else(|e| panic!("{url}: {e}\n{text}"));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_shows_up_in_both_metrics_pages() {
    let stack = Stack::start(StackOptions {
        modems: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let plane = format!("{}/metrics", stack.plane_url);
    let before = scrape(&plane).await;
    assert_eq!(
        metric(&before, "farmhand_allocations{state=\"active\"}"),
        Some(0.0)
    );
    assert_eq!(metric(&before, "farmhand_agents_connected"), Some(1.0));

    let reply = stack.allocate("metrics-order-1").await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);

    let text = scrape(&plane).await;
    assert_eq!(
        metric(&text, "farmhand_allocations{state=\"active\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "farmhand_commands_total{op=\"provision\",outcome=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "farmhand_command_round_trip_seconds_count{op=\"provision\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "farmhand_command_round_trip_seconds_bucket{op=\"provision\",le=\"+Inf\"}"
        ),
        Some(1.0)
    );
    let posted =
        "farmhand_http_requests_total{method=\"POST\",route=\"/v1/allocations\",status=\"201\"}";
    assert_eq!(metric(&text, posted), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "farmhand_modems{state=\"busy\"}"),
        Some(1.0),
        "{text}"
    );
    // Raw URLs with ids never become labels.
    let id = reply.body["allocation_id"].as_str().unwrap();
    stack
        .market
        .get(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    let text = scrape(&plane).await;
    assert!(!text.contains(id), "{text}");
    assert!(
        text.contains("route=\"/v1/allocations/{allocation_id}\""),
        "{text}"
    );

    let addr = within(
        Duration::from_secs(10),
        "the agent's metrics address",
        || async { stack.agent_status().metrics_addr() },
    )
    .await
    .unwrap();
    let agent = scrape(&format!("http://{addr}/metrics")).await;
    assert_eq!(
        metric(
            &agent,
            "farmhand_agent_commands_total{op=\"provision\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{agent}"
    );
    assert_eq!(metric(&agent, "farmhand_agent_connected"), Some(1.0));
    assert_eq!(metric(&agent, "farmhand_agent_modems_online"), Some(2.0));
    let calls = metric(
        &agent,
        "farmhand_agent_proxysmart_request_duration_seconds_count",
    )
    .unwrap();
    assert!(
        calls >= 3.0,
        "status polls, free ports, store, apply: {agent}"
    );
    assert!(
        agent.contains("farmhand_agent_proxysmart_request_duration_seconds_bucket{le=\"0.005\"}")
    );
}
