//! A fake control plane for tests that run the whole agent: an enrollment endpoint
//! (token "good" → agent "ag-42") and one accepted agent WebSocket at a time, driven by the
//! test frame by frame (challenge, welcome, commands), with every frame recorded; and the
//! [`Stage`] such tests start from (an enrolled state dir, a test box, the plane's listener).

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long any step may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Fake `POST /v1/agent/enroll`: token "good" → 201, anything else → 401. Records the key.
pub async fn enroll_server(seen_key: Arc<Mutex<Vec<u8>>>) -> String {
    let app = Router::new().route(
        "/v1/agent/enroll",
        post(move |Json(body): Json<Value>| async move {
            if body["token"] != "good" {
                let e = json!({"error": {"code": "invalid_enrollment_token", "message": "token unknown"}});
                return (StatusCode::UNAUTHORIZED, Json(e));
            }
            assert!(!body["hostname"].as_str().unwrap().is_empty());
            *seen_key.lock().unwrap() = STANDARD.decode(body["public_key"].as_str().unwrap()).unwrap();
            (StatusCode::CREATED, Json(json!({"agent_id": "ag-42"})))
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Enrolls the agent state in `dir` against a fresh fake endpoint (a bad token first, which
/// must be refused as such); returns its public key.
pub async fn enroll_ok(dir: &std::path::Path) -> Vec<u8> {
    let key = Arc::new(Mutex::new(Vec::new()));
    let server = enroll_server(key.clone()).await;
    let server = farmhand_agent::ControlPlaneConfig::plaintext(server);
    let err = farmhand_agent::enroll(&server, "bad", dir)
        .await
        .unwrap_err();
    assert!(
        matches!(err, farmhand_agent::EnrollError::InvalidToken { .. }),
        "{err}"
    );
    let id = farmhand_agent::enroll(&server, "good", dir).await.unwrap();
    assert_eq!(id, "ag-42");
    let key = key.lock().unwrap().clone();
    assert_eq!(key.len(), 32);
    key
}

/// An enrolled state dir, the ProxySmart simulator and the fake plane's listener: what a
/// test needs to run the whole agent, or just its dial, against the fake plane.
pub struct Stage {
    pub dir: tempfile::TempDir,
    pub public_key: Vec<u8>,
    pub sim: super::TestBox,
    pub listener: TcpListener,
    pub plane_url: String,
}

impl Stage {
    pub async fn start() -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let public_key = enroll_ok(dir.path()).await;
        let sim = super::TestBox::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plane_url = format!("http://{}", listener.local_addr().unwrap());
        Stage {
            dir,
            public_key,
            sim,
            listener,
            plane_url,
        }
    }
}

/// One agent connection, authenticated against `public_key`.
pub struct PlaneConn {
    pub ws: WebSocketStream<TcpStream>,
    pub frames: Arc<Mutex<Vec<String>>>,
}

impl PlaneConn {
    /// Accepts the agent's next connection and runs hello → challenge → auth.
    pub async fn accept(
        listener: &TcpListener,
        public_key: &[u8],
        frames: Arc<Mutex<Vec<String>>>,
    ) -> PlaneConn {
        let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("agent connects")
            .unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut conn = PlaneConn { ws, frames };
        let AgentMessage::Hello(hello) = conn.recv().await else {
            panic!("hello")
        };
        let nonce = [5u8; NONCE_LEN];
        conn.send(PlaneMessage::Challenge(Challenge {
            version: 1,
            nonce: STANDARD.encode(nonce),
        }))
        .await;
        let AgentMessage::Auth(auth) = conn.recv().await else {
            panic!("auth")
        };
        verify_auth(public_key, 1, &hello.agent_id, &nonce, &auth.signature).unwrap();
        conn
    }

    /// Sends `welcome` with the local clock.
    pub async fn welcome(&mut self) {
        let w = Welcome {
            session_id: "sess".into(),
            heartbeat_interval_s: 15,
            server_time_ms: farmhand_agent::base::clock::now_ms(),
            health_limits: None,
        };
        self.send(PlaneMessage::Welcome(w)).await;
    }

    /// The next frame that is not a heartbeat, change, usage, capabilities or health report.
    pub async fn recv(&mut self) -> AgentMessage {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("frame in time")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                self.frames.lock().unwrap().push(t.to_string());
                match decode(t.as_str(), DEFAULT_MAX_FRAME_BYTES).unwrap() {
                    AgentMessage::Heartbeat(_)
                    | AgentMessage::ModemsChanged(_)
                    | AgentMessage::Usage(_)
                    | AgentMessage::Capabilities(_)
                    | AgentMessage::Health(_) => continue,
                    other => return other,
                }
            }
        }
    }

    /// The next change report (heartbeats skipped, anything else is a failure).
    pub async fn changes(&mut self) -> ModemsChanged {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("frame in time")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                self.frames.lock().unwrap().push(t.to_string());
                match decode(t.as_str(), DEFAULT_MAX_FRAME_BYTES).unwrap() {
                    AgentMessage::Heartbeat(_) => continue,
                    AgentMessage::ModemsChanged(c) => return c,
                    other => panic!("expected modems_changed, got {other:?}"),
                }
            }
        }
    }

    /// The next usage report (every other frame skipped).
    pub async fn usage(&mut self) -> UsageReport {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("usage report in time")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                self.frames.lock().unwrap().push(t.to_string());
                if let AgentMessage::Usage(u) = decode(t.as_str(), DEFAULT_MAX_FRAME_BYTES).unwrap()
                {
                    return u;
                }
            }
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, m: PlaneMessage) {
        self.ws.send(Message::text(encode(&m))).await.unwrap();
    }

    /// Sends a command (deadline in 30 s) and returns its result.
    pub async fn command(&mut self, id: &str, body: CommandBody) -> CommandResult {
        self.send(PlaneMessage::Command(Command {
            id: id.into(),
            deadline_ms: farmhand_agent::base::clock::now_ms() + 30_000,
            body,
        }))
        .await;
        match self.recv().await {
            AgentMessage::CommandResult(r) => r,
            other => panic!("expected a command result, got {other:?}"),
        }
    }
}

