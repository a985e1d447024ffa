//! Allocations end to end against a fake agent: provisioning (201 with every field),
//! idempotency and conflicts, no capacity, agent errors and timeouts (with the late port
//! released), the seller's port cap announced by the agent, release online and offline
//! (finished on reconnect), renewal and rotation (its cooldown, kept across restarts;
//! automatic rotations reported by the agent; `rotate_every_s`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{
    AgentMessage, CommandBody, CommandError, CommandErrorCode, CommandOutput, Outcome, Provisioned,
    Rotated, RotationReport,
};
use serde_json::{json, Value};
use std::sync::Arc;
use support::flows::{
    allocate, order, post_allocation, provision_ok, provisioned, release_ok, update_ok,
};
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
    assert_eq!(
        support::files_containing(plane.dir.path(), password.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "password found in clear on disk"
    );
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

/// (capacity, available) of every modem, by IMEI.
async fn capacities(plane: &TestPlane) -> Vec<(String, u64, bool)> {
    let listed = plane.get("/v1/modems", &plane.market).await.json();
    let modems = listed["modems"].as_array().unwrap().iter();
    let mut out: Vec<_> = modems
        .map(|m| {
            let imei = m["imei"].as_str().unwrap().to_string();
            (
                imei,
                m["capacity"].as_u64().unwrap(),
                m["available"] == true,
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn the_sellers_port_cap_bounds_what_the_plane_offers() {
    const OTHER: &str = "350000000000026";
    let plane = Arc::new(TestPlane::start_with(|c| c.modem_capacity = 3).await);
    let identity = plane.enroll().await;
    let mut capped = FakeAgent::connect(&plane, &identity).await.unwrap();
    let modems = vec![support::modem(IMEI, "Vodafone")];
    capped.send_inventory_capped(modems.clone(), Some(1)).await;
    plane.wait_available(IMEI).await;
    assert_eq!(capacities(&plane).await, [(IMEI.into(), 1, true)]);

    // A refusal the plane could not foresee (the seller changed the policy meanwhile) is
    // handled as before: the allocation fails with the agent's code and frees the slot.
    let pending = post_allocation(&plane, order("o-cap-1"));
    let command = capped.next_command().await.id;
    let error = CommandError::new(CommandErrorCode::PolicyDenied, "policy allows 1");
    capped.answer(&command, Outcome::Error { error }).await;
    let r = pending.await.unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "provision_failed")
    );
    assert!(r.body.contains("policy_denied"), "{}", r.body);
    let a = allocate(&plane, &mut capped, "o-cap-1").await;
    assert_eq!(a["imei"], IMEI);

    // One port is all the seller allows: the modem is full although the plane's own
    // capacity is 3, and the next order is refused here instead of by the agent.
    assert_eq!(capacities(&plane).await, [(IMEI.into(), 1, false)]);
    let free = plane.get("/v1/modems?available=true", &plane.market).await;
    assert_eq!(free.json()["modems"], json!([]));
    let r = plane
        .post("/v1/allocations", &plane.market, order("o-cap-2"))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_capacity"));

    // An agent that announces no cap gets the plane's capacity, and takes the next orders.
    let mut plain = plane.agent_with_modem(OTHER).await;
    for order_id in ["o-cap-2", "o-cap-3"] {
        assert_eq!(allocate(&plane, &mut plain, order_id).await["imei"], OTHER);
    }
    let expected = [(IMEI.into(), 1, false), (OTHER.into(), 3, true)];
    assert_eq!(capacities(&plane).await, expected);

    // A later inventory replaces the cap: without the field the plane's capacity is back.
    capped.send_inventory(modems).await;
    plane.wait_available(IMEI).await;
    let expected = [(IMEI.into(), 3, true), (OTHER.into(), 3, true)];
    assert_eq!(capacities(&plane).await, expected);
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
    assert_eq!(update_ok(&mut agent, command).await.allocation_id, id);
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
    let rotating = tokio::spawn(async move { rotate_modem(&plane2, IMEI).await });
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

    let r = rotate_modem(&plane, "359999999999999").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    drop(agent);
    eventually("the agent is disconnected", || async {
        !plane.connected(&identity.agent_id).await
    })
    .await;
    let r = rotate_modem(&plane, IMEI).await;
    assert_eq!((r.status, r.error_code().as_str()), (503, "agent_offline"));
}

/// `POST /v1/modems/{imei}/rotate` as the marketplace.
async fn rotate_modem(plane: &TestPlane, imei: &str) -> support::Response {
    plane
        .call(
            "POST",
            &format!("/v1/modems/{imei}/rotate"),
            Some(&plane.market),
            None,
        )
        .await
}

fn rotated(old_ip: &str, new_ip: &str) -> Outcome {
    Outcome::Ok {
        output: CommandOutput::RotateIp(Rotated {
            imei: IMEI.into(),
            old_ip: Some(old_ip.into()),
            new_ip: Some(new_ip.into()),
            changed: old_ip != new_ip,
        }),
    }
}

/// Asserts a 409 `rotation_cooldown` with a whole-second `Retry-After` in 1..=`max`.
fn assert_cooldown(r: &support::Response, max: u64) -> u64 {
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "rotation_cooldown"),
        "{}",
        r.body
    );
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After on rotation_cooldown")
        .parse()
        .expect("whole seconds");
    assert!((1..=max).contains(&retry), "Retry-After {retry}");
    retry
}

/// The modem's `last_rotation` as `GET /v1/modems` shows it.
async fn last_rotation(plane: &TestPlane, imei: &str) -> Value {
    let modems = plane
        .get(&format!("/v1/modems?imei={imei}"), &plane.market)
        .await
        .json();
    modems["modems"][0]["last_rotation"].clone()
}

/// The `ip_rotated` entries of the audit log.
async fn rotation_audit(plane: &TestPlane) -> Vec<Value> {
    let events = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "ip_rotated")
        .cloned()
        .collect()
}

