//! End to end: automatic and on-demand replacement. A modem that stays offline longer than
//! the grace period has its allocation moved to another modem with the same login and
//! password (curl works through the new host/port, the old port is purged from the box);
//! a flapping modem is left alone; with no capacity the allocation stays and is reported
//! degraded; `POST /v1/allocations/{id}/replace` moves on demand; a move to another agent
//! releases the old port, and an agent away longer than its lost window has its
//! allocations moved too. Real simulator, control plane, agents and curl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{
    curl_via, enroll_agent, proxy_urls, within, Origin, Stack, StackOptions,
};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Generous: the agent polls every second, the plane waits the grace period, the machine
/// may be loaded.
const WAIT: Duration = Duration::from_secs(45);

async fn stack(modems: usize, configure_plane: fn(&mut farmhand_control::ServerConfig)) -> Stack {
    let stack = Stack::start(StackOptions {
        modems,
        configure_plane,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(modems).await.unwrap();
    stack
}

async fn allocate(stack: &Stack, order_id: &str, imei: Option<&str>) -> Value {
    let reply = stack
        .market
        .post(
            "/v1/allocations",
            json!({"order_id": order_id, "duration_s": 86_400, "imei": imei}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body
}

async fn allocation(stack: &Stack, id: &str) -> Value {
    let path = format!("/v1/allocations/{id}");
    stack.market.get_ok(&path).await.unwrap()
}

/// Waits until the allocation has `n` replacements and returns it.
async fn replaced(stack: &Stack, id: &str, n: usize) -> Value {
    within(WAIT, "the allocation to be replaced", || async {
        let a = allocation(stack, id).await;
        (a["replacements"].as_array()?.len() == n).then_some(a)
    })
    .await
    .unwrap()
}

/// Audit entries with `action` about allocation `id`.
async fn audited(stack: &Stack, action: &str, id: &str) -> Vec<Value> {
    let reply = stack.admin.get("/v1/audit?limit=1000").await.unwrap();
    let target = format!("allocation:{id}");
    reply.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action && e["target"] == target.as_str())
        .cloned()
        .collect()
}

async fn assert_curl_works(alloc: &Value, origin: &Origin) {
    let (http, socks) = proxy_urls(alloc).unwrap();
    for proxy in [http, socks] {
        let out = curl_via(&proxy, &origin.url()).await.unwrap();
        assert!(out.returned(origin.body()), "{proxy}: {out:?}");
    }
}

async fn wait_modem_online(stack: &Stack, imei: &str, online: bool) {
    within(WAIT, "the plane to see the modem's state", || async {
        let r = stack
            .market
            .get(&format!("/v1/modems?imei={imei}"))
            .await
            .ok()?;
        (r.body["modems"][0]["online"] == online).then_some(())
    })
    .await
    .unwrap();
}

fn same_buyer_credentials(before: &Value, after: &Value) {
    assert_eq!(after["allocation_id"], before["allocation_id"]);
    assert_eq!(after["login"], before["login"]);
    assert_eq!(after["password"], before["password"]);
    assert!(after["password"].as_str().is_some_and(|p| p.len() >= 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_modem_past_the_grace_period_is_replaced_with_the_same_credentials() {
    let stack = stack(2, |c| c.replacement_grace_s = 2).await;
    let origin = Origin::start("moved, same password").await.unwrap();
    let before = allocate(&stack, "order-offline", None).await;
    let (id, old_imei) = (
        before["allocation_id"].as_str().unwrap(),
        before["imei"].as_str().unwrap(),
    );
    assert_eq!(before["replacements"], json!([]));
    assert_curl_works(&before, &origin).await;

    stack.sim.set_online(old_imei, false).unwrap();
    let after = replaced(&stack, id, 1).await;
    assert_eq!(after["state"], "replaced");
    same_buyer_credentials(&before, &after);
    let new_imei = after["imei"].as_str().unwrap();
    assert_ne!(new_imei, old_imei);
    assert_eq!(after["agent_id"], stack.agent_id.as_str());
    assert_eq!(after["host"], "127.0.0.1");
    let entry = &after["replacements"][0];
    assert_eq!(entry["reason"], "modem_offline");
    assert_eq!(entry["from_imei"], old_imei);
    assert_eq!(entry["to_imei"], new_imei);
    assert_eq!(entry["from_agent_id"], stack.agent_id.as_str());
    assert_eq!(entry["to_agent_id"], stack.agent_id.as_str());
    assert!(entry["at"].as_str().is_some());

    // The buyer's same login and password work through the new host and ports.
    assert_curl_works(&after, &origin).await;
    // The old port is gone from the box: one port left, on the new modem.
    let ports = stack.sim.ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].imei, new_imei);
    assert_eq!(
        ports[0].http_port as u64,
        after["http_port"].as_u64().unwrap()
    );
    assert_eq!(audited(&stack, "allocation_replaced", id).await.len(), 1);
    let listed = stack
        .market
        .get("/v1/allocations?state=replaced")
        .await
        .unwrap();
    assert_eq!(listed.body["allocations"][0]["allocation_id"], id);
    let active = stack
        .market
        .get("/v1/allocations?state=active")
        .await
        .unwrap();
    assert_eq!(
        active.body["allocations"],
        json!([]),
        "the state filter is exact"
    );

    // `replaced` is live: renewable, and released like an active allocation.
    let renewed = stack
        .market
        .post(
            &format!("/v1/allocations/{id}/renew"),
            json!({"duration_s": 3600}),
        )
        .await
        .unwrap();
    assert_eq!(renewed.status, 200, "{:?}", renewed.body);
    assert_eq!(renewed.body["state"], "replaced");
    let released = stack
        .market
        .delete(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    assert_eq!(released.status, 200, "{:?}", released.body);
    assert_eq!(released.body["state"], "released");
    assert!(stack.sim.ports().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_modem_is_not_replaced_but_a_lasting_outage_is() {
    let stack = stack(2, |c| c.replacement_grace_s = 5).await;
    let before = allocate(&stack, "order-flap", None).await;
    let (id, imei) = (
        before["allocation_id"].as_str().unwrap(),
        before["imei"].as_str().unwrap(),
    );
    // Short outages, one after another, for well over twice the grace period in total:
    // each comes back before the grace period, so the clock starts again every time.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        stack.sim.set_online(imei, false).unwrap();
        wait_modem_online(&stack, imei, false).await;
        stack.sim.set_online(imei, true).unwrap();
        wait_modem_online(&stack, imei, true).await;
    }
    let still = allocation(&stack, id).await;
    assert_eq!(still["state"], "active", "{still:?}");
    assert_eq!(still["imei"], imei);
    assert_eq!(still["replacements"], json!([]));

    // The same modem staying down is replaced: the flaps were what kept it in place.
    stack.sim.set_online(imei, false).unwrap();
    let after = replaced(&stack, id, 1).await;
    assert_ne!(after["imei"], imei);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_capacity_the_allocation_stays_and_is_degraded_once() {
    let stack = stack(2, |c| c.replacement_grace_s = 2).await;
    let imeis = stack.sim.imeis();
    let first = allocate(&stack, "order-stuck", Some(&imeis[0])).await;
    let other = allocate(&stack, "order-other", Some(&imeis[1])).await;
    let id = first["allocation_id"].as_str().unwrap();

    stack.sim.set_online(&imeis[0], false).unwrap();
    within(WAIT, "allocation_degraded in the audit log", || async {
        (!audited(&stack, "allocation_degraded", id).await.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let stuck = allocation(&stack, id).await;
    assert_eq!(stuck["state"], "active", "it stays on its modem");
    assert_eq!(stuck["imei"], imeis[0].as_str());
    let degraded = audited(&stack, "allocation_degraded", id).await;
    assert_eq!(degraded[0]["details"]["reason"], "modem_offline");

    // Capacity frees up: the next retry moves it, and the outage was reported once.
    let other_id = other["allocation_id"].as_str().unwrap();
    let freed = stack
        .market
        .delete(&format!("/v1/allocations/{other_id}"))
        .await
        .unwrap();
    assert_eq!(freed.status, 200);
    let after = replaced(&stack, id, 1).await;
    assert_eq!(after["imei"], imeis[1].as_str());
    same_buyer_credentials(&first, &after);
    assert_eq!(audited(&stack, "allocation_degraded", id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_on_demand_moves_to_another_modem_or_says_why_not() {
    // Automatic replacement off: only the endpoint moves anything.
    let stack = stack(3, |c| c.replacement_grace_s = 0).await;
    let origin = Origin::start("replaced on request").await.unwrap();
    let imeis = stack.sim.imeis();
    let before = allocate(&stack, "order-demand", Some(&imeis[0])).await;
    let id = before["allocation_id"].as_str().unwrap();
    let path = format!("/v1/allocations/{id}/replace");

    let reply = stack.market.post(&path, json!({})).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let after = reply.body;
    assert_eq!(after["state"], "replaced");
    same_buyer_credentials(&before, &after);
    assert_ne!(after["imei"], imeis[0].as_str());
    assert_eq!(after["replacements"][0]["reason"], "requested");
    assert_curl_works(&after, &origin).await;
    // Same agent: its provision moved the port, the old one is already gone.
    let ports = stack.sim.ports();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert_eq!(ports[0].imei, after["imei"].as_str().unwrap());
    let audit = audited(&stack, "allocation_replaced", id).await;
    assert_eq!(audit[0]["actor"], "marketplace:harness-shop");

    // Fill every other modem: nothing can take it → 409 no_capacity, nothing changes.
    let current = after["imei"].as_str().unwrap().to_string();
    let mut n = 0;
    for imei in imeis.iter().filter(|i| **i != current) {
        n += 1;
        allocate(&stack, &format!("order-fill-{n}"), Some(imei)).await;
    }
    // An admin may not move a buyer (it would send the password to another agent).
    let by_admin = stack.admin.post(&path, json!({})).await.unwrap();
    assert_eq!(by_admin.status, 403, "{:?}", by_admin.body);
    let full = stack.market.post(&path, json!({})).await.unwrap();
    assert_eq!(full.status, 409, "{:?}", full.body);
    assert_eq!(full.error_code(), Some("no_capacity"));
    let unchanged = allocation(&stack, id).await;
    assert_eq!(unchanged["imei"], current.as_str());
    assert_eq!(unchanged["replacements"].as_array().unwrap().len(), 1);
    assert_curl_works(&unchanged, &origin).await;

    // Unknown → 404; no longer live → 409 invalid_state.
    let unknown = stack
        .market
        .post("/v1/allocations/al_nope/replace", json!({}))
        .await
        .unwrap();
    assert_eq!(unknown.status, 404);
    stack
        .market
        .delete(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    let ended = stack.market.post(&path, json!({})).await.unwrap();
    assert_eq!(ended.status, 409, "{:?}", ended.body);
    assert_eq!(ended.error_code(), Some("invalid_state"));
    let anonymous = stack
        .market
        .with_key(None)
        .post(&path, json!({}))
        .await
        .unwrap();
    assert_eq!(anonymous.status, 401);
}

/// Two agents on one simulated box, each seeing half of its modems (the other half is
/// excluded by its seller policy), so a move between them is a move between agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_another_agent_releases_the_old_port_and_a_lost_agent_is_replaced() {
    let imeis: Vec<String> = (1..=4).map(farmhand_testkit::sim::imei).collect();
    let mut options = StackOptions {
        modems: 4,
        configure_plane: |c| {
            c.replacement_grace_s = 2;
            c.agent_lost_window_s = 4;
        },
        ..StackOptions::default()
    };
    // The policy names the IMEIs before the box exists: keep them 15 digits on a field box.
    options.quirks.odd_imeis = false;
    options.agent_policy.excluded_imeis = imeis[2..].iter().cloned().collect();
    let stack = Stack::start(options).await.unwrap();
    let mut on_box = stack.sim.imeis();
    on_box.sort();
    assert_eq!(on_box, imeis, "the simulator seeds IMEIs as sim::imei says");
    let dir = tempfile::tempdir().unwrap();
    let (second_id, mut second) = enroll_agent(
        &stack.admin,
        &stack.plane_url,
        &stack.sim.base_url(),
        dir.path(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    second.policy.excluded_imeis = imeis[..2].iter().cloned().collect();
    let run_second = |config: farmhand_agent::AgentConfig| {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move { farmhand_agent::run(config, token).await });
        (stop, task)
    };
    let (stop_second, second_task) = run_second(second.clone());
    stack.wait_for_modems(4).await.unwrap();
    stack.wait_until_available(4).await.unwrap();
    let origin = Origin::start("across agents").await.unwrap();

    let before = allocate(&stack, "order-cross", Some(&imeis[0])).await;
    allocate(&stack, "order-blocker", Some(&imeis[1])).await;
    let id = before["allocation_id"].as_str().unwrap();

    // Modem 1 dies; the first agent has no free modem left: the second agent takes it.
    stack.sim.set_online(&imeis[0], false).unwrap();
    let moved = replaced(&stack, id, 1).await;
    same_buyer_credentials(&before, &moved);
    assert_eq!(moved["agent_id"], second_id.as_str());
    let entry = &moved["replacements"][0];
    assert_eq!(entry["from_agent_id"], stack.agent_id.as_str());
    assert_eq!(entry["to_agent_id"], second_id.as_str());
    assert_curl_works(&moved, &origin).await;
    // The first agent is connected: it was told to release the old port.
    within(WAIT, "the old port released by the first agent", || async {
        stack
            .sim
            .ports()
            .iter()
            .all(|p| p.imei != imeis[0])
            .then_some(())
    })
    .await
    .unwrap();

    // Modem 1 is back; the second agent goes away for longer than the lost window: its
    // allocation moves back to the first agent (the box keeps serving meanwhile).
    stack.sim.set_online(&imeis[0], true).unwrap();
    wait_modem_online(&stack, &imeis[0], true).await;
    stop_second.cancel();
    second_task.await.unwrap().unwrap();
    let back = replaced(&stack, id, 2).await;
    same_buyer_credentials(&before, &back);
    assert_eq!(back["replacements"][1]["reason"], "agent_offline");
    assert_eq!(back["agent_id"], stack.agent_id.as_str());
    assert_eq!(back["imei"], imeis[0].as_str());
    assert_curl_works(&back, &origin).await;
    let orphan = moved["imei"].as_str().unwrap().to_string();
    assert!(
        stack.sim.ports().iter().any(|p| p.imei == orphan),
        "the away agent's port is still on the box"
    );

    // When the second agent returns, its reconcile removes the port it no longer owns.
    let (stop_again, again) = run_second(second);
    within(WAIT, "the orphan removed on reconnect", || async {
        stack
            .sim
            .ports()
            .iter()
            .all(|p| p.imei != orphan)
            .then_some(())
    })
    .await
    .unwrap();
    assert_curl_works(&back, &origin).await;
    stop_again.cancel();
    again.await.unwrap().unwrap();
}
