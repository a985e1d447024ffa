//! The expiry sweeper: an allocation is released when its `expires_at` passes
//! (`release_reason: expired`), a renewal moves the deadline the sweeper waits for, and an
//! allocation of an offline agent goes `releasing` and is finished when the agent comes
//! back — also across a plane restart. The API's minimum lifetime is 60 s, so the tests
//! move `expires_at` in the store and wake the sweeper (`TestPlane::set_expiry`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{CommandBody, CommandOutput, Outcome, Updated};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::flows::{allocate, release_ok};
use support::{eventually, TestPlane};
use time::Duration as Span;

const IMEI: &str = "350000000000018";

#[tokio::test]
async fn an_allocation_is_released_at_its_expiry_and_renewal_moves_the_deadline() {
    let plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-expiry").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();

    // Due in 3 s, but renewed at once: the sweeper must wait for the new deadline.
    plane.set_expiry(&id, Span::seconds(3));
    let (p, path) = (plane.clone(), format!("/v1/allocations/{id}/renew"));
    let renewing =
        tokio::spawn(async move { p.post(&path, &p.market, json!({"duration_s": 60})).await });
    let update = agent.next_command().await;
    assert!(
        matches!(update.body, CommandBody::UpdatePort(_)),
        "{update:?}"
    );
    let output = CommandOutput::UpdatePort(Updated {
        allocation_id: id.clone(),
    });
    agent.answer(&update.id, Outcome::Ok { output }).await;
    assert_eq!(renewing.await.unwrap().status, 200);
    // Past the old deadline nothing is released (bounded wait for a non-event).
    let quiet = tokio::time::timeout(Duration::from_secs(5), agent.next_command()).await;
    assert!(quiet.is_err(), "released at the old deadline: {quiet:?}");
    assert_eq!(plane.allocation(&id).await["state"], "active");

    // Due in 1 s: the sleeping sweeper wakes and releases it.
    plane.set_expiry(&id, Span::seconds(1));
    assert_eq!(release_ok(&mut agent).await, id);
    eventually("the expired allocation is released", || async {
        plane.allocation(&id).await["state"] == "released"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "expired");
}

#[tokio::test]
async fn an_allocation_expiring_while_its_agent_is_offline_is_released_on_reconnect() {
    let mut plane = Arc::new(TestPlane::start().await);
    let identity = plane.enroll().await;
    let mut agent = support::FakeAgent::connect(&plane, &identity)
        .await
        .unwrap();
    agent
        .send_inventory(vec![support::modem(IMEI, "Vodafone")])
        .await;
    plane.wait_available(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-expiry-offline").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    drop(agent);
    plane.wait_disconnected(&identity.agent_id).await;
    // A disconnected agent is not a dead box: its allocation stays active meanwhile.
    assert_eq!(plane.allocation(&id).await["state"], "active");

    plane.set_expiry(&id, Span::seconds(-1));
    eventually("the expired allocation waits for its agent", || async {
        plane.allocation(&id).await["state"] == "releasing"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "expired");

    // The pending release survives a restart of the plane.
    Arc::get_mut(&mut plane)
        .expect("no other handle")
        .restart()
        .await;
    let mut agent = support::FakeAgent::connect(&plane, &identity)
        .await
        .unwrap();
    assert_eq!(release_ok(&mut agent).await, id);
    eventually("the release completes on reconnect", || async {
        plane.allocation(&id).await["state"] == "released"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "expired");
}

/// Every live state expires: an allocation moved to another modem (`replaced`) is released
/// at its `expires_at` exactly like an `active` one.
#[tokio::test]
async fn a_replaced_allocation_expires_like_an_active_one() {
    const FIRST: &str = "350000000000101";
    const SECOND: &str = "350000000000303";
    let plane = Arc::new(TestPlane::start_with(|c| c.replacement_grace_s = 0).await);
    let identity = plane.enroll().await;
    let mut agent = support::FakeAgent::connect(&plane, &identity)
        .await
        .unwrap();
    let modems = vec![
        support::modem(FIRST, "Vodafone"),
        support::modem(SECOND, "Vodafone"),
    ];
    agent.send_inventory(modems).await;
    plane.wait_available(SECOND).await;
    let pinned = json!({"order_id": "o-moved", "duration_s": 86_400, "imei": FIRST});
    let created = support::flows::post_allocation(&plane, pinned);
    support::flows::provision_ok(&mut agent).await;
    let id = created.await.unwrap().json()["allocation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (p, path) = (plane.clone(), format!("/v1/allocations/{id}/replace"));
    let replacing = tokio::spawn(async move { p.post(&path, &p.market, json!({})).await });
    let moved = support::flows::provisioned(&mut agent).await;
    assert_eq!(moved.imei, SECOND);
    assert_eq!(replacing.await.unwrap().status, 200);
    assert_eq!(plane.allocation(&id).await["state"], "replaced");

    plane.set_expiry(&id, Span::seconds(-1));
    assert_eq!(release_ok(&mut agent).await, id);
    eventually("the expired replaced allocation is released", || async {
        plane.allocation(&id).await["state"] == "released"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "expired");
}
