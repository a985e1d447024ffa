//! Allocations end to end against a fake agent: provisioning (201 with every field),
//! idempotency and conflicts, no capacity, agent errors and timeouts (with the late port
//! released), release online and offline (finished on reconnect), renewal and rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{
    CommandBody, CommandError, CommandErrorCode, CommandOutput, Outcome, Provisioned, Rotated,
    Updated,
};
use serde_json::{json, Value};
use std::sync::Arc;
use support::flows::{allocate, order, post_allocation, provision_ok, release_ok};
use support::{eventually, FakeAgent, TestPlane};

const IMEI: &str = "350000000000018";

#[tokio::test]
async fn provisioning_returns_the_allocation_and_is_idempotent_by_order() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let a = allocate(&plane, &mut agent, "shop-order-1234").await;
    assert_eq!(a["state"], "active");
    assert_eq!(a["order_id"], "shop-order-1234");
    assert_eq!(a["imei"], IMEI);
    assert_eq!(a["agent_id"], agent.agent_id.as_str());
    assert_eq!(a["carrier"], "Vodafone");
    assert_eq!(a["country"], "DE");
    assert_eq!(a["host"], "203.0.113.7");
    assert_eq!(
        (a["http_port"].as_u64(), a["socks_port"].as_u64()),
        (Some(8001), Some(5001))
    );
    assert!(a["login"].as_str().unwrap().starts_with("fh"));
    assert!(a["password"].as_str().unwrap().len() >= 20);
    assert!(a["created_at"].as_str().unwrap().ends_with('Z') && a["expires_at"].is_string());
    assert_eq!(
        (a["released_at"].clone(), a["release_reason"].clone()),
        (Value::Null, Value::Null)
    );

    // Same order, same body: the same allocation, 200, and no command to the agent.
    let again = plane
        .post("/v1/allocations", &plane.market, order("shop-order-1234"))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), a);
    // Same order, different body: conflict.
    let mut other = order("shop-order-1234");
    other["duration_s"] = json!(3600);
    let r = plane.post("/v1/allocations", &plane.market, other).await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "order_conflict"));
    // Admins see the allocation without buyer credentials.
    let id = a["allocation_id"].as_str().unwrap();
    let seen = plane
        .get(&format!("/v1/allocations/{id}"), &plane.admin)
        .await
        .json();
    assert_eq!(
        (seen["login"].clone(), seen["password"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(seen["state"], "active");
    let listed = plane
        .get("/v1/allocations?order_id=shop-order-1234", &plane.market)
        .await
        .json();
    assert_eq!(listed["allocations"].as_array().unwrap().len(), 1);
    let modems = plane.get("/v1/modems", &plane.market).await.json();
    assert_eq!(modems["modems"][0]["active_allocations"], 1);
    assert_eq!(modems["modems"][0]["available"], false);
    // The buyer password is not stored in clear.
    let password = a["password"].as_str().unwrap();
    for entry in std::fs::read_dir(plane.dir.path().join("db")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(password),
            "password found in clear on disk"
        );
    }
}

#[tokio::test]
async fn concurrent_duplicates_create_one_port() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let first = post_allocation(&plane, order("dup-1"));
    let second = post_allocation(&plane, order("dup-1"));
    provision_ok(&mut agent).await;
    let (a, b) = (first.await.unwrap(), second.await.unwrap());
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{} / {}", a.body, b.body);
    assert_eq!(a.json()["allocation_id"], b.json()["allocation_id"]);
}

#[tokio::test]
async fn no_matching_capacity_is_409() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let mut wrong_country = order("o-1");
    wrong_country["country"] = json!("FR");
    let r = plane
        .post("/v1/allocations", &plane.market, wrong_country)
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_capacity"));
    allocate(&plane, &mut agent, "o-2").await;
    let r = plane
        .post("/v1/allocations", &plane.market, order("o-3"))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "no_capacity"),
        "capacity 1 is used"
    );
}

#[tokio::test]
async fn an_agent_error_fails_the_allocation_with_its_code() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let pending = post_allocation(&plane, order("o-err"));
    let command = agent.next_command().await;
    let error = CommandError::new(CommandErrorCode::ModemOffline, "modem is offline");
    agent.answer(&command.id, Outcome::Error { error }).await;
    let r = pending.await.unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "provision_failed")
    );
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("modem_offline"));
    let failed = plane
        .get("/v1/allocations?state=failed", &plane.market)
        .await
        .json();
    assert_eq!(failed["allocations"].as_array().unwrap().len(), 1);
    // The slot is free again, and the same order may be retried.
    let retry = post_allocation(&plane, order("o-err"));
    provision_ok(&mut agent).await;
    assert_eq!(retry.await.unwrap().status, 201);
}

