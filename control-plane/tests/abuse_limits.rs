//! Abuse resistance over real sockets: failed REST authentications and failed agent
//! handshakes are limited per client address (429 `rate_limited` / `retry_later`),
//! enrollment attempts per token, unauthenticated connections are bounded, and a client
//! that connects and says nothing is dropped after the handshake timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::clock::Clock;
use farmhand_control::config::RateLimit;
use farmhand_protocol::{PlaneMessage, ProtocolErrorCode, SUPPORTED_VERSIONS};
use serde_json::json;
use std::time::{Duration, Instant};
use support::agent::{expect_refusal, hello, open, recv, send};
use support::{eventually, FakeAgent, Identity, Response, TestPlane};

fn limit(max: u32, window_s: u64) -> RateLimit {
    RateLimit { max, window_s }
}

fn assert_rate_limited(r: &Response) -> u64 {
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "rate_limited"),
        "{}",
        r.body
    );
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    retry_after
}

async fn audit_actions(plane: &TestPlane, action: &str) -> Vec<serde_json::Value> {
    let r = plane.get("/v1/audit?limit=1000", &plane.admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

#[tokio::test]
async fn failed_rest_authentications_are_limited_per_address_and_recover() {
    // Three failures per 3 s: one refills each second of the plane's (manual) clock.
    let clock = Clock::manual();
    let plane =
        TestPlane::start_on(clock.clone(), |c| c.rest_auth_failure_limit = limit(3, 3)).await;
    for _ in 0..3 {
        let r = plane.get("/v1/agents", "fh_wrong-key").await;
        assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    }
    let r = plane.get("/v1/agents", "fh_wrong-key").await;
    assert_eq!(
        assert_rate_limited(&r),
        1,
        "one failure refills in a second"
    );
    // The whole address is refused while limited, valid key or not, enrollment included.
    assert_rate_limited(&plane.get("/v1/agents", &plane.admin).await);
    let body = json!({"token": "fht_x", "public_key": "AAAA", "hostname": "h"}).to_string();
    let r = plane
        .call("POST", "/v1/agent/enroll", None, Some(&body))
        .await;
    assert_rate_limited(&r);
    // A millisecond short of a refill: still refused; at it, the valid key works again.
    clock.advance(Duration::from_millis(999));
    assert_rate_limited(&plane.get("/v1/agents", &plane.admin).await);
    clock.advance(Duration::from_millis(1));
    assert_eq!(plane.get("/v1/agents", &plane.admin).await.status, 200);
    let bursts = audit_actions(&plane, "auth_failure_burst").await;
    assert_eq!(bursts.len(), 1, "one audit record per burst: {bursts:?}");
    assert_eq!(bursts[0]["actor"], "client:127.0.0.1");
    assert_eq!(bursts[0]["details"]["scope"], "api_key");
}

#[tokio::test]
async fn invalid_enrollment_tokens_spend_the_address_budget() {
    let plane = TestPlane::start_with(|c| c.rest_auth_failure_limit = limit(2, 3600)).await;
    let enroll = |token: &str| {
        let body = json!({"token": token, "public_key": Identity::generate().public_key_b64(),
                          "hostname": "box"})
        .to_string();
        let plane = &plane;
        async move {
            plane
                .call("POST", "/v1/agent/enroll", None, Some(&body))
                .await
        }
    };
    for guess in ["fht_guess1", "fht_guess2"] {
        let r = enroll(guess).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "invalid_enrollment_token")
        );
    }
    assert_rate_limited(&enroll("fht_guess3").await);
}

#[tokio::test]
async fn enrollment_attempts_are_limited_per_token() {
    let plane = TestPlane::start_with(|c| c.enroll_attempt_limit = limit(2, 3600)).await;
    let token = plane.token().await;
    let attempt = |public_key: String| {
        let body = json!({"token": token, "public_key": public_key, "hostname": "box"}).to_string();
        let plane = &plane;
        async move {
            plane
                .call("POST", "/v1/agent/enroll", None, Some(&body))
                .await
        }
    };
    assert_eq!(attempt("AAAA".into()).await.status, 422, "attempt 1");
    let r = attempt(Identity::generate().public_key_b64()).await;
    assert_eq!(r.status, 201, "attempt 2: {}", r.body);
    assert_rate_limited(&attempt(Identity::generate().public_key_b64()).await);
    // Other tokens are not affected.
    plane.enroll().await;
}

#[tokio::test]
async fn failed_handshakes_are_answered_with_retry_later() {
    let plane = TestPlane::start_with(|c| c.agent_auth_failure_limit = limit(2, 3600)).await;
    let identity = plane.enroll().await;
    // Duplicates proved their key: they do not count.
    let _live = FakeAgent::connect(&plane, &identity).await.unwrap();
    for _ in 0..3 {
        let error = FakeAgent::connect(&plane, &identity).await.err().unwrap();
        assert_eq!(error.code, ProtocolErrorCode::DuplicateAgent);
    }
    let impostor = Identity::generate().with_id(&identity.agent_id);
    for _ in 0..2 {
        let error = FakeAgent::connect(&plane, &impostor).await.err().unwrap();
        assert_eq!(error.code, ProtocolErrorCode::AuthFailed);
    }
    // Now the address is refused before its frames are even read.
    let mut ws = open(&plane).await;
    let error = expect_refusal(&mut ws, ProtocolErrorCode::RetryLater).await;
    let retry_after_s = error.retry_after_s.expect("retry_after_s");
    assert!((1..=3600).contains(&retry_after_s), "{retry_after_s}");
    let bursts = audit_actions(&plane, "auth_failure_burst").await;
    assert_eq!(bursts.len(), 1, "{bursts:?}");
    assert_eq!(bursts[0]["details"]["scope"], "agent_handshake");
}

#[tokio::test]
async fn unauthenticated_connections_are_bounded_and_silent_ones_dropped() {
    let plane = TestPlane::start_with(|c| {
        c.max_pending_handshakes = 2;
        c.handshake_timeout_s = 2;
    })
    .await;
    let identity = plane.enroll().await;
    let started = Instant::now();
    // One says nothing at all; one says hello and then stalls (slowloris).
    let mut silent = open(&plane).await;
    let mut stalled = open(&plane).await;
    send(&mut stalled, &hello(&identity.agent_id, SUPPORTED_VERSIONS)).await;
    assert!(matches!(
        recv(&mut stalled).await,
        Some(PlaneMessage::Challenge(_))
    ));
    // Both slots are taken: the next connection is refused before the upgrade.
    let refused = tokio_tungstenite::connect_async(plane.ws_url()).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("expected an HTTP refusal, got {refused:?}");
    };
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
    assert!(body.contains("\"retry_later\""), "{body}");

    expect_refusal(&mut silent, ProtocolErrorCode::HandshakeTimeout).await;
    expect_refusal(&mut stalled, ProtocolErrorCode::HandshakeTimeout).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "dropped after the handshake timeout, not before: {elapsed:?}"
    );
    // The slots are free again.
    eventually("a legitimate agent can connect", || async {
        FakeAgent::try_connect(&plane, &identity)
            .await
            .is_some_and(|r| r.is_ok())
    })
    .await;
}
