//! End to end: the simulator's modems appear in `GET /v1/modems`, and changes on the box
//! (new IP, modem offline, rotation) reach the control plane within the poll interval + 1 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{within, Stack, StackOptions};
use serde_json::Value;
use std::time::Duration;

/// Poll interval (1 s in the harness) plus one second, plus slack for a loaded CI box.
const CHANGE_VISIBLE_WITHIN: Duration = Duration::from_secs(2 + 3);

fn modem<'a>(modems: &'a [Value], imei: &str) -> Option<&'a Value> {
    modems.iter().find(|m| m["imei"] == imei)
}

async fn modems(stack: &Stack) -> Vec<Value> {
    let reply = stack.market.get("/v1/modems").await.unwrap();
    assert_eq!(reply.status, 200);
    reply.body["modems"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_matches_the_box_and_follows_its_changes() {
    let stack = Stack::start(StackOptions {
        modems: 3,
        ..StackOptions::default()
    })
    .await
    .unwrap();

    let listed = modems(&stack).await;
    assert_eq!(
        listed.len(),
        3,
        "phantom and IMEI-less entries must be skipped: {listed:?}"
    );
    for sim_modem in stack.sim.modems() {
        let m = modem(&listed, &sim_modem.imei).expect("every simulated modem is listed");
        assert_eq!(m["carrier"], sim_modem.carrier.as_str());
        assert_eq!(m["ext_ip"], sim_modem.ext_ip.as_str());
        assert_eq!(m["online"], true);
        assert_eq!(m["agent_id"], stack.agent_id.as_str());
        assert_eq!(m["country"], "DE");
        assert_eq!(m["city"], "Berlin");
        assert_eq!(m["model"], sim_modem.model.as_str());
        assert_eq!(m["capacity"], 1);
        assert_eq!(m["active_allocations"], 0);
    }

    // A new external IP shows up.
    let imei = stack.sim.imeis()[0].clone();
    stack.sim.set_ext_ip(&imei, "203.0.113.250").unwrap();
    within(
        CHANGE_VISIBLE_WITHIN,
        "the new IP in GET /v1/modems",
        || async {
            let listed = modems(&stack).await;
            (modem(&listed, &imei)?["ext_ip"] == "203.0.113.250").then_some(())
        },
    )
    .await
    .unwrap();

    // A modem going offline shows up, and it is no longer available for allocations.
    let other = stack.sim.imeis()[1].clone();
    stack.sim.set_online(&other, false).unwrap();
    within(
        CHANGE_VISIBLE_WITHIN,
        "the modem offline in GET /v1/modems",
        || async {
            let listed = modems(&stack).await;
            (modem(&listed, &other)?["online"] == false).then_some(())
        },
    )
    .await
    .unwrap();
    let offline = stack.market.get("/v1/modems?online=false").await.unwrap();
    let offline = offline.body["modems"].as_array().unwrap();
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0]["imei"], other.as_str());
    let available = stack.market.get("/v1/modems?available=true").await.unwrap();
    assert!(available.body["modems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["imei"] != other.as_str()));

    // Signal loss ("Unknown" carrier) keeps the last known carrier instead of flapping.
    let vodafone = stack
        .sim
        .modems()
        .iter()
        .filter(|m| m.carrier == "Vodafone")
        .count();
    let carrier = stack.sim.modem(&imei).unwrap().carrier;
    stack.sim.set_carrier(&imei, "Unknown").unwrap();
    stack.sim.set_ext_ip(&imei, "203.0.113.251").unwrap();
    within(CHANGE_VISIBLE_WITHIN, "the next poll", || async {
        let listed = modems(&stack).await;
        (modem(&listed, &imei)?["ext_ip"] == "203.0.113.251").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        modem(&modems(&stack).await, &imei).unwrap()["carrier"],
        carrier.as_str()
    );

    // Filters: carrier is case-insensitive (counted before the signal loss), country matches.
    let by_carrier = stack
        .market
        .get("/v1/modems?carrier=vOdAfOnE")
        .await
        .unwrap();
    assert_eq!(
        by_carrier.body["modems"].as_array().unwrap().len(),
        vodafone
    );
    let by_country = stack.market.get("/v1/modems?country=FR").await.unwrap();
    assert_eq!(by_country.body["modems"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reports_the_new_ip_and_inventory_follows() {
    let stack = Stack::start(StackOptions {
        modems: 2,
        // Rotates one modem twice in a row (the cooldown is e2e_lifecycle_rotation's).
        configure_plane: |c| c.rotation_cooldown_s = 0,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();
    let imei = stack.sim.imeis()[0].clone();
    let old_ip = stack.sim.modem(&imei).unwrap().ext_ip;

    let reply = stack
        .market
        .post(&format!("/v1/modems/{imei}/rotate"), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["imei"], imei.as_str());
    assert_eq!(reply.body["old_ip"], old_ip.as_str());
    let new_ip = reply.body["new_ip"].as_str().unwrap().to_owned();
    assert_ne!(new_ip, old_ip);
    assert_ne!(new_ip, "IP_RESET");
    assert_eq!(reply.body["changed"], true);
    assert!(reply.body["rotated_at"].is_string());
    assert_eq!(
        stack.sim.modem(&imei).unwrap().ext_ip,
        new_ip,
        "the box has the reported IP"
    );

    within(
        CHANGE_VISIBLE_WITHIN,
        "the rotated IP in GET /v1/modems",
        || async {
            let listed = modems(&stack).await;
            (modem(&listed, &imei)?["ext_ip"] == new_ip.as_str()).then_some(())
        },
    )
    .await
    .unwrap();

    // The carrier may hand back the same IP: reported as such, never hidden.
    stack.sim.arm_same_ip_rotation(&imei).unwrap();
    let same = stack
        .market
        .post(&format!("/v1/modems/{imei}/rotate"), serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(same.status, 200, "{:?}", same.body);
    assert_eq!(same.body["new_ip"], new_ip.as_str());
    assert_eq!(same.body["changed"], false);

    // Unknown IMEI → 404.
    let unknown = stack
        .market
        .post("/v1/modems/350000000000999/rotate", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
}
