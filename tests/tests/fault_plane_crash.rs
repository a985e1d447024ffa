//! The control plane as a real process, killed with `kill -9`: in the middle of a burst of
//! 50 allocations (every allocation it confirmed survives, works and has exactly one port
//! on the box after reconciliation, and every state change that reached the store reaches
//! the marketplace's webhook receiver), and under 200 connected agents (all reconnect after
//! the restart, none refused for load); and stopped and killed while probing sold ports
//! (the probe record and the quality counts are found again). Agents and the simulator run
//! in-process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_support;

use farmhand_testkit::harness::{enroll_agent, start_receiver, within, Origin, PlaneProcess};
use farmhand_testkit::sim::{self, SimConfig, SimHandle};
use fault_support::{proxy_works, settles_consistently};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn start_sim(modems: usize, stop: &CancellationToken) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        modems,
        rotation_delay: Duration::from_millis(300),
        ..SimConfig::default()
    };
    sim::start(listener, config, stop.child_token())
        .await
        .unwrap()
}

/// Starts an enrolled in-process agent for `plane` in a fresh directory.
async fn start_agent(
    plane: &PlaneProcess,
    sim: &SimHandle,
    poll: Duration,
    stop: &CancellationToken,
) -> (
    tempfile::TempDir,
    std::sync::Arc<farmhand_agent::AgentStatus>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = enroll_agent(&plane.admin, &plane.url, &sim.base_url(), dir.path(), poll)
        .await
        .unwrap();
    let status = std::sync::Arc::new(farmhand_agent::AgentStatus::new());
    let (token, s) = (stop.child_token(), status.clone());
    tokio::spawn(async move {
        let _ = farmhand_agent::run_with_status(config, token, s).await;
    });
    (dir, status)
}

