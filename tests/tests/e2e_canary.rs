//! The seller's promise: a unique ProxySmart password never appears in any frame the control
//! plane received, in its data directory, or in any log line (TRACE level, both sides).
//! Its own test binary, because it installs the process-wide log subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{
    curl_via, files_containing, proxy_urls, Origin, Relay, Stack, StackOptions,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut log) = self.0.lock() {
            log.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxysmart_password_never_leaves_the_box() {
    let logs = Captured::default();
    let writer = logs.clone();
    // The binaries' filter with the most verbose RUST_LOG an operator could set: the protocol's
    // frame-log guard must still keep tungstenite from printing frames.
    std::env::set_var(
        "RUST_LOG",
        "trace,tungstenite=trace,tokio_tungstenite=trace",
    );
    farmhand_ops::logging::text_subscriber(
        farmhand_ops::logging::filter(Some("trace")).unwrap(),
        move || writer.clone(),
        false,
    )
    .init();

    let canary = format!("canary-{}", std::process::id()) + "-Zq8vX3pL";
    // The relay needs the plane's address, which exists only once the stack runs: start the
    // stack, then restart its agent through the relay.
    let mut stack = Stack::start(StackOptions {
        modems: 2,
        proxysmart_password: canary.clone(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let relay = Relay::start(&format!(
        "{}/v1/agent/connect",
        stack.plane_url.replacen("http", "ws", 1)
    ))
    .await
    .unwrap();
    stack.stop_agent().await;
    stack.set_agent_server_url(&relay.base_url());
    stack.start_agent();
    stack.wait_until_available(2).await.unwrap();
    assert!(
        !relay.received_by_plane().is_empty(),
        "the agent connects through the relay"
    );

    // A full cycle: provision, use, rotate, release.
    let origin = Origin::start("canary cycle").await.unwrap();
    let alloc = stack.allocate("order-canary").await.unwrap();
    assert_eq!(alloc.status, 201, "{:?}", alloc.body);
    let (http, _) = proxy_urls(&alloc.body).unwrap();
    assert!(curl_via(&http, &origin.url())
        .await
        .unwrap()
        .returned(origin.body()));
    let imei = alloc.body["imei"].as_str().unwrap().to_owned();
    let rotated = stack
        .market
        .post(&format!("/v1/modems/{imei}/rotate"), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(rotated.status, 200);
    let id = alloc.body["allocation_id"].as_str().unwrap();
    assert_eq!(
        stack
            .market
            .delete(&format!("/v1/allocations/{id}"))
            .await
            .unwrap()
            .status,
        200
    );

    let frames = relay.received_by_plane();
    assert!(
        frames.iter().any(|f| f.contains("\"command_result\"")),
        "frames were recorded"
    );
    for frame in &frames {
        assert!(
            !frame.contains(&canary),
            "canary in a frame the plane received: {frame}"
        );
    }
    let found = files_containing(stack.plane_dir.path(), canary.as_bytes());
    assert!(
        found.is_empty(),
        "canary in the control plane's data dir: {found:?}"
    );

    let log = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "logs were captured at a verbose level"
    );
    assert!(!log.contains(&canary), "canary in the logs");
    // The buyer's password must not be logged either.
    let buyer_password = alloc.body["password"].as_str().unwrap();
    let leaks: Vec<&str> = log.lines().filter(|l| l.contains(buyer_password)).collect();
    assert!(leaks.is_empty(), "buyer password in the logs: {leaks:#?}");
}
