//! One simulated agent: a single task holding one WebSocket that runs the real handshake,
//! sends its inventory, keeps the heartbeat and answers commands; it reconnects with
//! backoff (honouring `retry_later`, and `Retry-After` on a 503 before the upgrade) until
//! the swarm stops. A `kick` (churn) drops its connection abruptly, as a network failure
//! would; it then reconnects and reports how long that took.

use super::answer::{answer, inventory};
use super::enroll::Identity;
use super::fleet::{Fleet, Online};
use anyhow::{bail, Context};
use farmhand_protocol::handshake::{ClientHandshake, Step};
use farmhand_protocol::{
    decode, encode, AgentMessage, Heartbeat, PlaneMessage, ProtocolErrorCode,
    DEFAULT_MAX_FRAME_BYTES, SUPPORTED_VERSIONS,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How a session ended.
enum End {
    /// Closed or broken; `welcomed` says whether it got as far as `welcome`.
    Closed { welcomed: bool },
    /// The plane said `retry_later`: wait this long.
    RetryAfter(Duration),
    /// Kicked by the churn driver: the socket was dropped without a close handshake.
    Churned,
}

/// The churn driver's handle on one agent.
#[derive(Debug, Default)]
pub struct Kick {
    drop_now: Notify,
    welcomed: AtomicBool,
}

impl Kick {
    /// Drops the agent's connection if it is welcomed now; false when it is not (it is
    /// between connections already).
    pub fn kick(&self) -> bool {
        if !self.welcomed.load(Ordering::SeqCst) {
            return false;
        }
        self.drop_now.notify_one();
        true
    }
}

/// Marks the agent welcomed for as long as it lives.
struct Welcomed<'a>(&'a Kick);

impl<'a> Welcomed<'a> {
    fn new(kick: &'a Kick) -> Self {
        // A kick that raced the end of the previous session must not drop this one.
        let _ = kick.drop_now.notified().now_or_never();
        kick.welcomed.store(true, Ordering::SeqCst);
        Welcomed(kick)
    }
}

impl Drop for Welcomed<'_> {
    fn drop(&mut self) {
        self.0.welcomed.store(false, Ordering::SeqCst);
    }
}

/// Runs agent `me` until `stop` fires; `kick` drops its connection (churn).
pub async fn run(me: Identity, fleet: Arc<Fleet>, stop: CancellationToken, kick: Arc<Kick>) {
    let mut failures = 0u32;
    // Set by a churn drop: when the agent started trying to come back.
    let mut back_since: Option<Instant> = None;
    loop {
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = session(&me, &fleet, &kick, &mut back_since, failures) => ended,
        };
        let delay = match ended {
            Ok(End::Churned) => {
                failures = 0;
                // The first attempt starts after this delay: the reconnect time excludes it.
                let delay = backoff(me.index, 0);
                back_since = Some(Instant::now() + delay);
                delay
            }
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

/// The longest reconnect delay an agent waits on its own (without a `retry_after`):
/// [`backoff`]'s ceiling plus its jitter.
pub const MAX_BACKOFF: Duration = Duration::from_millis(BACKOFF_CEILING_MS + 1000);
const BACKOFF_CEILING_MS: u64 = 4000;

/// 250 ms doubling to 4 s, plus up to 1 s of per-agent jitter so a restarted plane is not
/// hit by every agent in the same millisecond.
fn backoff(index: usize, failures: u32) -> Duration {
    let base = (250u64 << failures.min(4)).min(BACKOFF_CEILING_MS);
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

async fn session(
    me: &Identity,
    fleet: &Fleet,
    kick: &Kick,
    back_since: &mut Option<Instant>,
    attempt: u32,
) -> anyhow::Result<End> {
    let base = fleet.url_for(&me.agent_id, attempt);
    let url = format!("{}/v1/agent/connect", base.replacen("http", "ws", 1));
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), false);
    let connected = timeout(Duration::from_secs(20), connect)
        .await
        .context("connect timed out")?;
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(WsError::Http(response)) => {
            // Refused before the upgrade (503 `retry_later` while too many are mid-handshake).
            fleet.note_refusal(&format!("http {}", response.status().as_u16()));
            let after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            return match after {
                Some(s) => Ok(End::RetryAfter(Duration::from_secs(s))),
                None => bail!("the plane answered {}", response.status()),
            };
        }
        Err(e) => return Err(anyhow::Error::new(e).context("connecting")),
    };
    let (mut handshake, hello) =
        ClientHandshake::start(&me.agent_id, "farmhand-swarm", SUPPORTED_VERSIONS);
    send(&mut ws, &hello).await?;
    let welcome = loop {
        let Some(message) = next(&mut ws).await? else {
            return ended(fleet, None, false);
        };
        let seen = message.clone();
        match handshake.receive(message, |t| me.key.sign(t).as_ref().to_vec()) {
            Ok(Step::Send(reply)) => send(&mut ws, &reply).await?,
            Ok(Step::Open { welcome, .. }) => break welcome,
            Err(_) => return ended(fleet, Some(seen), false),
        }
    };
    send(
        &mut ws,
        &inventory(fleet.imei_prefix, me.index, fleet.modems),
    )
    .await?;
    let _online = Online::new(fleet);
    let _welcomed = Welcomed::new(kick);
    if let Some(since) = back_since.take() {
        fleet.note_reconnect(since.elapsed());
    }
    let beat = Duration::from_secs(welcome.heartbeat_interval_s.max(1));
    serve(&mut ws, fleet, beat, kick).await
}

/// The welcomed part: heartbeats out, commands answered (after the configured latency),
/// until the plane closes, or `kick` drops the socket.
async fn serve(ws: &mut Ws, fleet: &Fleet, beat: Duration, kick: &Kick) -> anyhow::Result<End> {
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
                    PlaneMessage::Error(e) => return ended(fleet, Some(PlaneMessage::Error(e)), true),
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                send(ws, &AgentMessage::Heartbeat(Heartbeat { time_ms: now_ms() })).await?;
            }
            _ = kick.drop_now.notified() => return Ok(End::Churned),
            _ = sleep_until(first_due.unwrap_or_else(Instant::now)), if first_due.is_some() => {
                if let Some((_, text)) = due.pop_front() {
                    ws.send(Message::text(text)).await?;
                }
            }
        }
    }
}

fn ended(fleet: &Fleet, msg: Option<PlaneMessage>, welcomed: bool) -> anyhow::Result<End> {
    if let Some(PlaneMessage::Error(e)) = &msg {
        let code = serde_json::to_value(e.code).unwrap_or_default();
        fleet.note_refusal(code.as_str().unwrap_or("unknown"));
    }
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
