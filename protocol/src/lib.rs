//! The agent ↔ control-plane wire protocol: every message, its fields, and the rules both
//! sides share (version range, frame size limit, the authentication transcript), and the
//! agent's side of the handshake as a state machine without I/O (`handshake`), which the
//! agent, the load generator and every test peer drive.
//!
//! This crate does no I/O and knows nothing of tokio, sockets or storage. Messages are named
//! by direction: [`AgentMessage`] travels agent → plane, [`PlaneMessage`] plane → agent. Each
//! is one JSON object per WebSocket text frame, tagged by `type`. `docs/protocol.md` is the
//! prose version of this crate; keep them in step.
#![warn(missing_docs)]

mod agent_msg;
mod auth;
mod codec;
mod command;
pub mod handshake;
mod health;
mod inventory;
mod logging;
mod plane_msg;
mod rotation;
mod secret;
mod usage;
mod version;

pub use agent_msg::{AgentMessage, Auth, Hello};
pub use auth::{auth_transcript, verify_auth, AuthError, NONCE_LEN, PUBLIC_KEY_LEN};
pub use codec::{decode, encode, DecodeError, DEFAULT_MAX_FRAME_BYTES};
pub use command::{
    Command, CommandBody, CommandError, CommandErrorCode, CommandId, CommandOutput, CommandResult,
    DesiredPort, Outcome, Provision, Provisioned, Reconcile, Reconciled, Release, Released,
    RotateIp, Rotated, UpdatePort, Updated,
};
pub use health::{DiskHealth, HealthLimits, HealthResource, HostHealth};
pub use inventory::{is_imei, BoxCapabilities, Inventory, ManagedPort, Modem, ModemsChanged, Site};
pub use logging::FRAME_LOG_GUARD;
pub use plane_msg::{
    Challenge, Heartbeat, PlaneMessage, ProtocolError, ProtocolErrorCode, Welcome,
};
pub use rotation::RotationReport;
pub use secret::Secret;
pub use usage::{AllocationUsage, UsageReport, MAX_USAGE_ENTRIES};
pub use version::{VersionRange, PROTOCOL_VERSION, SUPPORTED_VERSIONS};
