//! The expiry sweeper: an allocation is released when its `expires_at` passes
//! (`release_reason: expired`) — whether `active` or `replaced` — a renewal moves the
//! deadline the sweeper waits for, and an allocation of an offline agent goes `releasing`
//! and is finished when the agent comes back, also across a plane restart. Deadlines are
//! crossed on the plane's manual clock, to the second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::clock::Clock;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::flows::{allocate, release_ok, update_ok};
use support::{eventually, TestPlane};
use time::Duration as Span;
use time::OffsetDateTime;

const IMEI: &str = "350000000000018";

/// Moves the plane's manual clock to `at`, wakes the sweeper and waits until a scan has
/// looked at that time: what it found is then exact, no waiting for a non-event.
async fn advance_to(plane: &TestPlane, at: OffsetDateTime) {
    let by = Duration::try_from(at - plane.clock.now()).expect("the clock only moves forward");
    assert!(plane.clock.advance(by), "the plane runs on a manual clock");
    plane.expiry.notify_one();
    let at_ms = farmhand_control::ids::unix_ms(at);
    eventually("the sweeper has looked at the new time", || async {
        plane.sweeps.scanned_to_ms() >= at_ms
    })
    .await;
}

async fn expires_at(plane: &TestPlane, id: &str) -> OffsetDateTime {
    plane
        .store()
        .allocation(id)
        .await
        .unwrap()
        .unwrap()
        .expires_at
}

/// On a manual clock: an allocation lives exactly its `duration_s` — one second before its
/// `expires_at` the sweeper finds nothing, at it the allocation is released (`expired`) —
/// and a renewal moves the deadline the sweeper waits for.
#[tokio::test]
async fn an_allocation_is_released_at_its_expiry_and_renewal_moves_the_deadline() {
    let plane = Arc::new(TestPlane::start_on(Clock::manual(), |_| {}).await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-expiry").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    let first = expires_at(&plane, &id).await;

    // Renewed by a day before its deadline: the old deadline passes without a release.
    let (p, path) = (plane.clone(), format!("/v1/allocations/{id}/renew"));
    let renewing = tokio::spawn(async move {
        p.post(&path, &p.market, json!({"duration_s": 86_400}))
            .await
    });
    let command = agent.next_command().await;
    update_ok(&mut agent, command).await;
    assert_eq!(renewing.await.unwrap().status, 200);
    let renewed = expires_at(&plane, &id).await;
    assert_eq!(renewed - first, Span::days(1));
    advance_to(&plane, first + Span::seconds(1)).await;
    assert_eq!(plane.sweeps.found(), 0, "released at the old deadline");

    // One second before the new deadline: still nothing; at it: released.
    advance_to(&plane, renewed - Span::seconds(1)).await;
    assert_eq!(plane.sweeps.found(), 0, "released a second early");
    assert_eq!(plane.allocation(&id).await["state"], "active");
    advance_to(&plane, renewed).await;
    assert!(plane.sweeps.found() >= 1, "not found at its deadline");
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

    plane.set_expiry(&id, Span::seconds(-1)).await;
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
    let plane = Arc::new(TestPlane::start_on(Clock::manual(), |c| c.replacement_grace_s = 0).await);
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

    let deadline = expires_at(&plane, &id).await;
    advance_to(&plane, deadline - Span::seconds(1)).await;
    assert_eq!(plane.sweeps.found(), 0);
    advance_to(&plane, deadline).await;
    assert!(
        plane.sweeps.found() >= 1,
        "a replaced allocation expires too"
    );
    assert_eq!(release_ok(&mut agent).await, id);
    eventually("the expired replaced allocation is released", || async {
        plane.allocation(&id).await["state"] == "released"
    })
    .await;
    assert_eq!(plane.allocation(&id).await["release_reason"], "expired");
}
