//! Webhooks end to end against an in-process plane and a fake agent, with a REAL HTTP
//! receiver on 127.0.0.1:0 that records every delivery and answers from a script: the
//! admin API (secret shown once, validation, roles), signed `allocation.*` deliveries
//! verified independently (HMAC-SHA256 over `t.body`), retries after a 500 visible in the
//! delivery log and the metrics, a pending delivery that survives a plane restart, the
//! secret surviving a credential-key rotation, a hanging endpoint that cannot starve the
//! others, agent and modem transitions, `allocation.expiring` re-armed by a renewal, and
//! the allocations of a revoked agent released (`agent_revoked`), also by the next start
//! after a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_control::ServerConfig;
use farmhand_protocol::{
    AgentMessage, CommandBody, CommandOutput, ModemsChanged, Outcome, Provisioned,
};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use support::flows::{allocate, reconnect_missing, release, update_ok};
use support::receiver::{Received, Receiver};
use support::{eventually, modem, FakeAgent, TestPlane};

const IMEI: &str = "350000000000777";

/// One delivery as the receiver saw it.
/// Log lines written while the guard lives, at TRACE (the frame-log guard applied as the
/// binary does). `#[tokio::test]` runs the plane on the test's thread, so a thread-local
/// subscriber sees its logs without touching the other tests of this binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = farmhand_ops::logging::text_subscriber(
            farmhand_ops::logging::parse("trace").unwrap(),
            move || writer.clone(),
            false,
        );
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Retries after ~1 s, so tests see several attempts quickly.
fn quick_retries(config: &mut ServerConfig) {
    config.webhooks.retry_initial_s = 1;
    config.webhooks.retry_max_s = 2;
    config.webhooks.attempt_timeout_s = 5;
}