#[tokio::test]
async fn one_rotation_per_modem_at_a_time_then_a_cooldown_without_the_agent() {
    let plane = TestPlane::start().await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    let first = rotate_modem(&plane, IMEI);
    let agent_side = async {
        let command = agent.next_command().await;
        assert!(matches!(&command.body, CommandBody::RotateIp(r) if r.imei == IMEI));
        // A second request while the first is with the agent: refused here.
        let concurrent = rotate_modem(&plane, IMEI).await;
        assert_cooldown(&concurrent, 60);
        agent
            .answer(&command.id, rotated("198.51.100.11", "198.51.100.99"))
            .await;
    };
    let (first, ()) = tokio::join!(first, agent_side);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["new_ip"], "198.51.100.99");

    // Within the cooldown: 409 at once, and nothing was queued for the agent.
    let again = rotate_modem(&plane, IMEI).await;
    assert_cooldown(&again, 60);
    let error = again.json();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("ago"),
        "{error}"
    );
    assert!(plane
        .store()
        .pending_commands(&agent.agent_id)
        .await
        .unwrap()
        .iter()
        .all(|c| !matches!(c.body, CommandBody::RotateIp(_))));

    let last = last_rotation(&plane, IMEI).await;
    assert_eq!(
        (
            &last["old_ip"],
            &last["new_ip"],
            &last["changed"],
            &last["automatic"]
        ),
        (
            &json!("198.51.100.11"),
            &json!("198.51.100.99"),
            &json!(true),
            &json!(false)
        )
    );
    assert!(last["rotated_at"].as_str().unwrap().ends_with('Z'));
    let audit = rotation_audit(&plane).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["actor"], "marketplace:shop");
    assert_eq!(audit[0]["target"], format!("modem:{IMEI}"));
    assert_eq!(audit[0]["details"]["automatic"], false);
}

