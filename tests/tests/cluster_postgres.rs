//! Three `farmhand-control` processes on one real PostgreSQL database, with fifty agents
//! (in-process, each with its own simulated box) given all three nodes' URLs: every node
//! sells every agent's modems, whichever node holds the agent, and the buyer's `curl`
//! works through each; a node killed with `kill -9` in the middle of a burst of 200
//! allocations loses nothing: its agents move to the other nodes, every order is settled
//! (retried with its order id where its request failed), and the boxes hold exactly one
//! port per active allocation — no orphan, no duplicate; PostgreSQL stopped for 10 s under
//! traffic costs 503s while it is down and nothing after. Skipped with a printed reason when
//! PostgreSQL is not installed, never in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_support;

use farmhand_test_support::postgres::PgCluster;
use farmhand_testkit::harness::{enroll_agent, start_receiver, within, Api, Origin, PlaneProcess};
use farmhand_testkit::sim::{self, Quirks, SimConfig, SimHandle};
use fault_support::proxy_works;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const AGENTS: usize = 50;

/// The nodes of one cluster, each in its own directory.
struct Cluster {
    nodes: Vec<PlaneProcess>,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start_cluster(db: &PgCluster, extra: &str) -> Cluster {
    let mut nodes: Vec<PlaneProcess> = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let node = PlaneProcess::start_node(dir.path(), extra, &db.url, nodes.first())
            .await
            .unwrap();
        nodes.push(node);
        dirs.push(dir);
    }
    Cluster { nodes, _dirs: dirs }
}

/// Box number `n` with `modems` modems of its own (IMEIs no other box reports), handing
/// out ports from the field boxes' pools: the simulators of one process lease those
/// process-wide, so fifty boxes never offer each other the same just-freed port (separate
/// machines never share one).
async fn start_sim(n: usize, modems: usize, stop: &CancellationToken) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = SimConfig {
        modems,
        first_modem: n * modems,
        quirks: Quirks {
            port_pools: true,
            ..Quirks::default()
        },
        ..SimConfig::default()
    };
    let sim = sim::start(listener, config, stop.child_token())
        .await
        .unwrap();
    // Two pairs leased per listing: a hundred boxes fit the pools with room to spare.
    sim.set_free_ports_offered(2);
    sim
}

/// One cluster at a time: three nodes and fifty agents each are what two cores carry, and
/// the boxes of one process share the port pools.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Fifty enrolled in-process agents, each on its own box of `modems`, each given every
/// node's URL (it tries them in a shuffled order).
async fn start_agents(
    cluster: &Cluster,
    modems: usize,
    stop: &CancellationToken,
) -> (Vec<SimHandle>, Vec<tempfile::TempDir>) {
    start_some_agents(cluster, AGENTS, modems, stop).await
}

