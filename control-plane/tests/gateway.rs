//! The agent gateway over real WebSockets: the handshake and every refusal, bounded and
//! strict frames (a bad session is closed while others keep working), duplicate agents,
//! revocation, heartbeats and liveness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_protocol::{
    AgentMessage, Auth, CommandBody, Heartbeat, PlaneMessage, ProtocolErrorCode, VersionRange,
    SUPPORTED_VERSIONS,
};
use futures_util::SinkExt;
use support::agent::{expect_refusal, hello, open, recv, send};
use support::{eventually, FakeAgent, Identity, TestPlane};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn handshake_opens_a_session_and_reconciles_first() {
    let plane = TestPlane::start().await;
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    assert_eq!(agent.welcome.heartbeat_interval_s, 15);
    assert!(agent.welcome.session_id.starts_with("s_"));
    let skew = agent
        .welcome
        .server_time_ms
        .abs_diff(farmhand_control::ids::unix_ms(farmhand_control::ids::now()));
    assert!(skew < 60_000, "server_time_ms is the plane's clock");
    // The first command of every session is reconcile with the desired ports (none yet).
    match recv(&mut agent.ws).await {
        Some(PlaneMessage::Command(c)) => {
            assert!(matches!(c.body, CommandBody::Reconcile(r) if r.ports.is_empty()))
        }
        other => panic!("expected reconcile, got {other:?}"),
    }
    eventually("the agent shows as connected", || {
        plane.connected(&identity.agent_id)
    })
    .await;
    drop(agent);
    eventually("the agent shows as disconnected", || async {
        !plane.connected(&identity.agent_id).await
    })
    .await;
}

#[tokio::test]
async fn unsupported_version_is_refused_with_the_supported_range() {
    let plane = TestPlane::start().await;
    let identity = plane.enroll().await;
    let mut ws = open(&plane).await;
    send(
        &mut ws,
        &hello(&identity.agent_id, VersionRange { min: 7, max: 9 }),
    )
    .await;
    let error = expect_refusal(&mut ws, ProtocolErrorCode::UnsupportedVersion).await;
    assert_eq!(error.supported, Some(SUPPORTED_VERSIONS));
}

#[tokio::test]
async fn bad_signatures_and_unenrolled_agents_fail_auth() {
    let plane = TestPlane::start().await;
    let identity = plane.enroll().await;
    // Signed with another key.
    let impostor = Identity::generate().with_id(&identity.agent_id);
    let error = FakeAgent::connect(&plane, &impostor)
        .await
        .err()
        .expect("refused");
    assert_eq!(error.code, ProtocolErrorCode::AuthFailed);
    // Garbage signature.
    let mut ws = open(&plane).await;
    send(&mut ws, &hello(&identity.agent_id, SUPPORTED_VERSIONS)).await;
    assert!(matches!(
        recv(&mut ws).await,
        Some(PlaneMessage::Challenge(_))
    ));
    send(
        &mut ws,
        &AgentMessage::Auth(Auth {
            signature: "bm90IGEgc2lnbmF0dXJl".into(),
        }),
    )
    .await;
    expect_refusal(&mut ws, ProtocolErrorCode::AuthFailed).await;
    // Never enrolled.
    let stranger = Identity::generate().with_id("ag_never_enrolled");
    let error = FakeAgent::connect(&plane, &stranger)
        .await
        .err()
        .expect("refused");
    assert_eq!(error.code, ProtocolErrorCode::AuthFailed);
    // The real key still works.
    assert!(FakeAgent::connect(&plane, &identity).await.is_ok());
}

#[tokio::test]
async fn a_second_live_connection_is_refused_as_duplicate() {
    let plane = TestPlane::start().await;
    let identity = plane.enroll().await;
    let mut first = FakeAgent::connect(&plane, &identity).await.unwrap();
    let error = FakeAgent::connect(&plane, &identity)
        .await
        .err()
        .expect("refused");
    assert_eq!(error.code, ProtocolErrorCode::DuplicateAgent);
    // The first session is untouched.
    first
        .send(&AgentMessage::Heartbeat(Heartbeat { time_ms: 1 }))
        .await;
    first
        .send_inventory(vec![support::modem("350000000000018", "Vodafone")])
        .await;
    plane.wait_available("350000000000018").await;
}