/// On a manual clock the cooldown ends to the second: a rotation one second before it is
/// refused (`Retry-After: 1`), one at it reaches the agent.
#[tokio::test]
async fn the_rotation_cooldown_ends_exactly_when_it_says() {
    let clock = farmhand_control::clock::Clock::manual();
    let plane = TestPlane::start_on(clock.clone(), |c| c.rotation_cooldown_s = 60).await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    let first = rotate_modem(&plane, IMEI);
    let agent_side = async {
        let command = agent.next_command().await;
        agent
            .answer(&command.id, rotated("198.51.100.11", "198.51.100.12"))
            .await;
    };
    let (first, ()) = tokio::join!(first, agent_side);
    assert_eq!(first.status, 200, "{}", first.body);

    clock.advance(std::time::Duration::from_secs(59));
    let early = rotate_modem(&plane, IMEI).await;
    assert_eq!(assert_cooldown(&early, 60), 1, "one second is left");
    clock.advance(std::time::Duration::from_secs(1));
    let on_time = rotate_modem(&plane, IMEI);
    let agent_side = async {
        let command = agent.next_command().await;
        assert!(matches!(&command.body, CommandBody::RotateIp(r) if r.imei == IMEI));
        agent
            .answer(&command.id, rotated("198.51.100.12", "198.51.100.13"))
            .await;
    };
    let (on_time, ()) = tokio::join!(on_time, agent_side);
    assert_eq!(on_time.status, 200, "{}", on_time.body);
}

