//! Commands (plane → agent) and their results (agent → plane).
//!
//! Every command carries a unique id and a deadline. The agent journals the result of each id
//! before answering, so a redelivered id gets the recorded result and ProxySmart is not
//! touched twice. Effects are also idempotent per allocation id.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};

/// A command id: unique per command, reused only by redeliveries of the same command.
pub type CommandId = String;

/// One command delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Unique id; the idempotency key on the agent.
    pub id: CommandId,
    /// Unix milliseconds after which the plane no longer waits for the result; the agent
    /// refuses to start a command past its deadline (`deadline_exceeded`).
    pub deadline_ms: u64,
    /// What to do.
    pub body: CommandBody,
}

/// The operations an agent can be asked to perform — the only ones that can reach ProxySmart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandBody {
    /// Create (or return the existing) port for an allocation.
    Provision(Provision),
    /// Remove an allocation's port; a port already gone is success.
    Release(Release),
    /// Ask a modem for a new external IP.
    RotateIp(RotateIp),
    /// Change an existing port's expiry (renewal).
    UpdatePort(UpdatePort),
    /// The full set of ports that should exist on this agent; the agent removes the ports it
    /// manages that are not in it and reports the ones it lacks.
    Reconcile(Reconcile),
}

impl CommandBody {
    /// The `op` name, for logs: log this, never the body (`provision` carries a password).
    pub fn op(&self) -> &'static str {
        match self {
            CommandBody::Provision(_) => "provision",
            CommandBody::Release(_) => "release",
            CommandBody::RotateIp(_) => "rotate_ip",
            CommandBody::UpdatePort(_) => "update_port",
            CommandBody::Reconcile(_) => "reconcile",
        }
    }
}

/// Create a port on `imei` for `allocation_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    /// The allocation this port belongs to.
    pub allocation_id: String,
    /// The modem to put it on.
    pub imei: String,
    /// The buyer's proxy login.
    pub login: String,
    /// The buyer's proxy password.
    pub password: Secret,
    /// When the port must stop working (Unix ms); set as ProxySmart's own port expiry.
    pub expires_at_ms: u64,
    /// Optional speed limit, kbit/s, both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_kbit: Option<u64>,
    /// Optional traffic quota in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_quota_mb: Option<u64>,
    /// Optional automatic rotation: the agent rotates the port's modem at least this often,
    /// seconds (rotation is per modem: the shortest interval among its ports wins, and the
    /// seller's `min_rotation_interval_s` is a floor). Journaled with the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_every_s: Option<u64>,
}

/// Remove the port of `allocation_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The allocation whose port goes.
    pub allocation_id: String,
}

/// Rotate the external IP of `imei`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateIp {
    /// The modem.
    pub imei: String,
}

/// Change the expiry of an allocation's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePort {
    /// The allocation whose port changes.
    pub allocation_id: String,
    /// The new expiry, Unix ms.
    pub expires_at_ms: u64,
}

/// The desired state of this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconcile {
    /// Every port that should exist on this agent.
    pub ports: Vec<DesiredPort>,
}

/// One port that should exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredPort {
    /// The allocation.
    pub allocation_id: String,
    /// The modem it should be on.
    pub imei: String,
}

/// The answer to one delivery of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandResult {
    /// The id of the command answered.
    pub id: CommandId,
    /// What happened.
    pub outcome: Outcome,
}

/// Success with its data, or a precise error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The command took effect (or had already).
    Ok {
        /// The command's data.
        output: CommandOutput,
    },
    /// The command was not carried out.
    Error {
        /// Why.
        error: CommandError,
    },
}

/// Success data, one variant per command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommandOutput {
    /// Answer to `provision`.
    Provision(Provisioned),
    /// Answer to `release`.
    Release(Released),
    /// Answer to `rotate_ip`.
    RotateIp(Rotated),
    /// Answer to `update_port`.
    UpdatePort(Updated),
    /// Answer to `reconcile`.
    Reconcile(Reconciled),
}

