//! The whole agent in-process: enroll against a fake enrollment endpoint, then `run` against
//! a fake control plane (real WebSockets on 127.0.0.1:0) and the ProxySmart simulator.
//! Checks the handshake, inventory, a command round trip, reconnection, revocation, clean
//! shutdown, usage totals across restarts, and that the ProxySmart password never appears
//! in any frame. The dial through an HTTP proxy is in `plane_proxy.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::AgentError;
use farmhand_protocol::*;
use farmhand_sim::Fault;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::executor::{cmd, provision, provision_with};
use support::plane::{enroll_ok, PlaneConn, RunningAgent, Stage, WAIT};
use support::{eventually, run_config, TestBox, PASSWORD};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_a_session_reconnects_and_never_leaks_the_proxysmart_password() {
    let Stage {
        dir,
        public_key,
        sim,
        listener,
        plane_url,
    } = Stage::start().await;
    let agent = RunningAgent::start(run_config(dir.path(), &plane_url, &sim));
    let status = agent.status.clone();
    let frames = Arc::new(Mutex::new(Vec::new()));

    let mut conn = PlaneConn::accept(&listener, &public_key, frames.clone()).await;
    conn.welcome().await;
    let AgentMessage::Inventory(inv) = conn.recv().await else {
        panic!("inventory")
    };
    assert_eq!(inv.site.city.as_deref(), Some("Berlin"));
    assert!(inv.modems.iter().any(|m| m.imei == sim.online && m.online));
    assert!(status.connected());
    conn.send(PlaneMessage::Command(cmd(
        "c1",
        provision("al-1", &sim.online),
    )))
    .await;
    let AgentMessage::CommandResult(result) = conn.recv().await else {
        panic!("result")
    };
    assert!(matches!(result.outcome, Outcome::Ok { .. }), "{result:?}");
    drop(conn); // the plane goes away: the agent must come back

    let mut conn = PlaneConn::accept(&listener, &public_key, frames.clone()).await;
    conn.welcome().await;
    let AgentMessage::Inventory(inv) = conn.recv().await else {
        panic!("inventory")
    };
    assert_eq!(inv.ports.len(), 1, "managed ports survive the reconnect");
    assert_eq!(inv.ports[0].allocation_id, "al-1");

    agent.stop().await;
    assert!(!status.connected());
    let frames = frames.lock().unwrap();
    assert!(frames.len() >= 6);
    assert!(
        frames.iter().all(|f| !f.contains(PASSWORD)),
        "the ProxySmart password crossed the wire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_agent_stops_with_a_clear_error() {
    let Stage {
        dir,
        public_key,
        sim,
        listener,
        plane_url,
    } = Stage::start().await;
    let agent = tokio::spawn(farmhand_agent::run(
        run_config(dir.path(), &plane_url, &sim),
        CancellationToken::new(),
    ));
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    let error = ProtocolError {
        code: ProtocolErrorCode::Revoked,
        message: "revoked by admin".into(),
        supported: None,
        retry_after_s: None,
    };
    conn.send(PlaneMessage::Error(error)).await;
    let result = tokio::time::timeout(WAIT, agent)
        .await
        .expect("agent stops")
        .unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, AgentError::Revoked { .. }), "{err}");
    assert!(err.to_string().contains("enroll again"), "{err}");
}

/// A plane gone wrong (or hostile) sends extreme values: the agent clamps each one and
/// keeps running — no panic (which, built with `panic = "abort"`, would crash-loop it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_values_from_the_plane_are_clamped_and_the_agent_keeps_running() {
    let Stage {
        dir,
        public_key,
        sim,
        listener,
        plane_url,
    } = Stage::start().await;
    let agent = RunningAgent::start(run_config(dir.path(), &plane_url, &sim));
    let status = agent.status.clone();
    // A session with a welcome of extremes: no heartbeat interval, the end of time, limits
    // no disk can meet.
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    let welcome = Welcome {
        session_id: "s-extreme".into(),
        heartbeat_interval_s: 0,
        server_time_ms: u64::MAX,
        health_limits: Some(HealthLimits {
            min_disk_free_mb: u64::MAX,
            min_memory_available_mb: u64::MAX,
        }),
    };
    conn.send(PlaneMessage::Welcome(welcome)).await;
    let AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory")
    };
    // On a plane clock at the end of time every deadline has passed: refused, not run.
    let result = conn
        .command(
            "c-late",
            CommandBody::RotateIp(RotateIp {
                imei: sim.online.clone(),
            }),
        )
        .await;
    let Outcome::Error { error } = result.outcome else {
        panic!("{result:?}")
    };
    assert_eq!(error.code, CommandErrorCode::DeadlineExceeded);
    assert_eq!(sim.resets_of(&sim.online), 0);
    drop(conn);

    // The next connection is told to come back in u64::MAX seconds.
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    let error = ProtocolError {
        code: ProtocolErrorCode::RetryLater,
        message: "busy".into(),
        supported: None,
        retry_after_s: Some(u64::MAX),
    };
    conn.send(PlaneMessage::Error(error)).await;
    eventually("the agent took the refusal", || {
        std::future::ready({
            status
                .last_error()
                .is_some_and(|e| e.contains("retry_later"))
        })
    })
    .await;
    // It waits (at most an hour and its jitter) and still stops cleanly when asked.
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_plane_and_proxysmart_do_not_stop_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    enroll_ok(dir.path()).await;
    let sim = TestBox::start().await;
    sim.set_fault(Fault::Status500);
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let agent = RunningAgent::start(run_config(dir.path(), &plane_url, &sim));
    let status = agent.status.clone();
    eventually("a connection attempt is recorded", || {
        std::future::ready(status.last_error().is_some())
    })
    .await;
    assert!(!agent.is_finished(), "the agent keeps retrying");
    agent.stop().await;
}

