//! The seller's local policy: what the marketplace may do on this box. It comes from the
//! `[policy]` section of the agent's config file, which the control plane cannot change.
//!
//! Rules: which commands are allowed (each on its own switch, so refusing `provision` never
//! refuses the `release` that cleans up after it), IMEIs excluded from the marketplace (never
//! reported, never touched), a cap on marketplace ports per modem, and a minimum time
//! between two rotations of one modem (manual or automatic; also the floor of every
//! automatic rotation schedule, see `autorotate`). A command outside the policy is answered with
//! `policy_denied` and audited like any other.

use farmhand_protocol::{CommandBody, CommandError, CommandErrorCode};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Longest `min_rotation_interval_s` accepted (one day).
pub const MAX_MIN_ROTATION_INTERVAL_S: u64 = 86_400;
/// Largest `max_ports_per_modem` accepted (0 means no limit).
pub const MAX_PORTS_PER_MODEM_LIMIT: u32 = 1000;

/// The validated policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Which commands the control plane may run.
    pub allow: AllowedCommands,
    /// Modems the marketplace may neither see nor touch (the seller's own).
    pub excluded_imeis: BTreeSet<String>,
    /// Most marketplace ports (`farmhand-*`) on one modem; `None` = no limit.
    pub max_ports_per_modem: Option<u32>,
    /// Shortest time between two rotations of one modem; zero = no limit.
    pub min_rotation_interval: Duration,
}

/// One switch per command; every switch defaults to allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowedCommands {
    /// Create ports for buyers.
    pub provision: bool,
    /// Remove a buyer's port.
    pub release: bool,
    /// Ask a modem for a new external IP.
    pub rotate_ip: bool,
    /// Change a port's expiry (renewals).
    pub update_port: bool,
    /// Remove marketplace ports the control plane no longer wants.
    pub reconcile: bool,
}

impl Default for AllowedCommands {
    fn default() -> Self {
        AllowedCommands {
            provision: true,
            release: true,
            rotate_ip: true,
            update_port: true,
            reconcile: true,
        }
    }
}

/// The `[policy]` section as written; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    #[serde(default)]
    allow: AllowedCommands,
    #[serde(default)]
    excluded_imeis: Vec<String>,
    #[serde(default)]
    max_ports_per_modem: u32,
    #[serde(default)]
    min_rotation_interval_s: u64,
}

impl FilePolicy {
    /// The policy this section describes (checked later by [`Policy::check_values`]).
    pub fn into_policy(self) -> Policy {
        Policy {
            allow: self.allow,
            excluded_imeis: self
                .excluded_imeis
                .iter()
                .map(|i| i.trim().to_string())
                .collect(),
            max_ports_per_modem: (self.max_ports_per_modem > 0).then_some(self.max_ports_per_modem),
            min_rotation_interval: Duration::from_secs(self.min_rotation_interval_s),
        }
    }
}

/// A `policy_denied` error.
pub fn denied(message: impl Into<String>) -> CommandError {
    CommandError::new(CommandErrorCode::PolicyDenied, message)
}

impl Policy {
    /// Checks the values once at load: the offending key and what is wrong.
    pub fn check_values(&self) -> Result<(), (&'static str, String)> {
        if let Some(bad) = self
            .excluded_imeis
            .iter()
            .find(|i| !crate::proxysmart::is_imei(i))
        {
            let problem = format!("{bad:?} is not a 15-digit IMEI");
            return Err(("policy.excluded_imeis", problem));
        }
        if self
            .max_ports_per_modem
            .is_some_and(|m| m > MAX_PORTS_PER_MODEM_LIMIT)
        {
            let problem = format!("must be 0 (no limit) ..= {MAX_PORTS_PER_MODEM_LIMIT}");
            return Err(("policy.max_ports_per_modem", problem));
        }
        if self.min_rotation_interval.as_secs() > MAX_MIN_ROTATION_INTERVAL_S {
            let problem = format!("must be 0..={MAX_MIN_ROTATION_INTERVAL_S} seconds");
            return Err(("policy.min_rotation_interval_s", problem));
        }
        Ok(())
    }

    /// Whether the marketplace must neither see nor touch this modem.
    pub fn excludes(&self, imei: &str) -> bool {
        self.excluded_imeis.contains(imei)
    }

    /// The checks that need only the command: its op is allowed and the modem it names (if
    /// any) is not excluded. Checks that need the box's state run inside the commands.
    pub fn check(&self, body: &CommandBody) -> Result<(), CommandError> {
        if !self.allows(body) {
            return Err(denied(format!(
                "this box's policy does not allow {}",
                body.op()
            )));
        }
        let named = match body {
            CommandBody::Provision(p) => Some(p.imei.as_str()),
            CommandBody::RotateIp(r) => Some(r.imei.as_str()),
            _ => None,
        };
        match named {
            Some(imei) if self.excludes(imei) => Err(excluded(imei)),
            _ => Ok(()),
        }
    }

