//! Several nodes on one PostgreSQL database — the parts of the cluster that exist
//! (docs/operations.md "PostgreSQL"): a command asked on one node reaches an agent whose
//! session another node holds, through the database (the queued row and a NOTIFY), and its
//! result comes back to the node that asked; a revocation on one node closes the agent's
//! session on another; every node lists and sells the agents any node holds, and a slot
//! two nodes race for is sold once. Skipped with a printed
//! reason when PostgreSQL is not installed, never in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::ProtocolErrorCode;
use farmhand_test_support::postgres::PgCluster;
use std::sync::Arc;
use support::agent::expect_refusal;
use support::flows::{
    allocate, answer_provision, order, provision_ok, release, release_ok, update_ok,
};
use support::receiver::Receiver;
use support::{eventually, postgres_store, two_nodes, TestPlane};

const IMEI: &str = "359000000000001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_asked_on_one_node_reaches_the_agent_held_by_another() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let mut agent = b.agent_with_modem(IMEI).await;
    let sold = allocate(&b, &mut agent, "order-1").await;
    let id = sold["allocation_id"].as_str().unwrap().to_string();

    // Asked on A: A holds no session of the agent; B does.
    let released = release(&a, &mut agent, &id).await;
    assert_eq!(released["state"], "released", "{released}");
    assert_eq!(b.allocation(&id).await["state"], "released");
    let pending = b.store().pending_commands(&agent.agent_id).await.unwrap();
    assert!(pending.is_empty(), "the outbox is empty: {pending:?}");
}

/// A node whose credential key differs from the others' refuses to start: it could not
/// open a buyer password they sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_credential_key_refuses_to_start() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let _first = TestPlane::start_node(postgres_store(&cluster), None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = farmhand_control::ServerConfig {
        data_dir: dir.path().to_path_buf(),
        store: postgres_store(&cluster),
        ..farmhand_control::ServerConfig::default()
    };
    let clock = farmhand_control::clock::Clock::system();
    let refused = farmhand_control::ControlPlane::open_with_clock(config, clock)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("credentials.key"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_revoked_on_one_node_loses_its_session_on_another() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let mut agent = b.agent_with_modem(IMEI).await;
    let r = a
        .delete(&format!("/v1/agents/{}", agent.agent_id), &a.admin)
        .await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.body
    );
    expect_refusal(&mut agent.ws, ProtocolErrorCode::Revoked).await;
}

/// Every node lists and sells every connected agent: an agent whose session B holds shows
/// on A as connected through B, its modem is sold through A, and the sale counts on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lists_and_sells_the_agents_another_node_holds() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let mut agent = b.agent_with_modem(IMEI).await;
    a.wait_available(IMEI).await;
    let seen = a
        .get(&format!("/v1/agents/{}", agent.agent_id), &a.admin)
        .await
        .json();
    assert_eq!(seen["connected"], true, "{seen}");
    assert_eq!(seen["node"], b.gateway().node_id(), "{seen}");
    // Its session as its holder knows it: the protocol, and when it opened there.
    let held = b
        .get(&format!("/v1/agents/{}", agent.agent_id), &b.admin)
        .await
        .json();
    assert_eq!(seen["protocol_version"], 1, "{seen}");
    assert!(held["connected_since"].is_string(), "{held}");
    assert_eq!(seen["connected_since"], held["connected_since"], "{seen}");

    let sold = allocate(&a, &mut agent, "order-through-a").await;
    assert_eq!(sold["state"], "active", "{sold}");
    let path = format!("/v1/modems?imei={IMEI}");
    eventually("B counts the sale A made", || async {
        b.get(&path, &b.admin).await.json()["modems"][0]["active_allocations"] == 1
    })
    .await;
    let listed = b.get(&path, &b.admin).await.json();
    assert_eq!(listed["modems"][0]["available"], false, "{listed}");
}

/// Two nodes selling the last free slot of the fleet at once: exactly one wins; the other
/// answers 409 and sends the box nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_the_last_slot_sell_it_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let mut agent = b.agent_with_modem(IMEI).await;
    a.wait_available(IMEI).await;
    let asks = [(&a, "race-a"), (&b, "race-b")].map(|(plane, order_id)| {
        let (p, body) = (Arc::clone(plane), order(order_id));
        tokio::spawn(async move { p.post("/v1/allocations", &p.market, body).await })
    });
    provision_ok(&mut agent).await;
    let mut statuses = Vec::new();
    for ask in asks {
        statuses.push(ask.await.unwrap().status);
    }
    statuses.sort();
    // A provision sent for the loser would have gone unanswered: a 504, not a 409.
    assert_eq!(statuses, [201, 409]);
    let live = a.store().live_allocations().await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
}

