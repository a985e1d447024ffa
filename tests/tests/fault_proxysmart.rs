//! ProxySmart breaking under a running stack: 500s, garbage instead of JSON, a hang, a modem
//! going offline between the poll and the command. Each allocation attempt fails with the
//! precise agent error code in the REST message, leaves no port on the box, and the stack
//! recovers when the box does. While ProxySmart is down, `GET /v1/agents` says
//! `proxysmart_reachable: false` and the modems stay listed but not available.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fault_support;

use farmhand_testkit::harness::{within, Origin, Stack, StackOptions};
use farmhand_testkit::sim::Fault;
use fault_support::{agent_view, proxy_works};
use std::time::Duration;

fn our_ports(stack: &Stack) -> usize {
    stack
        .sim
        .ports()
        .iter()
        .filter(|p| p.port_name.starts_with("farmhand-"))
        .count()
}

/// Allocates while `fault` is on (set just before, so the command meets it before the
/// poller does) and checks the failure names `code` and leaves nothing behind.
async fn allocation_fails_with(stack: &Stack, order: &str, fault: Fault, code: &str) {
    stack.wait_until_available(1).await.unwrap();
    stack.sim.set_fault(fault);
    let reply = stack.allocate(order).await.unwrap();
    stack.sim.set_fault(Fault::None);
    println!("{fault:?}: {} {}", reply.status, reply.body);
    assert!(
        reply.status.is_server_error() || reply.status.is_client_error(),
        "{:?}",
        reply.body
    );
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(code),
        "{fault:?}: expected {code} in {message:?}"
    );
    let listed = stack
        .market
        .get(&format!("/v1/allocations?order_id={order}"))
        .await
        .unwrap();
    assert_eq!(
        listed.body["allocations"][0]["state"], "failed",
        "{:?}",
        listed.body
    );
    assert_eq!(our_ports(stack), 0, "{fault:?} left a port behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxysmart_faults_give_precise_errors_no_orphans_and_recovery() {
    let mut stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    // Bounded ProxySmart calls: a hang costs the agent 2 s, well inside the plane's 10 s.
    stack.stop_agent().await;
    stack.agent_proxysmart().timeout = Duration::from_secs(2);
    stack.agent_proxysmart().connect_timeout = Duration::from_secs(2);
    stack.start_agent();

    allocation_fails_with(&stack, "ps-500", Fault::Status500, "proxysmart_unavailable").await;
    allocation_fails_with(&stack, "ps-garbage", Fault::Garbage, "proxysmart_malformed").await;
    allocation_fails_with(&stack, "ps-html", Fault::Html, "proxysmart_malformed").await;
    allocation_fails_with(&stack, "ps-hang", Fault::Hang, "proxysmart_timeout").await;

    // A modem that drops between the poll and the command.
    stack.wait_until_available(1).await.unwrap();
    let imei = stack.sim.imeis()[0].clone();
    stack.sim.set_online(&imei, false).unwrap();
    let reply = stack.allocate("ps-offline").await.unwrap();
    println!("offline modem: {} {}", reply.status, reply.body);
    if reply.status != 409 {
        // The plane had not yet heard; the agent refused precisely.
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("modem_offline"), "{message}");
    }
    assert_eq!(our_ports(&stack), 0);
    stack.sim.set_online(&imei, true).unwrap();

    // The box goes away entirely: the plane keeps the modem but offers nothing.
    stack.wait_until_available(1).await.unwrap();
    stack.sim.set_fault(Fault::Refuse);
    let admin = stack.admin.clone();
    let agent_id = stack.agent_id.clone();
    within(
        Duration::from_secs(15),
        "proxysmart_reachable false",
        || async {
            let agent = agent_view(&admin, &agent_id).await?;
            (agent["proxysmart_reachable"] == false && agent["connected"] == true).then_some(())
        },
    )
    .await
    .unwrap();
    let all = stack.market.get("/v1/modems").await.unwrap();
    assert_eq!(
        all.body["modems"].as_array().unwrap().len(),
        1,
        "still listed: {:?}",
        all.body
    );
    let available = stack.market.get("/v1/modems?available=true").await.unwrap();
    assert_eq!(
        available.body["modems"].as_array().unwrap().len(),
        0,
        "{:?}",
        available.body
    );
    let refused = stack.allocate("ps-down").await.unwrap();
    assert_eq!(refused.status, 409, "{:?}", refused.body);

    // Recovery.
    stack.sim.set_fault(Fault::None);
    stack.wait_until_available(1).await.unwrap();
    let origin = Origin::start("recovered").await.unwrap();
    let reply = stack.allocate("ps-ok").await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    assert!(proxy_works(&reply.body, &origin).await);
    assert_eq!(our_ports(&stack), 1);
}
