//! The whole agent in-process: enroll against a fake enrollment endpoint, then `run` against
//! a fake control plane (real WebSockets on 127.0.0.1:0) and the ProxySmart simulator.
//! Checks the handshake, inventory, a command round trip, reconnection, revocation, clean
//! shutdown, and that the ProxySmart password never appears in any frame. The WebSocket dial through a
//! real HTTP CONNECT proxy (plain and TLS, credentials, refusals, `NO_PROXY`) is tested with
//! the proxy variables passed in, never set on this process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::config::pin::Pin;
use farmhand_agent::plane::connection::{self, ConnectionError};
use farmhand_agent::plane::identity::Identity;
use farmhand_agent::plane::proxy_tunnel::{ProxyEnv, ProxyError};
use farmhand_agent::plane::session::{self, HandshakeError};
use farmhand_agent::plane::tls::Trust;
use futures_util::{FutureExt, StreamExt};
use support::proxy::{Mode, TestProxy};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_agent::{AgentConfig, AgentError, AgentStatus, ControlPlaneConfig, EnrollError};
use farmhand_protocol::*;
use farmhand_sim::Fault;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::executor::{cmd, provision, provision_with};
use support::plane::{enroll_server, PlaneConn, WAIT};
use support::{eventually, run_config, TestBox, PASSWORD};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// An enrolled state dir, the ProxySmart simulator and the fake plane's listener.
struct Setup {
    dir: tempfile::TempDir,
    public_key: Vec<u8>,
    sim: TestBox,
    listener: TcpListener,
    plane_url: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let public_key = enrolled(dir.path()).await;
    let sim = TestBox::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_url = format!("http://{}", listener.local_addr().unwrap());
    Setup {
        dir,
        public_key,
        sim,
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
        sim,
        listener,
        plane_url,
    } = setup().await;
    let shutdown = CancellationToken::new();
    let status = Arc::new(AgentStatus::new());
    let agent = tokio::spawn(farmhand_agent::run_with_status(
        run_config(dir.path(), &plane_url, &sim),
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
        sim,
        listener,
        plane_url,
    } = setup().await;
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
    let Setup {
        dir,
        public_key,
        sim,
        listener,
        plane_url,
    } = setup().await;
    let shutdown = CancellationToken::new();
    let status = Arc::new(AgentStatus::new());
    let agent = tokio::spawn(farmhand_agent::run_with_status(
        run_config(dir.path(), &plane_url, &sim),
        shutdown.clone(),
        status.clone(),
    ));
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
    stop(&shutdown, agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_plane_and_proxysmart_do_not_stop_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    enrolled(dir.path()).await;
    let sim = TestBox::start().await;
    sim.set_fault(Fault::Status500);
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let shutdown = CancellationToken::new();
    let status = Arc::new(AgentStatus::new());
    let agent = tokio::spawn(farmhand_agent::run_with_status(
        run_config(dir.path(), &plane_url, &sim),
        shutdown.clone(),
        status.clone(),
    ));
    eventually("a connection attempt is recorded", || {
        std::future::ready(status.last_error().is_some())
    })
    .await;
    assert!(!agent.is_finished(), "the agent keeps retrying");
    stop(&shutdown, agent).await;
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
    let Setup {
        dir,
        public_key,
        sim,
        listener,
        plane_url,
    } = setup().await;
    let mut cfg = run_config(dir.path(), &plane_url, &sim);
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
    stop(&shutdown, agent).await;
    drop(conn);
    counters("400 KB".into(), "5 KB".into());
    let (shutdown, agent) = start(cfg);
    let mut conn = PlaneConn::accept(&listener, &public_key, Arc::default()).await;
    conn.welcome().await;
    usage_reaches(&mut conn, "al-u", (1_900_000, 25_000)).await;
    sim.assert_no_violations();
    stop(&shutdown, agent).await;
}

/// Dials the fake plane with the proxy variables `proxies` and authenticates; the plane
/// side runs concurrently and sends `welcome`. Returns the session id the agent got.
async fn session_via(s: &Setup, proxies: &ProxyEnv) -> Result<String, HandshakeError> {
    let url = run_config(s.dir.path(), &s.plane_url, &s.sim)
        .connect_url()
        .unwrap();
    let identity = Identity::load(s.dir.path()).unwrap();
    let agent = async {
        let conn = connection::connect_via(&url, None, WAIT, proxies).await?;
        session::handshake(conn, &identity).await
    };
    let plane = async {
        let mut conn = PlaneConn::accept(&s.listener, &s.public_key, Arc::default()).await;
        conn.welcome().await;
        conn
    };
    tokio::pin!(agent);
    // The plane side runs only while the agent gets through: a refused agent never arrives.
    tokio::select! {
        result = &mut agent => result.map(|s| s.welcome.session_id),
        _conn = plane => agent.await.map(|s| s.welcome.session_id),
    }
}

/// The plane host as the CONNECT line names it.
fn plane_authority(s: &Setup) -> String {
    s.plane_url.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_goes_through_the_http_proxy_unless_no_proxy_names_the_plane() {
    let s = setup().await;
    let proxy = TestProxy::start(Mode::Tunnel).await;
    let via_proxy = ProxyEnv::from_vars([("HTTP_PROXY", proxy.url.as_str())]);
    assert_eq!(session_via(&s, &via_proxy).await.unwrap(), "sess");
    assert_eq!(proxy.tunnels(), 1);
    let requests = proxy.requests();
    let target = plane_authority(&s);
    assert!(
        requests[0].starts_with(&format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n")),
        "{requests:?}"
    );
    assert!(!requests[0].contains("Proxy-Authorization"), "{requests:?}");

    // NO_PROXY names the plane: straight to it. ALL_PROXY is the fallback for ws:// too.
    for no_proxy in ["127.0.0.1", "127.0.0.0/8", "*"] {
        let bypass =
            ProxyEnv::from_vars([("ALL_PROXY", proxy.url.as_str()), ("no_proxy", no_proxy)]);
        assert_eq!(session_via(&s, &bypass).await.unwrap(), "sess");
    }
    // HTTPS_PROXY is for wss:// only: a ws:// plane does not use it.
    let wrong_scheme = ProxyEnv::from_vars([("HTTPS_PROXY", proxy.url.as_str())]);
    assert_eq!(session_via(&s, &wrong_scheme).await.unwrap(), "sess");
    assert_eq!(proxy.tunnels(), 1, "no further tunnel");
    assert_eq!(proxy.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_wants_credentials_gets_them_from_the_url_and_a_407_is_a_clear_error() {
    let s = setup().await;
    let expected = format!("Basic {}", STANDARD.encode("agent:s:cret"));
    let proxy = TestProxy::start(Mode::RequireAuth(expected.clone())).await;

    let without = ProxyEnv::from_vars([("HTTP_PROXY", proxy.url.as_str())]);
    let err = session_via(&s, &without).await.unwrap_err();
    let HandshakeError::Connection(ConnectionError::Proxy(ProxyError::Refused { status, .. })) =
        &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 407);
    let text = err.to_string();
    assert!(
        text.contains(&proxy.url) && text.contains("HTTP 407") && text.contains("credentials"),
        "{text}"
    );
    assert_eq!(proxy.tunnels(), 0);
    assert!(
        s.listener.accept().now_or_never().is_none(),
        "nothing reached the plane"
    );

    let with = ProxyEnv::from_vars([("HTTP_PROXY", proxy.url_with("agent:s%3Acret"))]);
    assert_eq!(session_via(&s, &with).await.unwrap(), "sess");
    assert_eq!(proxy.tunnels(), 1);
    let requests = proxy.requests();
    assert!(
        requests[1].contains(&format!("\r\nProxy-Authorization: {expected}\r\n")),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_closing_and_unusable_proxies_are_typed_errors() {
    let s = setup().await;
    let forbidden = TestProxy::start(Mode::Answer("403 Forbidden")).await;
    let env = ProxyEnv::from_vars([("http_proxy", forbidden.url.as_str())]);
    let err = session_via(&s, &env).await.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Connection(ConnectionError::Proxy(ProxyError::Refused {
                status: 403,
                ..
            }))
        ),
        "{err:?}"
    );
    let closing = TestProxy::start(Mode::Close).await;
    let env = ProxyEnv::from_vars([("HTTP_PROXY", closing.url.as_str())]);
    let err = session_via(&s, &env).await.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Connection(ConnectionError::Proxy(ProxyError::Closed { .. }))
        ),
        "{err:?}"
    );
    let env = ProxyEnv::from_vars([("ALL_PROXY", "socks5h://127.0.0.1:1080")]);
    let err = session_via(&s, &env).await.unwrap_err();
    assert!(err.to_string().contains("only http:// proxies"), "{err}");
    assert!(s.listener.accept().now_or_never().is_none());
}

/// A TLS WebSocket server for `localhost` only, signed by a throwaway CA written to `dir`;
/// records the server name each client asked for.
async fn tls_plane(dir: &std::path::Path) -> (String, std::path::PathBuf, Arc<Mutex<Vec<String>>>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, issuer.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "wss://localhost:{}/v1/agent/connect",
        listener.local_addr().unwrap().port()
    );
    let names = Arc::new(Mutex::new(Vec::new()));
    let seen = names.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let name = tls
                    .get_ref()
                    .1
                    .server_name()
                    .unwrap_or("(none)")
                    .to_string();
                seen.lock().unwrap().push(name);
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    (url, ca_file, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_runs_tls_inside_the_tunnel_with_the_planes_name_and_the_same_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ca_file, names) = tls_plane(dir.path()).await;
    let proxy = TestProxy::start(Mode::Tunnel).await;
    let env = ProxyEnv::from_vars([("HTTPS_PROXY", proxy.url.as_str())]);
    let trust = Trust::new(Some(&ca_file), None).unwrap();
    let conn = connection::connect_via(&url, Some(&trust), WAIT, &env)
        .await
        .unwrap();
    conn.close().await;
    assert_eq!(proxy.tunnels(), 1);
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert!(
        proxy.requests()[0].starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(*names.lock().unwrap(), vec!["localhost".to_string()]);

    // Verification is unchanged inside the tunnel: a wrong pin is still refused.
    let wrong = Trust::new(None, Some(Pin::of(b"not the plane's certificate"))).unwrap();
    let err = connection::connect_via(&url, Some(&wrong), WAIT, &env)
        .await
        .unwrap_err();
    let ConnectionError::Tls { reason } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("pin mismatch for localhost"), "{reason}");
    assert_eq!(proxy.tunnels(), 2);
}
