//! Liveness and load: a half-open agent (connected but silent, not reading) is marked
//! offline within about three heartbeat intervals and its modems stop being offered; a
//! reconnect storm is queued, not refused; a graceful shutdown finishes in-flight requests
//! (bounded by `shutdown_grace_s`), then closes sessions with `shutting_down`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{CommandBody, CommandOutput, Outcome, ProtocolErrorCode, Provisioned};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::agent::expect_refusal;
use support::flows::{order, post_allocation};
use support::{eventually, FakeAgent, TestPlane};

const IMEI: &str = "350000000000018";

#[tokio::test]
async fn a_half_open_agent_goes_offline_within_three_heartbeats() {
    let plane = TestPlane::start_with(|c| c.heartbeat_interval_s = 1).await;
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send_inventory(vec![support::modem(IMEI, "Vodafone")])
        .await;
    plane.wait_available(IMEI).await;
    // From now on the agent neither reads nor writes, and never closes its socket.
    let started = Instant::now();
    eventually("the silent agent is offline", || async {
        !plane.connected(&identity.agent_id).await
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(6),
        "offline after ~3 intervals of 1 s, took {elapsed:?}"
    );
    let modems = plane
        .get(&format!("/v1/modems?imei={IMEI}"), &plane.admin)
        .await
        .json();
    assert_eq!(modems["modems"][0]["available"], false, "{modems}");
    let r = plane
        .post("/v1/allocations", &plane.market, order("o-half-open"))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (409, "no_capacity"));
    drop(agent);
}

#[tokio::test]
async fn a_reconnect_storm_is_queued_not_refused() {
    const AGENTS: usize = 24;
    let plane = Arc::new(TestPlane::start_with(|c| c.handshake_concurrency = 1).await);
    let mut identities = Vec::new();
    for _ in 0..AGENTS {
        identities.push(plane.enroll().await);
    }
    let storm = identities.into_iter().map(|identity| {
        let plane = plane.clone();
        tokio::spawn(async move { FakeAgent::try_connect(&plane, &identity).await })
    });
    let results = futures_util::future::join_all(storm).await;
    let mut agents = Vec::new();
    for result in results {
        match result.unwrap() {
            Some(Ok(agent)) => agents.push(agent),
            Some(Err(e)) => panic!("a healthy agent was refused: {e:?}"),
            None => panic!("a healthy agent was refused before the upgrade"),
        }
    }
    assert_eq!(agents.len(), AGENTS);
    for agent in &mut agents {
        let first = agent.next_any_command().await;
        assert!(matches!(first.body, CommandBody::Reconcile(_)), "{first:?}");
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_closes_sessions() {
    let mut plane = Arc::new(TestPlane::start().await);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let pending = post_allocation(&plane, order("o-shutdown"));
    let command = agent.next_command().await;
    let CommandBody::Provision(p) = command.body else {
        panic!("expected provision")
    };
    plane.shutdown.cancel();
    // The agent's session is still open: the in-flight request can be answered.
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: p.allocation_id.clone(),
        imei: IMEI.into(),
        port_id: "port1".into(),
        http_port: 8001,
        socks_port: 5001,
    });
    agent.answer(&command.id, Outcome::Ok { output }).await;
    let r = pending.await.unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    expect_refusal(&mut agent.ws, ProtocolErrorCode::ShuttingDown).await;
    let plane_mut = Arc::get_mut(&mut plane).expect("no other handle");
    plane_mut.stop().await;
    plane_mut.restart().await;
    assert_eq!(plane.allocation(&p.allocation_id).await["state"], "active");
}

#[tokio::test]
async fn shutdown_does_not_wait_beyond_its_grace_period() {
    let mut plane = Arc::new(
        TestPlane::start_with(|c| {
            c.shutdown_grace_s = 1;
            c.provisioning_timeout_s = 120;
        })
        .await,
    );
    let mut agent = plane.agent_with_modem(IMEI).await;
    let pending = post_allocation(&plane, order("o-grace"));
    let command = agent.next_command().await;
    assert!(matches!(command.body, CommandBody::Provision(_)));
    let started = Instant::now();
    plane.shutdown.cancel();
    expect_refusal(&mut agent.ws, ProtocolErrorCode::ShuttingDown).await;
    // The request that never got its answer does not hold the plane up.
    pending.abort();
    let _ = pending.await;
    Arc::get_mut(&mut plane)
        .expect("no other handle")
        .stop()
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped after the grace period, took {:?}",
        started.elapsed()
    );
}