#[tokio::test]
async fn a_silent_agent_times_out_and_its_late_port_is_released() {
    let plane = Arc::new(TestPlane::start_with(|c| c.provisioning_timeout_s = 1).await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let pending = post_allocation(&plane, order("o-slow"));
    let command = agent.next_command().await;
    let CommandBody::Provision(p) = command.body.clone() else {
        panic!("expected provision")
    };
    let r = pending.await.unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (504, "agent_timeout"));
    let listed = plane
        .get("/v1/allocations?order_id=o-slow", &plane.market)
        .await
        .json();
    assert_eq!(listed["allocations"][0]["state"], "failed");
    // The agent answers after all: the plane must remove that port.
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: p.allocation_id.clone(),
        imei: p.imei,
        port_id: "late".into(),
        http_port: 8002,
        socks_port: 5002,
    });
    agent.answer(&command.id, Outcome::Ok { output }).await;
    assert_eq!(release_ok(&mut agent).await, p.allocation_id);
}

#[tokio::test]
async fn release_confirms_online_and_finishes_on_reconnect_when_offline() {
    let plane = Arc::new(TestPlane::start().await);
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send_inventory(vec![
            support::modem(IMEI, "Vodafone"),
            support::modem("350000000000026", "Vodafone"),
        ])
        .await;
    plane.wait_available("350000000000026").await;
    let online = allocate(&plane, &mut agent, "o-online").await;
    let offline = allocate(&plane, &mut agent, "o-offline").await;

    // Online: 200 released once the agent confirms.
    let id = online["allocation_id"].as_str().unwrap().to_string();
    let plane2 = plane.clone();
    let path = format!("/v1/allocations/{id}");
    let deleting = tokio::spawn(async move { plane2.delete(&path, &plane2.market).await });
    assert_eq!(release_ok(&mut agent).await, id);
    let r = deleting.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (
            r.json()["state"].clone(),
            r.json()["release_reason"].clone()
        ),
        (json!("released"), json!("cancelled"))
    );
    assert!(r.json()["released_at"].is_string());
    // Idempotent.
    assert_eq!(
        plane
            .delete(&format!("/v1/allocations/{id}"), &plane.market)
            .await
            .status,
        200
    );

    // Offline: 202 releasing, finished when the agent is back.
    drop(agent);
    eventually("the agent is disconnected", || async {
        !plane.connected(&identity.agent_id).await
    })
    .await;
    let id = offline["allocation_id"].as_str().unwrap().to_string();
    let r = plane
        .delete(&format!("/v1/allocations/{id}"), &plane.market)
        .await;
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (202, json!("releasing"))
    );
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    assert_eq!(release_ok(&mut agent).await, id);
    eventually("the release completes", || async {
        plane
            .get(&format!("/v1/allocations/{id}"), &plane.market)
            .await
            .json()["state"]
            == "released"
    })
    .await;
}

#[tokio::test]
async fn renewal_extends_the_expiry_on_the_agent() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-renew").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let plane2 = plane.clone();
    let path = format!("/v1/allocations/{id}/renew");
    let renewing = tokio::spawn(async move {
        plane2
            .post(&path, &plane2.market, json!({"duration_s": 86400}))
            .await
    });
    let command = agent.next_command().await;
    let CommandBody::UpdatePort(u) = command.body else {
        panic!("expected update_port")
    };
    assert_eq!(u.allocation_id, id);
    let output = CommandOutput::UpdatePort(Updated {
        allocation_id: id.clone(),
    });
    agent.answer(&command.id, Outcome::Ok { output }).await;
    let r = renewing.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["expires_at"].as_str().unwrap() > a["expires_at"].as_str().unwrap());
    let r = plane
        .post(
            &format!("/v1/allocations/{id}/renew"),
            &plane.market,
            json!({"duration_s": 1}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "invalid_request")
    );
}

#[tokio::test]
async fn rotation_reports_the_new_ip_and_needs_an_online_agent() {
    let plane = Arc::new(TestPlane::start().await);
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send_inventory(vec![support::modem(IMEI, "Vodafone")])
        .await;
    plane.wait_available(IMEI).await;
    let plane2 = plane.clone();
    let rotating = tokio::spawn(async move {
        plane2
            .call(
                "POST",
                &format!("/v1/modems/{IMEI}/rotate"),
                Some(&plane2.market),
                None,
            )
            .await
    });
    let command = agent.next_command().await;
    assert!(matches!(&command.body, CommandBody::RotateIp(r) if r.imei == IMEI));
    let output = CommandOutput::RotateIp(Rotated {
        imei: IMEI.into(),
        old_ip: Some("198.51.100.11".into()),
        new_ip: Some("198.51.100.99".into()),
        changed: true,
    });
    agent.answer(&command.id, Outcome::Ok { output }).await;
    let r = rotating.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (body["imei"].clone(), body["old_ip"].clone()),
        (json!(IMEI), json!("198.51.100.11"))
    );
    assert_eq!(
        (body["new_ip"].clone(), body["changed"].clone()),
        (json!("198.51.100.99"), json!(true))
    );
    assert!(body["rotated_at"].is_string());

    let r = plane
        .call(
            "POST",
            "/v1/modems/359999999999999/rotate",
            Some(&plane.market),
            None,
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    drop(agent);
    eventually("the agent is disconnected", || async {
        !plane.connected(&identity.agent_id).await
    })
    .await;
    let r = plane
        .call(
            "POST",
            &format!("/v1/modems/{IMEI}/rotate"),
            Some(&plane.market),
            None,
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (503, "agent_offline"));
}