    /// Whether the op of `body` is switched on. Exhaustive, so a new command needs a switch.
    pub fn allows(&self, body: &CommandBody) -> bool {
        match body {
            CommandBody::Provision(_) => self.allow.provision,
            CommandBody::Release(_) => self.allow.release,
            CommandBody::RotateIp(_) => self.allow.rotate_ip,
            CommandBody::UpdatePort(_) => self.allow.update_port,
            CommandBody::Reconcile(_) => self.allow.reconcile,
        }
    }

    /// Refuses a new port on `imei` when it already carries `existing` marketplace ports.
    pub fn check_port_count(&self, imei: &str, existing: usize) -> Result<(), CommandError> {
        match self.max_ports_per_modem {
            Some(max) if existing >= max as usize => Err(denied(format!(
                "modem {imei} already has {existing} marketplace ports; this box's policy allows {max}"
            ))),
            _ => Ok(()),
        }
    }
}

/// The error for a command that would touch an excluded modem.
pub fn excluded(imei: &str) -> CommandError {
    denied(format!(
        "modem {imei} is excluded from the marketplace by this box's policy"
    ))
}

/// Per modem: when its last rotation started and whether one is running. Shared by the
/// `rotate_ip` command and the automatic scheduler (`autorotate`), so the two never rotate
/// one modem at once (`rotation_in_progress`) and the seller's spacing counts both. The
/// start times are also journaled and seeded back at startup ([`RotationGate::seed`]), so
/// restarting the agent does not forget the spacing.
#[derive(Debug, Default)]
pub struct RotationGate {
    modems: Mutex<HashMap<String, ModemRotation>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ModemRotation {
    last_start: Option<Instant>,
    running: bool,
}

/// A running rotation of one modem; dropping it lets the next one start.
#[derive(Debug)]
pub struct RotationGuard<'a> {
    gate: &'a RotationGate,
    imei: String,
}

impl RotationGate {
    /// Records a rotation of `imei` starting at `now`, or refuses it: `rotation_in_progress`
    /// while another one runs, `policy_denied` if the previous one started less than
    /// `min_interval` ago. Check and record are one step, so two concurrent rotations of
    /// one modem cannot both pass.
    pub fn try_start(
        &self,
        imei: &str,
        min_interval: Duration,
        now: Instant,
    ) -> Result<RotationGuard<'_>, CommandError> {
        let Ok(mut modems) = self.modems.lock() else {
            return Err(poisoned());
        };
        let modem = modems.entry(imei.to_string()).or_default();
        if modem.running {
            return Err(CommandError::new(
                CommandErrorCode::RotationInProgress,
                format!("modem {imei} is being rotated right now"),
            ));
        }
        if let Some(previous) = modem.last_start.filter(|_| !min_interval.is_zero()) {
            let since = now.saturating_duration_since(previous);
            if since < min_interval {
                return Err(denied(format!(
                    "modem {imei} was rotated {}s ago; this box's policy allows one rotation every {}s",
                    since.as_secs(),
                    min_interval.as_secs()
                )));
            }
        }
        *modem = ModemRotation {
            last_start: Some(now),
            running: true,
        };
        Ok(RotationGuard {
            gate: self,
            imei: imei.to_string(),
        })
    }

    /// When the last rotation of `imei` started, if one did since the agent started (or
    /// was seeded from the journal).
    pub fn last_start(&self, imei: &str) -> Option<Instant> {
        let modems = self.modems.lock().ok()?;
        modems.get(imei).and_then(|m| m.last_start)
    }

    /// Remembers a rotation of `imei` that started at `at` (from the journal), unless a
    /// later one is known.
    pub fn seed(&self, imei: &str, at: Instant) {
        if let Ok(mut modems) = self.modems.lock() {
            let modem = modems.entry(imei.to_string()).or_default();
            if modem.last_start.is_none_or(|known| known < at) {
                modem.last_start = Some(at);
            }
        }
    }
}

impl Drop for RotationGuard<'_> {
    fn drop(&mut self) {
        // A poisoned lock cannot be repaired here; the process state is lost anyway.
        if let Ok(mut modems) = self.gate.modems.lock() {
            if let Some(modem) = modems.get_mut(&self.imei) {
                modem.running = false;
            }
        }
    }
}

fn poisoned() -> CommandError {
    CommandError::new(CommandErrorCode::Internal, "rotation state poisoned")
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
