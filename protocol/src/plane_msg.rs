//! Messages the control plane sends to the agent.

use crate::command::Command;
use crate::version::VersionRange;
use serde::{Deserialize, Serialize};

/// Plane → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlaneMessage {
    /// Answers `hello`: the negotiated version and a fresh nonce to sign.
    Challenge(Challenge),
    /// Authentication succeeded; the session is open.
    Welcome(Welcome),
    /// Something went wrong; the plane closes the connection after sending it.
    Error(ProtocolError),
    /// A command to execute; answered with exactly one `command_result` per delivery.
    Command(Command),
    /// Sent when the plane has had nothing else to send for one heartbeat interval.
    Heartbeat(Heartbeat),
}

impl PlaneMessage {
    /// The message's type as on the wire (`challenge`, `welcome`, …), for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            PlaneMessage::Challenge(_) => "challenge",
            PlaneMessage::Welcome(_) => "welcome",
            PlaneMessage::Error(_) => "error",
            PlaneMessage::Command(_) => "command",
            PlaneMessage::Heartbeat(_) => "heartbeat",
        }
    }
}

/// The challenge the agent must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// The version both sides will speak from now on.
    pub version: u32,
    /// Base64 of [`crate::NONCE_LEN`] random bytes, never reused.
    pub nonce: String,
}

/// The session is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// Identifies this session in both sides' logs.
    pub session_id: String,
    /// Each side sends a heartbeat when it has been silent this long; a peer silent for three
    /// intervals is considered gone.
    pub heartbeat_interval_s: u64,
    /// The plane's clock (Unix milliseconds), so the agent can report skew.
    pub server_time_ms: u64,
    /// What the plane requires of the box before it sends new orders (absent from planes
    /// older than the field): the agent shows them to the seller and warns before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_limits: Option<crate::HealthLimits>,
}

/// A keep-alive frame (both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Sender's clock, Unix milliseconds.
    pub time_ms: u64,
}

/// A connection-level error, followed by a close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolError {
    /// What went wrong, for programs.
    pub code: ProtocolErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// With `unsupported_version`: the versions the plane speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported: Option<VersionRange>,
    /// With `retry_later`: wait at least this long (plus jitter) before reconnecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

/// Connection-level error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolErrorCode {
    /// No version in common; see `supported`.
    UnsupportedVersion,
    /// The signature did not verify, or the agent id is unknown.
    AuthFailed,
    /// This agent's key was revoked; reconnecting will not help.
    Revoked,
    /// Another live connection already uses this agent key.
    DuplicateAgent,
    /// The frame was not a valid message, or not valid at this point of the conversation.
    MalformedFrame,
    /// The frame exceeded the size limit.
    FrameTooLarge,
    /// The handshake was not completed in time.
    HandshakeTimeout,
    /// The plane is busy; reconnect after `retry_after_s`.
    RetryLater,
    /// The plane is shutting down.
    ShuttingDown,
    /// A code from a newer peer that this build does not know.
    #[serde(other)]
    Unknown,
}