async fn connected_agents(plane: &PlaneProcess) -> usize {
    let Ok(reply) = plane.admin.get("/v1/agents").await else {
        return 0;
    };
    reply.body["agents"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["connected"] == true).count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_keeps_every_confirmed_allocation_and_no_duplicates() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(10, &stop).await;
    let mut plane =
        PlaneProcess::start(dir.path(), "heartbeat_interval_s = 1\nmodem_capacity = 10")
            .await
            .unwrap();
    let (hook, inbox) = start_receiver(&stop).await.unwrap();
    let events = ["allocation.active", "allocation.failed"];
    let reply = plane
        .admin
        .post("/v1/webhooks", json!({"url": hook, "events": events}))
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let (_agent_dir, _) = start_agent(&plane, &sim, Duration::from_secs(1), &stop).await;
    within(Duration::from_secs(20), "10 available modems", || async {
        let reply = plane.market.get("/v1/modems?available=true").await.ok()?;
        (reply.body["modems"].as_array()?.len() == 10).then_some(())
    })
    .await
    .unwrap();

    let orders: Vec<String> = (0..50).map(|i| format!("burst-{i}")).collect();
    let requests: Vec<_> = orders
        .iter()
        .map(|order| {
            let market = plane.market.clone();
            let body = json!({"order_id": order, "duration_s": 86_400});
            tokio::spawn(async move { market.post("/v1/allocations", body).await })
        })
        .collect();
    within(
        Duration::from_secs(30),
        "the burst to be under way",
        || async { (sim.api_calls("/apix/apply_port") >= 25).then_some(()) },
    )
    .await
    .unwrap();
    plane.kill9();
    let mut confirmed = HashMap::new();
    for request in requests {
        if let Ok(reply) = request.await.unwrap() {
            if reply.status == 201 {
                let id = reply.body["allocation_id"].as_str().unwrap().to_owned();
                confirmed.insert(id, reply.body);
            }
        }
    }
    println!(
        "{} of 50 allocations confirmed before the kill",
        confirmed.len()
    );
    assert!(
        !confirmed.is_empty(),
        "the kill came after some confirmations"
    );

    plane.restart().await.unwrap();
    within(
        Duration::from_secs(30),
        "the agent to reconnect",
        || async { (connected_agents(&plane).await == 1).then_some(()) },
    )
    .await
    .unwrap();
    let origin = Origin::start("survived a kill -9").await.unwrap();
    for (id, before) in &confirmed {
        let (alloc, _) = settles_consistently(&plane.market, &sim, id, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(
            alloc["state"], "active",
            "a confirmed allocation stays active: {alloc}"
        );
        assert_eq!(alloc["http_port"], before["http_port"]);
        assert!(
            proxy_works(before, &origin).await,
            "{id} works after the restart"
        );
    }
    // Every allocation the plane knows converges; the box has one port per active one.
    for order in &orders {
        let reply = plane
            .market
            .get(&format!("/v1/allocations?order_id={order}"))
            .await
            .unwrap();
        for alloc in reply.body["allocations"].as_array().unwrap() {
            let id = alloc["allocation_id"].as_str().unwrap();
            settles_consistently(&plane.market, &sim, id, Duration::from_secs(20))
                .await
                .unwrap();
        }
    }
    // Every state change that reached the store was announced, whatever the kill cut.
    let mut stored: Vec<(String, &str)> = Vec::new();
    for order in &orders {
        let reply = plane
            .market
            .get(&format!("/v1/allocations?order_id={order}"))
            .await
            .unwrap();
        for alloc in reply.body["allocations"].as_array().unwrap() {
            let id = alloc["allocation_id"].as_str().unwrap().to_owned();
            match alloc["state"].as_str() {
                Some("active") => stored.push((id, "allocation.active")),
                Some("failed") => stored.push((id, "allocation.failed")),
                _ => {}
            }
        }
    }
    within(
        Duration::from_secs(30),
        "every stored change announced",
        || async {
            stored
                .iter()
                .all(|(id, kind)| {
                    inbox
                        .of(kind)
                        .iter()
                        .any(|r| r.json()["object"]["allocation_id"] == id.as_str())
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    let mut per_allocation: HashMap<String, usize> = HashMap::new();
    for port in sim.ports() {
        *per_allocation.entry(port.port_name).or_default() += 1;
    }
    assert!(
        per_allocation.values().all(|n| *n == 1),
        "{per_allocation:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_agents_reconnect_after_a_restart_without_refusals() {
    const AGENTS: usize = 200;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(1, &stop).await;
    let mut plane = PlaneProcess::start(dir.path(), "").await.unwrap();
    let started = Instant::now();
    let mut agents = Vec::new();
    for _ in 0..AGENTS {
        agents.push(start_agent(&plane, &sim, Duration::from_secs(30), &stop).await);
    }
    within(Duration::from_secs(40), "all agents connected", || async {
        (connected_agents(&plane).await == AGENTS).then_some(())
    })
    .await
    .unwrap();
    println!(
        "{AGENTS} agents enrolled and connected in {:?}",
        started.elapsed()
    );

    plane.kill9();
    plane.restart().await.unwrap();
    let restarted = Instant::now();
    within(
        Duration::from_secs(45),
        "all agents reconnected",
        || async { (connected_agents(&plane).await == AGENTS).then_some(()) },
    )
    .await
    .unwrap();
    println!(
        "{AGENTS} agents reconnected {:?} after the restart",
        restarted.elapsed()
    );
    let log = plane.output();
    assert!(
        !log.contains("retry_later"),
        "an agent was refused for load:\n{log}"
    );
    assert!(agents.iter().all(|(_, status)| status.connected()));
}

/// What the probes found is kept by the store: after a `kill -9` the allocation's probe
/// record is there (its first result unchanged) and judging carries on from it; after a
/// clean stop not one quality count is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_records_and_quality_counts_outlive_the_plane_process() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(1, &stop).await;
    let imei = sim.imeis()[0].clone();
    // A loopback modem IP: the echo sees the modem's address, as from a real box.
    sim.set_ext_ip(&imei, "127.0.9.1").unwrap();
    let probes = "heartbeat_interval_s = 1\n[probe]\nenabled = true\n\
                  listen = \"127.0.0.1:0\"\ninterval_s = 2\ntimeout_s = 2";
    let mut plane = PlaneProcess::start(dir.path(), probes).await.unwrap();
    let (_agent_dir, _status) = start_agent(&plane, &sim, Duration::from_secs(1), &stop).await;
    let offered = within(Duration::from_secs(30), "the modem offered", || async {
        let reply = plane.market.get("/v1/modems?available=true").await.ok()?;
        (reply.body["modems"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let modems = plane.admin.get("/v1/modems").await.unwrap();
    assert!(offered.is_ok(), "{:?}\n{}", modems.body, plane.output());
    let body = json!({"order_id": "probed", "duration_s": 3600});
    let sold = within(Duration::from_secs(30), "the order is sold", || async {
        let reply = plane
            .market
            .post("/v1/allocations", body.clone())
            .await
            .ok()?;
        (reply.status == 201).then_some(reply.body)
    })
    .await
    .unwrap();
    let (id, agent) = (
        sold["allocation_id"].as_str().unwrap().to_owned(),
        sold["agent_id"].as_str().unwrap().to_owned(),
    );
    let probes_of = |plane: &PlaneProcess| {
        let (market, id) = (plane.market.clone(), id.clone());
        async move {
            let r = market
                .get(&format!("/v1/allocations/{id}/probes"))
                .await
                .ok()?;
            (r.status == 200).then_some(r.body)
        }
    };
    let quality_probes = |plane: &PlaneProcess| {
        let (market, agent) = (plane.market.clone(), agent.clone());
        async move {
            let r = market
                .get(&format!("/v1/agents/{agent}/quality"))
                .await
                .ok()?;
            r.body["1h"]["probes"].as_u64()
        }
    };
    let first_result = |view: &serde_json::Value| view["results"].as_array()?.last().cloned();

    let before = within(Duration::from_secs(60), "three probes", || async {
        let view = probes_of(&plane).await?;
        (view["summary"]["probes"].as_u64()? >= 3).then_some(view)
    })
    .await
    .unwrap();
    assert_eq!(before["health"], "ok", "{before}");
    plane.kill9();
    plane.restart().await.unwrap();
    let after = probes_of(&plane).await.expect("the probes after a restart");
    assert_eq!(first_result(&after), first_result(&before), "{after}");
    assert!(after["summary"]["probes"].as_u64().unwrap() >= 2, "{after}");
    // Judging carries on from the kept record.
    within(
        Duration::from_secs(60),
        "probes after the restart",
        || async {
            let view = probes_of(&plane).await?;
            let n = view["summary"]["probes"].as_u64()?;
            (n > before["summary"]["probes"].as_u64()? && view["health"] == "ok").then_some(())
        },
    )
    .await
    .unwrap();

    // Enough counts that the moment after a restart could not make them up again.
    let counted = within(Duration::from_secs(60), "six probes counted", || async {
        quality_probes(&plane).await.filter(|n| *n >= 6)
    })
    .await
    .unwrap();
    let status = plane.stop().await.unwrap();
    assert!(status.success(), "{status:?}\n{}", plane.output());
    plane.restart().await.unwrap();
    let kept = quality_probes(&plane).await.unwrap();
    assert!(
        kept >= counted,
        "{kept} quality counts after the stop, {counted} before"
    );
}
