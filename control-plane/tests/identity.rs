//! A modem is an (agent, IMEI) pair: an IMEI reported by two agents — a cloned box, or an
//! impostor — is flagged `duplicate_identity` on both copies, neither is sold or rotated
//! until an admin names the owner, the allocations on it stay and are reported, and the
//! impostor's reports never touch the owner's modem state (its offline clock here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::clock::Clock;
use farmhand_protocol::{
    AgentMessage, CommandBody, CommandOutput, Modem, ModemsChanged, Outcome, Provisioned, RotateIp,
    Rotated,
};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use support::flows::{order, post_allocation, provision_ok};
use support::receiver::Receiver;
use support::{eventually, modem, FakeAgent, TestPlane, PATIENCE};

const X: &str = "350000000000018";
const Y: &str = "350000000000026";

fn pinned(order_id: &str, imei: &str) -> Value {
    let mut body = order(order_id);
    body["imei"] = json!(imei);
    body
}

async fn copies(plane: &TestPlane, imei: &str) -> Vec<Value> {
    let r = plane
        .get(&format!("/v1/modems?imei={imei}"), &plane.admin)
        .await;
    r.json()["modems"].as_array().unwrap().clone()
}

fn offline(imei: &str) -> Modem {
    Modem {
        online: false,
        ..modem(imei, "Vodafone")
    }
}

#[tokio::test]
async fn a_duplicate_imei_is_flagged_not_sold_until_an_admin_names_the_owner() {
    let plane = Arc::new(TestPlane::start_with(|c| c.modem_capacity = 3).await);
    let ops = Receiver::start().await;
    let r = plane
        .post("/v1/webhooks", &plane.admin, json!({"url": ops.url, "events": ["modem.duplicate_identity", "modem.identity_resolved"]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut owner = plane.agent_with_modem(X).await;
    let pending = post_allocation(&plane, pinned("o-real", X));
    let allocation_id = provision_ok(&mut owner).await;
    assert_eq!(pending.await.unwrap().status, 201);

    let impostor_identity = plane.enroll().await;
    let mut impostor = FakeAgent::connect(&plane, &impostor_identity)
        .await
        .unwrap();
    impostor.send_inventory(vec![modem(X, "Vodafone")]).await;
    eventually("both copies are listed and flagged", || async {
        let copies = copies(&plane, X).await;
        copies.len() == 2
            && copies
                .iter()
                .all(|c| c["duplicate_identity"] == true && c["available"] == false)
    })
    .await;
    // Neither copy is sold or rotated.
    let r = plane
        .post("/v1/allocations", &plane.market, pinned("o-new", X))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_capacity"));
    let r = plane
        .post(&format!("/v1/modems/{X}/rotate"), &plane.market, json!({}))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "duplicate_identity"),
        "{}",
        r.body
    );
    // The existing allocation stays, and is reported.
    let a = plane
        .get(&format!("/v1/allocations/{allocation_id}"), &plane.market)
        .await
        .json();
    assert_eq!(
        (&a["state"], &a["agent_id"]),
        (&json!("active"), &json!(owner.agent_id))
    );
    let audit = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
    let flagged: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "modem_duplicate_identity")
        .collect();
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0]["details"]["allocations"], json!([allocation_id]));
    eventually("the event was delivered", || async {
        ops.of("modem.duplicate_identity").len() == 1
    })
    .await;
    let event = &ops.of("modem.duplicate_identity")[0].json()["object"];
    assert_eq!(
        (&event["imei"], &event["live_allocations"]),
        (&json!(X), &json!(1))
    );

    // Only an admin resolves, naming an agent that reports the IMEI.
    let resolve = format!("/v1/modems/{X}/resolve");
    let body = json!({"agent_id": owner.agent_id});
    assert_eq!(
        plane
            .post(&resolve, &plane.market, body.clone())
            .await
            .status,
        403
    );
    let r = plane
        .post(&resolve, &plane.admin, json!({"agent_id": "ag_nobody"}))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "invalid_request")
    );
    let r = plane
        .post(
            "/v1/modems/359999999999999/resolve",
            &plane.admin,
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = plane.post(&resolve, &plane.admin, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["owner"], json!(owner.agent_id));

    // The owner's copy is sold again; the impostor's never.
    let copies = copies(&plane, X).await;
    let of = |agent: &str| {
        copies
            .iter()
            .find(|c| c["agent_id"] == agent)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            &of(&owner.agent_id)["duplicate_identity"],
            &of(&owner.agent_id)["available"]
        ),
        (&json!(false), &json!(true))
    );
    assert_eq!(of(&impostor.agent_id)["duplicate_identity"], true);
    assert_eq!(of(&impostor.agent_id)["available"], false);
    let pending = post_allocation(&plane, pinned("o-after", X));
    provision_ok(&mut owner).await;
    let r = pending.await.unwrap();
    assert_eq!(
        (r.status, &r.json()["agent_id"]),
        (201, &json!(owner.agent_id))
    );
    // Rotations go to the owner.
    let rotating = {
        let p = plane.clone();
        tokio::spawn(async move {
            p.post(&format!("/v1/modems/{X}/rotate"), &p.market, json!({}))
                .await
        })
    };
    let command = owner.next_command().await;
    assert!(matches!(&command.body, CommandBody::RotateIp(RotateIp { imei }) if imei == X));
    let output = CommandOutput::RotateIp(Rotated {
        imei: X.into(),
        old_ip: Some("198.51.100.11".into()),
        new_ip: Some("198.51.100.12".into()),
        changed: true,
    });
    owner.answer(&command.id, Outcome::Ok { output }).await;
    assert_eq!(rotating.await.unwrap().status, 200);
    eventually("the resolution was delivered", || async {
        ops.of("modem.identity_resolved").len() == 1
    })
    .await;
    drop(impostor);
}

