//! `GET /v1/audit`: every security-relevant action of a whole lifecycle appears once, in
//! order, with its actor and target and without any secret; the query is validated and
//! admin-only; paging by cursor neither repeats nor skips events that share an instant;
//! the retention sweeper deletes old entries at start and keeps young ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::store::{AuditAction, AuditEvent};
use farmhand_control::SledStore;
use farmhand_protocol::{CommandBody, CommandError, CommandErrorCode, Outcome, ProtocolErrorCode};
use serde_json::{json, Value};
use std::sync::Arc;
use support::agent::expect_refusal;
use support::flows::{allocate, order, post_allocation, release};
use support::{eventually, FakeAgent, TestPlane};

const IMEI: &str = "350000000000018";

async fn events(plane: &TestPlane, query: &str) -> Vec<Value> {
    let r = plane.get(&format!("/v1/audit{query}"), &plane.admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"].as_array().unwrap().clone()
}

/// The agent refuses the next `provision` under its local policy.
async fn deny_provision(agent: &mut FakeAgent) {
    let command = agent.next_command().await;
    assert!(matches!(command.body, CommandBody::Provision(_)));
    let error = CommandError::new(CommandErrorCode::PolicyDenied, "carrier not allowed here");
    agent.answer(&command.id, Outcome::Error { error }).await;
}

#[tokio::test]
async fn a_lifecycle_is_recorded_in_order_without_secrets() {
    let plane = Arc::new(TestPlane::start().await);
    let token = plane.token().await;
    let identity = support::Identity::generate();
    let body =
        json!({"token": token, "public_key": identity.public_key_b64(), "hostname": "box-1"});
    let r = plane
        .call("POST", "/v1/agent/enroll", None, Some(&body.to_string()))
        .await;
    assert_eq!(r.status, 201);
    let identity = identity.with_id(r.json()["agent_id"].as_str().unwrap());
    let agent_id = identity.agent_id.clone();
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send_inventory(vec![support::modem(IMEI, "Vodafone")])
        .await;
    plane.wait_available(IMEI).await;

    let denied = post_allocation(&plane, order("o-denied"));
    deny_provision(&mut agent).await;
    assert_eq!(denied.await.unwrap().status, 502);
    let alloc = allocate(&plane, &mut agent, "o-1").await;
    let allocation_id = alloc["allocation_id"].as_str().unwrap().to_string();
    let password = alloc["password"].as_str().unwrap().to_string();
    release(&plane, &mut agent, &allocation_id).await;
    let r = plane
        .delete(&format!("/v1/agents/{agent_id}"), &plane.admin)
        .await;
    assert_eq!(r.status, 204);
    expect_refusal(&mut agent.ws, ProtocolErrorCode::Revoked).await;
    eventually("the disconnection is recorded", || async {
        events(&plane, "?limit=1000")
            .await
            .iter()
            .any(|e| e["action"] == "agent_disconnected")
    })
    .await;

    let all = events(&plane, "?limit=1000").await;
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    let expected = [
        "key_created",
        "key_created",
        "enrollment_token_issued",
        "enrollment_token_used",
        "agent_enrolled",
        "agent_connected",
        "policy_denied",
        "allocation_failed",
        "allocation_created",
        "allocation_releasing",
        "allocation_released",
        "agent_revoked",
        "agent_disconnected",
    ];
    assert_eq!(actions, expected, "{all:#?}");
    let find = |action: &str| all.iter().find(|e| e["action"] == action).unwrap();
    assert_eq!(find("enrollment_token_issued")["actor"], "admin:ops");
    assert_eq!(
        find("enrollment_token_issued")["target"],
        find("enrollment_token_used")["target"],
        "issue and use name the same token fingerprint"
    );
    assert_eq!(
        find("agent_enrolled")["target"],
        format!("agent:{agent_id}")
    );
    assert_eq!(
        find("agent_connected")["actor"],
        format!("agent:{agent_id}")
    );
    assert_eq!(
        find("policy_denied")["details"]["message"],
        "carrier not allowed here"
    );
    let created = find("allocation_created");
    assert_eq!(created["actor"], "marketplace:shop");
    assert_eq!(created["target"], format!("allocation:{allocation_id}"));
    assert_eq!(created["details"]["order_id"], "o-1");
    assert_eq!(find("agent_revoked")["actor"], "admin:ops");
    assert_eq!(find("agent_disconnected")["details"]["reason"], "revoked");
    for e in &all {
        assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
        assert!(e["details"].is_object(), "{e}");
    }

    let text = serde_json::to_string(&all).unwrap();
    for secret in [&token, &plane.admin, &plane.market, &password] {
        assert!(!text.contains(secret.as_str()), "a secret in the audit log");
    }
}

#[tokio::test]
async fn the_audit_query_is_validated_and_admin_only() {
    let plane = TestPlane::start().await;
    plane.token().await;
    plane.token().await;
    let all = events(&plane, "").await;
    assert_eq!(all.len(), 4, "two keys, two tokens: {all:#?}");
    assert_eq!(events(&plane, "?limit=1").await.len(), 1);
    // `since` is inclusive and takes `Z`, an offset, or an offset whose `+` was not encoded.
    let third = all[2]["at"].as_str().unwrap();
    assert_eq!(events(&plane, &format!("?since={third}")).await.len(), 2);
    let future = "2999-01-01T00:00:00+00:00";
    assert!(events(&plane, &format!("?since={future}")).await.is_empty());
    assert!(events(&plane, "?since=2999-01-01T00:00:00%2B00:00")
        .await
        .is_empty());

    for query in [
        "?since=yesterday",
        "?limit=0",
        "?limit=1001",
        "?colour=red",
        "?after=",
        "?after=yesterday",
        "?after=12345",
        "?after=%2B000000000000001",
        "?after=00000000000000000",
    ] {
        let r = plane.get(&format!("/v1/audit{query}"), &plane.admin).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (422, "invalid_request"),
            "{query}"
        );
    }
    let r = plane.get("/v1/audit", &plane.market).await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    let r = plane.call("GET", "/v1/audit", None, None).await;
    assert_eq!(r.status, 401);
}

