//! End to end: IP rotation with the simulator, a real control plane and a real agent.
//! A manual rotation reports the simulator's old and new IPs (and `changed: false` when the
//! carrier hands back the same IP); a second rotation within the cooldown is 409
//! `rotation_cooldown` with `Retry-After` and never reaches the box; an allocation with
//! `rotate_every_s` has its modem rotated by the agent on its own, visible as the modem's
//! `last_rotation` and in the audit log, until its port is released.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{within, Stack, StackOptions};
use serde_json::{json, Value};
use std::time::Duration;

/// Long enough for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A stack whose plane accepts `rotate_every_s` from 1 s (the contract minimum is 60).
async fn stack(modems: usize) -> Stack {
    Stack::start(StackOptions {
        modems,
        configure_plane: |c| c.min_rotate_every_s = 1,
        ..StackOptions::default()
    })
    .await
    .unwrap()
}

async fn rotate(stack: &Stack, imei: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/modems/{imei}/rotate", stack.plane_url))
        .bearer_auth(&stack.market_key)
        .send()
        .await
        .unwrap()
}

async fn last_rotation(stack: &Stack, imei: &str) -> Value {
    let reply = stack
        .market
        .get(&format!("/v1/modems?imei={imei}"))
        .await
        .unwrap();
    reply.body["modems"][0]["last_rotation"].clone()
}

async fn rotation_audit(stack: &Stack) -> Vec<Value> {
    let reply = stack.admin.get("/v1/audit?limit=1000").await.unwrap();
    reply.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "ip_rotated")
        .cloned()
        .collect()
}

fn rotations(stack: &Stack, imei: &str) -> u32 {
    stack.sim.modem(imei).unwrap().rotations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rotations_report_the_boxs_ips_and_cool_down() {
    let stack = stack(2).await;
    let imeis = stack.sim.imeis();
    let (a, b) = (imeis[0].clone(), imeis[1].clone());

    let before = stack.sim.modem(&a).unwrap().ext_ip;
    let r = rotate(&stack, &a).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let after = stack.sim.modem(&a).unwrap();
    assert_eq!(after.rotations, 1);
    assert_eq!(body["imei"], a.as_str());
    assert_eq!(body["old_ip"], before.as_str());
    assert_eq!(body["new_ip"], after.ext_ip.as_str());
    assert_ne!(after.ext_ip, before);
    assert_eq!(body["changed"], true);
    assert!(body["rotated_at"].as_str().unwrap().ends_with('Z'));

    // The carrier hands back the same address: reported as such.
    stack.sim.arm_same_ip_rotation(&b).unwrap();
    let same_ip = stack.sim.modem(&b).unwrap().ext_ip;
    let r = rotate(&stack, &b).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(rotations(&stack, &b), 1, "the modem was reset");
    assert_eq!(
        (&body["old_ip"], &body["new_ip"], &body["changed"]),
        (&json!(same_ip), &json!(same_ip), &json!(false))
    );

    // Again within the cooldown (60 s by default): 409, and the box is not touched.
    let r = rotate(&stack, &a).await;
    assert_eq!(r.status(), 409);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rotation_cooldown");
    assert_eq!(rotations(&stack, &a), 1);

    let last = last_rotation(&stack, &a).await;
    assert_eq!(last["new_ip"], after.ext_ip.as_str());
    assert_eq!(last["automatic"], false);
    let audit = rotation_audit(&stack).await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit
        .iter()
        .all(|e| e["actor"] == "marketplace:harness-shop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rotates_on_schedule_until_the_port_is_released() {
    let stack = stack(2).await;
    let imeis = stack.sim.imeis();
    let (a, b) = (imeis[0].clone(), imeis[1].clone());
    let order = |order_id: &str, imei: &str| json!({"order_id": order_id, "duration_s": 3600, "imei": imei, "rotate_every_s": 1});
    let reply = stack
        .market
        .post("/v1/allocations", order("auto-1", &a))
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(reply.body["rotate_every_s"], 1);
    let allocation_id = reply.body["allocation_id"].as_str().unwrap().to_string();

    let last = within(PATIENCE, "an automatic rotation of the modem", || async {
        let last = last_rotation(&stack, &a).await;
        (last["automatic"] == true).then_some(last)
    })
    .await
    .unwrap();
    assert!(rotations(&stack, &a) >= 1);
    assert!(last["new_ip"].is_string(), "{last}");
    assert!(last["rotated_at"].as_str().unwrap().ends_with('Z'));
    let audit = rotation_audit(&stack).await;
    let auto = audit
        .iter()
        .find(|e| e["details"]["automatic"] == true)
        .expect("an automatic rotation in the audit log");
    assert_eq!(auto["actor"], format!("agent:{}", stack.agent_id));
    assert_eq!(auto["target"], format!("modem:{a}"));

    // The automatic rotation started the plane's cooldown for manual ones...
    let r = rotate(&stack, &a).await;
    assert_eq!(r.status(), 409);
    // ...but the plane's cooldown never holds the agent's schedule back.
    within(PATIENCE, "a second automatic rotation", || async {
        (rotations(&stack, &a) >= 2).then_some(())
    })
    .await
    .unwrap();

    // Released: the schedule ends with the port; another modem's schedule keeps running.
    let reply = stack
        .market
        .delete(&format!("/v1/allocations/{allocation_id}"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let at_release = rotations(&stack, &a);
    let reply = stack
        .market
        .post("/v1/allocations", order("auto-2", &b))
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    within(
        PATIENCE,
        "two automatic rotations of the other modem",
        || async { (rotations(&stack, &b) >= 2).then_some(()) },
    )
    .await
    .unwrap();
    assert!(
        rotations(&stack, &a) <= at_release + 1,
        "at most a rotation already under way when the port went"
    );
}