/// Three nodes, an agent on each, allocations made through another node than the agent's:
/// when they expire, each is released once (one release sent to its box), and each event
/// reaches the marketplace once, whichever node sweeps and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_expire_and_deliver_each_item_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let c = Arc::new(TestPlane::start_node(postgres_store(&cluster), Some(&a)).await);
    let nodes = [a.clone(), b.clone(), c.clone()];
    let receiver = Receiver::start().await;
    a.subscribe(&receiver.url, &["allocation.active", "allocation.released"])
        .await;
    let imeis = ["359000000000011", "359000000000012", "359000000000013"];
    let mut agents = Vec::new();
    for (node, imei) in nodes.iter().zip(imeis) {
        agents.push(node.agent_with_modem(imei).await);
    }
    let mut ids = Vec::new();
    for (i, agent) in agents.iter_mut().enumerate() {
        let through = &nodes[(i + 1) % 3];
        through.wait_available(imeis[i]).await;
        let sold = allocate(through, agent, &format!("expiring-{i}")).await;
        assert_eq!(sold["agent_id"], agent.agent_id.as_str(), "{sold}");
        ids.push(sold["allocation_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        a.set_expiry(id, time::Duration::seconds(-1)).await;
    }
    // Every node's sweeper looks at once: only the one holding the sweeping lock acts.
    for node in &nodes {
        node.expiry.notify_one();
    }
    for agent in &mut agents {
        release_ok(agent).await;
    }
    for id in &ids {
        eventually("the expired allocation is released", || async {
            a.allocation(id).await["state"] == "released"
        })
        .await;
    }
    eventually("every event is delivered", || async {
        a.store().pending_webhook_deliveries().await.unwrap() == 0
            && receiver.of("allocation.released").len() >= ids.len()
    })
    .await;
    ids.sort();
    for event_type in ["allocation.active", "allocation.released"] {
        let about = receiver.allocation_ids(event_type);
        assert_eq!(about, ids, "{event_type} once per allocation");
    }
    let releasing = a.audit_count("allocation_releasing").await;
    assert_eq!(releasing, ids.len(), "one sweep per expiry");
}

/// Two nodes asked to release one allocation at the same moment: both answer it released,
/// but it is released once — one `allocation.released`, one audit entry — whichever node
/// holds the agent (the box may be asked twice; release is idempotent there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_releasing_one_allocation_at_once_release_it_once() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let receiver = Receiver::start().await;
    a.subscribe(&receiver.url, &["allocation.released"]).await;
    let mut agent = b.agent_with_modem(IMEI).await;
    let sold = allocate(&b, &mut agent, "released-twice").await;
    let id = sold["allocation_id"].as_str().unwrap().to_string();

    let path = format!("/v1/allocations/{id}");
    let asks = [&a, &b].map(|plane| {
        let (p, path) = (Arc::clone(plane), path.clone());
        tokio::spawn(async move { p.delete(&path, &p.market).await })
    });
    let answering = tokio::spawn(async move {
        loop {
            release_ok(&mut agent).await;
        }
    });
    for ask in asks {
        let reply = ask.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["state"], "released", "{}", reply.body);
    }
    answering.abort();
    eventually("the release is delivered", || async {
        a.store().pending_webhook_deliveries().await.unwrap() == 0
            && !receiver.of("allocation.released").is_empty()
    })
    .await;
    assert_eq!(receiver.allocation_ids("allocation.released"), [id]);
    assert_eq!(a.audit_count("allocation_released").await, 1);
}

