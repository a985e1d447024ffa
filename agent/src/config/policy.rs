//! The seller's local policy: what the marketplace may do on this box. It comes from the
//! `[policy]` section of the agent's config file, which the control plane cannot change.
//!
//! Rules: which commands are allowed (each on its own switch, so refusing `provision` never
//! refuses the `release` that cleans up after it), IMEIs excluded from the marketplace
//! (never reported, never touched), a cap on marketplace ports per modem, and a minimum
//! time between two rotations of one modem (manual or automatic; also the floor of every
//! automatic rotation schedule, see `autorotate`), and whether the plane may probe the
//! box's ports (told in the inventory; the plane then skips them). A command outside the
//! policy is answered with `policy_denied` and audited like any other.

use farmhand_protocol::{CommandBody, CommandError, CommandErrorCode};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::Duration;

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
    /// The plane may not probe this box's ports (`probes = false`): told in the inventory.
    pub refuse_probes: bool,
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
#[derive(Debug, Deserialize)]
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
    #[serde(default = "allowed")]
    probes: bool,
}

fn allowed() -> bool {
    true
}

impl Default for FilePolicy {
    fn default() -> Self {
        FilePolicy {
            allow: AllowedCommands::default(),
            excluded_imeis: Vec::new(),
            max_ports_per_modem: 0,
            min_rotation_interval_s: 0,
            probes: allowed(),
        }
    }
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
            refuse_probes: !self.probes,
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
            .find(|i| !farmhand_protocol::is_imei(i))
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

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
