//! REST behaviour without agents: authentication and roles, strict JSON (422), body limit
//! (413), unknown routes (404), health endpoints and enrollment tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::{create_key, ControlPlane, Role, ServerConfig};
use serde_json::json;
use support::{http, Identity, TestPlane};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn missing_unknown_and_wrong_role_keys_are_refused() {
    let plane = TestPlane::start().await;
    let r = plane.call("GET", "/v1/agents", None, None).await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    let r = plane.get("/v1/agents", "fh_not-a-key").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    let r = http::raw(plane.addr, b"GET /v1/modems HTTP/1.1\r\nHost: x\r\nAuthorization: Basic abc\r\nConnection: close\r\n\r\n").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));

    for (method, path) in [
        ("GET", "/v1/agents"),
        ("POST", "/v1/enrollment-tokens"),
        ("DELETE", "/v1/agents/x"),
    ] {
        let r = plane
            .call(method, path, Some(&plane.market), Some("{}"))
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    // Both roles may use the marketplace routes.
    assert_eq!(plane.get("/v1/modems", &plane.market).await.status, 200);
    assert_eq!(plane.get("/v1/modems", &plane.admin).await.status, 200);
    assert_eq!(plane.get("/v1/allocations", &plane.admin).await.status, 200);
}

#[tokio::test]
async fn bad_bodies_get_422_in_the_error_shape() {
    let plane = TestPlane::start().await;
    let cases = [
        ("/v1/enrollment-tokens", "{\"label\": "),
        (
            "/v1/enrollment-tokens",
            "{\"label\": \"x\", \"ttl_s\": \"soon\"}",
        ),
        ("/v1/enrollment-tokens", "{\"label\": \"x\", \"tll_s\": 60}"),
        ("/v1/enrollment-tokens", "{\"label\": \"x\", \"ttl_s\": -5}"),
        ("/v1/enrollment-tokens", ""),
        (
            "/v1/allocations",
            "{\"order_id\": \"o\", \"duration_s\": 3600, \"colour\": \"red\"}",
        ),
        (
            "/v1/allocations",
            "{\"order_id\": \"o\", \"duration_s\": 59}",
        ),
        (
            "/v1/allocations",
            "{\"order_id\": \"\", \"duration_s\": 60}",
        ),
        (
            "/v1/allocations",
            "{\"order_id\": \"o\", \"duration_s\": 60, \"country\": \"Germany\"}",
        ),
        ("/v1/allocations", "[1, 2]"),
    ];
    for (path, body) in cases {
        let r = plane
            .call("POST", path, Some(&plane.admin), Some(body))
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (422, "invalid_request"),
            "{path} {body}: {}",
            r.body
        );
    }
    let r = plane.get("/v1/modems?online=maybe", &plane.admin).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "invalid_request")
    );
    let r = plane
        .get("/v1/allocations?state=dancing", &plane.admin)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "invalid_request")
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_and_unknown_routes_404_json() {
    let plane = TestPlane::start().await;
    let big = format!("{{\"label\": \"{}\"}}", "x".repeat(70 * 1024));
    let r = plane
        .call(
            "POST",
            "/v1/enrollment-tokens",
            Some(&plane.admin),
            Some(&big),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
    // Without Content-Length (chunked), the limit still holds while reading.
    let chunk = "x".repeat(70 * 1024);
    let raw = format!(
        "POST /v1/agent/enroll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let r = http::raw(plane.addr, raw.as_bytes()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );

    let r = plane.get("/v1/nothing-here", &plane.admin).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = plane
        .call("PUT", "/v1/allocations", Some(&plane.admin), Some("{}"))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let r = plane.get("/v1/allocations/al_missing", &plane.market).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let plane = TestPlane::start().await;
    let r = plane.call("GET", "/healthz", None, None).await;
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({"status": "ok", "store": "sled", "schema_version": null, "node": null})
        )
    );
    assert_eq!(plane.call("GET", "/readyz", None, None).await.status, 200);
    let r = plane.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("farmhand_agents_connected 0"), "{}", r.body);
    assert!(
        r.body.contains("farmhand_allocations{state=\"active\"} 0"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn offline_key_creation_is_refused_while_serving_and_works_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let plane = ControlPlane::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(plane.serve(listener, shutdown.clone()));
    let err = create_key(dir.path(), Role::Admin, "ops")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the control plane is running: stop it first"),
        "{err}"
    );
    shutdown.cancel();
    tokio::time::timeout(support::PATIENCE, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let key = create_key(dir.path(), Role::Admin, "ops").await.unwrap();
    assert!(key.starts_with("fh_"));
}

#[tokio::test]
async fn enrollment_tokens_are_single_use_and_expire() {
    let plane = TestPlane::start().await;
    let r = plane
        .post(
            "/v1/enrollment-tokens",
            &plane.admin,
            json!({"label": "seller-42", "ttl_s": 3600}),
        )
        .await;
    assert_eq!(r.status, 201);
    let body = r.json();
    assert_eq!(body["label"], "seller-42");
    let expires = OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires > OffsetDateTime::now_utc());
    let token = body["token"].as_str().unwrap().to_string();

    let first = enroll(&plane, &token, Identity::generate().public_key_b64()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let agent_id = first.json()["agent_id"].as_str().unwrap().to_string();
    let again = enroll(&plane, &token, Identity::generate().public_key_b64()).await;
    assert_eq!(
        (again.status, again.error_code().as_str()),
        (401, "invalid_enrollment_token")
    );
    let unknown = enroll(&plane, "fht_unknown", Identity::generate().public_key_b64()).await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (401, "invalid_enrollment_token")
    );

    // An expired token (written directly, as if issued long ago) is refused too.
    let past = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let record = farmhand_control::store::TokenRecord {
        label: "old".into(),
        created_at: past,
        expires_at: past + time::Duration::hours(1),
        used: false,
        agent_id: None,
    };
    plane
        .store()
        .insert_enrollment_token("fht_expired", &record)
        .await
        .unwrap();
    let expired = enroll(&plane, "fht_expired", Identity::generate().public_key_b64()).await;
    assert_eq!(
        (expired.status, expired.error_code().as_str()),
        (401, "invalid_enrollment_token")
    );

    let bad_key = enroll(&plane, &plane.token().await, "AAAA".into()).await;
    assert_eq!(
        (bad_key.status, bad_key.error_code().as_str()),
        (422, "invalid_request")
    );

    let r = plane.get("/v1/agents", &plane.admin).await;
    let agents = r.json()["agents"].as_array().unwrap().clone();
    assert_eq!(agents.len(), 1, "only the first use enrolled an agent");
    assert_eq!(agents[0]["agent_id"], agent_id.as_str());
    assert_eq!(agents[0]["label"], "seller-42");
    assert_eq!(agents[0]["connected"], false);
}

async fn enroll(plane: &TestPlane, token: &str, public_key: String) -> support::Response {
    let body = json!({"token": token, "public_key": public_key, "hostname": "box-1"}).to_string();
    plane
        .call("POST", "/v1/agent/enroll", None, Some(&body))
        .await
}