#[tokio::test]
async fn the_rotation_cooldown_survives_a_restart() {
    let mut plane = TestPlane::start_with(|c| c.rotation_cooldown_s = 3600).await;
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send_inventory(vec![support::modem(IMEI, "Vodafone")])
        .await;
    plane.wait_available(IMEI).await;
    let rotating = rotate_modem(&plane, IMEI);
    let answering = async {
        let command = agent.next_command().await;
        agent
            .answer(&command.id, rotated("198.51.100.11", "198.51.100.11"))
            .await;
    };
    let (r, ()) = tokio::join!(rotating, answering);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], false, "the same IP came back");
    drop(agent);

    plane.restart().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send_inventory(vec![support::modem(IMEI, "Vodafone")])
        .await;
    plane.wait_available(IMEI).await;
    let r = rotate_modem(&plane, IMEI).await;
    let retry = assert_cooldown(&r, 3600);
    assert!(
        retry > 3000,
        "the clock kept running from the first rotation: {retry}"
    );
    assert!(plane
        .store()
        .pending_commands(&identity.agent_id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(last_rotation(&plane, IMEI).await["changed"], false);
}

#[tokio::test]
async fn rotations_the_agent_reports_are_recorded_audited_and_start_the_cooldown() {
    let plane = TestPlane::start().await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    assert_eq!(last_rotation(&plane, IMEI).await, Value::Null);
    let now_ms = farmhand_control::ids::unix_ms(farmhand_control::ids::now());
    let report = |imei: &str, at_ms: u64| {
        AgentMessage::Rotated(RotationReport {
            imei: imei.into(),
            old_ip: Some("198.51.100.11".into()),
            new_ip: Some("198.51.100.42".into()),
            changed: true,
            at_ms,
            automatic: true,
        })
    };
    // Another agent's (or an unknown) modem: ignored.
    agent.send(&report("359999999999999", now_ms)).await;
    // A time in the future is clamped to now (a cooldown cannot be pushed ahead).
    agent.send(&report(IMEI, now_ms + 86_400_000)).await;
    eventually("the automatic rotation is recorded", || async {
        last_rotation(&plane, IMEI).await["automatic"] == true
    })
    .await;
    let last = last_rotation(&plane, IMEI).await;
    assert_eq!(
        (&last["new_ip"], &last["changed"]),
        (&json!("198.51.100.42"), &json!(true))
    );
    assert_eq!(
        plane
            .store()
            .last_rotation(&agent.agent_id, "359999999999999")
            .await
            .unwrap(),
        None
    );
    let audit = rotation_audit(&plane).await;
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["actor"], format!("agent:{}", agent.agent_id));
    assert_eq!(audit[0]["target"], format!("modem:{IMEI}"));
    assert_eq!(audit[0]["details"]["automatic"], true);
    assert_eq!(audit[0]["details"]["new_ip"], "198.51.100.42");
    // A manual rotation right after it waits for the cooldown, without the agent.
    let r = rotate_modem(&plane, IMEI).await;
    assert_cooldown(&r, 60);
    assert!(plane
        .store()
        .pending_commands(&agent.agent_id)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_agent_busy_rotating_on_its_own_answers_409() {
    let plane = TestPlane::start().await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    let rotating = rotate_modem(&plane, IMEI);
    let answering = async {
        let command = agent.next_command().await;
        let error = CommandError::new(CommandErrorCode::RotationInProgress, "busy");
        agent.answer(&command.id, Outcome::Error { error }).await;
    };
    let (r, ()) = tokio::join!(rotating, answering);
    assert_cooldown(&r, 60);
    assert_eq!(
        last_rotation(&plane, IMEI).await,
        Value::Null,
        "nothing rotated here"
    );
}

#[tokio::test]
async fn rotate_every_s_is_validated_stored_and_sent_with_provision() {
    let plane = Arc::new(TestPlane::start_with(|c| c.min_rotate_every_s = 5).await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    for bad in [json!(0), json!(4), json!(86_401), json!("600"), json!(-1)] {
        let mut body = order("o-bad");
        body["rotate_every_s"] = bad.clone();
        let r = plane.post("/v1/allocations", &plane.market, body).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (422, "invalid_request"),
            "{bad}"
        );
    }
    let mut body = order("o-rot");
    body["rotate_every_s"] = json!(5);
    let pending = post_allocation(&plane, body);
    let p = provisioned(&mut agent).await;
    assert_eq!(p.rotate_every_s, Some(5));
    let r = pending.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["allocation_id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["rotate_every_s"], 5);
    assert_eq!(plane.allocation(&id).await["rotate_every_s"], 5);
    // The interval is part of the order: the same order without it conflicts.
    let r = plane
        .post("/v1/allocations", &plane.market, order("o-rot"))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "order_conflict"));
}

#[tokio::test]
async fn limits_are_validated_stored_echoed_and_sent_with_provision() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    for (field, bad) in [
        ("bandwidth_kbit", json!(0)),
        ("bandwidth_kbit", json!(10_000_001)),
        ("bandwidth_kbit", json!("800")),
        ("bandwidth_kbit", json!(-1)),
        ("traffic_quota_mb", json!(0)),
        ("traffic_quota_mb", json!(100_000_001)),
        ("traffic_quota_mb", json!(1.5)),
    ] {
        let mut body = order("o-bad-limit");
        body[field] = bad.clone();
        let r = plane.post("/v1/allocations", &plane.market, body).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (422, "invalid_request"),
            "{field}: {bad}"
        );
    }
    // Without limits the allocation shows them as null.
    let plain = allocate(&plane, &mut agent, "o-plain").await;
    assert_eq!(plain["bandwidth_kbit"], Value::Null);
    assert_eq!(plain["traffic_quota_mb"], Value::Null);
    release_ok_for(&plane, &mut agent, &plain).await;

    let mut body = order("o-limited");
    body["bandwidth_kbit"] = json!(800);
    body["traffic_quota_mb"] = json!(5);
    let pending = post_allocation(&plane, body.clone());
    let p = provisioned(&mut agent).await;
    assert_eq!((p.bandwidth_kbit, p.traffic_quota_mb), (Some(800), Some(5)));
    let r = pending.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let a = r.json();
    assert_eq!(
        (&a["bandwidth_kbit"], &a["traffic_quota_mb"]),
        (&json!(800), &json!(5))
    );
    let id = a["allocation_id"].as_str().unwrap();
    let shown = plane.allocation(id).await;
    assert_eq!(
        (&shown["bandwidth_kbit"], &shown["traffic_quota_mb"]),
        (&json!(800), &json!(5))
    );
    // Same body again: the same allocation; other limits under the same order: conflict.
    let again = plane
        .post("/v1/allocations", &plane.market, body.clone())
        .await;
    assert_eq!(
        (again.status, &again.json()["allocation_id"]),
        (200, &a["allocation_id"])
    );
    for (field, other) in [
        ("bandwidth_kbit", json!(801)),
        ("traffic_quota_mb", Value::Null),
    ] {
        let mut changed = body.clone();
        changed[field] = other;
        let r = plane.post("/v1/allocations", &plane.market, changed).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (409, "order_conflict"),
            "{field}"
        );
    }
}

