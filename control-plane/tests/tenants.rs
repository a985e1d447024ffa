//! Tenants and least privilege: a marketplace key sees and touches only its tenant's
//! allocations (another tenant's are 404), its webhook endpoints get only its allocations'
//! events, order ids are per tenant; an admin cannot move a buyer onto another box (403,
//! audited); agents can be held for approval before they get orders; allocation lists are
//! paged by cursor.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use std::sync::Arc;
use support::flows::{allocate, allocate_as};
use support::receiver::Receiver;
use support::{eventually, modem, FakeAgent, TestPlane};

const IMEI: &str = "350000000000018";

async fn tenant_key(plane: &TestPlane, tenant: &str) -> String {
    let body = json!({"role": "marketplace", "name": format!("shop-{tenant}"), "tenant": tenant});
    let r = plane.post("/v1/keys", &plane.admin, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["key"].as_str().unwrap().to_owned()
}

async fn register(plane: &TestPlane, key: &str, receiver: &Receiver) {
    let body = json!({"url": receiver.url, "events": ["*"]});
    let r = plane.post("/v1/webhooks", key, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

fn ids(list: &Value) -> Vec<String> {
    list["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["allocation_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The allocation ids of the `allocation.active` events `receiver` got.
fn activated(receiver: &Receiver) -> Vec<String> {
    receiver
        .of("allocation.active")
        .iter()
        .map(|r| {
            r.json()["object"]["allocation_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn tenants_cannot_see_touch_or_hear_of_each_others_allocations() {
    let plane = Arc::new(TestPlane::start_with(|c| c.modem_capacity = 4).await);
    let (acme, beta) = (
        tenant_key(&plane, "acme").await,
        tenant_key(&plane, "beta").await,
    );
    let (to_acme, to_beta, to_ops) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    register(&plane, &acme, &to_acme).await;
    register(&plane, &beta, &to_beta).await;
    register(&plane, &plane.admin, &to_ops).await;
    let mut agent = plane.agent_with_modem(IMEI).await;

    let a = allocate_as(&plane, &acme, &mut agent, "order-1").await;
    let b = allocate_as(&plane, &beta, &mut agent, "order-1").await;
    let (a_id, b_id) = (
        a["allocation_id"].as_str().unwrap(),
        b["allocation_id"].as_str().unwrap(),
    );
    assert_ne!(a_id, b_id, "order ids are per tenant");
    assert_eq!(
        (&a["tenant"], &b["tenant"]),
        (&json!("acme"), &json!("beta"))
    );

    // Beta cannot see, release, renew, replace or meter acme's allocation: 404, as if it
    // did not exist.
    let path = format!("/v1/allocations/{a_id}");
    for (method, suffix, body) in [
        ("GET", "", None),
        ("GET", "/usage", None),
        ("DELETE", "", None),
        ("POST", "/renew", Some(json!({"duration_s": 3600}))),
        ("POST", "/replace", Some(json!({}))),
    ] {
        let body = body.map(|b| b.to_string());
        let r = plane
            .call(
                method,
                &format!("{path}{suffix}"),
                Some(&beta),
                body.as_deref(),
            )
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (404, "not_found"),
            "{method} {suffix}"
        );
    }
    // The default tenant's key neither.
    assert_eq!(plane.get(&path, &plane.market).await.status, 404);
    let still = plane.get(&path, &acme).await;
    assert_eq!(
        still.json()["state"],
        "active",
        "nothing beta did reached it"
    );
    assert!(
        still.json()["password"].is_string(),
        "its owner sees the credentials"
    );

    assert_eq!(
        ids(&plane.get("/v1/allocations", &beta).await.json()),
        [b_id]
    );
    assert_eq!(
        ids(&plane
            .get("/v1/allocations?order_id=order-1", &beta)
            .await
            .json()),
        [b_id]
    );
    assert_eq!(
        plane.get("/v1/allocations?tenant=acme", &beta).await.status,
        403
    );
    let all = plane.get("/v1/allocations", &plane.admin).await.json();
    assert_eq!(ids(&all).len(), 2, "admins see every tenant");
    assert!(all["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["password"].is_null()));
    assert_eq!(
        ids(&plane
            .get("/v1/allocations?tenant=acme", &plane.admin)
            .await
            .json()),
        [a_id]
    );

    // Webhooks: each tenant hears of its own allocations only; the operator of both.
    eventually("the operator's endpoint got both", || async {
        activated(&to_ops).len() == 2
    })
    .await;
    eventually("each tenant's endpoint got its own", || async {
        activated(&to_acme) == [a_id] && activated(&to_beta) == [b_id]
    })
    .await;
    assert!(to_acme
        .got()
        .iter()
        .all(|r| r.json()["object"]["tenant"] != "beta"));
}

#[tokio::test]
async fn an_admin_cannot_move_a_buyer_onto_a_box_it_enrolled() {
    let plane = Arc::new(TestPlane::start().await);
    let mut real = plane.agent_with_modem(IMEI).await;
    let allocation = allocate(&plane, &mut real, "order-victim").await;
    let id = allocation["allocation_id"].as_str().unwrap();
    // The attacker holds the admin key: enrolls a box of its own with a matching modem.
    let fake_identity = plane.enroll().await;
    let mut fake = FakeAgent::connect(&plane, &fake_identity).await.unwrap();
    fake.send_inventory(vec![modem("350000000000026", "Vodafone")])
        .await;
    plane.wait_available("350000000000026").await;

    let r = plane
        .post(
            &format!("/v1/allocations/{id}/replace"),
            &plane.admin,
            json!({}),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "forbidden"));
    let after = plane
        .get(&format!("/v1/allocations/{id}"), &plane.market)
        .await
        .json();
    assert_eq!(after["imei"], IMEI);
    assert_eq!(after["replacements"], json!([]));
    let audit = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
    let refused: Vec<_> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "privilege_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"], "admin:ops");
    assert_eq!(refused[0]["target"], format!("allocation:{id}"));
}

#[tokio::test]
async fn agents_held_for_approval_get_no_orders_until_an_admin_approves() {
    let plane = Arc::new(TestPlane::start_with(|c| c.enroll.require_approval = true).await);
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent.send_inventory(vec![modem(IMEI, "Vodafone")]).await;
    let path = format!("/v1/agents/{}", identity.agent_id);
    eventually("the agent's modem is listed", || async {
        plane
            .get("/v1/modems", &plane.market)
            .await
            .body
            .contains(IMEI)
    })
    .await;
    assert_eq!(
        plane.get(&path, &plane.admin).await.json()["approved"],
        false
    );
    let r = plane.get("/v1/modems?available=true", &plane.market).await;
    assert!(!r.body.contains(IMEI), "not for sale: {}", r.body);
    let r = plane
        .post(
            "/v1/allocations",
            &plane.market,
            support::flows::order("o-held"),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_capacity"));

    // Only admins approve.
    let approve = format!("{path}/approve");
    assert_eq!(
        plane.post(&approve, &plane.market, json!({})).await.status,
        403
    );
    let r = plane.post(&approve, &plane.admin, json!({})).await;
    assert_eq!(
        (r.status, &r.json()["approved"]),
        (200, &json!(true)),
        "{}",
        r.body
    );
    plane.wait_available(IMEI).await;
    allocate(&plane, &mut agent, "o-approved").await;
    let audit = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
    let approvals = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent_approved")
        .count();
    assert_eq!(approvals, 1);
    // Agents enrolled without the setting (or before it) are approved.
    let plane = TestPlane::start().await;
    let other = plane.enroll().await;
    let r = plane
        .get(&format!("/v1/agents/{}", other.agent_id), &plane.admin)
        .await;
    assert_eq!(r.json()["approved"], true);
}

#[tokio::test]
async fn allocation_lists_are_paged_by_cursor_oldest_first() {
    let plane = Arc::new(TestPlane::start_with(|c| c.modem_capacity = 40).await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let mut made = Vec::new();
    for n in 0..23 {
        let a = allocate(&plane, &mut agent, &format!("page-{n:02}")).await;
        made.push(a["allocation_id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/allocations?limit=10".to_string();
    loop {
        let r = plane.get(&path, &plane.market).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let got = ids(&page);
        assert!(got.len() <= 10);
        seen.extend(got);
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/allocations?limit=10&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, made, "every allocation once, oldest first");
    let r = plane
        .get("/v1/allocations?state=active&limit=5", &plane.market)
        .await;
    assert_eq!(ids(&r.json()).len(), 5);
    assert!(r.json()["next_cursor"].is_string());
    for bad in ["limit=0", "limit=1001", "after=zz", "after=00"] {
        let r = plane
            .get(&format!("/v1/allocations?{bad}"), &plane.market)
            .await;
        if bad == "after=00" {
            // A well-formed cursor from nowhere pages from there: an empty or short page.
            assert_eq!(r.status, 200, "{bad}");
        } else {
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (422, "invalid_request"),
                "{bad}"
            );
        }
    }
}