/// Two nodes asked to renew one allocation at the same moment, both having read the same
/// expiry: both renewals count (one is made again on top of the other), not one lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_renewing_one_allocation_at_once_extend_it_twice() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let mut agent = b.agent_with_modem(IMEI).await;
    let sold = allocate(&b, &mut agent, "renewed-twice").await;
    let id = sold["allocation_id"].as_str().unwrap().to_string();
    let before = time::OffsetDateTime::parse(
        sold["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    let path = format!("/v1/allocations/{id}/renew");
    let asks = [&a, &b].map(|plane| {
        let (p, path) = (Arc::clone(plane), path.clone());
        tokio::spawn(async move {
            p.post(&path, &p.market, serde_json::json!({"duration_s": 3600}))
                .await
        })
    });
    // Both update_port commands arrive before either is answered: both nodes read the
    // same expiry.
    let first = agent.next_command().await;
    let second = agent.next_command().await;
    let answering = tokio::spawn(async move {
        for command in [first, second] {
            update_ok(&mut agent, command).await;
        }
        loop {
            let command = agent.next_command().await;
            update_ok(&mut agent, command).await;
        }
    });
    for ask in asks {
        let reply = ask.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    answering.abort();
    let stored = a.store().allocation(&id).await.unwrap().unwrap();
    assert_eq!(stored.expires_at, before + time::Duration::seconds(7200));
}

/// Nodes keep the keys that authenticated rather than read them for every request, but a
/// key revoked on one node gets no answer from any node from then on: the check after each
/// request reads the database, not what a node kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_is_refused_by_every_node() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let r = a
        .post(
            "/v1/keys",
            &a.admin,
            serde_json::json!({"role": "marketplace", "name": "shop-2"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();
    // Both nodes have authenticated it (and keep it).
    for node in [&a, &b] {
        for _ in 0..3 {
            assert_eq!(node.get("/v1/modems", &key).await.status, 200);
        }
    }
    let r = a.delete(&format!("/v1/keys/{key_id}"), &a.admin).await;
    assert!(
        r.status == 200 || r.status == 204,
        "{} {}",
        r.status,
        r.body
    );
    assert_eq!(a.get("/v1/modems", &key).await.status, 401);
    assert_eq!(b.get("/v1/modems", &key).await.status, 401);
    // A key created on one node works on the other at once (a miss is read, not kept).
    let r = b
        .post(
            "/v1/keys",
            &b.admin,
            serde_json::json!({"role": "marketplace", "name": "shop-3"}),
        )
        .await;
    let fresh = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(a.get("/v1/modems", &fresh).await.status, 200);
}

/// An allocation sold on node `a` to `first`, being moved by `a` to `second`'s modem:
/// `second` holds the `provision` of the new port, unanswered.
struct Move {
    id: String,
    sold: serde_json::Value,
    first: support::FakeAgent,
    second: support::FakeAgent,
    moving: tokio::task::JoinHandle<support::Response>,
    provision: farmhand_protocol::Command,
}

impl Move {
    async fn start(a: &Arc<TestPlane>, order_id: &str) -> Move {
        let mut first = a.agent_with_modem(IMEI).await;
        let sold = allocate(a, &mut first, order_id).await;
        let id = sold["allocation_id"].as_str().unwrap().to_string();
        let mut second = a.agent_with_modem("359000000000002").await;
        let moving = {
            let (a, path) = (a.clone(), format!("/v1/allocations/{id}/replace"));
            tokio::spawn(async move { a.post(&path, &a.market, serde_json::json!({})).await })
        };
        let provision = second.next_command().await;
        Move {
            id,
            sold,
            first,
            second,
            moving,
            provision,
        }
    }
}

/// A move on one node racing a release on another: the release stands. Node A moves an
/// allocation (its new box holds the provision); meanwhile node B releases it; when the
/// new port is confirmed, A does not write the move over the release — it answers 409,
/// the allocation stays released on every node, and the new box is told to remove the
/// port it just made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_does_not_overwrite_a_release_made_on_another_node() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let Move {
        id,
        sold: _,
        mut first,
        mut second,
        moving,
        provision,
    } = Move::start(&a, "order-move-race").await;
    let released = release(&b, &mut first, &id).await;
    assert_eq!(released["state"], "released", "{released}");

    answer_provision(&mut second, provision).await;
    let moved = moving.await.unwrap();
    assert_eq!(moved.status, 409, "{}", moved.body);
    assert!(moved.body.contains("invalid_state"), "{}", moved.body);
    assert_eq!(a.allocation(&id).await["state"], "released");
    assert_eq!(b.allocation(&id).await["state"], "released");
    assert_eq!(release_ok(&mut second).await, id, "the new port is removed");
}

/// A move on one node racing a renewal on another: both count. The renewal lands while the
/// new port is being made; the move is then written on top of the renewed record (the
/// longer expiry kept), not refused and not written over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_keeps_a_renewal_made_on_another_node() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let (a, b) = two_nodes(&cluster).await;
    let Move {
        id,
        sold,
        mut first,
        mut second,
        moving,
        provision,
    } = Move::start(&a, "order-move-renew").await;
    let renewing = {
        let (b, path) = (b.clone(), format!("/v1/allocations/{id}/renew"));
        tokio::spawn(async move {
            b.post(&path, &b.market, serde_json::json!({"duration_s": 3600}))
                .await
        })
    };
    let update = first.next_command().await;
    update_ok(&mut first, update).await;
    let renewed = renewing.await.unwrap();
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    let renewed_until = renewed.json()["expires_at"].clone();
    assert_ne!(renewed_until, sold["expires_at"]);
    answer_provision(&mut second, provision).await;
    // The new port was made with the old expiry: it is told the renewed one.
    let update = second.next_command().await;
    let update = update_ok(&mut second, update).await;
    let until = time::OffsetDateTime::parse(
        renewed_until.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        i128::from(update.expires_at_ms),
        until.unix_timestamp_nanos() / 1_000_000
    );
    let moved = moving.await.unwrap();
    assert_eq!(moved.status, 200, "{}", moved.body);
    let stored = b.allocation(&id).await;
    assert_eq!(stored["state"], "replaced", "{stored}");
    assert_eq!(stored["imei"], "359000000000002", "{stored}");
    assert_eq!(stored["expires_at"], renewed_until, "the renewal is kept");
}
