//! End to end over TLS: the control plane serves HTTPS/WSS and the agent verifies it —
//! a CA-signed certificate and a pinned self-signed one work (enroll, connect, provision,
//! curl); a wrong CA or a wrong pin is refused with a clear reason while the agent keeps
//! retrying; an http:// URL needs `insecure_plaintext`; and a client that stalls the TLS
//! handshake neither blocks other clients nor survives the handshake timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use farmhand_agent::config::pin::Pin;
use farmhand_agent::{AgentError, ControlPlaneConfig, EnrollError};
use farmhand_control::config::TlsConfig;
use farmhand_control::{ControlPlane, ServerConfig};
use farmhand_testkit::harness::{
    api_client, curl_via, proxy_urls, within, Origin, PlaneTls, Stack, StackOptions, StackTls,
    TestCa,
};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn tls_stack(tls: StackTls) -> Stack {
    Stack::start(StackOptions {
        modems: 2,
        tls,
        ..StackOptions::default()
    })
    .await
    .unwrap()
}

/// Provisions over the agent's wss session and proves the port with curl.
async fn provision_and_curl(stack: &Stack, order: &str) {
    stack.wait_until_available(2).await.unwrap();
    let origin = Origin::start("hello over tls").await.unwrap();
    let reply = stack.allocate(order).await.unwrap();
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let (http, _) = proxy_urls(&reply.body).unwrap();
    let fetched = curl_via(&http, &origin.url()).await.unwrap();
    assert!(fetched.returned(origin.body()), "{fetched:?}");
}

async fn plane_says_connected(stack: &Stack) -> bool {
    let path = format!("/v1/agents/{}", stack.agent_id);
    let reply = stack.admin.get(&path).await.unwrap();
    reply.body["connected"].as_bool().unwrap()
}

