//! Key lifecycle on a running plane: keys are created (shown once), listed (never shown
//! again, last use noted), expire, and revoked — effective at once for the next request,
//! on a keep-alive connection, and for a request already running. Enrollment tokens are
//! listed and revoked too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::sync::Arc;
use support::flows::order;
use support::{eventually, Identity, Response, TestPlane, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn new_key(plane: &TestPlane, body: Value) -> (String, String) {
    let r = plane.post("/v1/keys", &plane.admin, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["key"].as_str().unwrap().to_owned(),
        v["key_id"].as_str().unwrap().to_owned(),
    )
}

fn listed(r: &Response, key_id: &str) -> Option<Value> {
    r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .cloned()
}

#[tokio::test]
async fn keys_are_created_listed_noted_and_revoked_while_the_plane_runs() {
    let plane = TestPlane::start().await;
    let (key, key_id) = new_key(
        &plane,
        json!({"role": "marketplace", "name": "shop-2", "tenant": "acme"}),
    )
    .await;
    assert!(key.starts_with("fh_") && key_id.starts_with("key_"));
    let r = plane.get("/v1/keys", &plane.admin).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains(&key), "a key is shown once only");
    let entry = listed(&r, &key_id).unwrap();
    assert_eq!(
        (&entry["role"], &entry["name"], &entry["tenant"]),
        (&json!("marketplace"), &json!("shop-2"), &json!("acme"))
    );
    assert!(entry["created_at"].is_string() && entry["last_used_at"].is_null());
    // Old keys keep the default tenant.
    let r = plane.get("/v1/keys", &plane.admin).await;
    let tenants: Vec<_> = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["tenant"].clone())
        .collect();
    assert!(tenants.contains(&json!("default")) && tenants.contains(&Value::Null));

    assert_eq!(plane.get("/v1/modems", &key).await.status, 200);
    let r = plane.get("/v1/keys", &plane.admin).await;
    assert!(listed(&r, &key_id).unwrap()["last_used_at"].is_string());
    // Only admins manage keys; bad specs are refused.
    assert_eq!(plane.get("/v1/keys", &key).await.status, 403);
    for bad in [
        json!({"role": "admin", "name": "x", "tenant": "acme"}),
        json!({"role": "marketplace", "name": "x", "tenant": "Not Valid"}),
        json!({"role": "marketplace", "name": ""}),
        json!({"role": "marketplace", "name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"role": "root", "name": "x"}),
    ] {
        let r = plane.post("/v1/keys", &plane.admin, bad.clone()).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (422, "invalid_request"),
            "{bad}"
        );
    }

    let r = plane
        .delete(&format!("/v1/keys/{key_id}"), &plane.admin)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(plane.get("/v1/modems", &key).await.status, 401);
    let r = plane
        .delete(&format!("/v1/keys/{key_id}"), &plane.admin)
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let audit = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
    let actions: Vec<_> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["details"]["key_id"] == key_id)
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, [json!("key_created"), json!("key_revoked")]);
}

#[tokio::test]
async fn a_key_past_its_expiry_is_refused() {
    let plane = TestPlane::start().await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let at = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (key, _) = new_key(
        &plane,
        json!({"role": "marketplace", "name": "temp", "expires_at": at}),
    )
    .await;
    assert_eq!(plane.get("/v1/modems", &key).await.status, 200);
    eventually("the key expired", || async {
        plane.get("/v1/modems", &key).await.status == 401
    })
    .await;
}

/// Two requests on one keep-alive connection; the status of each.
async fn keep_alive_pair(
    plane: &TestPlane,
    key: &str,
    between: impl std::future::Future,
) -> (u16, u16) {
    let mut stream = TcpStream::connect(plane.addr).await.unwrap();
    let request =
        format!("GET /v1/modems HTTP/1.1\r\nHost: plane\r\nAuthorization: Bearer {key}\r\n\r\n");
    let mut statuses = Vec::new();
    let mut between = Some(between);
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        // One response: head, then Content-Length bytes.
        loop {
            let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the connection closed");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    statuses.push(head[9..12].parse().unwrap());
                    break;
                }
            }
        }
        if let Some(between) = between.take() {
            between.await;
        }
    }
    (statuses[0], statuses[1])
}