/// Waits until a scan of the outage sweeper has looked at the plane's present (manual)
/// time; returns how many moves scans have started so far.
async fn outages_scanned(plane: &TestPlane) -> u64 {
    let now = farmhand_control::ids::unix_ms(plane.clock.now());
    plane.outage_scan.notify_one();
    eventually("the outage sweeper has looked at the present", || async {
        plane.outages.scanned_to_ms() >= now
    })
    .await;
    plane.outages.found()
}

#[tokio::test]
async fn an_impostors_reports_do_not_start_the_owners_offline_clock() {
    const GRACE_S: u64 = 300;
    let clock = Clock::manual();
    let plane = Arc::new(
        TestPlane::start_on(clock.clone(), |c| {
            c.modem_capacity = 2;
            c.replacement_grace_s = GRACE_S;
        })
        .await,
    );
    let owner_identity = plane.enroll().await;
    let mut owner = FakeAgent::connect(&plane, &owner_identity).await.unwrap();
    owner
        .send_inventory(vec![modem(X, "Vodafone"), modem(Y, "Vodafone")])
        .await;
    plane.wait_available(X).await;
    let pending = post_allocation(&plane, pinned("o-real", X));
    let allocation_id = provision_ok(&mut owner).await;
    assert_eq!(pending.await.unwrap().status, 201);

    // The impostor claims X and says it is offline, and keeps saying so past the grace
    // period (on the plane's clock). Were the offline clock the IMEI's, it would have been
    // running all along.
    let impostor_identity = plane.enroll().await;
    let mut impostor = FakeAgent::connect(&plane, &impostor_identity)
        .await
        .unwrap();
    impostor.send_inventory(vec![offline(X)]).await;
    clock.advance(Duration::from_secs(GRACE_S + 1));
    impostor
        .send(&AgentMessage::ModemsChanged(ModemsChanged {
            proxysmart_reachable: true,
            changed: vec![offline(X)],
            removed: vec![],
        }))
        .await;
    assert_eq!(outages_scanned(&plane).await, 0);

    // Now the owner's modem really goes offline: its allocation is moved a full grace
    // period later — not a second before — not at once.
    owner
        .send(&AgentMessage::ModemsChanged(ModemsChanged {
            proxysmart_reachable: true,
            changed: vec![offline(X)],
            removed: vec![],
        }))
        .await;
    eventually("the owner's modem is seen offline", || async {
        let modems = plane
            .get(&format!("/v1/modems?imei={X}"), &plane.market)
            .await
            .json();
        modems["modems"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["agent_id"] == owner_identity.agent_id && m["online"] == false)
        })
    })
    .await;
    assert_eq!(
        outages_scanned(&plane).await,
        0,
        "moved at once: the impostor's report started the clock"
    );
    clock.advance(Duration::from_secs(GRACE_S - 1));
    assert_eq!(outages_scanned(&plane).await, 0, "moved a second early");
    clock.advance(Duration::from_secs(1));
    let command = tokio::time::timeout(PATIENCE, owner.next_command())
        .await
        .expect("a replacement");
    let CommandBody::Provision(p) = &command.body else {
        panic!("expected the replacement's provision, got {command:?}")
    };
    assert_eq!(
        (p.allocation_id.as_str(), p.imei.as_str()),
        (allocation_id.as_str(), Y)
    );
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: p.allocation_id.clone(),
        imei: Y.into(),
        port_id: "port2".into(),
        http_port: 8002,
        socks_port: 5002,
    });
    owner.answer(&command.id, Outcome::Ok { output }).await;
    eventually(
        "the allocation moved to the owner's other modem",
        || async {
            let a = plane
                .get(&format!("/v1/allocations/{allocation_id}"), &plane.market)
                .await
                .json();
            a["imei"] == Y
        },
    )
    .await;
}
