//! End to end: enrollment tokens are single-use and expire, unenrolled keys cannot connect,
//! and the REST API enforces keys and roles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::{PlaneMessage, ProtocolErrorCode};
use farmhand_testkit::harness::{new_key, Api, Heard, RawAgent, Stack, StackOptions};
use serde_json::json;

fn enroll_body(token: &str) -> serde_json::Value {
    let (_, public) = new_key().unwrap();
    json!({"token": token, "public_key": STANDARD.encode(public), "hostname": "test-box"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_are_single_use_and_expire() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let anon = stack.admin.with_key(None);

    let issued = stack
        .admin
        .post(
            "/v1/enrollment-tokens",
            json!({"label": "seller-x", "ttl_s": 600}),
        )
        .await
        .unwrap();
    assert_eq!(issued.status, 201);
    assert_eq!(issued.body["label"], "seller-x");
    let token = issued.str("/token").unwrap().to_owned();

    let first = anon
        .post("/v1/agent/enroll", enroll_body(&token))
        .await
        .unwrap();
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert!(first.str("/agent_id").is_some());
    let used = anon
        .post("/v1/agent/enroll", enroll_body(&token))
        .await
        .unwrap();
    assert_eq!(used.status, 401);
    assert_eq!(used.error_code(), Some("invalid_enrollment_token"));

    let unknown = anon
        .post("/v1/agent/enroll", enroll_body("et_not-a-real-token"))
        .await
        .unwrap();
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.error_code(), Some("invalid_enrollment_token"));

    // Expiry: a 1-second token, used after its expires_at has passed.
    let short = stack
        .admin
        .post(
            "/v1/enrollment-tokens",
            json!({"label": "short", "ttl_s": 1}),
        )
        .await
        .unwrap();
    let expires_at = short.str("/expires_at").unwrap();
    let expires_at =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let wait = expires_at - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(200);
    // Waiting for the clock itself to pass a point: there is no event to poll for.
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let expired = anon
        .post(
            "/v1/agent/enroll",
            enroll_body(short.str("/token").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(expired.status, 401);
    assert_eq!(expired.error_code(), Some("invalid_enrollment_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unenrolled_or_impostor_keys_are_refused() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();

    // An agent id nobody enrolled.
    let (key, _) = new_key().unwrap();
    let mut raw = RawAgent::connect(&stack.plane_url).await.unwrap();
    let heard = raw.handshake("ag_never-enrolled", &key).await.unwrap();
    let Heard::Message(msg) = heard else {
        panic!("expected an error message, got a bare close")
    };
    let PlaneMessage::Error(err) = *msg else {
        panic!("expected error, got {msg:?}")
    };
    assert_eq!(err.code, ProtocolErrorCode::AuthFailed);
    raw.closed().await.unwrap();

    // The real agent's id, but another key: the signature does not verify.
    let mut impostor = RawAgent::connect(&stack.plane_url).await.unwrap();
    let heard = impostor.handshake(&stack.agent_id, &key).await.unwrap();
    let Heard::Message(msg) = heard else {
        panic!("expected an error message")
    };
    assert!(
        matches!(*msg, PlaneMessage::Error(ref e) if e.code == ProtocolErrorCode::AuthFailed),
        "{msg:?}"
    );
    impostor.closed().await.unwrap();

    // The real agent is unaffected.
    let agent = stack
        .admin
        .get(&format!("/v1/agents/{}", stack.agent_id))
        .await
        .unwrap();
    assert_eq!(agent.body["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requires_a_key_with_the_right_role() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let none = stack.market.with_key(None);
    let wrong = Api::new(&stack.plane_url, Some("fh_this-is-not-a-key"));

    for api in [&none, &wrong] {
        for path in ["/v1/modems", "/v1/agents", "/v1/allocations?state=active"] {
            let r = api.get(path).await.unwrap();
            assert_eq!(r.status, 401, "{path}");
            assert_eq!(r.error_code(), Some("unauthorized"));
        }
    }
    // Marketplace keys cannot do admin things.
    let r = stack.market.get("/v1/agents").await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), Some("forbidden"));
    let r = stack
        .market
        .post("/v1/enrollment-tokens", json!({"label": "x", "ttl_s": 60}))
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let r = stack
        .market
        .delete(&format!("/v1/agents/{}", stack.agent_id))
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    // Both roles may read modems; health needs no key.
    assert_eq!(stack.admin.get("/v1/modems").await.unwrap().status, 200);
    assert_eq!(stack.market.get("/v1/modems").await.unwrap().status, 200);
    assert_eq!(none.get("/healthz").await.unwrap().status, 200);
    // The stored keys are hashes: the plaintext key is nowhere in the data dir.
    let found = farmhand_testkit::harness::files_containing(
        stack.plane_dir.path(),
        stack.market_key.as_bytes(),
    );
    assert!(found.is_empty(), "API key stored in plaintext in {found:?}");
}
