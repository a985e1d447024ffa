//! Webhooks with the real `farmhand-control` binary, a real agent and the ProxySmart
//! simulator, delivering to a real HTTP receiver: an `allocation.active` still undelivered
//! when the plane is killed with `kill -9` is delivered after the restart (same event id,
//! valid signature); a simulator modem going offline and back becomes `modem.offline` /
//! `modem.online` through the agent's own change reports; a release is
//! `allocation.released`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_testkit::harness::{enroll_agent, start_receiver, verifies, within, PlaneProcess};
use farmhand_testkit::sim::{self, SimConfig};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undelivered_events_survive_kill_9_and_modem_transitions_arrive() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        modems: 1,
        ..SimConfig::default()
    };
    let sim = sim::start(listener, config, stop.child_token())
        .await
        .unwrap();
    let imei = sim.imeis()[0].clone();
    let mut plane = PlaneProcess::start(
        dir.path(),
        "heartbeat_interval_s = 1\n[webhooks]\nretry_initial_s = 1\nretry_max_s = 2",
    )
    .await
    .unwrap();
    let (url, inbox) = start_receiver(&stop).await.unwrap();
    let events = [
        "allocation.active",
        "allocation.released",
        "modem.offline",
        "modem.online",
    ];
    let reply = plane
        .admin
        .post("/v1/webhooks", json!({"url": url, "events": events}))
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let webhook_id = reply.str("/webhook_id").unwrap().to_string();
    let secret = reply.str("/secret").unwrap().to_string();

    let agent_dir = tempfile::tempdir().unwrap();
    let poll = Duration::from_secs(1);
    let (_, agent_config) = enroll_agent(
        &plane.admin,
        &plane.url,
        &sim.base_url(),
        agent_dir.path(),
        poll,
    )
    .await
    .unwrap();
    let token = stop.child_token();
    tokio::spawn(async move {
        let _ = farmhand_agent::run(agent_config, token).await;
    });
    let available = format!("/v1/modems?imei={imei}&available=true");
    let market = plane.market.clone();
    let modem_is_available = || async {
        let reply = market.get(&available).await.ok()?;
        (reply.body["modems"].as_array()?.len() == 1).then_some(())
    };
    within(PATIENCE, "the modem is available", modem_is_available)
        .await
        .unwrap();

    // The receiver is down when the allocation becomes active.
    inbox.status.store(503, Ordering::SeqCst);
    let order = json!({"order_id": "hook-order-1", "duration_s": 3600});
    let reply = plane.market.post("/v1/allocations", order).await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let allocation_id = reply.str("/allocation_id").unwrap().to_string();
    within(
        PATIENCE,
        "a refused attempt of allocation.active",
        || async { (!inbox.of("allocation.active").is_empty()).then_some(()) },
    )
    .await
    .unwrap();
    let event_id = inbox.of("allocation.active")[0].json()["id"].clone();

    plane.kill9();
    inbox.status.store(200, Ordering::SeqCst);
    plane.restart().await.unwrap();
    let delivered = within(
        PATIENCE,
        "allocation.active delivered after the restart",
        || async {
            inbox
                .of("allocation.active")
                .into_iter()
                .find(|r| r.answered == 200)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        delivered.json()["id"],
        event_id,
        "the same event, not a new one"
    );
    assert!(verifies(&delivered, &secret), "{delivered:?}");
    assert_eq!(
        delivered.json()["object"]["allocation_id"],
        json!(allocation_id)
    );
    let log = plane
        .admin
        .get(&format!("/v1/webhooks/{webhook_id}/deliveries"))
        .await
        .unwrap();
    let entry = log.body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_id"] == event_id)
        .cloned()
        .unwrap();
    assert_eq!(entry["state"], json!("delivered"));

    // The agent reconnects; its first inventory after the restart is no transition. (The
    // plane starts with an empty fleet view: the modem is listed once the agent reports.)
    let online = format!("/v1/modems?imei={imei}&online=true");
    within(PATIENCE, "the agent reports the modem again", || async {
        let reply = market.get(&online).await.ok()?;
        (reply.body["modems"].as_array()?.len() == 1).then_some(())
    })
    .await
    .unwrap();
    sim.set_online(&imei, false).unwrap();
    let offline = within(PATIENCE, "modem.offline", || async {
        inbox.of("modem.offline").into_iter().next()
    })
    .await
    .unwrap();
    assert!(verifies(&offline, &secret));
    assert_eq!(offline.json()["object"]["imei"], json!(imei));
    sim.set_online(&imei, true).unwrap();
    within(PATIENCE, "modem.online", || async {
        inbox.of("modem.online").into_iter().next()
    })
    .await
    .unwrap();
    assert_eq!(inbox.of("modem.offline").len(), 1);
    assert_eq!(inbox.of("modem.online").len(), 1);

    let reply = plane
        .market
        .delete(&format!("/v1/allocations/{allocation_id}"))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let released = within(PATIENCE, "allocation.released", || async {
        inbox.of("allocation.released").into_iter().next()
    })
    .await
    .unwrap();
    assert!(verifies(&released, &secret));
    assert_eq!(
        released.json()["object"]["release_reason"],
        json!("cancelled")
    );
}
