//! One WebSocket to the control plane: dialing (with a timeout, frame limits and small
//! buffers), and sending/receiving protocol messages as JSON text frames.
//!
//! Generic over the byte stream so the handshake and session can be tested over an
//! in-memory pipe. The TCP stream goes through the HTTP proxy the environment names, if
//! any (`proxy_tunnel`); TLS and the upgrade then run inside the tunnel, unchanged.

use crate::plane::proxy_tunnel::{self, ProxyEnv, ProxyError, Route};
use crate::plane::tls::Trust;
use farmhand_protocol::{
    decode, encode, AgentMessage, DecodeError, PlaneMessage, DEFAULT_MAX_FRAME_BYTES,
};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Per-connection read buffer: frames are small, keep memory small.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Data is written out once this much is buffered (every send also flushes).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Most data buffered for a slow peer before sends fail.
const MAX_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The stream type of a dialed connection.
pub type TcpWs = MaybeTlsStream<TcpStream>;

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Dialing or the WebSocket upgrade failed.
    #[error("cannot connect to {url}: {detail}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
    /// The plane's certificate was refused (the reason names the CA or the pins).
    #[error("{reason}")]
    Tls {
        /// One sentence: "TLS: certificate for X is not trusted by …", "TLS: pin mismatch …".
        reason: String,
    },
    /// The HTTP proxy for the plane is unusable, unreachable or refused the tunnel.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Dialing did not finish in time.
    #[error("connecting to {url} timed out")]
    ConnectTimeout {
        /// Where.
        url: String,
    },
    /// The peer closed the connection.
    #[error("the control plane closed the connection")]
    Closed,
    /// A read or write failed.
    #[error("connection error: {0}")]
    Transport(String),
    /// The peer sent a frame that is not a valid message, or too large.
    #[error("bad frame from the control plane: {0}")]
    BadFrame(String),
}

/// WebSocket settings: 1 MiB message and frame limit, small buffers.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(DEFAULT_MAX_FRAME_BYTES))
        .max_frame_size(Some(DEFAULT_MAX_FRAME_BYTES))
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
}

/// An open WebSocket carrying protocol messages.
#[derive(Debug)]
pub struct Connection<S> {
    ws: WebSocketStream<S>,
}

/// Dials `url` (`ws://`, or `wss://` verified with `trust`) within `timeout`, through the
/// proxy the process environment names for it.
pub async fn connect(
    url: &str,
    trust: Option<&Trust>,
    timeout: Duration,
) -> Result<Connection<TcpWs>, ConnectionError> {
    connect_via(url, trust, timeout, &ProxyEnv::from_process()).await
}

/// Like [`connect`], with the proxy variables of `proxies` instead of the process's.
pub async fn connect_via(
    url: &str,
    trust: Option<&Trust>,
    timeout: Duration,
    proxies: &ProxyEnv,
) -> Result<Connection<TcpWs>, ConnectionError> {
    // One deadline for every step, so a slow proxy reports itself rather than a bare timeout.
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, dial(url, trust, proxies, deadline)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectionError::ConnectTimeout {
            url: url.to_string(),
        }),
    }
}

/// TCP (direct or through the proxy), then TLS with our own verifier (so a refusal can be
/// explained), then the upgrade.
async fn dial(
    url: &str,
    trust: Option<&Trust>,
    proxies: &ProxyEnv,
    deadline: Instant,
) -> Result<Connection<TcpWs>, ConnectionError> {
    let failed = |detail: String| ConnectionError::Connect {
        url: url.to_string(),
        detail,
    };
    let request = url
        .into_client_request()
        .map_err(|e| failed(e.to_string()))?;
    let (secure, host, port) =
        target(request.uri()).ok_or_else(|| failed("no host in the URL".into()))?;
    let tcp = match proxy_tunnel::route(proxies, secure, &host)? {
        Route::Direct => TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| failed(e.to_string()))?,
        Route::Proxy(proxy) => proxy.open_tunnel(&host, port, deadline).await?,
    };
    let _ = tcp.set_nodelay(true);
    let stream = match (secure, trust) {
        (false, _) => MaybeTlsStream::Plain(tcp),
        (true, Some(trust)) => MaybeTlsStream::Rustls(
            trust
                .handshake(&host, tcp)
                .await
                .map_err(|reason| ConnectionError::Tls { reason })?,
        ),
        (true, None) => return Err(failed("wss:// without TLS settings".into())),
    };
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .map_err(|e| failed(e.to_string()))?;
    Ok(Connection { ws })
}

/// Whether the URI is `wss://`, its host (without IPv6 brackets) and port.
fn target(uri: &Uri) -> Option<(bool, String, u16)> {
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    Some((secure, host.to_owned(), port))
}

/// How `url` is reached with `proxies`: directly or through which proxy (for the log line
/// at start and for `doctor`). `None` when the URL has no host.
pub fn route_for(url: &str, proxies: &ProxyEnv) -> Option<Result<Route, ProxyError>> {
    let request = url.into_client_request().ok()?;
    let (secure, host, _) = target(request.uri())?;
    Some(proxy_tunnel::route(proxies, secure, &host))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps an already-upgraded WebSocket (tests use an in-memory pipe).
    pub fn from_ws(ws: WebSocketStream<S>) -> Self {
        Connection { ws }
    }

    /// Sends one message as a text frame and flushes it.
    pub async fn send(&mut self, message: &AgentMessage) -> Result<(), ConnectionError> {
        self.ws
            .send(Message::text(encode(message)))
            .await
            .map_err(map_ws_error)
    }

    /// Receives the next message. Cancel-safe: partial frames stay buffered in the stream.
    pub async fn recv(&mut self) -> Result<PlaneMessage, ConnectionError> {
        loop {
            let frame = match self.ws.next().await {
                None => return Err(ConnectionError::Closed),
                Some(frame) => frame.map_err(map_ws_error)?,
            };
            match frame {
                Message::Text(text) => {
                    return decode(text.as_str(), DEFAULT_MAX_FRAME_BYTES).map_err(|e| match e {
                        DecodeError::TooLarge { .. } => ConnectionError::BadFrame(e.to_string()),
                        DecodeError::Malformed(m) => {
                            ConnectionError::BadFrame(format!("malformed frame: {m}"))
                        }
                    })
                }
                Message::Binary(_) => return Err(ConnectionError::BadFrame("binary frame".into())),
                Message::Close(_) => return Err(ConnectionError::Closed),
                // Pings are answered by tungstenite on the next write; pongs carry nothing.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// Sends a close frame and waits briefly for the peer's; errors are irrelevant here.
    pub async fn close(mut self) {
        let closing = async {
            let _ = self.ws.close(None).await;
            // The close handshake is done when the peer's close frame arrives.
            while let Some(Ok(frame)) = self.ws.next().await {
                if frame.is_close() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

fn map_ws_error(e: WsError) -> ConnectionError {
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => ConnectionError::Closed,
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            ConnectionError::BadFrame(format!(
                "frame of {size} bytes exceeds the {max_size}-byte limit"
            ))
        }
        WsError::Protocol(p) => ConnectionError::BadFrame(p.to_string()),
        other => ConnectionError::Transport(other.to_string()),
    }
}