/// Releases the allocation `a` with the agent confirming.
async fn release_ok_for(plane: &Arc<TestPlane>, agent: &mut FakeAgent, a: &Value) {
    let (p, path) = (
        plane.clone(),
        format!("/v1/allocations/{}", a["allocation_id"].as_str().unwrap()),
    );
    let deleting = tokio::spawn(async move { p.delete(&path, &p.market).await });
    release_ok(agent).await;
    assert_eq!(deleting.await.unwrap().status, 200);
}

async fn usage_of(plane: &TestPlane, id: &str, key: &str) -> support::Response {
    plane.get(&format!("/v1/allocations/{id}/usage"), key).await
}

fn usage_report(entries: &[(&str, u64, u64)]) -> AgentMessage {
    AgentMessage::Usage(farmhand_protocol::UsageReport {
        measured_at_ms: farmhand_control::ids::unix_ms(farmhand_control::ids::now()),
        allocations: entries
            .iter()
            .map(|(id, i, o)| farmhand_protocol::AllocationUsage {
                allocation_id: id.to_string(),
                bytes_in: *i,
                bytes_out: *o,
            })
            .collect(),
    })
}

#[tokio::test]
async fn usage_reported_by_the_agent_is_served_and_never_goes_down() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-usage").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();

    // Before any report: zeros, no measurement time; both roles may read it.
    let r = usage_of(&plane, &id, &plane.market).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"allocation_id": id, "bytes_in": 0, "bytes_out": 0, "measured_at": null})
    );
    assert_eq!(usage_of(&plane, &id, &plane.admin).await.status, 200);
    let r = usage_of(&plane, "al_nope", &plane.market).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    assert_eq!(usage_of(&plane, &id, "wrong-key").await.status, 401);

    agent
        .send(&usage_report(&[(&id, 21_100_000_000, 300)]))
        .await;
    eventually("the report is stored", || async {
        usage_of(&plane, &id, &plane.market).await.json()["bytes_in"] == 21_100_000_000u64
    })
    .await;
    let shown = usage_of(&plane, &id, &plane.market).await.json();
    assert_eq!(shown["bytes_out"], 300);
    assert!(
        shown["measured_at"].as_str().unwrap().ends_with('Z'),
        "{shown}"
    );

    // A lower report (reordered, or from an agent that lost its state) lowers nothing; each
    // direction keeps its highest total. Entries for unknown allocations are ignored.
    agent
        .send(&usage_report(&[(&id, 5, 900), ("al_unknown", 1, 1)]))
        .await;
    eventually("the upload total rises", || async {
        usage_of(&plane, &id, &plane.market).await.json()["bytes_out"] == 900
    })
    .await;
    assert_eq!(
        usage_of(&plane, &id, &plane.market).await.json()["bytes_in"],
        21_100_000_000u64
    );

    // Another agent cannot report for this allocation. Its session handles frames in order:
    // once the inventory sent after the report shows, the report was handled.
    let mut other = plane.agent_with_modem("350000000000026").await;
    other
        .send(&usage_report(&[(&id, 99_000_000_000, 99_000)]))
        .await;
    other
        .send_inventory(vec![
            support::modem("350000000000026", "Vodafone"),
            support::modem("350000000000034", "Vodafone"),
        ])
        .await;
    plane.wait_available("350000000000034").await;
    let shown = usage_of(&plane, &id, &plane.market).await.json();
    assert_eq!(
        (&shown["bytes_in"], &shown["bytes_out"]),
        (&json!(21_100_000_000u64), &json!(900))
    );
    assert!(
        plane.connected(&other.agent_id).await,
        "ignored, not a protocol error"
    );
}
