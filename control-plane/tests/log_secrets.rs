//! No secret reaches a log line: with every target at TRACE (and the protocol's frame-log
//! guard, as the binary installs it), API keys, an enrollment token, a near-miss key and a
//! buyer password stay out of the logs through key creation, token issue, enrollment,
//! a session, allocation, release and revocation. Its own test binary, because it installs
//! the process-wide log subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use support::flows::{allocate, release};
use support::{FakeAgent, Identity, TestPlane};
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install_trace_logging() -> Captured {
    let logs = Captured::default();
    let writer = logs.clone();
    farmhand_ops::logging::text_subscriber(
        farmhand_ops::logging::parse("trace").unwrap(),
        move || writer.clone(),
        false,
    )
    .init();
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_token_or_password_is_logged_at_trace() {
    let logs = install_trace_logging();
    let plane = Arc::new(TestPlane::start().await);
    let near_miss = format!("{}x", &plane.admin[..plane.admin.len() - 1]);
    assert_eq!(plane.get("/v1/agents", &near_miss).await.status, 401);

    let token = plane.token().await;
    let identity = Identity::generate();
    let body =
        json!({"token": token, "public_key": identity.public_key_b64(), "hostname": "box-1"});
    let r = plane
        .call("POST", "/v1/agent/enroll", None, Some(&body.to_string()))
        .await;
    assert_eq!(r.status, 201);
    let identity = identity.with_id(r.json()["agent_id"].as_str().unwrap());
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent
        .send_inventory(vec![support::modem("350000000000018", "Vodafone")])
        .await;
    plane.wait_available("350000000000018").await;
    let alloc = allocate(&plane, &mut agent, "o-logs").await;
    let id = alloc["allocation_id"].as_str().unwrap().to_string();
    let password = alloc["password"].as_str().unwrap().to_string();
    release(&plane, &mut agent, &id).await;
    let r = plane
        .delete(&format!("/v1/agents/{}", identity.agent_id), &plane.admin)
        .await;
    assert_eq!(r.status, 204);

    let log = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(log.contains("TRACE"), "logs were captured at TRACE");
    assert!(log.contains("agent enrolled") && log.contains("allocation released"));
    let secrets = [
        ("admin key", plane.admin.as_str()),
        ("marketplace key", plane.market.as_str()),
        ("near-miss key", near_miss.as_str()),
        ("enrollment token", token.as_str()),
        ("buyer password", password.as_str()),
    ];
    for (what, secret) in secrets {
        let leaks: Vec<&str> = log.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{what} in the logs: {leaks:#?}");
    }
}