#[tokio::test]
async fn malformed_and_oversized_frames_close_only_their_session() {
    let plane = TestPlane::start_with(|c| c.max_frame_bytes = 16 * 1024).await;
    let healthy_id = plane.enroll().await;
    let mut healthy = FakeAgent::connect(&plane, &healthy_id).await.unwrap();

    // Before the handshake: not JSON.
    let mut ws = open(&plane).await;
    ws.send(Message::text("this is not json")).await.unwrap();
    expect_refusal(&mut ws, ProtocolErrorCode::MalformedFrame).await;
    // Before the handshake: valid JSON, wrong message.
    let mut ws = open(&plane).await;
    send(&mut ws, &AgentMessage::Heartbeat(Heartbeat { time_ms: 1 })).await;
    expect_refusal(&mut ws, ProtocolErrorCode::MalformedFrame).await;

    for frame in [
        r#"{"type":"heartbeat","time_ms":"soon"}"#.to_string(),
        r#"{"type":"heartbeat","time_ms":1,"extra":true}"#.to_string(),
        format!(
            r#"{{"type":"heartbeat","time_ms":1,"pad":"{}"}}"#,
            "x".repeat(20 * 1024)
        ),
    ] {
        let identity = plane.enroll().await;
        let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
        agent.ws.send(Message::text(frame.clone())).await.unwrap();
        let code = if frame.len() > 16 * 1024 {
            ProtocolErrorCode::FrameTooLarge
        } else {
            ProtocolErrorCode::MalformedFrame
        };
        expect_refusal(&mut agent.ws, code).await;
    }
    // A hello after welcome is out of place.
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send(&hello(&identity.agent_id, SUPPORTED_VERSIONS))
        .await;
    expect_refusal(&mut agent.ws, ProtocolErrorCode::MalformedFrame).await;

    // The healthy session kept working throughout.
    healthy
        .send_inventory(vec![support::modem("350000000000018", "Vodafone")])
        .await;
    plane.wait_available("350000000000018").await;
    assert!(plane.connected(&healthy_id.agent_id).await);
}

#[tokio::test]
async fn revocation_closes_the_live_session_and_refuses_reconnects() {
    let plane = TestPlane::start().await;
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    let started = std::time::Instant::now();
    let r = plane
        .delete(&format!("/v1/agents/{}", identity.agent_id), &plane.admin)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    expect_refusal(&mut agent.ws, ProtocolErrorCode::Revoked).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(1),
        "the live session is closed within 1 s of the request: {elapsed:?}"
    );
    let error = FakeAgent::connect(&plane, &identity)
        .await
        .err()
        .expect("refused");
    assert_eq!(error.code, ProtocolErrorCode::Revoked);
    let r = plane
        .get(&format!("/v1/agents/{}", identity.agent_id), &plane.admin)
        .await;
    assert_eq!(r.json()["revoked"], true);
    let r = plane.delete("/v1/agents/ag_unknown", &plane.admin).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
}

#[tokio::test]
async fn re_enrolling_after_revocation_needs_a_new_token() {
    let plane = TestPlane::start().await;
    let token = plane.token().await;
    let old = Identity::generate();
    let enroll = |token: String, key: String| {
        let body = serde_json::json!({"token": token, "public_key": key, "hostname": "box-1"});
        let plane = &plane;
        async move {
            plane
                .call("POST", "/v1/agent/enroll", None, Some(&body.to_string()))
                .await
        }
    };
    let r = enroll(token.clone(), old.public_key_b64()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let old = old.with_id(r.json()["agent_id"].as_str().unwrap());
    let r = plane
        .delete(&format!("/v1/agents/{}", old.agent_id), &plane.admin)
        .await;
    assert_eq!(r.status, 204);

    // The used token cannot enroll the box again, with the old key or a new one.
    let fresh = Identity::generate();
    for key in [old.public_key_b64(), fresh.public_key_b64()] {
        let r = enroll(token.clone(), key).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "invalid_enrollment_token")
        );
    }
    // A new token gives a new agent id; the revoked one stays refused.
    let r = enroll(plane.token().await, fresh.public_key_b64()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let fresh = fresh.with_id(r.json()["agent_id"].as_str().unwrap());
    assert_ne!(fresh.agent_id, old.agent_id);
    assert!(FakeAgent::connect(&plane, &fresh).await.is_ok());
    let error = FakeAgent::connect(&plane, &old)
        .await
        .err()
        .expect("refused");
    assert_eq!(error.code, ProtocolErrorCode::Revoked);
}

#[tokio::test]
async fn a_silent_handshake_times_out() {
    let plane = TestPlane::start_with(|c| c.handshake_timeout_s = 1).await;
    let mut ws = open(&plane).await;
    expect_refusal(&mut ws, ProtocolErrorCode::HandshakeTimeout).await;
}

#[tokio::test]
async fn heartbeats_flow_and_a_silent_peer_is_dropped() {
    let plane = TestPlane::start_with(|c| c.heartbeat_interval_s = 1).await;
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    assert_eq!(agent.welcome.heartbeat_interval_s, 1);
    // The agent never sends anything: the plane heartbeats, then gives up after 3 intervals.
    let mut heartbeats = 0;
    while let Some(message) = recv(&mut agent.ws).await {
        if matches!(message, PlaneMessage::Heartbeat(_)) {
            heartbeats += 1;
        }
    }
    assert!(heartbeats >= 1, "the plane sent heartbeats while idle");
    eventually("the silent agent is disconnected", || async {
        !plane.connected(&identity.agent_id).await
    })
    .await;
}