#[tokio::test]
async fn revocation_reaches_a_keep_alive_connection_and_a_running_request() {
    let plane = Arc::new(TestPlane::start().await);
    let (key, key_id) = new_key(&plane, json!({"role": "marketplace", "name": "shop-2"})).await;
    let revoke = {
        let plane = plane.clone();
        let key_id = key_id.clone();
        async move {
            let r = plane
                .delete(&format!("/v1/keys/{key_id}"), &plane.admin)
                .await;
            assert_eq!(r.status, 204);
        }
    };
    assert_eq!(keep_alive_pair(&plane, &key, revoke).await, (200, 401));

    // A request running while its key is revoked: the allocation is made (the agent was
    // asked), but the answer with the buyer's credentials is withheld.
    let (key, key_id) = new_key(&plane, json!({"role": "marketplace", "name": "shop-3"})).await;
    let mut agent = plane.agent_with_modem("350000000000018").await;
    let running = {
        let plane = plane.clone();
        let key = key.clone();
        tokio::spawn(async move {
            plane
                .post("/v1/allocations", &key, order("o-revoked"))
                .await
        })
    };
    let command = agent.next_command().await;
    let r = plane
        .delete(&format!("/v1/keys/{key_id}"), &plane.admin)
        .await;
    assert_eq!(r.status, 204);
    // Answer the held provision now.
    let p = support::flows::answer_provision(&mut agent, command).await;
    let r = tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    assert!(!r.body.contains(p.password.expose()));
}

#[tokio::test]
async fn enrollment_tokens_are_listed_and_unused_ones_revoked() {
    let plane = TestPlane::start().await;
    let r = plane
        .post(
            "/v1/enrollment-tokens",
            &plane.admin,
            json!({"label": "seller-7"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let (token, token_id) = (
        r.json()["token"].as_str().unwrap().to_owned(),
        r.json()["token_id"].as_str().unwrap().to_owned(),
    );
    let r = plane.get("/v1/enrollment-tokens", &plane.admin).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains(&token), "a token is shown once only");
    let listed = r.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token_id"] == token_id)
        .cloned()
        .unwrap();
    assert_eq!(
        (&listed["label"], &listed["used"], &listed["expired"]),
        (&json!("seller-7"), &json!(false), &json!(false))
    );
    assert_eq!(
        plane
            .get("/v1/enrollment-tokens", &plane.market)
            .await
            .status,
        403
    );

    let r = plane
        .delete(&format!("/v1/enrollment-tokens/{token_id}"), &plane.admin)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let body = json!({"token": token, "public_key": Identity::generate().public_key_b64(), "hostname": "box"});
    let r = plane
        .call("POST", "/v1/agent/enroll", None, Some(&body.to_string()))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_enrollment_token")
    );

    // A used token stays (its agent is revoked instead).
    plane.enroll().await;
    let r = plane.get("/v1/enrollment-tokens", &plane.admin).await;
    let used = r.json()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["used"] == true)
        .cloned()
        .unwrap();
    let r = plane
        .delete(
            &format!(
                "/v1/enrollment-tokens/{}",
                used["token_id"].as_str().unwrap()
            ),
            &plane.admin,
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "invalid_state"));
    let r = plane
        .delete("/v1/enrollment-tokens/tok_000000000000", &plane.admin)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn an_admin_key_takes_a_null_tenant_and_refuses_a_real_one() {
    let plane = TestPlane::start().await;
    let r = plane
        .post(
            "/v1/keys",
            &plane.admin,
            json!({"role": "admin", "name": "ops", "tenant": null, "expires_at": null}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["tenant"], Value::Null);
    let r = plane
        .post(
            "/v1/keys",
            &plane.admin,
            json!({"role": "admin", "name": "ops", "tenant": "acme"}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("admin keys have no tenant"), "{}", r.body);
}
