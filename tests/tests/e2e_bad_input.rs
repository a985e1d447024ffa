//! End to end: bad input gets a clear error and breaks nothing — malformed or unknown JSON
//! fields on the REST API, malformed and oversized WebSocket frames from an agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_protocol::{PlaneMessage, ProtocolErrorCode};
use farmhand_testkit::harness::{Heard, RawAgent, Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_rejects_bad_bodies_with_json_errors() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let cases = [
        ("malformed JSON", "{\"order_id\": \"o1\", ".to_owned()),
        (
            "unknown field",
            json!({"order_id": "o1", "duration_s": 3600, "durration": 5}).to_string(),
        ),
        (
            "wrong type",
            json!({"order_id": "o1", "duration_s": "3600"}).to_string(),
        ),
        ("missing field", json!({"order_id": "o1"}).to_string()),
        (
            "duration out of range",
            json!({"order_id": "o1", "duration_s": 59}).to_string(),
        ),
        (
            "empty order id",
            json!({"order_id": "", "duration_s": 3600}).to_string(),
        ),
        ("not an object", "[1,2,3]".to_owned()),
    ];
    for (what, body) in cases {
        let r = stack
            .market
            .post_raw("/v1/allocations", body)
            .await
            .unwrap();
        assert_eq!(r.status, 422, "{what}: {:?}", r.body);
        assert_eq!(r.error_code(), Some("invalid_request"), "{what}");
        assert!(
            r.str("/error/message").is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let r = stack
        .admin
        .post_raw(
            "/v1/enrollment-tokens",
            json!({"label": "x", "ttl": 5}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "unknown field on tokens");

    let huge =
        json!({"order_id": "o1", "duration_s": 3600, "country": "x".repeat(70 * 1024)}).to_string();
    let r = stack
        .market
        .post_raw("/v1/allocations", huge)
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), Some("payload_too_large"));

    let r = stack.market.get("/v1/no-such-thing").await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.error_code().is_some());

    // Nothing was allocated by any of it, and the API still works.
    assert!(stack.sim.ports().is_empty());
    stack.wait_until_available(1).await.unwrap();
    assert_eq!(
        stack
            .allocate("order-after-bad-input")
            .await
            .unwrap()
            .status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_that_connection_only() {
    let stack = Stack::start(StackOptions {
        modems: 2,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();

    let bad_frames = [
        "this is not json".to_owned(),
        json!({"type": "hello"}).to_string(),
        json!({"type": "hello", "versions": {"min": 1, "max": 1}, "agent_id": 7, "agent_version": "x"}).to_string(),
        json!({"type": "launch", "x": 1}).to_string(),
        json!({"type": "heartbeat", "time_ms": 1}).to_string(), // valid message, wrong moment
        "[".repeat(10_000),
    ];
    for frame in bad_frames {
        let mut raw = RawAgent::connect(&stack.plane_url).await.unwrap();
        raw.send_text(frame.clone()).await.unwrap();
        let heard = raw.hear().await.unwrap();
        let Heard::Message(msg) = heard else {
            panic!("expected an error before the close for {frame:.40}")
        };
        assert!(
            matches!(*msg, PlaneMessage::Error(ref e) if e.code == ProtocolErrorCode::MalformedFrame),
            "{frame:.40}: {msg:?}"
        );
        raw.closed().await.unwrap();
    }

    // A wrong version range gets the supported range, then a close.
    let mut raw = RawAgent::connect(&stack.plane_url).await.unwrap();
    raw.send_text(
        json!({"type":"hello","versions":{"min":7,"max":9},"agent_id":"a","agent_version":"x"})
            .to_string(),
    )
    .await
    .unwrap();
    let Heard::Message(msg) = raw.hear().await.unwrap() else {
        panic!("expected unsupported_version")
    };
    let PlaneMessage::Error(err) = *msg else {
        panic!("{msg:?}")
    };
    assert_eq!(err.code, ProtocolErrorCode::UnsupportedVersion);
    assert_eq!(err.supported, Some(farmhand_protocol::SUPPORTED_VERSIONS));
    raw.closed().await.unwrap();

    // An oversized frame (2 MiB > the 1 MiB limit) is refused and the connection closed.
    let mut raw = RawAgent::connect(&stack.plane_url).await.unwrap();
    let _ = raw.send_text("x".repeat(2 * 1024 * 1024)).await;
    raw.closed().await.unwrap();

    // The real agent kept its session throughout: it can still provision.
    let agent = stack
        .admin
        .get(&format!("/v1/agents/{}", stack.agent_id))
        .await
        .unwrap();
    assert_eq!(agent.body["connected"], true);
    let r = stack.allocate("order-after-bad-frames").await.unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
}