/// [`start_agents`], `count` of them.
async fn start_some_agents(
    cluster: &Cluster,
    count: usize,
    modems: usize,
    stop: &CancellationToken,
) -> (Vec<SimHandle>, Vec<tempfile::TempDir>) {
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let (mut sims, mut dirs) = (Vec::new(), Vec::new());
    for n in 0..count {
        let sim = start_sim(n, modems, stop).await;
        let dir = tempfile::tempdir().unwrap();
        let first = &cluster.nodes[0];
        let (_, mut config) = enroll_agent(
            &first.admin,
            &first.url,
            &sim.base_url(),
            dir.path(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        config.control_plane.other_urls = urls[1..].to_vec();
        config.validate().unwrap();
        let token = stop.child_token();
        tokio::spawn(async move {
            let _ = farmhand_agent::run(config, token).await;
        });
        sims.push(sim);
        dirs.push(dir);
    }
    (sims, dirs)
}

/// Agent id → the node holding its session, as `admin` sees it (connected agents only).
async fn holders(admin: &Api) -> HashMap<String, String> {
    let Ok(reply) = admin.get("/v1/agents").await else {
        return HashMap::new();
    };
    reply.body["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["connected"] == true)
        .filter_map(|a| {
            Some((
                a["agent_id"].as_str()?.to_owned(),
                a["node"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

async fn available_modems(api: &Api) -> usize {
    let Ok(reply) = api.get("/v1/modems?available=true").await else {
        return 0;
    };
    reply.body["modems"].as_array().map_or(0, Vec::len)
}

/// Waits until every node offers `modems` modems.
async fn all_offered(cluster: &Cluster, modems: usize) {
    for node in &cluster.nodes {
        let offered = within(Duration::from_secs(60), "every modem offered", || async {
            (available_modems(&node.market).await == modems).then_some(())
        })
        .await;
        let now = available_modems(&node.market).await;
        offered.unwrap_or_else(|e| panic!("{e}: {now} of {modems} offered by {}", node.url));
    }
}

/// The node's id in the cluster (`/healthz`).
async fn node_id(node: &PlaneProcess) -> String {
    let reply = node.admin.get("/healthz").await.unwrap();
    reply.body["node"].as_str().unwrap().to_owned()
}

/// Posts `order` (a day long) until it answers an active allocation: a retried order
/// settles on one allocation, its first if that succeeded.
async fn settle(market: &Api, order: &str) -> Value {
    let body = json!({"order_id": order, "duration_s": 86_400});
    within(Duration::from_secs(90), "the order settles", || async {
        let reply = market.post("/v1/allocations", body.clone()).await.ok()?;
        let state = reply.body["state"].as_str()?;
        (reply.status.is_success() && state == "active").then_some(reply.body)
    })
    .await
    .unwrap_or_else(|e| panic!("{order}: {e}"))
}

/// Waits until the boxes hold exactly one port per name in `active` (`farmhand-al_…`):
/// no orphan, no duplicate, none missing; says which otherwise.
async fn boxes_hold_exactly(sims: &[SimHandle], active: &HashSet<String>) {
    let boxes = || {
        let mut per_name: HashMap<String, usize> = HashMap::new();
        for port in sims.iter().flat_map(|s| s.ports()) {
            *per_name.entry(port.port_name).or_default() += 1;
        }
        let orphans: Vec<String> = per_name
            .keys()
            .filter(|n| !active.contains(*n))
            .cloned()
            .collect();
        let duplicated: Vec<String> = per_name
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(n, _)| n.clone())
            .collect();
        let missing: Vec<String> = active
            .iter()
            .filter(|n| !per_name.contains_key(*n))
            .cloned()
            .collect();
        (orphans, duplicated, missing)
    };
    let agreed = within(
        Duration::from_secs(90),
        "one port per active allocation on the boxes",
        || async {
            let (orphans, duplicated, missing) = boxes();
            (orphans.is_empty() && duplicated.is_empty() && missing.is_empty()).then_some(())
        },
    )
    .await;
    if let Err(e) = agreed {
        let (orphans, duplicated, missing) = boxes();
        panic!("{e}: orphans {orphans:?}; duplicated {duplicated:?}; missing {missing:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_sell_every_agent_through_every_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(db) = PgCluster::start() else {
        return;
    };
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let cluster = start_cluster(&db, "heartbeat_interval_s = 2").await;
    let (_sims, _dirs) = start_agents(&cluster, 1, &stop).await;
    all_offered(&cluster, AGENTS).await;
    let held = holders(&cluster.nodes[0].admin).await;
    let spread: HashSet<&String> = held.values().collect();
    assert_eq!(
        spread.len(),
        3,
        "the agents are spread over the nodes: {held:?}"
    );

    let origin = Origin::start("through any node").await.unwrap();
    let mut ids = Vec::new();
    for node in &cluster.nodes {
        ids.push(node_id(node).await);
    }
    let mut elsewhere = [0usize; 3];
    for i in 0..30 {
        let n = i % 3;
        let node = &cluster.nodes[n];
        let reply = node
            .market
            .post(
                "/v1/allocations",
                json!({"order_id": format!("spread-{i}"), "duration_s": 3600}),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        let agent = reply.body["agent_id"].as_str().unwrap();
        // Who holds the agent, as this node sees it: another node for most sales.
        let here = holders(&node.admin).await;
        if here.get(agent).is_some_and(|h| *h != ids[n]) {
            elsewhere[n] += 1;
        }
        assert!(
            proxy_works(&reply.body, &origin).await,
            "curl through {:?}",
            reply.body
        );
    }
    assert!(
        elsewhere.iter().all(|n| *n > 0),
        "every node sold modems of agents another node holds: {elsewhere:?}"
    );
}

/// Probes (`[probe]`) run where the agent's session is: every allocation is probed by
/// exactly one node, the one holding its agent, and the others hold no result for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_allocation_is_probed_by_exactly_one_node() {
    const BOXES: usize = 12;
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(db) = PgCluster::start() else {
        return;
    };
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let probes = "heartbeat_interval_s = 2\nreplacement_grace_s = 0\n[probe]\nenabled = true\n\
                  listen = \"127.0.0.1:0\"\ninterval_s = 2\ntimeout_s = 2";
    let cluster = start_cluster(&db, probes).await;
    let (sims, _dirs) = start_some_agents(&cluster, BOXES, 1, &stop).await;
    // Loopback modem IPs: the echo sees the modem's address, as from a real box.
    for (n, sim) in sims.iter().enumerate() {
        sim.set_ext_ip(&sim.imeis()[0], &format!("127.0.8.{}", n + 1))
            .unwrap();
    }
    all_offered(&cluster, BOXES).await;
    let mut sold = Vec::new();
    for i in 0..BOXES {
        let node = &cluster.nodes[i % 3];
        let a = settle(&node.market, &format!("probed-{i}")).await;
        sold.push((
            a["allocation_id"].as_str().unwrap().to_owned(),
            a["agent_id"].as_str().unwrap().to_owned(),
        ));
    }
    let mut ids = Vec::new();
    for node in &cluster.nodes {
        ids.push(node_id(node).await);
    }
    // Every node answers the same for an allocation (the store keeps the results).
    let probes_on_every_node = |id: String| {
        let nodes = &cluster.nodes;
        async move {
            let mut views = Vec::new();
            for node in nodes {
                let p = node
                    .market
                    .get(&format!("/v1/allocations/{id}/probes"))
                    .await
                    .ok()?;
                views.push(p.body);
            }
            Some(views)
        }
    };
    within(
        Duration::from_secs(90),
        "every allocation probed twice",
        || async {
            for (id, _) in &sold {
                let views = probes_on_every_node(id.clone()).await?;
                (views[0]["summary"]["probes"].as_u64()? >= 2).then_some(())?;
            }
            Some(())
        },
    )
    .await
    .unwrap();
    let held = holders(&cluster.nodes[0].admin).await;
    let spread: HashSet<&String> = sold
        .iter()
        .filter_map(|(_, agent)| held.get(agent))
        .collect();
    assert!(
        spread.len() >= 2,
        "the probed agents are spread over nodes: {held:?}"
    );
    for (id, agent) in &sold {
        let views = probes_on_every_node(id.clone()).await.unwrap();
        // Read one after another while probes go on, each node shows the same record: the
        // same first result (newest first, and far below `history`), no fewer results.
        let first = |n: usize| views[n]["results"].as_array().unwrap().last().cloned();
        let count = |n: usize| views[n]["summary"]["probes"].as_u64().unwrap();
        for n in 1..3 {
            assert_eq!(first(n), first(0), "{id}: nodes disagree: {views:?}");
            assert!(count(n) >= count(n - 1), "{id}: {views:?}");
        }
        let probing: HashSet<&str> = views[2]["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["node"].as_str())
            .collect();
        assert_eq!(
            probing,
            HashSet::from([held[agent].as_str()]),
            "{id} probed by its agent's node only"
        );
        assert_eq!(views[2]["health"], "ok", "{:?}", views[2]);
        assert!(ids.contains(&held[agent]), "{ids:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_in_a_burst_loses_nothing_and_leaves_no_orphan_port() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(db) = PgCluster::start() else {
        return;
    };
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let extra = "heartbeat_interval_s = 2\nmodem_capacity = 3\nprovisioning_timeout_s = 5";
    let mut cluster = start_cluster(&db, extra).await;
    let (hook, inbox) = start_receiver(&stop).await.unwrap();
    let reply = cluster.nodes[0]
        .admin
        .post(
            "/v1/webhooks",
            json!({"url": hook, "events": ["allocation.active"]}),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let (sims, _dirs) = start_agents(&cluster, 2, &stop).await;
    all_offered(&cluster, 2 * AGENTS).await;

    let orders: Vec<String> = (0..200).map(|i| format!("burst-{i}")).collect();
    let requests: Vec<_> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let market = cluster.nodes[i % 3].market.clone();
            let body = json!({"order_id": order, "duration_s": 86_400});
            tokio::spawn(async move { market.post("/v1/allocations", body).await })
        })
        .collect();
    within(Duration::from_secs(60), "the burst under way", || async {
        let applied: usize = sims.iter().map(|s| s.api_calls("/apix/apply_port")).sum();
        (applied >= 60).then_some(())
    })
    .await
    .unwrap();
    cluster.nodes[2].kill9();
    let mut confirmed: HashMap<String, Value> = HashMap::new();
    let mut unsettled = Vec::new();
    for (order, request) in orders.iter().zip(requests) {
        match request.await.unwrap() {
            Ok(reply) if reply.status == 201 => {
                confirmed.insert(order.clone(), reply.body);
            }
            _ => unsettled.push(order.clone()),
        }
    }
    println!(
        "{} of 200 confirmed during the burst, {} to retry",
        confirmed.len(),
        unsettled.len()
    );
    assert!(!confirmed.is_empty() && !unsettled.is_empty());

    // The killed node's agents come back on the other two.
    let survivors = &cluster.nodes[..2];
    within(
        Duration::from_secs(90),
        "every agent connected again",
        || async { (holders(&survivors[0].admin).await.len() == AGENTS).then_some(()) },
    )
    .await
    .unwrap();

    // Each failed request, retried with its order id, settles on one active allocation.
    for (i, order) in unsettled.iter().enumerate() {
        let settled = settle(&survivors[i % 2].market, order).await;
        confirmed.insert(order.clone(), settled);
    }
    for (order, before) in &confirmed {
        let id = before["allocation_id"].as_str().unwrap();
        let now = survivors[0]
            .market
            .get(&format!("/v1/allocations/{id}"))
            .await
            .unwrap();
        assert_eq!(now.body["state"], "active", "{order}: {:?}", now.body);
    }

    // The boxes converge on exactly one port per active allocation.
    let active: HashSet<String> = confirmed
        .values()
        .map(|a| format!("farmhand-{}", a["allocation_id"].as_str().unwrap()))
        .collect();
    boxes_hold_exactly(&sims, &active).await;
    assert_eq!(active.len(), 200);
    // Every activation that reached the database reached the marketplace (at least once;
    // the event id de-duplicates).
    within(
        Duration::from_secs(60),
        "every activation announced",
        || async {
            let announced: HashSet<String> = inbox
                .of("allocation.active")
                .iter()
                .filter_map(|r| Some(r.json()["object"]["allocation_id"].as_str()?.to_owned()))
                .collect();
            confirmed
                .values()
                .all(|a| announced.contains(a["allocation_id"].as_str().unwrap_or_default()))
                .then_some(())
        },
    )
    .await
    .unwrap();
    let origin = Origin::start("after the kill").await.unwrap();
    for before in confirmed.values().take(10) {
        assert!(proxy_works(before, &origin).await, "{before}");
    }
}

/// PostgreSQL stopped for 10 s under two nodes' traffic, then started: REST calls answer
/// 503 `store_unavailable` while it is down, agents stay connected, and afterwards every
/// order settles on exactly one active allocation (those whose request failed, retried
/// with their order id) with one port each on the boxes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopped_for_ten_seconds_loses_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(db) = PgCluster::start() else {
        return;
    };
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let extra = "heartbeat_interval_s = 2\nmodem_capacity = 3\nprovisioning_timeout_s = 5";
    let cluster = start_cluster(&db, extra).await;
    let nodes = &cluster.nodes[..2];
    let (sims, _dirs) = start_agents(&cluster, 2, &stop).await;
    all_offered(&cluster, 2 * AGENTS).await;

    // Traffic: eight buyers, four orders a second each, through both nodes; a buyer told
    // 503 tries the same order id again at its next tick, as a marketplace would.
    const BUYERS: usize = 8;
    let traffic = CancellationToken::new();
    let orders = Arc::new(Mutex::new(Vec::<String>::new()));
    let last = Arc::new(Mutex::new(vec![0u16; BUYERS]));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut buyers = Vec::new();
    for b in 0..BUYERS {
        let market = nodes[b % 2].market.clone();
        let (traffic, orders, last, refused) = (
            traffic.clone(),
            orders.clone(),
            last.clone(),
            refused.clone(),
        );
        buyers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let (mut n, mut again) = (0, None);
            loop {
                tick.tick().await;
                if traffic.is_cancelled() {
                    return;
                }
                let order = again.take().unwrap_or_else(|| {
                    n += 1;
                    let order = format!("outage-{b}-{n}");
                    orders.lock().unwrap().push(order.clone());
                    order
                });
                let body = json!({"order_id": order, "duration_s": 86_400});
                let status = match market.post("/v1/allocations", body).await {
                    Ok(reply) => {
                        if reply.status == 503 {
                            assert_eq!(reply.body["error"]["code"], "store_unavailable");
                            refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            again = Some(order);
                        }
                        reply.status.as_u16()
                    }
                    Err(_) => 0,
                };
                last.lock().unwrap()[b] = status;
            }
        }));
    }
    within(Duration::from_secs(30), "traffic under way", || async {
        (orders.lock().unwrap().len() >= 40).then_some(())
    })
    .await
    .unwrap();
    db.stop();
    // The outage's length is the scenario, not a wait for something.
    tokio::time::sleep(Duration::from_secs(10)).await;
    db.restart();
    let refused_while_down = refused.load(std::sync::atomic::Ordering::SeqCst);
    within(Duration::from_secs(60), "service back", || async {
        let refused_now = refused.load(std::sync::atomic::Ordering::SeqCst);
        let recent = last.lock().unwrap().clone();
        (refused_now >= refused_while_down && recent.iter().all(|s| *s == 201 || *s == 200))
            .then_some(())
    })
    .await
    .unwrap();
    traffic.cancel();
    for buyer in buyers {
        buyer.await.unwrap();
    }
    let orders = orders.lock().unwrap().clone();
    let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "{} orders, {refused} answers 503 while the database was down",
        orders.len()
    );
    assert!(refused > 0, "no 503 while the database was down");

    // Every order settles on one active allocation; the failed ones are retried.
    let mut active: HashSet<String> = HashSet::new();
    for (i, order) in orders.iter().enumerate() {
        let settled = settle(&nodes[i % 2].market, order).await;
        let name = format!("farmhand-{}", settled["allocation_id"].as_str().unwrap());
        assert!(active.insert(name), "{order}: one allocation per order");
    }
    boxes_hold_exactly(&sims, &active).await;
    // Nobody was disconnected by the outage for long: every agent is held.
    assert_eq!(holders(&nodes[0].admin).await.len(), AGENTS);
}
