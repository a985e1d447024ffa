//! Messages the agent sends to the control plane.

use crate::command::CommandResult;
use crate::inventory::{BoxCapabilities, Inventory, ModemsChanged};
use crate::plane_msg::Heartbeat;
use crate::rotation::RotationReport;
use crate::usage::UsageReport;
use crate::version::VersionRange;
use serde::{Deserialize, Serialize};

/// Agent → plane. The first frame of a connection is always [`AgentMessage::Hello`], the
/// second [`AgentMessage::Auth`]; everything else is only valid after `welcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMessage {
    /// Opens the connection: who the agent claims to be and which versions it speaks.
    Hello(Hello),
    /// Answers the plane's `challenge` with a signature proving possession of the key.
    Auth(Auth),
    /// The full inventory: sent first after `welcome`, and again whenever the agent wants the
    /// plane to replace everything it knows about this box.
    Inventory(Inventory),
    /// Modems that changed (or disappeared) since the last inventory or change report.
    ModemsChanged(ModemsChanged),
    /// The answer to one delivery of a command.
    CommandResult(CommandResult),
    /// Sent when the agent has had nothing else to send for one heartbeat interval.
    Heartbeat(Heartbeat),
    /// Monotonic traffic totals per allocation, sent after every metering round and at the
    /// start of a session.
    Usage(UsageReport),
    /// A rotation the agent did on its own (automatic rotation), reported like the answer
    /// to a `rotate_ip`.
    Rotated(RotationReport),
    /// What the box was seen to honour changed (the agent learned it from a write it read
    /// back): replaces the `capabilities` of the last inventory.
    Capabilities(BoxCapabilities),
    /// The box's own health (load, memory, disks), at the start of a session and whenever
    /// a value moved beyond a threshold.
    Health(crate::HostHealth),
}

/// First frame of every connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Protocol versions the agent can speak.
    pub versions: VersionRange,
    /// The id the plane assigned at enrollment.
    pub agent_id: String,
    /// The agent's software version (informational).
    pub agent_version: String,
}

/// Second frame: the Ed25519 signature of [`crate::auth_transcript`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Base64 (standard, padded) of the 64-byte signature.
    pub signature: String,
}