/// The port exists, is applied and accepts the buyer's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provisioned {
    /// The allocation.
    pub allocation_id: String,
    /// The modem the port is on.
    pub imei: String,
    /// ProxySmart's id for the port.
    pub port_id: String,
    /// The HTTP proxy port on the box.
    pub http_port: u16,
    /// The SOCKS5 proxy port on the box.
    pub socks_port: u16,
}

/// The port is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Released {
    /// The allocation.
    pub allocation_id: String,
    /// False when there was nothing to remove (already gone).
    pub existed: bool,
}

/// The modem was asked for a new IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotated {
    /// The modem.
    pub imei: String,
    /// The external IP before the rotation, if known.
    pub old_ip: Option<String>,
    /// The external IP read back after the rotation, if the modem reported one in time.
    pub new_ip: Option<String>,
    /// Whether `new_ip` differs from `old_ip` (the carrier may hand back the same IP).
    pub changed: bool,
}

/// The port's expiry changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Updated {
    /// The allocation.
    pub allocation_id: String,
}

/// What reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconciled {
    /// Allocation ids whose ports the agent removed because they were not desired.
    pub removed: Vec<String>,
    /// Desired allocation ids the agent has no port for.
    pub missing: Vec<String>,
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandError {
    /// For programs.
    pub code: CommandErrorCode,
    /// For people; never contains a credential.
    pub message: String,
    /// With `box_refused_field`: the ProxySmart field the box did not take (`bw_quota`,
    /// `PROXY_VALID_BEFORE`, `proxy_login`, …). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl CommandError {
    /// Builds an error.
    pub fn new(code: CommandErrorCode, message: impl Into<String>) -> Self {
        CommandError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// `box_refused_field`: the box did not take `field` (nothing half-made is left).
    pub fn box_refused(field: &str, message: impl Into<String>) -> Self {
        CommandError {
            code: CommandErrorCode::BoxRefusedField,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

/// Command error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandErrorCode {
    /// A field failed the agent's own validation.
    InvalidCommand,
    /// The seller's local policy forbids this.
    PolicyDenied,
    /// ProxySmart does not know this modem.
    UnknownImei,
    /// The modem is offline.
    ModemOffline,
    /// ProxySmart has no free TCP ports.
    NoFreePorts,
    /// ProxySmart rejected our credentials (a seller config problem).
    ProxysmartUnauthorized,
    /// ProxySmart could not be reached or answered 5xx.
    ProxysmartUnavailable,
    /// ProxySmart did not answer in time.
    ProxysmartTimeout,
    /// ProxySmart answered but refused the action.
    ProxysmartRefused,
    /// ProxySmart answered something that is not what its API returns (HTML, garbage).
    ProxysmartMalformed,
    /// The box did not take a field of a write (it answered success, but reading its state
    /// back shows otherwise); `field` names it, and nothing half-made was left behind.
    BoxRefusedField,
    /// The command arrived after its deadline and was not started.
    DeadlineExceeded,
    /// Another rotation of the same modem (manual or automatic) is running.
    RotationInProgress,
    /// The agent failed for a reason of its own (storage).
    Internal,
    /// A code from a newer peer that this build does not know.
    #[serde(other)]
    Unknown,
}

impl CommandErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCommand => "invalid_command",
            Self::PolicyDenied => "policy_denied",
            Self::UnknownImei => "unknown_imei",
            Self::ModemOffline => "modem_offline",
            Self::NoFreePorts => "no_free_ports",
            Self::ProxysmartUnauthorized => "proxysmart_unauthorized",
            Self::ProxysmartUnavailable => "proxysmart_unavailable",
            Self::ProxysmartTimeout => "proxysmart_timeout",
            Self::ProxysmartRefused => "proxysmart_refused",
            Self::ProxysmartMalformed => "proxysmart_malformed",
            Self::BoxRefusedField => "box_refused_field",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::RotationInProgress => "rotation_in_progress",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}
