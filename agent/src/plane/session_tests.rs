//! Handshake and session-loop tests over an in-memory pipe with a scripted fake plane.

use super::*;
use crate::base::masked::Masked;
use crate::boxside::commands::CommandContext;
use crate::boxside::proxysmart::ProxysmartClient;
use crate::config::ProxysmartConfig;
use crate::local::journal::Journal;
use crate::plane::identity::{self, IdentityFile};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::NONCE_LEN;
use farmhand_protocol::{
    decode, encode, verify_auth, Challenge, Command, CommandBody, CommandErrorCode, Modem, Outcome,
    ProtocolErrorCode, Release, DEFAULT_MAX_FRAME_BYTES,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

struct Plane {
    ws: WebSocketStream<DuplexStream>,
}

impl Plane {
    async fn recv(&mut self) -> AgentMessage {
        loop {
            match self.ws.next().await.unwrap().unwrap() {
                Message::Text(t) => return decode(t.as_str(), DEFAULT_MAX_FRAME_BYTES).unwrap(),
                Message::Close(_) => panic!("agent closed"),
                _ => continue,
            }
        }
    }

    /// Next message that is not a heartbeat.
    async fn recv_skipping_heartbeats(&mut self) -> AgentMessage {
        loop {
            match self.recv().await {
                AgentMessage::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    /// Reads (answering the close handshake) until the agent has closed; returns the
    /// first non-text frame or end of stream.
    async fn read_until_closed(
        &mut self,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        let mut first = None;
        while let Some(frame) = self.ws.next().await {
            let done = frame.is_err();
            if first.is_none() && !matches!(frame, Ok(Message::Text(_))) {
                first = Some(frame);
            }
            if done {
                break;
            }
        }
        first
    }

    async fn send(&mut self, m: PlaneMessage) {
        self.ws.send(Message::text(encode(&m))).await.unwrap();
    }

    async fn send_raw(&mut self, text: String) {
        // The agent may close while an oversized frame is still being written.
        let _ = self.ws.send(Message::text(text)).await;
    }

    /// Answers hello/auth correctly (verifying the signature) and welcomes the agent.
    async fn accept(&mut self, public_key: &[u8], heartbeat_s: u64) {
        let AgentMessage::Hello(hello) = self.recv().await else {
            panic!("expected hello")
        };
        assert_eq!(hello.versions, SUPPORTED_VERSIONS);
        let nonce = [9u8; NONCE_LEN];
        self.send(PlaneMessage::Challenge(Challenge {
            version: 1,
            nonce: STANDARD.encode(nonce),
        }))
        .await;
        let AgentMessage::Auth(auth) = self.recv().await else {
            panic!("expected auth")
        };
        verify_auth(public_key, 1, &hello.agent_id, &nonce, &auth.signature).unwrap();
        let welcome = Welcome {
            session_id: "s1".into(),
            heartbeat_interval_s: heartbeat_s,
            server_time_ms: crate::base::clock::now_ms(),
            health_limits: None,
        };
        self.send(PlaneMessage::Welcome(welcome)).await;
    }
}

async fn pipe() -> (Connection<DuplexStream>, Plane) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (client, server) = tokio::join!(
        tokio_tungstenite::client_async_with_config(
            "ws://plane/v1/agent/connect",
            a,
            Some(crate::plane::connection::ws_config())
        ),
        tokio_tungstenite::accept_async(b),
    );
    (
        Connection::from_ws(client.unwrap().0),
        Plane {
            ws: server.unwrap(),
        },
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    identity: Identity,
    public_key: Vec<u8>,
    ctx: SessionContext,
    inventory_tx: watch::Sender<Snapshot>,
    usage_tx: watch::Sender<crate::boxside::usage::LatestUsage>,
}

fn fixture() -> Fixture {
    fixture_with(crate::config::policy::Policy::default())
}

/// A fixture whose commands run under the seller's `policy`.
fn fixture_with(policy: crate::config::policy::Policy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let public_key = identity::generate_key(dir.path()).unwrap();
    identity::write_identity(
        dir.path(),
        &IdentityFile {
            agent_id: "ag-1".into(),
            server: "x".into(),
        },
    )
    .unwrap();
    let identity = Identity::load(dir.path()).unwrap();
    // Port 9 (discard) on loopback: nothing listens, so ProxySmart calls fail fast.
    let client = ProxysmartClient::new(&ProxysmartConfig::new(
        "http://127.0.0.1:9",
        "proxy",
        Masked::new("pw"),
    ))
    .unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let commands = CommandContext::builder(client, journal.clone(), Duration::from_secs(5))
        .policy(policy.clone())
        .build();
    let profile = commands.ports().profile().clone();
    let executor = Executor::new(Arc::new(commands));
    let snapshot = Snapshot {
        polled: true,
        reachable: true,
        modems: vec![modem("356000000000001")],
        last_error: None,
    };
    let (inventory_tx, inventory) = InventoryHandle::manual(snapshot);
    let site = Site {
        public_host: "203.0.113.7".into(),
        country: "DE".into(),
        city: None,
    };
    let (usage_tx, usage) = crate::boxside::usage::UsageHandle::manual();
    let ctx = SessionContext {
        site,
        inventory,
        executor,
        status: Arc::new(AgentStatus::new()),
        shutdown: CancellationToken::new(),
        usage: Some(usage),
        health: crate::boxside::health::HealthHandle::none(),
        journal,
        policy,
        profile,
        rotations: crate::boxside::autorotate::RotationReports::none(),
    };
    Fixture {
        _dir: dir,
        identity,
        public_key,
        ctx,
        inventory_tx,
        usage_tx,
    }
}

fn modem(imei: &str) -> Modem {
    Modem {
        imei: imei.into(),
        nick: "DE_1".into(),
        carrier: Some("Vodafone".into()),
        ext_ip: Some("198.51.100.1".into()),
        online: true,
        rotating: false,
        signal: Some(20),
        model: None,
        ..Modem::default()
    }
}

fn release(id: &str, deadline_ms: u64) -> PlaneMessage {
    PlaneMessage::Command(Command {
        id: id.into(),
        deadline_ms,
        body: CommandBody::Release(Release {
            allocation_id: "al-1".into(),
        }),
    })
}

/// Starts a full session: handshake done, the session loop running in a task.
async fn running(f: &Fixture, heartbeat_s: u64) -> (Plane, tokio::task::JoinHandle<SessionEnd>) {
    let (conn, mut plane) = pipe().await;
    let ctx = f.ctx.clone();
    let pk = f.public_key.clone();
    let (session, ()) = tokio::join!(handshake(conn, &f.identity), plane.accept(&pk, heartbeat_s));
    let session = session.unwrap();
    assert_eq!(session.welcome.session_id, "s1");
    let task = tokio::spawn(async move { session.run(&ctx).await });
    (plane, task)
}

#[tokio::test]
async fn session_sends_inventory_first_then_changes() {
    let f = fixture();
    let (mut plane, _task) = running(&f, 30).await;
    let AgentMessage::Inventory(inv) = plane.recv().await else {
        panic!("inventory first")
    };
    assert!(inv.proxysmart_reachable);
    assert_eq!(inv.site.country, "DE");
    assert_eq!(inv.modems, vec![modem("356000000000001")]);
    assert_eq!(inv.max_ports_per_modem, None, "no seller cap configured");
    let mut rotated = modem("356000000000001");
    rotated.ext_ip = Some("198.51.100.2".into());
    f.inventory_tx
        .send_modify(|s| s.modems = vec![rotated.clone(), modem("356000000000002")]);
    let AgentMessage::ModemsChanged(change) = plane.recv_skipping_heartbeats().await else {
        panic!("changes")
    };
    assert_eq!(change.changed, vec![rotated, modem("356000000000002")]);
    f.inventory_tx.send_modify(|s| {
        s.reachable = false;
        s.modems.pop();
    });
    let AgentMessage::ModemsChanged(change) = plane.recv_skipping_heartbeats().await else {
        panic!("changes")
    };
    assert!(!change.proxysmart_reachable);
    assert_eq!(change.removed, ["356000000000002"]);
}

#[tokio::test]
async fn the_inventory_of_every_session_carries_the_sellers_port_cap() {
    let f = fixture_with(crate::config::policy::Policy {
        max_ports_per_modem: Some(2),
        ..Default::default()
    });
    for _ in 0..2 {
        let (mut plane, task) = running(&f, 30).await;
        let AgentMessage::Inventory(inv) = plane.recv().await else {
            panic!("inventory first")
        };
        assert_eq!(inv.max_ports_per_modem, Some(2));
        // The plane goes away; the next session must announce the cap again.
        drop(plane);
        task.await.unwrap();
    }
}

fn usage_report(at_ms: u64, entries: usize) -> UsageReport {
    let allocations = (0..entries)
        .map(|i| farmhand_protocol::AllocationUsage {
            allocation_id: format!("al-{i}"),
            bytes_in: at_ms,
            bytes_out: 1,
        })
        .collect();
    UsageReport {
        measured_at_ms: at_ms,
        allocations,
    }
}

#[tokio::test]
async fn usage_reports_are_sent_when_measured_and_again_after_a_reconnect() {
    let f = fixture();
    let (mut plane, task) = running(&f, 30).await;
    plane.recv().await; // inventory
    f.usage_tx
        .send_replace(Some(Arc::new(usage_report(1_000, 2))));
    let AgentMessage::Usage(report) = plane.recv_skipping_heartbeats().await else {
        panic!("usage")
    };
    assert_eq!(report, usage_report(1_000, 2));
    // A big box: the report is split so that every frame stays small.
    let big = usage_report(2_000, MAX_USAGE_ENTRIES + 5);
    f.usage_tx.send_replace(Some(Arc::new(big.clone())));
    let mut received = Vec::new();
    while received.len() < big.allocations.len() {
        let AgentMessage::Usage(part) = plane.recv_skipping_heartbeats().await else {
            panic!("usage")
        };
        assert!(part.allocations.len() <= MAX_USAGE_ENTRIES);
        assert_eq!(part.measured_at_ms, 2_000);
        received.extend(part.allocations);
    }
    assert_eq!(received, big.allocations);
    drop(plane);
    let _ = task.await;
    // A new session starts with the latest report right after the inventory.
    let (mut plane, _task) = running(&f, 30).await;
    let AgentMessage::Inventory(_) = plane.recv().await else {
        panic!("inventory first")
    };
    let AgentMessage::Usage(first) = plane.recv_skipping_heartbeats().await else {
        panic!("usage after the inventory")
    };
    assert_eq!(first.allocations.len(), MAX_USAGE_ENTRIES);
}

#[tokio::test]
async fn commands_are_answered_and_redeliveries_come_from_the_journal() {
    let f = fixture();
    let (mut plane, _task) = running(&f, 30).await;
    plane.recv().await; // inventory
    let far = crate::base::clock::now_ms() + 60_000;
    plane.send(release("c1", far)).await;
    let AgentMessage::CommandResult(first) = plane.recv_skipping_heartbeats().await else {
        panic!("result")
    };
    assert_eq!(first.id, "c1");
    let Outcome::Error { error } = &first.outcome else {
        panic!("ProxySmart is down: {first:?}")
    };
    assert_eq!(error.code, CommandErrorCode::ProxysmartUnavailable);
    plane.send(release("c1", far)).await;
    let AgentMessage::CommandResult(again) = plane.recv_skipping_heartbeats().await else {
        panic!("result")
    };
    assert_eq!(again, first, "a redelivery returns the recorded result");
    plane.send(release("c2", 1)).await;
    let AgentMessage::CommandResult(late) = plane.recv_skipping_heartbeats().await else {
        panic!("result")
    };
    assert!(
        matches!(late.outcome, Outcome::Error { ref error } if error.code == CommandErrorCode::DeadlineExceeded),
        "{late:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_session_sends_heartbeats_and_goes_stale_when_the_plane_is_silent() {
    let f = fixture();
    let (mut plane, task) = running(&f, 1).await;
    plane.recv().await; // inventory
    assert!(matches!(plane.recv().await, AgentMessage::Heartbeat(_)));
    // The plane never sends anything: after 3 intervals the agent gives up on the session.
    let end = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(end, SessionEnd::Stale), "{end:?}");
}

#[tokio::test]
async fn malformed_and_out_of_order_frames_end_the_session() {
    let f = fixture();
    for bad in [
        r#"{"type":"launch"}"#.to_string(),
        "x".repeat(DEFAULT_MAX_FRAME_BYTES + 1),
    ] {
        let (mut plane, task) = running(&f, 30).await;
        plane.recv().await;
        plane.send_raw(bad).await;
        let (end, _) = tokio::join!(task, plane.read_until_closed());
        let end = end.unwrap();
        assert!(matches!(end, SessionEnd::ProtocolViolation(_)), "{end:?}");
    }
    let (mut plane, task) = running(&f, 30).await;
    plane.recv().await;
    plane
        .send(PlaneMessage::Challenge(Challenge {
            version: 1,
            nonce: String::new(),
        }))
        .await;
    let (end, _) = tokio::join!(task, plane.read_until_closed());
    assert!(matches!(end.unwrap(), SessionEnd::ProtocolViolation(_)));
}

#[tokio::test]
async fn plane_error_during_handshake_is_reported() {
    let f = fixture();
    let (conn, mut plane) = pipe().await;
    let plane_side = async {
        plane.recv().await;
        let error = ProtocolError {
            code: ProtocolErrorCode::Revoked,
            message: "gone".into(),
            supported: None,
            retry_after_s: None,
        };
        plane.send(PlaneMessage::Error(error)).await;
    };
    let (result, ()) = tokio::join!(handshake(conn, &f.identity), plane_side);
    let err = result.unwrap_err();
    assert!(matches!(err, HandshakeError::Refused(ref e) if e.code == ProtocolErrorCode::Revoked));
    assert!(err.to_string().contains("revoked: gone"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn silent_plane_times_out_the_handshake() {
    let f = fixture();
    let (conn, mut plane) = pipe().await;
    let keep = tokio::spawn(async move {
        plane.recv().await;
        std::future::pending::<()>().await;
    });
    let err = handshake(conn, &f.identity).await.unwrap_err();
    assert!(matches!(err, HandshakeError::Timeout), "{err}");
    keep.abort();
}

#[tokio::test]
async fn bad_challenges_are_refused() {
    let f = fixture();
    for challenge in [
        Challenge {
            version: 99,
            nonce: STANDARD.encode([0u8; NONCE_LEN]),
        },
        Challenge {
            version: 1,
            nonce: "short".into(),
        },
    ] {
        let (conn, mut plane) = pipe().await;
        let plane_side = async {
            plane.recv().await;
            plane.send(PlaneMessage::Challenge(challenge)).await;
        };
        let (result, ()) = tokio::join!(handshake(conn, &f.identity), plane_side);
        assert!(matches!(result, Err(HandshakeError::Unexpected(_))));
    }
}

#[tokio::test]
async fn shutdown_closes_the_session_cleanly() {
    let f = fixture();
    let (mut plane, task) = running(&f, 30).await;
    plane.recv().await;
    f.ctx.shutdown.cancel();
    // The plane reads while the agent closes, so the close handshake completes at once.
    let (end, next) = tokio::join!(task, plane.read_until_closed());
    assert!(matches!(end.unwrap(), SessionEnd::Shutdown));
    assert!(
        matches!(next, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{next:?}"
    );
}
