//! The agent as a real process, killed or stopped in the middle of a `provision`: `kill -9`
//! after the port was created but before the agent answered; `kill -9` after it journaled
//! a result it could not deliver (a partition), then the redelivery of the same command
//! id; and SIGTERM while ProxySmart is slow (the command finishes and is answered). The
//! simulator and the control plane run in-process; the agent is `target/*/farmhand-agent`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_support;

use farmhand_testkit::harness::{
    within, AgentProcess, Origin, PartitionProxy, Stack, StackOptions,
};
use farmhand_testkit::sim::Fault;
use fault_support::{agent_connected, ports_of, proxy_works, settles_consistently};
use serde_json::{json, Value};
use std::time::Duration;

const STORE: &str = "/crud/store_port";
const APPLY: &str = "/apix/apply_port";

/// One modem, a patient plane (20 s to provision), 1 s heartbeats, and the in-process agent
/// replaced by a real process (through a partition proxy if `via_partition`).
async fn stack_with_agent_process(
    via_partition: bool,
) -> (Stack, AgentProcess, Option<PartitionProxy>) {
    let mut stack = Stack::start(StackOptions {
        modems: 1,
        provisioning_timeout_s: 20,
        heartbeat_interval_s: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.stop_agent().await;
    let proxy = match via_partition {
        true => {
            let addr = stack
                .plane_url
                .trim_start_matches("http://")
                .parse()
                .unwrap();
            let proxy = PartitionProxy::start(addr).await.unwrap();
            stack.set_agent_server_url(&proxy.base_url());
            Some(proxy)
        }
        false => None,
    };
    let mut agent = AgentProcess::start(&stack.agent_config()).unwrap();
    let (admin, agent_id) = (stack.admin.clone(), stack.agent_id.clone());
    within(
        Duration::from_secs(20),
        "the agent process to connect",
        || async {
            let agent = fault_support::agent_view(&admin, &agent_id).await?;
            (agent["connected"] == true).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; agent log:\n{}", agent.proc().output()));
    stack.wait_until_available(1).await.unwrap();
    (stack, agent, proxy)
}

/// Starts `POST /v1/allocations` for `order` in the background.
fn allocate(
    stack: &Stack,
    order: &str,
) -> tokio::task::JoinHandle<farmhand_testkit::harness::Reply> {
    let market = stack.market.clone();
    let body = json!({"order_id": order, "duration_s": 86_400});
    tokio::spawn(async move { market.post("/v1/allocations", body).await.unwrap() })
}

/// The allocation id of `order` (whatever the POST answered).
async fn allocation_id(stack: &Stack, order: &str) -> String {
    let reply = stack
        .market
        .get(&format!("/v1/allocations?order_id={order}"))
        .await
        .unwrap();
    let list: &Vec<Value> = reply.body["allocations"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{:?}", reply.body);
    list[0]["allocation_id"].as_str().unwrap().to_owned()
}

/// Waits until the simulator has seen one more call to `path` than `before`.
async fn wait_for_call(stack: &Stack, path: &str, before: usize) {
    within(Duration::from_secs(20), path, || async {
        (stack.sim.api_calls(path) > before).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_the_port_was_created_converges_to_active_or_failed_without_orphans() {
    let (mut stack, mut agent, _) = stack_with_agent_process(false).await;
    let origin = Origin::start("after a crash").await.unwrap();
    // Every ProxySmart call is slow, so the agent is still verifying when we kill it.
    stack
        .sim
        .set_fault(Fault::Latency(Duration::from_millis(700)));
    let applies = stack.sim.api_calls(APPLY);
    let request = allocate(&stack, "crash-1");
    wait_for_call(&stack, APPLY, applies).await;
    agent.proc().kill9();
    stack.sim.set_fault(Fault::None);
    let id = allocation_id(&stack, "crash-1").await;
    assert_eq!(
        ports_of(&stack.sim, &id).len(),
        1,
        "the port was created before the kill"
    );
    // Back within the plane's deadline: the redelivered provision meets the leftover.
    let _agent = AgentProcess::start(&stack.agent_config()).unwrap();
    let reply = request.await.unwrap();
    println!(
        "POST during the crash answered {} {}",
        reply.status, reply.body
    );
    let (alloc, port) =
        settles_consistently(&stack.market, &stack.sim, &id, Duration::from_secs(30))
            .await
            .unwrap();
    println!(
        "after restart: {} with port {:?}",
        alloc["state"],
        port.as_ref().map(|p| &p.port_id)
    );
    if alloc["state"] == "active" {
        assert!(
            proxy_works(&alloc, &origin).await,
            "an active allocation's port works"
        );
    }
    // No port of ours on the box without an active allocation.
    for p in stack
        .sim
        .ports()
        .iter()
        .filter(|p| p.port_name.starts_with("farmhand-"))
    {
        let owner = p.port_name.trim_start_matches("farmhand-");
        let a = fault_support::allocation(&stack.market, owner).await;
        assert_eq!(a["state"], "active", "orphan port {p:?}");
    }
    stack.stop_agent().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_command_after_kill_9_is_answered_from_the_journal() {
    let (stack, mut agent, proxy) = stack_with_agent_process(true).await;
    let proxy = proxy.unwrap();
    let origin = Origin::start("answered from the journal").await.unwrap();
    let (stores, applies) = (stack.sim.api_calls(STORE), stack.sim.api_calls(APPLY));
    stack
        .sim
        .set_fault(Fault::Latency(Duration::from_millis(500)));
    let request = allocate(&stack, "redeliver-1");
    wait_for_call(&stack, APPLY, applies).await;
    // The agent finishes the command but its answer cannot reach the plane.
    proxy.set_partitioned(true);
    stack.sim.set_fault(Fault::None);
    let audit = stack.agent_dir.path().join("audit.jsonl");
    within(
        Duration::from_secs(20),
        "the provision in the agent's audit",
        || {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            async move { text.contains("\"provision\"").then_some(()) }
        },
    )
    .await
    .unwrap();
    // The agent writes the audit line after the result is journaled: the answer is durable.
    agent.proc().kill9();
    proxy.set_partitioned(false);
    let mut agent = AgentProcess::start(&stack.agent_config()).unwrap();

    let reply = request.await.unwrap();
    let id = allocation_id(&stack, "redeliver-1").await;
    let (alloc, _) = settles_consistently(&stack.market, &stack.sim, &id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        stack.sim.api_calls(STORE) - stores,
        1,
        "ProxySmart store_port called once"
    );
    assert_eq!(
        stack.sim.api_calls(APPLY) - applies,
        1,
        "ProxySmart apply_port called once"
    );
    let log = agent.proc().output();
    assert!(
        log.contains("answering from the journal"),
        "the plane redelivers the command and the agent answers from its journal \
         (POST answered {} {}); agent log:\n{log}",
        reply.status,
        reply.body
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert_eq!(alloc["state"], "active");
    assert!(proxy_works(&alloc, &origin).await);
}

/// The `reason` of every `agent_disconnected` audit entry of the stack's agent, oldest first.
async fn disconnect_reasons(stack: &Stack) -> Vec<String> {
    let reply = stack.admin.get("/v1/audit?limit=1000").await.unwrap();
    let target = json!(format!("agent:{}", stack.agent_id));
    reply.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent_disconnected" && e["target"] == target)
        .map(|e| {
            e["details"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_command_in_flight_and_answers_it() {
    let (stack, mut agent, _) = stack_with_agent_process(false).await;
    let origin = Origin::start("graceful").await.unwrap();
    let stores = stack.sim.api_calls(STORE);
    stack
        .sim
        .set_fault(Fault::Latency(Duration::from_millis(800)));
    let request = allocate(&stack, "graceful-1");
    wait_for_call(&stack, STORE, stores).await;
    let disconnects = disconnect_reasons(&stack).await.len();
    agent.proc().sigterm().unwrap();
    let reply = request.await.unwrap();
    stack.sim.set_fault(Fault::None);
    assert_eq!(
        reply.status, 201,
        "the command in flight was finished and answered: {:?}",
        reply.body
    );
    let status = agent
        .proc()
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap();
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        agent.proc().output()
    );
    let log = agent.proc().output();
    assert!(log.contains("agent stopped"), "{log}");
    // The plane saw the connection close, not a silent peer timing out.
    agent_connected(
        &stack.admin,
        &stack.agent_id,
        false,
        Duration::from_secs(20),
    )
    .await;
    let reasons = within(
        Duration::from_secs(20),
        "the disconnect audited",
        || async {
            let reasons = disconnect_reasons(&stack).await;
            (reasons.len() > disconnects).then_some(reasons)
        },
    )
    .await
    .unwrap();
    assert_eq!(reasons.last().unwrap(), "connection closed", "{reasons:?}");
    // The port survives the agent's stop and still serves the buyer.
    assert!(proxy_works(&reply.body, &origin).await);
    let id = reply.body["allocation_id"].as_str().unwrap();
    assert_eq!(ports_of(&stack.sim, id).len(), 1);
}
