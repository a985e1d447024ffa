//! Webhook targets (SSRF) against an in-process plane, with a REAL receiver on 127.0.0.1:0:
//! by default URLs whose host is or resolves to a loopback, link-local, private or other
//! internal address are refused at registration (422, saying why and which key allows
//! it); `[webhooks] allow_private_targets` opens exactly its blocks, which are then
//! delivered to; and a target the policy no longer allows fails at delivery, with a clear
//! `last_error`, and is given up like any failing endpoint. (A name re-pointed to an
//! internal address after registration, DNS rebinding, is covered by the unit tests of
//! `webhooks::client`, which inject the resolver.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::receiver::Receiver;
use support::{eventually, TestPlane};

const IMEI: &str = "350000000000778";

/// POSTs a webhook for `url` with the admin key; returns (status, error message or id).
async fn register(plane: &TestPlane, url: &str) -> (u16, String) {
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.admin,
            json!({"url": url, "events": ["agent.connected"]}),
        )
        .await;
    let v = r.json();
    if r.status == 201 {
        return (201, v["webhook_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(r.error_code(), "invalid_request", "{}", r.body);
    (r.status, v["error"]["message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn internal_targets_are_refused_by_default() {
    let plane = TestPlane::start_with(|c| c.webhooks.allow_private_targets.clear()).await;
    for (url, address, kind) in [
        ("http://127.0.0.1:9/x", "127.0.0.1", "a loopback"),
        (
            "http://169.254.169.254/latest/meta-data",
            "169.254.169.254",
            "a link-local",
        ),
        ("http://[::1]/", "::1", "a loopback"),
        ("http://10.1.2.3/", "10.1.2.3", "a private"),
        ("http://100.64.0.1/", "100.64.0.1", "a shared (CGNAT)"),
        ("http://[fd00::1]/", "fd00::1", "a unique-local"),
        ("http://[fe80::1]/", "fe80::1", "a link-local"),
        ("http://[::ffff:127.0.0.1]/", "127.0.0.1", "a loopback"),
        ("http://0.0.0.0:9/", "0.0.0.0", "an unspecified"),
        ("http://224.0.0.1/", "224.0.0.1", "a multicast"),
        // The URL parser reads this as 127.0.0.1, and so would the HTTP client.
        ("http://2130706433/", "127.0.0.1", "a loopback"),
    ] {
        let (status, message) = register(&plane, url).await;
        assert_eq!(status, 422, "{url} accepted");
        assert!(
            message.starts_with(&format!("url points at {address}, {kind}"))
                && message.ends_with("add it to [webhooks] allow_private_targets to allow it"),
            "{url}: {message}"
        );
    }
    // A name is judged by what it resolves to (here by the system resolver).
    let (status, message) = register(&plane, "http://localhost:9/").await;
    assert_eq!(status, 422);
    assert!(
        message.starts_with("url resolves to ") && message.contains("a loopback address"),
        "{message}"
    );
    // A marketplace key is held to the same rule.
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.market,
            json!({"url": "http://169.254.169.254/", "events": ["allocation.active"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "invalid_request")
    );
    // Public addresses are fine, and nothing refused was stored.
    let (status, _) = register(&plane, "https://93.184.216.34/hooks").await;
    assert_eq!(status, 201);
    let listed = plane.get("/v1/webhooks", &plane.admin).await.json();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test]
async fn an_allowed_block_is_delivered_to_and_the_rest_stays_refused() {
    let plane = TestPlane::start_with(|c| {
        c.webhooks.allow_private_targets = vec!["127.0.0.0/8".into()];
    })
    .await;
    let receiver = Receiver::start().await;
    assert!(receiver.url.starts_with("http://127.0.0.1:"));
    let (status, _) = register(&plane, &receiver.url).await;
    assert_eq!(status, 201);
    for (url, kind) in [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/", "loopback"),
        ("http://192.168.1.1/", "private"),
    ] {
        let (status, message) = register(&plane, url).await;
        assert_eq!(status, 422, "{url} accepted");
        assert!(message.contains(kind), "{url}: {message}");
    }
    let _agent = plane.agent_with_modem(IMEI).await;
    eventually("agent.connected reaches the allowed receiver", || async {
        !receiver.of("agent.connected").is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_target_no_longer_allowed_fails_at_delivery_and_is_given_up() {
    let mut plane = TestPlane::start_with(|c| {
        c.webhooks.allow_private_targets = vec!["127.0.0.0/8".into()];
        c.webhooks.retry_initial_s = 1;
        c.webhooks.retry_max_s = 1;
        c.webhooks.max_age_s = 1;
    })
    .await;
    let receiver = Receiver::start().await;
    let (status, webhook_id) = register(&plane, &receiver.url).await;
    assert_eq!(status, 201);
    // The operator narrows the policy; the stored endpoint stays, its deliveries may not go.
    plane.config.webhooks.allow_private_targets.clear();
    plane.restart().await;
    let _agent = plane.agent_with_modem(IMEI).await;
    let path = format!("/v1/webhooks/{webhook_id}/deliveries");
    let newest = || async { plane.get(&path, &plane.admin).await.json()["deliveries"][0].clone() };
    eventually("the delivery is given up", || async {
        newest().await["state"] == "failed"
    })
    .await;
    let last = newest().await;
    assert_eq!(
        last["last_error"], "target address 127.0.0.1 is not allowed (loopback address)",
        "{last}"
    );
    assert_eq!(last["last_status"], Value::Null);
    assert!(last["attempts"].as_u64().unwrap() >= 1, "{last}");
    assert!(
        receiver.got().is_empty(),
        "a refused target received a request"
    );
}
