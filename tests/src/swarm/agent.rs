//! One simulated agent: a single task holding one WebSocket that runs the real handshake,
//! sends its inventory, keeps the heartbeat and answers commands; it reconnects with
//! backoff (honouring `retry_later`) until the swarm stops.

use super::answer::{answer, inventory};
use super::enroll::Identity;
use super::fleet::{Fleet, Online};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use farmhand_protocol::{
    auth_transcript, decode, encode, AgentMessage, Auth, Heartbeat, Hello, PlaneMessage,
    ProtocolErrorCode, VersionRange, DEFAULT_MAX_FRAME_BYTES,
};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How a session ended.
enum End {
    /// Closed or broken; `welcomed` says whether it got as far as `welcome`.
    Closed { welcomed: bool },
    /// The plane said `retry_later`: wait this long.
    RetryAfter(Duration),
}

/// Runs agent `me` until `stop` fires.
pub async fn run(me: Identity, fleet: Arc<Fleet>, stop: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = session(&me, &fleet) => ended,
        };
        let delay = match ended {
            Ok(End::Closed { welcomed: true }) => {
                failures = 0;
                backoff(me.index, 0)
            }
            Ok(End::Closed { welcomed: false }) => backoff(me.index, failures),
            Ok(End::RetryAfter(after)) => after + backoff(me.index, 0),
            Err(e) => {
                fleet.note_error(&e);
                backoff(me.index, failures)
            }
        };
        failures = failures.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep(delay) => {}
        }
    }
}

/// 250 ms doubling to 4 s, plus up to 1 s of per-agent jitter so a restarted plane is not
/// hit by every agent in the same millisecond.
fn backoff(index: usize, failures: u32) -> Duration {
    let base = 250u64 << failures.min(4);
    let jitter = (index as u64)
        .wrapping_mul(7919)
        .wrapping_add(u64::from(failures) * 104_729)
        % 1000;
    Duration::from_millis(base + jitter)
}

/// Small buffers: ten thousand of these live in one process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(DEFAULT_MAX_FRAME_BYTES))
        .max_frame_size(Some(DEFAULT_MAX_FRAME_BYTES))
}

async fn session(me: &Identity, fleet: &Fleet) -> anyhow::Result<End> {
    let url = format!("{}/v1/agent/connect", fleet.url.replacen("http", "ws", 1));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), false);
    let (mut ws, _) = timeout(Duration::from_secs(20), connect)
        .await
        .context("connect timed out")?
        .context("connecting")?;
    send(&mut ws, &hello(&me.agent_id)).await?;
    let challenge = match next(&mut ws).await? {
        Some(PlaneMessage::Challenge(c)) => c,
        other => return ended(other, false),
    };
    let nonce = STANDARD.decode(&challenge.nonce).context("nonce")?;
    let signature = me
        .key
        .sign(&auth_transcript(challenge.version, &me.agent_id, &nonce));
    let auth = AgentMessage::Auth(Auth {
        signature: STANDARD.encode(signature.as_ref()),
    });
    send(&mut ws, &auth).await?;
    let welcome = match next(&mut ws).await? {
        Some(PlaneMessage::Welcome(w)) => w,
        other => return ended(other, false),
    };
    send(
        &mut ws,
        &inventory(fleet.imei_prefix, me.index, fleet.modems),
    )
    .await?;
    let _online = Online::new(fleet);
    serve(
        &mut ws,
        fleet,
        Duration::from_secs(welcome.heartbeat_interval_s.max(1)),
    )
    .await
}

/// The welcomed part: heartbeats out, commands answered (after the configured latency).
async fn serve(ws: &mut Ws, fleet: &Fleet, beat: Duration) -> anyhow::Result<End> {
    let mut heartbeat = tokio::time::interval_at(Instant::now() + beat, beat);
    // Every answer waits the same latency, so the queue stays sorted by due time.
    let mut due: VecDeque<(Instant, String)> = VecDeque::new();
    let mut next_port = 0u16;
    loop {
        let first_due = due.front().map(|d| d.0);
        tokio::select! {
            frame = ws.next() => {
                let msg = match frame {
                    Some(Ok(Message::Text(t))) => decode::<PlaneMessage>(&t, DEFAULT_MAX_FRAME_BYTES)?,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        return Ok(End::Closed { welcomed: true })
                    }
                    Some(Ok(_)) => continue,
                };
                match msg {
                    PlaneMessage::Command(cmd) => {
                        let text = encode(&answer(&cmd, &mut next_port));
                        if fleet.answer_latency.is_zero() {
                            ws.send(Message::text(text)).await?;
                        } else {
                            due.push_back((Instant::now() + fleet.answer_latency, text));
                        }
                    }
                    PlaneMessage::Error(e) => return ended(Some(PlaneMessage::Error(e)), true),
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                send(ws, &AgentMessage::Heartbeat(Heartbeat { time_ms: now_ms() })).await?;
            }
            _ = sleep_until(first_due.unwrap_or_else(Instant::now)), if first_due.is_some() => {
                if let Some((_, text)) = due.pop_front() {
                    ws.send(Message::text(text)).await?;
                }
            }
        }
    }
}

fn ended(msg: Option<PlaneMessage>, welcomed: bool) -> anyhow::Result<End> {
    match msg {
        None => Ok(End::Closed { welcomed }),
        Some(PlaneMessage::Error(e)) if e.code == ProtocolErrorCode::RetryLater => Ok(
            End::RetryAfter(Duration::from_secs(e.retry_after_s.unwrap_or(1))),
        ),
        Some(PlaneMessage::Error(e)) if e.code == ProtocolErrorCode::ShuttingDown => {
            Ok(End::Closed { welcomed })
        }
        Some(PlaneMessage::Error(e)) => bail!("plane refused the agent: {:?}", e.code),
        Some(other) => bail!("unexpected frame from the plane: {other:?}"),
    }
}

/// The next protocol message other than a heartbeat (`None`: closed), within 20 s.
async fn next(ws: &mut Ws) -> anyhow::Result<Option<PlaneMessage>> {
    loop {
        let frame = timeout(Duration::from_secs(20), ws.next())
            .await
            .context("handshake timed out")?;
        match frame {
            Some(Ok(Message::Text(t))) => {
                let msg: PlaneMessage = decode(&t, DEFAULT_MAX_FRAME_BYTES)?;
                if !matches!(msg, PlaneMessage::Heartbeat(_)) {
                    return Ok(Some(msg));
                }
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, msg: &AgentMessage) -> anyhow::Result<()> {
    Ok(ws.send(Message::text(encode(msg))).await?)
}

fn hello(agent_id: &str) -> AgentMessage {
    AgentMessage::Hello(Hello {
        versions: VersionRange { min: 1, max: 1 },
        agent_id: agent_id.to_owned(),
        agent_version: "farmhand-swarm".into(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
