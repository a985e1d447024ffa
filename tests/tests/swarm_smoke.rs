//! CI smoke test for `farmhand-swarm`'s engine against an in-process control plane: 200
//! simulated agents × 2 modems all connect and are listed, 1,000 allocations (each
//! released) all succeed, and churn (connections dropped and re-established) brings every
//! agent back. It asserts correctness only, never speed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_control::{ControlPlane, Role, ServerConfig};
use farmhand_testkit::harness::Api;
use farmhand_testkit::swarm::{churn, drive, enroll_all, wait_modems, Fleet, LoadPlan, Swarm};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const AGENTS: usize = 200;
const MODEMS: usize = 2;
const ALLOCATIONS: usize = 1_000;

struct Plane {
    url: String,
    admin: Api,
    market: Api,
    stop: CancellationToken,
    _dir: TempDir,
}

async fn plane() -> Plane {
    farmhand_agent::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    let plane = ControlPlane::open(config).await.unwrap();
    let admin_key = plane.create_key(Role::Admin, "swarm-admin").await.unwrap();
    let market_key = plane
        .create_key(Role::Marketplace, "swarm-shop")
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = stop.clone();
    tokio::spawn(async move { plane.serve(listener, serving).await });
    Plane {
        admin: Api::new(&url, Some(&admin_key)),
        market: Api::new(&url, Some(&market_key)),
        url,
        stop,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_agents_connect_and_a_thousand_allocations_succeed() {
    let plane = plane().await;
    let ids = enroll_all(&plane.admin, AGENTS, 16).await.unwrap();
    let fleet = Arc::new(Fleet::new(
        std::slice::from_ref(&plane.url),
        MODEMS,
        35,
        Duration::ZERO,
    ));
    let swarm = Swarm::start(ids, fleet.clone());
    let limit = Duration::from_secs(60);
    swarm.wait_online(limit, |n| n == AGENTS).await.unwrap();
    wait_modems(
        &plane.admin,
        AGENTS * MODEMS,
        Duration::from_millis(200),
        limit,
    )
    .await
    .unwrap();
    let agents = plane.admin.get("/v1/agents").await.unwrap();
    let listed = agents.body["agents"].as_array().unwrap();
    assert_eq!(listed.len(), AGENTS);
    assert!(listed.iter().all(|a| a["connected"] == true), "{listed:?}");

    let plan = LoadPlan {
        allocations: ALLOCATIONS,
        rate: None,
        // Below the 400 modems (capacity 1 each), so capacity never runs out.
        concurrency: 16,
        order_prefix: "smoke".into(),
    };
    let report = drive(std::slice::from_ref(&plane.market), &plan).await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.succeeded, ALLOCATIONS);
    assert_eq!(report.allocate.count, ALLOCATIONS);
    assert_eq!(report.release.count, ALLOCATIONS);
    let active = plane
        .market
        .get("/v1/allocations?state=active")
        .await
        .unwrap();
    assert_eq!(active.body["allocations"].as_array().unwrap().len(), 0);
    assert_eq!(
        fleet.online(),
        AGENTS,
        "no agent lost its session under load"
    );
    swarm.shutdown().await;
    plane.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churned_agents_all_come_back_and_are_counted() {
    const CHURNED: usize = 40;
    let plane = plane().await;
    let ids = enroll_all(&plane.admin, CHURNED, 8).await.unwrap();
    let fleet = Arc::new(Fleet::new(
        std::slice::from_ref(&plane.url),
        1,
        37,
        Duration::ZERO,
    ));
    let swarm = Swarm::start(ids, fleet.clone());
    let limit = Duration::from_secs(60);
    swarm.wait_online(limit, |n| n == CHURNED).await.unwrap();
    // 40 drops a second for 2 s: each agent is dropped about twice.
    let report = churn(&swarm, 40.0, Duration::from_secs(2), limit)
        .await
        .unwrap();
    assert!(report.dropped >= 20, "{report:?}");
    assert_eq!(
        report.reconnected, report.dropped,
        "every dropped agent came back and was timed: {report:?}"
    );
    assert!(report.min_online < CHURNED, "drops were seen: {report:?}");
    assert_eq!(fleet.online(), CHURNED);
    // The plane agrees: every agent connected again.
    all_connected(&plane.admin, CHURNED).await;
    swarm.shutdown().await;
    plane.stop.cancel();
}

/// Polls `GET /v1/agents` until all `n` agents show connected.
async fn all_connected(admin: &Api, n: usize) {
    farmhand_testkit::harness::within(Duration::from_secs(30), "all agents connected", || async {
        let agents = admin.get("/v1/agents").await.ok()?;
        let list = agents.body["agents"].as_array()?;
        (list.len() == n && list.iter().all(|a| a["connected"] == true)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_admin_key_fails_enrollment_with_the_status() {
    let plane = plane().await;
    let wrong = plane.admin.with_key(Some("not-a-key"));
    let err = enroll_all(&wrong, 3, 2).await.unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    plane.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_reports_when_agents_cannot_connect() {
    let plane = plane().await;
    let ids = enroll_all(&plane.admin, 2, 2).await.unwrap();
    // A port nothing listens on: the agents keep failing and the wait says why.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let fleet = Arc::new(Fleet::new(
        std::slice::from_ref(&url),
        1,
        36,
        Duration::ZERO,
    ));
    let swarm = Swarm::start(ids, fleet.clone());
    let err = swarm
        .wait_online(Duration::from_secs(2), |n| n == 2)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("0 of 2 agents online"),
        "{err:#}"
    );
    assert!(fleet.errors() > 0);
    plane.stop.cancel();
}