/// Registers `events` for `receiver`; returns (webhook id, secret).
async fn register(plane: &TestPlane, receiver: &Receiver, events: &[&str]) -> (String, String) {
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.admin,
            json!({"url": receiver.url, "events": events}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["webhook_id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

/// The receiver's independent check: HMAC-SHA256(secret, "<t>.<body>") in hex, and `t`
/// within 5 minutes of now.
fn assert_signed(received: &Received, secret: &str) {
    let header = received.header("farmhand-signature");
    let (t, v1) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("bad signature header {header}"));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let expected = ring::hmac::sign(&key, format!("{t}.{}", received.body).as_bytes());
    let hex: String = expected
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, hex, "signature does not verify");
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - t.parse::<i64>().unwrap();
    assert!(age.abs() <= 300, "timestamp {t} is {age} s off");
    let v = received.json();
    assert_eq!(
        received.header("farmhand-event-id"),
        v["id"].as_str().unwrap()
    );
    assert_eq!(
        received.header("farmhand-event-type"),
        v["type"].as_str().unwrap()
    );
    assert!(v["created_at"].is_string(), "{v}");
}

async fn deliveries(plane: &TestPlane, webhook_id: &str) -> Vec<Value> {
    let r = plane
        .get(
            &format!("/v1/webhooks/{webhook_id}/deliveries"),
            &plane.admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn registration_shows_the_secret_once_and_refuses_bad_input() {
    let plane = TestPlane::start().await;
    let receiver = Receiver::start().await;
    let (id, secret) = register(&plane, &receiver, &["allocation.active", "modem.online"]).await;
    assert!(id.starts_with("wh_") && secret.starts_with("whsec_") && secret.len() > 40);

    let listed = plane.get("/v1/webhooks", &plane.admin).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["webhooks"][0]["webhook_id"], json!(id));
    let shown = plane.get(&format!("/v1/webhooks/{id}"), &plane.admin).await;
    assert_eq!(shown.status, 200);
    assert_eq!(
        shown.json()["events"],
        json!(["allocation.active", "modem.online"])
    );
    for body in [&listed.body, &shown.body] {
        assert!(
            !body.contains(&secret) && !body.contains("secret"),
            "{body}"
        );
    }
    plane.store().durable().await.unwrap();
    assert_eq!(
        support::files_containing(plane.dir.path(), secret.as_bytes()),
        Vec::<std::path::PathBuf>::new(),
        "the secret is stored in clear"
    );

    for (body, why) in [
        (
            json!({"url": "ftp://shop.example/h", "events": ["*"]}),
            "scheme",
        ),
        (json!({"url": "/relative", "events": ["*"]}), "relative"),
        (
            json!({"url": format!("https://shop.example/{}", "a".repeat(2048)), "events": ["*"]}),
            "long",
        ),
        (
            json!({"url": receiver.url, "events": ["allocation.activ"]}),
            "unknown event",
        ),
        (json!({"url": receiver.url, "events": []}), "empty events"),
        (
            json!({"url": receiver.url, "events": ["*"], "secret": "mine"}),
            "unknown field",
        ),
        (json!({"url": receiver.url}), "missing events"),
    ] {
        let r = plane.post("/v1/webhooks", &plane.admin, body).await;
        assert_eq!(
            (r.status, r.error_code()),
            (422, "invalid_request".into()),
            "{why}: {}",
            r.body
        );
    }

    // A marketplace key registers for its own tenant only, and never sees operators'
    // endpoints (404, as if unknown).
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.market,
            json!({"url": receiver.url, "events": ["agent.connected"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (422, "invalid_request"),
        "agent events are operators'"
    );
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.market,
            json!({"url": receiver.url, "events": ["*"], "tenant": "other"}),
        )
        .await;
    assert_eq!(r.status, 403, "another tenant's");
    let r = plane
        .post(
            "/v1/webhooks",
            &plane.market,
            json!({"url": receiver.url, "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["tenant"], "default");
    let own = r.json()["webhook_id"].as_str().unwrap().to_owned();
    let listed = plane.get("/v1/webhooks", &plane.market).await.json();
    let ids: Vec<_> = listed["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["webhook_id"].clone())
        .collect();
    assert_eq!(ids, [json!(own)]);
    assert_eq!(
        plane
            .get(&format!("/v1/webhooks/{id}/deliveries"), &plane.market)
            .await
            .status,
        404
    );
    assert_eq!(
        plane
            .get(&format!("/v1/webhooks/{id}"), &plane.market)
            .await
            .status,
        404
    );
    for path in [
        "/v1/webhooks".to_string(),
        format!("/v1/webhooks/{id}/deliveries"),
    ] {
        assert_eq!(plane.call("GET", &path, None, None).await.status, 401);
    }
    assert_eq!(
        plane
            .delete(&format!("/v1/webhooks/{id}"), &plane.market)
            .await
            .status,
        404
    );
    assert_eq!(
        plane
            .delete(&format!("/v1/webhooks/{own}"), &plane.market)
            .await
            .status,
        204
    );
    let r = plane
        .get(
            &format!("/v1/webhooks/{id}/deliveries?limit=0"),
            &plane.admin,
        )
        .await;
    assert_eq!(r.status, 422);

    assert_eq!(
        plane
            .delete(&format!("/v1/webhooks/{id}"), &plane.admin)
            .await
            .status,
        204
    );
    assert_eq!(
        plane
            .delete(&format!("/v1/webhooks/{id}"), &plane.admin)
            .await
            .status,
        404
    );
    let r = plane
        .get(&format!("/v1/webhooks/{id}/deliveries"), &plane.admin)
        .await;
    assert_eq!(r.status, 404);
    let audit = plane.get("/v1/audit?limit=1000", &plane.admin).await.body;
    assert!(audit.contains("webhook_created") && audit.contains("webhook_deleted"));
    assert!(!audit.contains(&secret));
}

#[tokio::test]
async fn allocation_events_are_signed_and_retried_until_the_receiver_recovers() {
    let (logs, _guard) = Captured::start();
    let plane = Arc::new(TestPlane::start_with(quick_retries).await);
    let receiver = Receiver::start().await;
    let (id, secret) = register(
        &plane,
        &receiver,
        &["allocation.active", "allocation.released"],
    )
    .await;
    // The first delivery meets a broken receiver.
    receiver.answer(&[500]);
    let mut agent = plane.agent_with_modem(IMEI).await;
    let allocation = allocate(&plane, &mut agent, "o-hooks").await;
    let allocation_id = allocation["allocation_id"].as_str().unwrap().to_string();
    eventually("allocation.active arrives after a retry", || async {
        receiver.of("allocation.active").len() == 2
    })
    .await;
    let attempts = receiver.of("allocation.active");
    assert_eq!(
        attempts[0].body, attempts[1].body,
        "a retry sends the same event"
    );
    assert_eq!(attempts[1].header("farmhand-delivery-attempt"), "2");
    for received in &attempts {
        assert_signed(received, &secret);
    }
    let event = attempts[1].json();
    assert_eq!(event["type"], json!("allocation.active"));
    assert_eq!(event["object"]["allocation_id"], json!(allocation_id));
    assert_eq!(event["object"]["state"], json!("active"));
    assert_eq!(event["object"]["order_id"], json!("o-hooks"));
    assert_eq!(event["object"]["http_port"], json!(8001));
    for secret_field in ["password", "login"] {
        assert!(event["object"].get(secret_field).is_none(), "{event}");
    }

    release(&plane, &mut agent, &allocation_id).await;
    eventually("allocation.released arrives", || async {
        !receiver.of("allocation.released").is_empty()
    })
    .await;
    let released = &receiver.of("allocation.released")[0];
    assert_signed(released, &secret);
    assert_eq!(released.json()["object"]["state"], json!("released"));
    assert_eq!(
        released.json()["object"]["release_reason"],
        json!("cancelled")
    );

    // The log, newest first: released (1 attempt), active (2 attempts, 500 then 200).
    eventually("the log shows both delivered", || async {
        let log = deliveries(&plane, &id).await;
        log.len() == 2 && log.iter().all(|d| d["state"] == json!("delivered"))
    })
    .await;
    let log = deliveries(&plane, &id).await;
    assert_eq!(log[0]["event_type"], json!("allocation.released"));
    assert_eq!(log[1]["event_type"], json!("allocation.active"));
    assert_eq!(log[1]["attempts"], json!(2));
    assert_eq!(log[1]["last_status"], json!(200));
    assert_eq!(log[1]["event_id"], event["id"]);
    assert!(log[1]["delivery_id"].as_str().unwrap().starts_with("dl_"));
    let one = plane
        .get(
            &format!("/v1/webhooks/{id}/deliveries?limit=1"),
            &plane.admin,
        )
        .await;
    assert_eq!(one.json()["deliveries"].as_array().unwrap().len(), 1);

    let metrics = plane.call("GET", "/metrics", None, None).await.body;
    farmhand_ops::metrics::validate(&metrics).unwrap();
    for line in [
        r#"farmhand_webhook_deliveries_total{event="allocation.active",outcome="retry"} 1"#,
        r#"farmhand_webhook_deliveries_total{event="allocation.active",outcome="delivered"} 1"#,
        r#"farmhand_webhook_deliveries_total{event="allocation.released",outcome="delivered"} 1"#,
        "farmhand_webhook_deliveries_pending 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}:\n{metrics}"
        );
    }

    // Neither the signing secret nor the endpoint URL (it may carry a token) is logged.
    let text = logs.text();
    assert!(text.contains("webhook registered") && text.contains("will retry"));
    for (what, needle) in [("secret", secret.as_str()), ("url", receiver.url.as_str())] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        assert!(leaks.is_empty(), "{what} in the logs: {leaks:#?}");
    }
}

#[tokio::test]
async fn a_pending_delivery_is_delivered_after_a_plane_restart() {
    let mut plane = TestPlane::start_with(quick_retries).await;
    let receiver = Receiver::start().await;
    let (id, secret) = register(
        &plane,
        &receiver,
        &["agent.connected", "agent.disconnected"],
    )
    .await;
    receiver.always(Some(503));
    let identity = plane.enroll().await;
    let agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    eventually("the first attempt failed", || async {
        let log = deliveries(&plane, &id).await;
        log.len() == 1 && log[0]["attempts"].as_u64() >= Some(1)
    })
    .await;
    let before = deliveries(&plane, &id).await;
    assert_eq!(before[0]["state"], json!("pending"));
    assert_eq!(before[0]["last_status"], json!(503));
    let event_id = before[0]["event_id"].clone();

    // The plane stops (the agent's session is closed by the shutdown) and comes back.
    plane.restart().await;
    drop(agent);
    receiver.always(None);
    eventually(
        "the pending event is delivered after the restart",
        || async {
            let log = deliveries(&plane, &id).await;
            log.len() == 1 && log[0]["state"] == json!("delivered")
        },
    )
    .await;
    let delivered = receiver
        .got()
        .into_iter()
        .filter(|r| r.json()["id"] == event_id)
        .collect::<Vec<_>>();
    let last = delivered.last().unwrap();
    assert_signed(last, &secret);
    assert_eq!(last.event_type(), "agent.connected");
    assert_eq!(last.json()["object"]["agent_id"], json!(identity.agent_id));
    // A session the plane closed because it was stopping is not an `agent.disconnected`.
    assert!(receiver.of("agent.disconnected").is_empty());
    assert_eq!(deliveries(&plane, &id).await.len(), 1);
}

#[tokio::test]
async fn a_credential_key_rotation_keeps_the_signing_secret() {
    let mut plane = TestPlane::start().await;
    let receiver = Receiver::start().await;
    let (_, secret) = register(&plane, &receiver, &["agent.connected"]).await;
    plane.stop().await;
    let resealed = farmhand_control::rekey::rotate_credential_key(plane.dir.path()).unwrap();
    assert_eq!(resealed, 1, "the webhook secret is sealed again");
    plane.restart().await;
    let identity = plane.enroll().await;
    let _agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    eventually("agent.connected arrives", || async {
        !receiver.of("agent.connected").is_empty()
    })
    .await;
    assert_signed(&receiver.of("agent.connected")[0], &secret);
}

#[tokio::test]
async fn an_endpoint_that_hangs_does_not_hold_up_the_others() {
    // Two slots in all, one per endpoint, and attempts that may hang for 60 s: without the
    // per-endpoint bound the hanging endpoint would take both slots for a minute.
    let plane = TestPlane::start_with(|c| {
        c.webhooks.concurrency = 2;
        c.webhooks.endpoint_concurrency = 1;
        c.webhooks.attempt_timeout_s = 60;
    })
    .await;
    // Accepts connections (the kernel's backlog) and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck = Receiver::unserved(format!("http://{}/hooks", hanging.local_addr().unwrap()));
    register(&plane, &stuck, &["agent.connected"]).await;
    let healthy = Receiver::start().await;
    register(&plane, &healthy, &["agent.connected"]).await;
    let mut agents = Vec::new();
    for _ in 0..3 {
        let identity = plane.enroll().await;
        agents.push(FakeAgent::connect(&plane, &identity).await.unwrap());
    }
    eventually("the healthy endpoint gets every event", || async {
        healthy.of("agent.connected").len() == 3
    })
    .await;
    drop(hanging);
}

#[tokio::test]
async fn agents_and_modems_emit_transitions_only() {
    let plane = TestPlane::start().await;
    let receiver = Receiver::start().await;
    let (_, secret) = register(
        &plane,
        &receiver,
        &[
            "agent.connected",
            "agent.disconnected",
            "modem.offline",
            "modem.online",
        ],
    )
    .await;
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    // First sight of a modem, online or not, is not a transition.
    agent
        .send_inventory(vec![
            modem(IMEI, "Vodafone"),
            modem("350000000000778", "O2"),
        ])
        .await;
    plane.wait_available(IMEI).await;
    let mut down = modem(IMEI, "Vodafone");
    down.online = false;
    let changed = |m| {
        AgentMessage::ModemsChanged(ModemsChanged {
            proxysmart_reachable: true,
            changed: vec![m],
            removed: vec![],
        })
    };
    agent.send(&changed(down)).await;
    eventually("modem.offline arrives", || async {
        !receiver.of("modem.offline").is_empty()
    })
    .await;
    agent.send(&changed(modem(IMEI, "Vodafone"))).await;
    eventually("modem.online arrives", || async {
        !receiver.of("modem.online").is_empty()
    })
    .await;
    // A full inventory that repeats what is known is not news either.
    agent
        .send_inventory(vec![
            modem(IMEI, "Vodafone"),
            modem("350000000000778", "O2"),
        ])
        .await;
    drop(agent);
    eventually("agent.disconnected arrives", || async {
        !receiver.of("agent.disconnected").is_empty()
    })
    .await;

    let got = receiver.got();
    let mut kinds: Vec<String> = got.iter().map(Received::event_type).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "agent.connected",
            "agent.disconnected",
            "modem.offline",
            "modem.online"
        ],
        "exactly one event per transition"
    );
    for received in &got {
        assert_signed(received, &secret);
    }
    let offline = receiver.of("modem.offline")[0].json();
    assert_eq!(offline["object"]["imei"], json!(IMEI));
    assert_eq!(offline["object"]["online"], json!(false));
    assert_eq!(offline["object"]["agent_id"], json!(identity.agent_id));
    assert_eq!(offline["object"]["country"], json!("DE"));
    let gone = receiver.of("agent.disconnected")[0].json();
    assert_eq!(gone["object"]["agent_id"], json!(identity.agent_id));
    assert_eq!(gone["object"]["connected"], json!(false));
    assert!(gone["object"]["reason"].is_string());
}

#[tokio::test]
async fn expiring_is_sent_once_per_expiry_and_a_renewal_rearms_it() {
    // A lead longer than the 30-day order: the warning is due as soon as it is active.
    let lead = |c: &mut ServerConfig| c.webhooks.expiring_lead_s = 40 * 24 * 3600;
    let plane = Arc::new(TestPlane::start_with(lead).await);
    let receiver = Receiver::start().await;
    let (webhook_id, secret) = register(&plane, &receiver, &["allocation.expiring"]).await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-expiring").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    eventually("allocation.expiring arrives", || async {
        receiver.of("allocation.expiring").len() == 1
    })
    .await;
    let first = receiver.of("allocation.expiring")[0].json();
    assert_signed(&receiver.of("allocation.expiring")[0], &secret);
    assert_eq!(first["object"]["allocation_id"], json!(id));
    assert_eq!(first["object"]["expires_at"], a["expires_at"]);

    let path = format!("/v1/allocations/{id}/renew");
    let p = plane.clone();
    let renewing =
        tokio::spawn(async move { p.post(&path, &p.market, json!({"duration_s": 86400})).await });
    let command = agent.next_command().await;
    update_ok(&mut agent, command).await;
    let renewed = renewing.await.unwrap().json();
    eventually("a second warning for the new expiry", || async {
        receiver.of("allocation.expiring").len() == 2
    })
    .await;
    let second = receiver.of("allocation.expiring")[1].json();
    assert_eq!(second["object"]["expires_at"], renewed["expires_at"]);
    assert_ne!(second["id"], first["id"]);

    // A restart does not repeat a warning already sent: the warning task runs at start,
    // long before the agent below has enrolled and connected.
    drop(agent);
    let mut plane = Arc::try_unwrap(plane).ok().unwrap();
    plane.restart().await;
    register(&plane, &receiver, &["agent.connected"]).await;
    let identity = plane.enroll().await;
    let _agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    eventually("a later event arrives", || async {
        !receiver.of("agent.connected").is_empty()
    })
    .await;
    assert_eq!(deliveries(&plane, &webhook_id).await.len(), 2);
    assert_eq!(receiver.of("allocation.expiring").len(), 2);
}

/// Answers the plane's repair `provision` of `id` with a port on `http_port`/`socks_port`.
async fn answer_repair(agent: &mut FakeAgent, id: &str, http_port: u16, socks_port: u16) {
    let repair = agent.next_command().await;
    let CommandBody::Provision(p) = repair.body else {
        panic!("expected the repair's provision, got {repair:?}")
    };
    assert_eq!(p.allocation_id, id);
    let output = CommandOutput::Provision(Provisioned {
        allocation_id: id.to_string(),
        imei: IMEI.into(),
        port_id: format!("port{http_port}"),
        http_port,
        socks_port,
    });
    agent.answer(&repair.id, Outcome::Ok { output }).await;
}

#[tokio::test]
async fn a_repair_on_other_ports_is_announced_as_replaced() {
    let plane = Arc::new(TestPlane::start().await);
    let receiver = Receiver::start().await;
    let (webhook_id, secret) = register(&plane, &receiver, &["allocation.replaced"]).await;
    let identity = plane.enroll().await;
    let mut agent = FakeAgent::connect(&plane, &identity).await.unwrap();
    agent.send_inventory(vec![modem(IMEI, "Vodafone")]).await;
    plane.wait_available(IMEI).await;
    let a = allocate(&plane, &mut agent, "o-repair-event").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    assert_eq!(
        (&a["http_port"], &a["socks_port"]),
        (&json!(8001), &json!(5001))
    );

    // Re-created on the same numbers: the buyer's address is unchanged, nothing to announce.
    let mut agent = reconnect_missing(&plane, &identity, agent, IMEI, &id).await;
    answer_repair(&mut agent, &id, 8001, 5001).await;
    eventually("the first repair is stored", || async {
        let audit = plane.get("/v1/audit?limit=1000", &plane.admin).await.json();
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "allocation_repaired")
    })
    .await;
    // Then on other numbers: the marketplace must show the buyer the new ones.
    let mut agent = reconnect_missing(&plane, &identity, agent, IMEI, &id).await;
    answer_repair(&mut agent, &id, 8002, 5002).await;
    eventually("allocation.replaced arrives", || async {
        !receiver.of("allocation.replaced").is_empty()
    })
    .await;
    let event = &receiver.of("allocation.replaced")[0];
    assert_signed(event, &secret);
    let object = &event.json()["object"];
    assert_eq!(object["allocation_id"], json!(id));
    assert_eq!(object["state"], json!("active"));
    assert_eq!(
        (&object["http_port"], &object["socks_port"]),
        (&json!(8002), &json!(5002))
    );
    assert!(object.get("password").is_none(), "{object}");
    // The delivery log holds every event emitted for the endpoint: one, not two.
    assert_eq!(deliveries(&plane, &webhook_id).await.len(), 1);
    assert_eq!(plane.allocation(&id).await["http_port"], json!(8002));
}

