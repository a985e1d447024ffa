//! Injectable faults: each kind affects the ProxySmart API, never `/_sim/`, and `none`
//! restores normal service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_sim::Fault;
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

const STATUS: &str = "/apix/show_status_json";

async fn admin_state_ok(b: &SimBox) {
    let state = b.client.get(b.url("/_sim/state")).send().await.unwrap();
    assert_eq!(state.status(), 200, "the admin interface is never faulted");
}

#[tokio::test]
async fn latency_delays_replies() {
    let b = start_box(1).await;
    b.sim.set_fault(Fault::Latency(Duration::from_millis(400)));
    let started = Instant::now();
    let reply = b.get(STATUS).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(reply.status, 200);
    assert!(reply.json().is_array());
}

#[tokio::test]
async fn status500_html_and_garbage() {
    let b = start_box(1).await;
    b.sim.set_fault(Fault::Status500);
    assert_eq!(b.get(STATUS).await.status, 500);
    admin_state_ok(&b).await;

    b.sim.set_fault(Fault::Html);
    let html = b.get(STATUS).await;
    assert_eq!(html.status, 200);
    assert!(html.body.trim_start().starts_with("<!DOCTYPE html>"));
    assert!(serde_json::from_str::<serde_json::Value>(&html.body).is_err());

    b.sim.set_fault(Fault::Garbage);
    let garbage = b.get(STATUS).await;
    assert_eq!(garbage.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&garbage.body).is_err());
    admin_state_ok(&b).await;
    assert_eq!(
        b.sim.api_calls(STATUS),
        3,
        "faulted authenticated calls still count"
    );

    b.sim.set_fault(Fault::None);
    assert!(b.get(STATUS).await.json().is_array());
}

#[tokio::test]
async fn hang_never_answers() {
    let b = start_box(1).await;
    b.sim.set_fault(Fault::Hang);
    let req = b
        .client
        .get(b.url(STATUS))
        .basic_auth(USER, Some(PASS))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(req.unwrap_err().is_timeout());
    admin_state_ok(&b).await;
    b.sim.set_fault(Fault::None);
    assert_eq!(b.get(STATUS).await.status, 200);
}

#[tokio::test]
async fn refuse_closes_api_connections_but_not_admin() {
    let b = start_box(1).await;
    // Warm a pooled keep-alive connection first: refusing must cut it too.
    assert_eq!(b.get(STATUS).await.status, 200);
    b.sim.set_fault(Fault::Refuse);
    for _ in 0..2 {
        let err = b
            .client
            .get(b.url(STATUS))
            .basic_auth(USER, Some(PASS))
            .send()
            .await;
        assert!(err.is_err(), "API call must fail while refusing");
    }
    let fresh = raw_exchange(
        b.sim.local_addr(),
        b"GET /apix/show_status_json HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(
        fresh.map(|bytes| bytes.is_empty()).unwrap_or(true),
        "no reply bytes"
    );
    admin_state_ok(&b).await;
    let cleared = b.admin_post("/_sim/fault", &json!({"kind": "none"})).await;
    assert_eq!(cleared.status, 200);
    assert_eq!(b.get(STATUS).await.status, 200);
}

#[tokio::test]
async fn faults_are_set_through_the_admin_api() {
    let b = start_box(1).await;
    let set = b
        .admin_post("/_sim/fault", &json!({"kind": "latency", "ms": 300}))
        .await;
    assert_eq!(set.status, 200);
    assert_eq!(b.sim.fault(), Fault::Latency(Duration::from_millis(300)));
    let bad = b
        .admin_post("/_sim/fault", &json!({"kind": "explode"}))
        .await;
    assert_eq!(bad.status, 400);
    let state = b.client.get(b.url("/_sim/state")).send().await.unwrap();
    let state: serde_json::Value = state.json().await.unwrap();
    assert_eq!(state["fault"], json!({"kind": "latency", "ms": 300}));
}
