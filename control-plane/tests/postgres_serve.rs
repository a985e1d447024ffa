//! The plane serving from PostgreSQL (`[store] backend = "postgres"`) on a real, throw-away
//! cluster: an agent is sold and released through the REST API, everything survives a
//! restart of the plane, two nodes serve one database while one of them sweeps, a session
//! taken over elsewhere is closed here, and while the database is down requests answer 503
//! `store_unavailable` until it is back. Skipped with
//! a printed reason when PostgreSQL is not installed, never in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::store::pg::migrations;
use farmhand_control::Store;
use farmhand_protocol::ProtocolErrorCode;
use farmhand_test_support::postgres::PgCluster;
use std::sync::Arc;
use std::time::Duration;
use support::agent::expect_refusal;
use support::flows::{allocate, order, release};
use support::{eventually, postgres_store, TestPlane};

const IMEI: &str = "359000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plane_sells_from_postgres_and_keeps_everything_across_a_restart() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let store = postgres_store(&cluster);
    let plane = TestPlane::start_with(|c| c.store = store).await;
    assert!(matches!(plane.store(), Store::Postgres(_)));
    let health = plane.call("GET", "/healthz", None, None).await.json();
    assert_eq!(health["store"], "postgres", "{health}");
    assert_eq!(health["schema_version"], migrations::latest(), "{health}");
    let plane = Arc::new(plane);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let sold = allocate(&plane, &mut agent, "order-1").await;
    assert_eq!(sold["state"], "active", "{sold}");
    let sold_id = sold["allocation_id"].as_str().unwrap().to_string();
    release(&plane, &mut agent, &sold_id).await;
    assert_eq!(plane.allocation(&sold_id).await["state"], "released");
    let kept = allocate(&plane, &mut agent, "order-2").await;
    let kept_id = kept["allocation_id"].as_str().unwrap().to_string();
    // The same order again is the same allocation, whichever way it is asked.
    let again = plane
        .post("/v1/allocations", &plane.market, order("order-2"))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["allocation_id"], kept_id.as_str());
    assert!(
        !plane.dir.path().join("db").exists(),
        "nothing is written to sled when the store is PostgreSQL"
    );

    drop(agent);
    let mut plane = Arc::into_inner(plane).unwrap();
    plane.restart().await;
    assert_eq!(plane.allocation(&sold_id).await["state"], "released");
    assert_eq!(plane.allocation(&kept_id).await["state"], "active");
    let audit = plane.get("/v1/audit?limit=100", &plane.admin).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let actions: Vec<String> = audit.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for action in [
        "agent_enrolled",
        "allocation_created",
        "allocation_released",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

/// Nodes on one database serve together, and exactly one of them runs the sweeps; when it
/// stops, another takes them over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_database_serve_together_and_one_sweeps() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let first = TestPlane::start_node(postgres_store(&cluster), None).await;
    let second = TestPlane::start_node(postgres_store(&cluster), Some(&first)).await;
    for plane in [&first, &second] {
        let health = plane.get("/healthz", &plane.admin).await;
        assert_eq!(health.status, 200, "{}", health.body);
    }
    let sweepers = || [&first, &second].map(|p| p.store().sweeps_here());
    eventually("one node sweeps", || async {
        sweepers().iter().filter(|s| **s).count() == 1
    })
    .await;
    let sweeping_second = second.store().sweeps_here();
    let (mut sweeper, other) = if sweeping_second {
        (second, first)
    } else {
        (first, second)
    };
    sweeper.stop().await;
    eventually("the other node sweeps", || async {
        other.store().sweeps_here()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_requests_answer_503_and_service_resumes_by_itself() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let store = postgres_store(&cluster);
    let plane = Arc::new(TestPlane::start_with(|c| c.store = store).await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let sold = allocate(&plane, &mut agent, "order-1").await;
    let id = sold["allocation_id"].as_str().unwrap().to_string();
    let sold_before = allocate_capacity_left(&plane).await;

    cluster.stop();
    let path = format!("/v1/allocations/{id}");
    let down = plane.get(&path, &plane.market).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(
        down.json()["error"]["code"],
        "store_unavailable",
        "{}",
        down.body
    );
    assert!(down.header("retry-after").is_some());
    let ready = plane.call("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    let health = plane.call("GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200, "the process still serves");
    assert_eq!(health.json()["schema_version"], serde_json::Value::Null);

    cluster.restart();
    eventually("service resumes once the database is back", || async {
        plane.get(&path, &plane.market).await.status == 200
    })
    .await;
    assert_eq!(
        plane.allocation(&id).await["state"],
        "active",
        "nothing lost"
    );
    release(&plane, &mut agent, &id).await;
    let next = allocate(&plane, &mut agent, "order-2").await;
    assert_eq!(next["state"], "active", "{next}");
    assert_eq!(sold_before, 0, "the one slot was sold before the outage");
}

/// How many modems could take a new allocation now.
async fn allocate_capacity_left(plane: &TestPlane) -> usize {
    let modems = plane.get("/v1/modems?available=true", &plane.admin).await;
    modems.json()["modems"].as_array().map_or(0, Vec::len)
}

/// A newer session of the agent claimed elsewhere (another node, as the database sees it)
/// closes this node's session within one lease renewal, with `duplicate_agent`; the row a
/// session leaves behind is gone when it ends, and so is the node's when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_elsewhere_is_closed_here() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let store = postgres_store(&cluster);
    let mut plane = TestPlane::start_with(|c| c.store = store.clone()).await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    let Store::Postgres(pg) = plane.store().clone() else {
        panic!("postgres")
    };
    let holder = pg.session_holder(&agent.agent_id).await.unwrap();
    assert!(
        holder.as_deref().is_some_and(|n| n.starts_with("nd_")),
        "{holder:?}"
    );
    pg.claim_session(&agent.agent_id, "nd_elsewhere", Duration::from_secs(60))
        .await
        .unwrap();
    let closed = expect_refusal(&mut agent.ws, ProtocolErrorCode::DuplicateAgent).await;
    assert!(
        closed.message.contains("another control-plane node"),
        "{closed:?}"
    );
    // The other node's session stays recorded: this one's end does not remove it.
    assert_eq!(
        pg.session_holder(&agent.agent_id).await.unwrap().as_deref(),
        Some("nd_elsewhere")
    );

    let again = plane.agent_with_modem("359000000000002").await;
    let id = again.agent_id.clone();
    drop(again);
    eventually("the ended session's row goes", || async {
        pg.session_holder(&id).await.unwrap().is_none()
    })
    .await;
    let (client, conn) = tokio_postgres::connect(&cluster.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let nodes = || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM nodes", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    eventually("the node's heartbeat is recorded", || async {
        nodes().await == 1
    })
    .await;
    plane.stop().await;
    assert_eq!(nodes().await, 0, "a node that stopped leaves");
}