/// Waits until the agent records a failed attempt containing `needle`, then checks that it
/// is still running (retrying) and that the plane does not see it.
async fn refused_with(stack: &Stack, needle: &str) -> String {
    let status = stack.agent_status();
    let error = within(Duration::from_secs(15), "the agent's TLS error", || {
        let status = status.clone();
        async move { status.last_error().filter(|e| e.contains(needle)) }
    })
    .await
    .unwrap();
    assert!(!status.connected());
    assert!(
        stack.agent_running(),
        "a refused certificate must not stop the agent"
    );
    assert!(!plane_says_connected(stack).await);
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_signed_certificate_enrolls_connects_and_provisions_over_wss() {
    let stack = tls_stack(StackTls::Ca).await;
    assert!(
        stack.plane_url.starts_with("https://"),
        "{}",
        stack.plane_url
    );
    assert!(stack
        .agent_config()
        .connect_url()
        .unwrap()
        .starts_with("wss://"));
    assert!(stack.agent_status().connected());
    assert!(plane_says_connected(&stack).await);
    provision_and_curl(&stack, "order-tls-ca").await;

    // The HTTPS port does not speak plain HTTP.
    let plain = stack.plane_url.replacen("https://", "http://", 1);
    let plain = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificate_is_pinned_by_its_printed_fingerprint() {
    let stack = tls_stack(StackTls::SelfSignedPin).await;
    let tls = stack.plane_tls.clone().unwrap();
    let pinned = stack.agent_config().control_plane;
    assert_eq!(pinned.pin_sha256.unwrap().to_string(), tls.fingerprint);
    assert!(pinned.ca_file.is_none());
    assert!(plane_says_connected(&stack).await);
    provision_and_curl(&stack, "order-tls-pin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_and_retried() {
    let mut stack = tls_stack(StackTls::Ca).await;
    let other_ca = stack.plane_dir.path().join("other-ca.pem");
    TestCa::new("someone else's CA")
        .unwrap()
        .write_cert(&other_ca)
        .unwrap();
    stack.stop_agent().await;
    stack.agent_control_plane().ca_file = Some(other_ca.clone());
    stack.start_agent();
    let error = refused_with(&stack, "is not trusted by the configured CA").await;
    assert!(error.contains("127.0.0.1"), "{error}");
    assert!(error.contains(&other_ca.display().to_string()), "{error}");

    // Enrollment uses the same trust and refuses the same way.
    let token = stack
        .admin
        .post("/v1/enrollment-tokens", json!({"label": "x", "ttl_s": 600}))
        .await
        .unwrap();
    let token = token.str("/token").unwrap().to_owned();
    let plane = ControlPlaneConfig {
        ca_file: Some(other_ca),
        ..ControlPlaneConfig::new(&stack.plane_url)
    };
    let dir = tempfile::tempdir().unwrap();
    let err = farmhand_agent::enroll(&plane, &token, dir.path())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EnrollError::CertificateRefused { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("not trusted by the configured CA"),
        "{err}"
    );

    // The right CA again: the agent connects.
    stack.stop_agent().await;
    let ca = stack.plane_tls.as_ref().unwrap().ca_file.clone();
    stack.agent_control_plane().ca_file = ca;
    stack.start_agent();
    within(
        Duration::from_secs(15),
        "the agent reconnecting",
        || async { plane_says_connected(&stack).await.then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_refused_naming_both_fingerprints() {
    let mut stack = tls_stack(StackTls::Ca).await;
    let wrong = Pin::of(b"not the plane's certificate");
    stack.stop_agent().await;
    let plane = stack.agent_control_plane();
    plane.pin_sha256 = Some(wrong);
    plane.ca_file = None;
    stack.start_agent();
    let error = refused_with(&stack, "pin mismatch").await;
    let served = &stack.plane_tls.as_ref().unwrap().fingerprint;
    assert!(
        error.contains(&format!("expected {wrong}, got {served}")),
        "{error}"
    );

    // Pin and CA together: the chain validates but the pin still has to match.
    stack.stop_agent().await;
    let ca = stack.plane_tls.as_ref().unwrap().ca_file.clone();
    stack.agent_control_plane().ca_file = ca;
    stack.start_agent();
    refused_with(&stack, "pin mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_url_needs_insecure_plaintext() {
    let stack = Stack::start(StackOptions {
        modems: 1,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let mut config = stack.agent_config();
    assert!(
        config.control_plane.insecure_plaintext,
        "the plain harness opts in"
    );
    config.control_plane.insecure_plaintext = false;
    let err = farmhand_agent::run(config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Config(_)), "{err}");
    assert!(
        err.to_string().contains("control_plane.insecure_plaintext"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlaneConfig::new(&stack.plane_url);
    let err = farmhand_agent::enroll(&plane, "et_x", dir.path())
        .await
        .unwrap_err();
    assert!(matches!(err, EnrollError::Config(_)), "{err}");
    assert!(
        !dir.path().join("agent.key").exists(),
        "no key for a refused config"
    );
}

/// A TLS control plane with a pinned self-signed certificate and the given handshake
/// timeout: (address, REST client that trusts it, stop token, server task).
async fn tls_plane(
    dir: &std::path::Path,
    handshake_timeout_s: u64,
) -> (
    std::net::SocketAddr,
    reqwest::Client,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), farmhand_control::ServeError>>,
) {
    let tls = PlaneTls::self_signed(&dir.join("tls")).unwrap();
    let config = ServerConfig {
        data_dir: dir.join("data"),
        tls: Some(TlsConfig {
            handshake_timeout_s,
            ..TlsConfig::new(&tls.cert_file, &tls.key_file)
        }),
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let plane = ControlPlane::open(config).await.unwrap();
    let server = tokio::spawn(plane.serve(listener, stop.clone()));
    let trust = ControlPlaneConfig {
        pin_sha256: Some(Pin::parse(&tls.fingerprint).unwrap()),
        ..ControlPlaneConfig::new(format!("https://{addr}"))
    };
    (addr, api_client(&trust).unwrap(), stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_blocks_nobody_nor_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // A long handshake timeout: anything waiting on the stalled client would take 60 s.
    let (addr, client, stop, server) = tls_plane(dir.path(), 60).await;
    let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut confused = tokio::net::TcpStream::connect(addr).await.unwrap();
    confused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    let health = client
        .get(format!("https://{addr}/healthz"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("served while another client stalls its handshake");
    assert!(health.status().is_success(), "{}", health.status());
    // Plain HTTP on the TLS port is dropped (EOF or reset), not left hanging.
    let _ = tokio::time::timeout(
        Duration::from_secs(20),
        confused.read_to_end(&mut Vec::new()),
    )
    .await
    .expect("the plain-HTTP client is dropped");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("serve returns on shutdown despite the stalled handshake")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_dropped_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _client, stop, _server) = tls_plane(dir.path(), 1).await;
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read(&mut buf))
        .await
        .expect("the stalled connection is closed after the handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    stop.cancel();
}