/// One page: its events and `next_cursor`.
async fn page(plane: &TestPlane, query: &str) -> (Vec<Value>, Value) {
    let r = plane.get(&format!("/v1/audit{query}"), &plane.admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert!(
        body.get("next_cursor").is_some(),
        "next_cursor is always present: {body}"
    );
    (
        body["events"].as_array().unwrap().clone(),
        body["next_cursor"].clone(),
    )
}

/// Appends `n` events that all share the instant `at` (targets `{prefix}:{i}`).
fn append_at(store: &SledStore, at: time::OffsetDateTime, prefix: &str, n: usize) {
    for i in 0..n {
        let event = AuditEvent {
            at,
            actor: "system".into(),
            action: AuditAction::IpRotated,
            target: format!("{prefix}:{i}"),
            details: json!({}),
        };
        store.append_audit(&event).unwrap();
    }
}

#[tokio::test]
async fn paging_by_cursor_returns_every_event_once_in_order() {
    let plane = TestPlane::start().await;
    // 2,500 events in ONE instant: `since` cannot page through them, a cursor must.
    let instant = farmhand_control::ids::now();
    append_at(plane.store().as_sled().unwrap(), instant, "modem", 2500);

    let mut seen: Vec<Value> = Vec::new();
    let mut pages = 0;
    let mut query = "?limit=1000".to_string();
    loop {
        let (events, next) = page(&plane, &query).await;
        pages += 1;
        if pages == 1 {
            // Appended while paging: comes at the end, neither lost nor repeated.
            append_at(plane.store().as_sled().unwrap(), instant, "late", 1);
        }
        seen.extend(events);
        match next.as_str() {
            Some(cursor) => {
                assert_eq!(Some(cursor), seen.last().unwrap()["cursor"].as_str());
                query = format!("?after={cursor}&limit=1000");
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3, "1000 + 1000 + 503 events");
    let targets: Vec<&str> = seen.iter().map(|e| e["target"].as_str().unwrap()).collect();
    let mut expected = vec!["key:ops", "key:shop"];
    let modems: Vec<String> = (0..2500).map(|i| format!("modem:{i}")).collect();
    expected.extend(modems.iter().map(String::as_str));
    expected.push("late:0");
    assert_eq!(targets, expected);
    let cursors: Vec<&str> = seen.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursors increase");

    // Past the end: nothing, and no next cursor.
    let last = cursors[cursors.len() - 1];
    let (events, next) = page(&plane, &format!("?after={last}")).await;
    assert!(events.is_empty() && next.is_null(), "{events:?} {next}");
    let (events, next) = page(&plane, "?after=ffffffffffffffff").await;
    assert!(events.is_empty() && next.is_null());
    // A page that happens to end exactly at the last event says so.
    let before_last = cursors[cursors.len() - 2];
    let (events, next) = page(&plane, &format!("?after={before_last}&limit=1")).await;
    assert_eq!((events.len(), next), (1, Value::Null));
    // `since` still works next to `after`: it keeps events at or after that instant.
    let at = seen[2]["at"].as_str().unwrap();
    let (events, _) = page(&plane, &format!("?since={at}&after={}&limit=5", cursors[4])).await;
    assert_eq!(events[0]["target"], "modem:3");
}

#[tokio::test]
async fn the_retention_sweeper_deletes_old_entries_at_start() {
    let now = farmhand_control::ids::now();
    let plane = TestPlane::start_with(|config| {
        config.retention.audit_days = 30;
        // Written before the plane opens the database: 2,100 entries 31 days old (more
        // than two batches), then 3 from a day ago, which must stay.
        let store = SledStore::open(&config.data_dir).unwrap();
        append_at(&store, now - time::Duration::days(31), "old", 2100);
        append_at(&store, now - time::Duration::days(1), "young", 3);
    })
    .await;
    eventually("the old entries are deleted", || async {
        let (events, _) = page(&plane, "?limit=10").await;
        !events
            .iter()
            .any(|e| e["target"].as_str().unwrap().starts_with("old:"))
    })
    .await;
    let (events, next) = page(&plane, "?limit=1000").await;
    let targets: Vec<&str> = events
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    // The API keys were created after the young entries, so they come last.
    assert_eq!(
        targets,
        ["young:0", "young:1", "young:2", "key:ops", "key:shop"]
    );
    assert!(next.is_null());
}