#[tokio::test]
async fn run_without_enrollment_fails_fast_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let sim = TestBox::start().await;
    let err = farmhand_agent::run(
        run_config(dir.path(), "http://127.0.0.1:1", &sim),
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("enroll"), "{err}");
}

/// The next usage report whose entry for `allocation_id` is `(bytes_in, bytes_out)`; every
/// report on the way must not be above it (totals only grow).
async fn usage_reaches(conn: &mut PlaneConn, allocation_id: &str, want: (u64, u64)) {
    loop {
        let report = conn.usage().await;
        let Some(a) = report
            .allocations
            .iter()
            .find(|a| a.allocation_id == allocation_id)
        else {
            continue;
        };
        let got = (a.bytes_in, a.bytes_out);
        assert!(
            got.0 <= want.0 && got.1 <= want.1,
            "{got:?} is past {want:?}"
        );
        if got == want {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_totals_survive_counter_resets_garbage_and_an_agent_restart() {
    let Stage {
        dir,
        public_key,
        sim,
        listener,
        plane_url,
    } = Stage::start().await;
    let mut cfg = run_config(dir.path(), &plane_url, &sim);
    cfg.usage.interval = Duration::from_millis(200);
    let agent = RunningAgent::start(cfg.clone());
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    conn.welcome().await;
    let AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory")
    };
    let limited = provision_with("al-u", &sim.online, |p| {
        p.bandwidth_kbit = Some(800);
        p.traffic_quota_mb = Some(5);
    });
    let result = conn.command("c1", limited).await;
    let Outcome::Ok {
        output: CommandOutput::Provision(port),
    } = result.outcome
    else {
        panic!("{result:?}")
    };
    let counters = |day_in: serde_json::Value, day_out: serde_json::Value| {
        sim.set_counters(&port.port_id, day_in, day_out);
    };

    counters("1.5 MB".into(), "20 KB".into());
    usage_reaches(&mut conn, "al-u", (1_500_000, 20_000)).await;
    // Midnight: the counters restart from zero, the totals go on.
    counters("200 KB".into(), 0.into());
    usage_reaches(&mut conn, "al-u", (1_700_000, 20_000)).await;
    // Garbage and null cost one value, not the report, and are not a reset.
    counters("0.3MB".into(), "lots of bytes".into());
    usage_reaches(&mut conn, "al-u", (1_800_000, 20_000)).await;
    counters(serde_json::Value::Null, "5 KB".into());
    usage_reaches(&mut conn, "al-u", (1_800_000, 25_000)).await;

    // The agent stops; the box counts on meanwhile; the agent comes back on the same state.
    agent.stop().await;
    drop(conn);
    counters("400 KB".into(), "5 KB".into());
    let agent = RunningAgent::start(cfg);
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    conn.welcome().await;
    usage_reaches(&mut conn, "al-u", (1_900_000, 25_000)).await;
    sim.assert_no_violations();
    agent.stop().await;
}

/// Accepts the agent's connection on whichever of `listeners` it dials; returns the
/// session and which listener took it.
async fn accept_any(listeners: &[&TcpListener], public_key: &[u8]) -> (PlaneConn, usize) {
    let frames = Arc::new(Mutex::new(Vec::new()));
    tokio::select! {
        conn = PlaneConn::accept(listeners[0], public_key, frames.clone()) => (conn, 0),
        conn = PlaneConn::accept(listeners[1], public_key, frames) => (conn, 1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_several_nodes_the_agent_fails_over_to_another_when_its_node_goes() {
    let Stage {
        dir,
        public_key,
        sim,
        listener,
        plane_url,
    } = Stage::start().await;
    let second = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = run_config(dir.path(), &plane_url, &sim);
    config.control_plane.other_urls = vec![format!("http://{}", second.local_addr().unwrap())];
    let agent = RunningAgent::start(config);

    let (mut conn, first) = accept_any(&[&listener, &second], &public_key).await;
    conn.welcome().await;
    let AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory")
    };
    // Its node goes away for good: the session, and the listener with it.
    drop(conn);
    let survivor = if first == 0 {
        drop(listener);
        second
    } else {
        drop(second);
        listener
    };
    let frames = Arc::new(Mutex::new(Vec::new()));
    let mut conn = PlaneConn::accept(&survivor, &public_key, frames).await;
    conn.welcome().await;
    let AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory on the other node")
    };
    agent.stop().await;
}
