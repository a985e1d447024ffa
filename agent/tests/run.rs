//! The whole agent in-process: enroll against a fake enrollment endpoint, then `run` against
//! a fake control plane (real WebSockets on 127.0.0.1:0) and the fake ProxySmart. Checks the
//! handshake, inventory, a command round trip, reconnection, revocation, clean shutdown, and
//! that the ProxySmart password never appears in any frame.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::policy::Policy;
use farmhand_agent::{
    AgentConfig, AgentError, AgentStatus, ControlPlaneConfig, EnrollError, Masked, ProxysmartConfig,
};
use farmhand_protocol::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::plane::{enroll_server, PlaneConn, WAIT};
use support::{wait_until, FakeBox, IMEI_1, PASSWORD, USER};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn config(dir: &std::path::Path, plane: &str, fake: &FakeBox) -> AgentConfig {
    let mut proxysmart = ProxysmartConfig::new(&fake.url, USER, Masked::new(PASSWORD));
    proxysmart.poll_interval = Duration::from_secs(1);
    AgentConfig {
        state_dir: dir.to_path_buf(),
        control_plane: ControlPlaneConfig::plaintext(plane),
        proxysmart,
        site: Site {
            public_host: "203.0.113.7".into(),
            country: "DE".into(),
            city: Some("Berlin".into()),
        },
        policy: Policy::default(),
        metrics: Default::default(),
        log: Default::default(),
        usage: Default::default(),
    }
}

async fn enrolled(dir: &std::path::Path) -> Vec<u8> {
    let key = Arc::new(Mutex::new(Vec::new()));
    let server = enroll_server(key.clone()).await;
    let server = ControlPlaneConfig::plaintext(server);
    let err = farmhand_agent::enroll(&server, "bad", dir)
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::InvalidToken { .. }), "{err}");
    assert_eq!(
        farmhand_agent::enroll(&server, "good", dir).await.unwrap(),
        "ag-42"
    );
    let key = key.lock().unwrap().clone();
    assert_eq!(key.len(), 32);
    key
}

/// An enrolled state dir, a fake ProxySmart and the fake plane's listener.
struct Setup {
    dir: tempfile::TempDir,
    public_key: Vec<u8>,
    fake: FakeBox,
    listener: TcpListener,
    plane_url: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let public_key = enrolled(dir.path()).await;
    let fake = FakeBox::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_url = format!("http://{}", listener.local_addr().unwrap());
    Setup {
        dir,
        public_key,
        fake,
        listener,
        plane_url,
    }
}

/// Cancels `shutdown` and waits for the agent to return `Ok`.
async fn stop(
    shutdown: &CancellationToken,
    agent: tokio::task::JoinHandle<Result<(), AgentError>>,
) {
    shutdown.cancel();
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("agent stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_a_session_reconnects_and_never_leaks_the_proxysmart_password() {
    let Setup {
        dir,
        public_key,
        fake,
        listener,
        plane_url,
    } = setup().await;
    let shutdown = CancellationToken::new();
    let status = Arc::new(AgentStatus::new());
    let agent = tokio::spawn(farmhand_agent::run_with_status(
        config(dir.path(), &plane_url, &fake),
        shutdown.clone(),
        status.clone(),
    ));
    let frames = Arc::new(Mutex::new(Vec::new()));

    let mut conn = PlaneConn::accept(&listener, &public_key, frames.clone()).await;
    conn.welcome().await;
    let AgentMessage::Inventory(inv) = conn.recv().await else {
        panic!("inventory")
    };
    assert_eq!(inv.site.city.as_deref(), Some("Berlin"));
    assert!(inv.modems.iter().any(|m| m.imei == IMEI_1 && m.online));
    assert!(status.connected());
    let provision = Provision {
        allocation_id: "al-1".into(),
        imei: IMEI_1.into(),
        login: "buyer".into(),
        password: Secret::new("BuyerPassword12345678"),
        expires_at_ms: farmhand_agent::journal::now_ms() + 3_600_000,
        bandwidth_kbit: None,
        traffic_quota_mb: None,
        rotate_every_s: None,
    };
    let deadline_ms = farmhand_agent::journal::now_ms() + 30_000;
    conn.send(PlaneMessage::Command(Command {
        id: "c1".into(),
        deadline_ms,
        body: CommandBody::Provision(provision),
    }))
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

    stop(&shutdown, agent).await;
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
    let Setup {
        dir,
        public_key,
        fake,
        listener,
        plane_url,
    } = setup().await;
    let agent = tokio::spawn(farmhand_agent::run(
        config(dir.path(), &plane_url, &fake),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_plane_and_proxysmart_do_not_stop_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    enrolled(dir.path()).await;
    let fake = FakeBox::start().await;
    fake.with(|s| s.fault = support::Fault::ServerError);
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let shutdown = CancellationToken::new();
    let status = Arc::new(AgentStatus::new());
    let agent = tokio::spawn(farmhand_agent::run_with_status(
        config(dir.path(), &plane_url, &fake),
        shutdown.clone(),
        status.clone(),
    ));
    wait_until("a connection attempt is recorded", || {
        status.last_error().is_some()
    })
    .await;
    assert!(!agent.is_finished(), "the agent keeps retrying");
    stop(&shutdown, agent).await;
}

#[tokio::test]
async fn run_without_enrollment_fails_fast_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeBox::start().await;
    let err = farmhand_agent::run(
        config(dir.path(), "http://127.0.0.1:1", &fake),
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
    let Setup {
        dir,
        public_key,
        fake,
        listener,
        plane_url,
    } = setup().await;
    let mut cfg = config(dir.path(), &plane_url, &fake);
    cfg.usage.interval = Duration::from_millis(200);
    let start = |cfg: AgentConfig| {
        let shutdown = CancellationToken::new();
        (
            shutdown.clone(),
            tokio::spawn(farmhand_agent::run(cfg, shutdown)),
        )
    };
    let (shutdown, agent) = start(cfg.clone());
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    conn.welcome().await;
    let AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory")
    };
    let provision = Provision {
        allocation_id: "al-u".into(),
        imei: IMEI_1.into(),
        login: "buyer".into(),
        password: Secret::new("BuyerPassword12345678"),
        expires_at_ms: farmhand_agent::journal::now_ms() + 3_600_000,
        bandwidth_kbit: Some(800),
        traffic_quota_mb: Some(5),
        rotate_every_s: None,
    };
    let result = conn.command("c1", CommandBody::Provision(provision)).await;
    let Outcome::Ok {
        output: CommandOutput::Provision(port),
    } = result.outcome
    else {
        panic!("{result:?}")
    };
    let counters = |day_in: serde_json::Value, day_out: serde_json::Value| {
        fake.with(|s| s.set_counters(&port.port_id, day_in, day_out));
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
    stop(&shutdown, agent).await;
    drop(conn);
    counters("400 KB".into(), "5 KB".into());
    let (shutdown, agent) = start(cfg);
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    conn.welcome().await;
    usage_reaches(&mut conn, "al-u", (1_900_000, 25_000)).await;
    assert!(
        fake.with(|s| s.violations.is_empty()),
        "{:?}",
        fake.with(|s| s.violations.clone())
    );
    stop(&shutdown, agent).await;
}
