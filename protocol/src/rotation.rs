//! Rotations the agent did on its own (`rotated`, agent → plane).
//!
//! An allocation may ask for automatic IP rotation (`provision.rotate_every_s`); the agent's
//! scheduler carries it out and reports each one with this message, unsolicited, so the
//! plane can record it like a manual `rotate_ip`.

use serde::{Deserialize, Serialize};

/// One finished rotation of a modem that no command asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationReport {
    /// The modem.
    pub imei: String,
    /// The external IP before the rotation, if known.
    pub old_ip: Option<String>,
    /// The external IP read back after it; `None` when the modem showed no settled IP
    /// within the agent's rotation timeout (the reset was still requested).
    pub new_ip: Option<String>,
    /// Whether `new_ip` is known and differs from `old_ip`.
    pub changed: bool,
    /// When the rotation finished, Unix ms on the plane's clock (as the agent learned it
    /// from `welcome`).
    pub at_ms: u64,
    /// True for a rotation the agent's scheduler started (the only kind reported so far).
    pub automatic: bool,
}