/// The marketplace's view of every allocation in `state`.
async fn ids_in_state(plane: &TestPlane, state: &str) -> Vec<String> {
    let r = plane
        .get(&format!("/v1/allocations?state={state}"), &plane.market)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["allocation_id"].as_str().unwrap().to_string())
        .collect()
}

/// The `allocation.released` event received for `allocation_id`.
fn released_event(receiver: &Receiver, allocation_id: &str) -> Option<Received> {
    receiver
        .of("allocation.released")
        .into_iter()
        .find(|r| r.json()["object"]["allocation_id"] == json!(allocation_id))
}

/// The audit entry `allocation_released` of `allocation_id`.
async fn release_audit(plane: &TestPlane, allocation_id: &str) -> Value {
    let r = plane.get("/v1/audit?limit=1000", &plane.admin).await;
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["action"] == "allocation_released"
                && e["target"] == json!(format!("allocation:{allocation_id}"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no allocation_released for {allocation_id}"))
}

#[tokio::test]
async fn revoking_an_agent_releases_its_allocations_and_frees_their_modem() {
    let plane = Arc::new(TestPlane::start_with(|c| c.modem_capacity = 2).await);
    let receiver = Receiver::start().await;
    let events = ["allocation.released", "allocation.replaced"];
    let (_, secret) = register(&plane, &receiver, &events).await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    let revoked_id = agent.agent_id.clone();
    let id_of = |a: Value| a["allocation_id"].as_str().unwrap().to_string();
    let live = id_of(allocate(&plane, &mut agent, "o-live").await);
    let cancelled = id_of(allocate(&plane, &mut agent, "o-cancelled").await);
    // A release in flight when the agent is revoked: the agent never answers it.
    let (p, path) = (plane.clone(), format!("/v1/allocations/{cancelled}"));
    let deleting = tokio::spawn(async move { p.delete(&path, &p.market).await });
    assert!(matches!(
        agent.next_command().await.body,
        CommandBody::Release(_)
    ));

    let r = plane
        .delete(&format!("/v1/agents/{revoked_id}"), &plane.admin)
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = deleting.await.unwrap();
    assert_eq!((r.status, &r.json()["state"]), (202, &json!("releasing")));
    eventually("both allocations are released", || async {
        let released = ids_in_state(&plane, "released").await;
        released.contains(&live) && released.contains(&cancelled)
    })
    .await;
    for state in ["active", "replaced", "releasing", "pending"] {
        assert!(ids_in_state(&plane, state).await.is_empty(), "{state}");
    }
    let a = plane.allocation(&live).await;
    assert_eq!(a["release_reason"], json!("agent_revoked"), "{a}");
    assert!(a["released_at"].is_string(), "{a}");
    // Credentials follow the usual retention: readable until it has passed.
    assert!(a["password"].is_string(), "{a}");
    assert_eq!(a["credentials_purged"], json!(false));
    // A release already under way keeps its reason; only the agent's answer was missing.
    let c = plane.allocation(&cancelled).await;
    assert_eq!(c["release_reason"], json!("cancelled"), "{c}");

    eventually("allocation.released arrives for both", || async {
        released_event(&receiver, &live).is_some()
            && released_event(&receiver, &cancelled).is_some()
    })
    .await;
    let event = released_event(&receiver, &live).unwrap();
    assert_signed(&event, &secret);
    assert_eq!(event.json()["object"]["state"], json!("released"));
    assert_eq!(
        event.json()["object"]["release_reason"],
        json!("agent_revoked")
    );
    let event = released_event(&receiver, &cancelled).unwrap();
    assert_eq!(event.json()["object"]["release_reason"], json!("cancelled"));
    let audited = release_audit(&plane, &live).await;
    assert_eq!(audited["actor"], json!("admin:ops"));
    assert_eq!(audited["details"]["release_reason"], json!("agent_revoked"));

    // The box enrolls again (new key, same modem): the modem holds nothing any more.
    drop(agent);
    let mut again = plane.agent_with_modem(IMEI).await;
    let r = plane
        .get(&format!("/v1/modems?imei={IMEI}"), &plane.admin)
        .await;
    assert_eq!(
        r.json()["modems"][0]["active_allocations"],
        json!(0),
        "{}",
        r.body
    );
    let fresh = allocate(&plane, &mut again, "o-fresh").await;
    assert_eq!(fresh["agent_id"], json!(again.agent_id));
    // Released, never moved: the replacement sweeper left them alone.
    assert!(receiver.of("allocation.replaced").is_empty());
}

#[tokio::test]
async fn allocations_left_on_a_revoked_agent_by_a_crash_are_released_at_start() {
    let plane = Arc::new(TestPlane::start().await);
    let receiver = Receiver::start().await;
    register(&plane, &receiver, &["allocation.released"]).await;
    let mut agent = plane.agent_with_modem(IMEI).await;
    let agent_id = agent.agent_id.clone();
    let a = allocate(&plane, &mut agent, "o-crash").await;
    let id = a["allocation_id"].as_str().unwrap().to_string();
    drop(agent);
    let mut plane = Arc::try_unwrap(plane).ok().unwrap();
    plane.stop().await;
    // The revocation reached the disk; the plane died before it ended the allocation.
    {
        let store = farmhand_control::Store::open(plane.dir.path()).unwrap();
        assert!(store.revoke_agent(&agent_id).await.unwrap());
    }
    plane.restart().await;

    // Done while opening, before anything is served.
    let a = plane.allocation(&id).await;
    assert_eq!(a["state"], json!("released"), "{a}");
    assert_eq!(a["release_reason"], json!("agent_revoked"), "{a}");
    assert!(a["released_at"].is_string(), "{a}");
    eventually("allocation.released arrives", || async {
        released_event(&receiver, &id).is_some()
    })
    .await;
    let event = released_event(&receiver, &id).unwrap().json();
    assert_eq!(event["object"]["release_reason"], json!("agent_revoked"));
    assert_eq!(release_audit(&plane, &id).await["actor"], json!("system"));
    // Its slot was not restored: the box's next agent can use the modem (capacity 1).
    let plane = Arc::new(plane);
    let mut again = plane.agent_with_modem(IMEI).await;
    allocate(&plane, &mut again, "o-after-crash").await;
}
