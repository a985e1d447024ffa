//! End to end: the seller's box reports its own health (load, memory, the free space on its
//! volumes — this machine's, measured by the real agent), the plane shows it per agent and
//! in metrics, and a box past the plane's disk limit gets no new allocation until it
//! recovers — here by filling and then emptying its real state volume — with one webhook
//! event per crossing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_agent::boxside::health::Probe;
use farmhand_testkit::harness::{start_receiver, within, Stack, StackOptions};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);
const MB: u64 = 1_000_000;

/// The plane's `[health] min_disk_free_mb` for the next stack (a `fn` cannot capture).
static DISK_LIMIT_MB: AtomicU64 = AtomicU64::new(0);

async fn agent_view(stack: &Stack) -> Value {
    let reply = stack
        .admin
        .get(&format!("/v1/agents/{}", stack.agent_id))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

async fn order(stack: &Stack, id: &str) -> u16 {
    let body = json!({"order_id": id, "duration_s": 3600});
    stack
        .market
        .post("/v1/allocations", body)
        .await
        .unwrap()
        .status
        .as_u16()
}

/// Free bytes on the volume of `dir`, as the agent measures it.
fn free_bytes(dir: PathBuf) -> u64 {
    let health = Probe::new(dir.clone(), dir).measure();
    health.disks[0].available_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_reports_its_health_and_a_box_short_of_disk_gets_no_new_orders() {
    // The limit sits 400 MB below what the volume has free now: filling 1 GB crosses it.
    let free_now = free_bytes(std::env::temp_dir());
    DISK_LIMIT_MB.store((free_now / MB).saturating_sub(400), Ordering::SeqCst);
    let stack = Stack::start(StackOptions {
        modems: 2,
        configure_plane: |c| {
            c.health.min_disk_free_mb = DISK_LIMIT_MB.load(Ordering::SeqCst);
            c.health.min_memory_available_mb = 1;
        },
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.wait_until_available(2).await.unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (url, inbox) = start_receiver(&stop).await.unwrap();
    let hook = stack
        .admin
        .post(
            "/v1/webhooks",
            json!({"url": url, "events": ["agent.health_limited", "agent.health_recovered"]}),
        )
        .await
        .unwrap();
    assert_eq!(hook.status, 201, "{:?}", hook.body);

    // Reported end to end, with plausible figures of this very machine.
    let view = within(PATIENCE, "the box's health", || async {
        let view = agent_view(&stack).await;
        (!view["health"].is_null()).then_some(view)
    })
    .await
    .unwrap();
    let health = &view["health"];
    assert!(
        health["memory_total_bytes"].as_u64().unwrap() > 64 * MB,
        "{health}"
    );
    assert!(health["cpus"].as_u64().unwrap() >= 1);
    assert!(health["uptime_s"].as_u64().unwrap() > 0);
    let disks = health["disks"].as_array().unwrap();
    assert_eq!(
        disks.len(),
        2,
        "the state dir's and ProxySmart's volumes: {health}"
    );
    let state_free = disks[0]["available_bytes"].as_u64().unwrap();
    assert!(
        state_free.abs_diff(free_now) < 300 * MB,
        "{state_free} vs {free_now}"
    );
    assert_eq!(view["held_back"], json!([]));
    assert_eq!(order(&stack, "healthy-1").await, 201);

    // Fill the state volume past the limit: no new orders, existing ones stay, one event.
    let filler = stack.agent_dir.path().join("filler");
    {
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; MB as usize];
        for _ in 0..1000 {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
    }
    let held = within(PATIENCE, "the box held back", || async {
        let view = agent_view(&stack).await;
        (view["held_back"].as_array().is_some_and(|h| !h.is_empty())).then_some(view)
    })
    .await
    .unwrap();
    assert_eq!(held["held_back"][0]["resource"], "disk", "{held}");
    assert_eq!(
        order(&stack, "short-1").await,
        409,
        "no capacity on a box short of disk"
    );
    let active = stack
        .market
        .get("/v1/allocations?state=active")
        .await
        .unwrap();
    assert_eq!(
        active.body["allocations"].as_array().unwrap().len(),
        1,
        "kept"
    );
    let text = stack.admin.metrics().await.unwrap();
    assert!(
        text.contains("farmhand_agents_held_back{resource=\"disk\"} 1"),
        "{text}"
    );

    // Room again: orders come back, and each crossing was one event.
    std::fs::remove_file(&filler).unwrap();
    within(PATIENCE, "the box back", || async {
        let view = agent_view(&stack).await;
        (view["held_back"] == json!([])).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(order(&stack, "healthy-2").await, 201);
    within(PATIENCE, "both events", || async {
        (inbox.of("agent.health_recovered").len() == 1).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(inbox.of("agent.health_limited").len(), 1);
}