/// A whole agent running in-process (`farmhand_agent::run_with_status`) until [`stop`].
///
/// [`stop`]: RunningAgent::stop
pub struct RunningAgent {
    /// Its live status.
    pub status: Arc<farmhand_agent::AgentStatus>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), farmhand_agent::AgentError>>,
}

/// Starts the agent on `stage` and serves it until one port (`al-1`) is provisioned and
/// its status file written: every file and table the agent keeps then exists. Returns the
/// agent and its session (keep it: dropping it disconnects the agent).
pub async fn running_with_a_port(stage: &Stage) -> (RunningAgent, PlaneConn) {
    let config = super::run_config(stage.dir.path(), &stage.plane_url, &stage.sim);
    let agent = RunningAgent::start(config);
    let frames = Arc::new(Mutex::new(Vec::new()));
    let mut conn = PlaneConn::accept(&stage.listener, &stage.public_key, frames).await;
    conn.welcome().await;
    let AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory")
    };
    let provision = super::executor::provision("al-1", &stage.sim.online);
    conn.send(PlaneMessage::Command(super::executor::cmd("c1", provision)))
        .await;
    let AgentMessage::CommandResult(result) = conn.recv().await else {
        panic!("result")
    };
    assert!(matches!(result.outcome, Outcome::Ok { .. }), "{result:?}");
    let state = stage.dir.path().to_path_buf();
    super::eventually("the status file is written", || {
        std::future::ready(state.join("status.json").exists())
    })
    .await;
    (agent, conn)
}

impl RunningAgent {
    /// Starts the agent with `config`.
    pub fn start(config: farmhand_agent::AgentConfig) -> RunningAgent {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let status = Arc::new(farmhand_agent::AgentStatus::new());
        let task = tokio::spawn(farmhand_agent::run_with_status(
            config,
            shutdown.clone(),
            status.clone(),
        ));
        RunningAgent {
            status,
            shutdown,
            task,
        }
    }

    /// Whether it has returned (it should keep running through any outage).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks it to stop and waits until it returned `Ok`.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("agent stops")
            .unwrap()
            .unwrap();
    }
}
