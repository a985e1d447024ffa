//! One agent's WebSocket as a stream of typed frames: text frames decoded with the bounded
//! protocol codec, sends encoded, and the "error, then close" sequence used whenever the
//! plane gives up on a connection.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use farmhand_protocol::{
    decode, encode, AgentMessage, DecodeError, PlaneMessage, ProtocolError, ProtocolErrorCode,
    VersionRange,
};
use tokio_tungstenite::tungstenite;

/// How long a socket is kept after refusing an oversized frame (see [`Connection::refuse`]).
const OVERSIZE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the closing frames may take: a peer that stopped reading must not keep a
/// session task (and a graceful shutdown) waiting.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why no message could be read.
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed the connection (or it dropped).
    Closed,
    /// A frame exceeded the limit.
    TooLarge(String),
    /// A frame was not a valid message.
    Malformed(String),
}

impl RecvError {
    /// The protocol error to answer with, if the peer can still be told.
    pub fn protocol_error(&self) -> Option<ProtocolError> {
        match self {
            RecvError::Closed => None,
            RecvError::TooLarge(m) => Some(refusal(ProtocolErrorCode::FrameTooLarge, m)),
            RecvError::Malformed(m) => Some(refusal(ProtocolErrorCode::MalformedFrame, m)),
        }
    }
}

/// A protocol error without extras.
pub fn refusal(code: ProtocolErrorCode, message: impl Into<String>) -> ProtocolError {
    ProtocolError {
        code,
        message: message.into(),
        supported: None,
        retry_after_s: None,
    }
}

/// `unsupported_version` naming the plane's range.
pub fn unsupported(supported: VersionRange) -> ProtocolError {
    ProtocolError {
        supported: Some(supported),
        ..refusal(
            ProtocolErrorCode::UnsupportedVersion,
            format!(
                "no protocol version in common; this control plane speaks {}..={}",
                supported.min, supported.max
            ),
        )
    }
}

/// The socket of one agent.
#[derive(Debug)]
pub struct Connection {
    ws: WebSocket,
    max_frame_bytes: usize,
}

impl Connection {
    /// Wraps an upgraded socket whose frame limits are already set to `max_frame_bytes`.
    pub fn new(ws: WebSocket, max_frame_bytes: usize) -> Self {
        Connection {
            ws,
            max_frame_bytes,
        }
    }

    /// The next agent message. Cancel-safe (usable in `select!`).
    pub async fn recv(&mut self) -> Result<AgentMessage, RecvError> {
        loop {
            let message = match self.ws.recv().await {
                None => return Err(RecvError::Closed),
                Some(Err(e)) => return Err(classify(e)),
                Some(Ok(m)) => m,
            };
            match message {
                Message::Text(text) => return self.decode(text.as_str()),
                Message::Binary(_) => {
                    return Err(RecvError::Malformed("binary frames are not allowed".into()))
                }
                Message::Close(_) => return Err(RecvError::Closed),
                Message::Ping(_) | Message::Pong(_) => continue,
            }
        }
    }

    fn decode(&self, text: &str) -> Result<AgentMessage, RecvError> {
        decode(text, self.max_frame_bytes).map_err(|e| match e {
            DecodeError::TooLarge { .. } => RecvError::TooLarge(e.to_string()),
            DecodeError::Malformed(_) => RecvError::Malformed(e.to_string()),
        })
    }

    /// Sends one message; an error means the socket is unusable.
    pub async fn send(&mut self, message: &PlaneMessage) -> Result<(), axum::Error> {
        self.ws.send(Message::text(encode(message))).await
    }

    /// Sends `error`, then a close frame, and drops the socket (best effort: the peer may
    /// already be gone; bounded by a few seconds).
    pub async fn refuse(self, error: ProtocolError) {
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT + OVERSIZE_LINGER, self.refuse_inner(error)).await;
    }

    async fn refuse_inner(mut self, error: ProtocolError) {
        let reason = error.message.chars().take(100).collect::<String>();
        let oversized = error.code == ProtocolErrorCode::FrameTooLarge;
        let _ = self.send(&PlaneMessage::Error(error)).await;
        if oversized {
            // The rest of the refused frame is still unread in the kernel; closing now would
            // send a TCP reset that can destroy our error frame before the agent reads it.
            // Keep the socket a moment so the agent learns why (bounded: one short timer).
            let _ = self
                .ws
                .send(Message::Close(Some(CloseFrame {
                    code: 1009,
                    reason: reason.into(),
                })))
                .await;
            tokio::time::sleep(OVERSIZE_LINGER).await;
            return;
        }
        self.close(reason).await;
    }

    /// Sends a close frame and drops the socket (bounded by a few seconds).
    pub async fn close(mut self, reason: String) {
        let frame = CloseFrame {
            code: 1000,
            reason: reason.into(),
        };
        let _ =
            tokio::time::timeout(CLOSE_TIMEOUT, self.ws.send(Message::Close(Some(frame)))).await;
    }
}

/// tungstenite refuses an oversized frame with a capacity error before buffering it; tell
/// that apart from a broken socket so the agent hears `frame_too_large`.
fn classify(error: axum::Error) -> RecvError {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => {
            RecvError::TooLarge(e.to_string())
        }
        Ok(e) if matches!(*e, tungstenite::Error::Utf8(_)) => RecvError::Malformed(e.to_string()),
        _ => RecvError::Closed,
    }
}
