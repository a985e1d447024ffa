//! A network partition between the agent and the control plane: a TCP proxy stops
//! forwarding without closing anything (no FIN, no RST), so only heartbeats can tell. Both
//! sides must notice within about 3 heartbeat intervals (1 s here); a release during the
//! partition answers 202 `releasing` and completes once the partition heals.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_support;

use farmhand_testkit::harness::{within, PartitionProxy, Stack, StackOptions};
use fault_support::{agent_connected, allocation, ports_of};
use std::time::{Duration, Instant};

/// Three 1 s intervals, plus slack for a loaded 2-core box.
const DETECTION_BOUND: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_detected_on_both_sides_and_a_release_completes_after_it_heals() {
    let mut stack = Stack::start(StackOptions {
        modems: 1,
        heartbeat_interval_s: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.stop_agent().await;
    let plane_addr = stack
        .plane_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = PartitionProxy::start(plane_addr).await.unwrap();
    stack.set_agent_server_url(&proxy.base_url());
    stack.start_agent();
    stack.wait_until_available(1).await.unwrap();
    let reply = stack.allocate("partition-1").await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let id = reply.body["allocation_id"].as_str().unwrap().to_owned();

    proxy.set_partitioned(true);
    let cut = Instant::now();
    let status = stack.agent_status();
    let (plane_saw, agent_saw) = tokio::join!(
        async {
            agent_connected(&stack.admin, &stack.agent_id, false, DETECTION_BOUND).await;
            cut.elapsed()
        },
        async {
            within(DETECTION_BOUND, "the agent to see its session die", || {
                let status = status.clone();
                async move { (!status.connected()).then_some(()) }
            })
            .await
            .unwrap();
            cut.elapsed()
        }
    );
    println!(
        "partition detected by the plane after {plane_saw:?}, by the agent after {agent_saw:?}"
    );
    assert!(plane_saw <= DETECTION_BOUND && agent_saw <= DETECTION_BOUND);

    // The box keeps serving; a release now cannot reach the agent.
    let released = stack
        .market
        .delete(&format!("/v1/allocations/{id}"))
        .await
        .unwrap();
    assert_eq!(released.status, 202, "{:?}", released.body);
    assert_eq!(released.body["state"], "releasing");
    assert_eq!(
        ports_of(&stack.sim, &id).len(),
        1,
        "nothing reached the box"
    );

    proxy.set_partitioned(false);
    within(
        Duration::from_secs(30),
        "the release to complete after healing",
        || async {
            let alloc = allocation(&stack.market, &id).await;
            (alloc["state"] == "released" && ports_of(&stack.sim, &id).is_empty()).then_some(())
        },
    )
    .await
    .unwrap();
    agent_connected(&stack.admin, &stack.agent_id, true, Duration::from_secs(5)).await;
}
