//! The agent's `FARMHAND_…` environment variables: every config key, named by the rule in
//! `farmhand_ops::env` (`proxysmart.url` → `FARMHAND_PROXYSMART_URL`,
//! `policy.max_ports_per_modem` → `FARMHAND_POLICY_MAX_PORTS_PER_MODEM`), overriding
//! `agent.toml`; any key can be read from a file with the `_FILE` suffix.
//! `config/agent.example.toml` lists the keys, and a test keeps [`SCHEMA`] and it in step.

use super::ConfigError;
use farmhand_ops::env::{self, Applied, Key, Kind, Schema, NON_CONFIG_VARIABLES};
use serde::de::DeserializeOwned;
use std::ffi::OsString;
use std::path::Path;

/// Every key of `agent.toml` and its kind.
const KEYS: &[Key] = &[
    Key::new("state_dir", Kind::Str),
    Key::new("control_plane.url", Kind::Str),
    Key::new("control_plane.ca_file", Kind::Str),
    Key::new("control_plane.pin_sha256", Kind::Str),
    Key::new("control_plane.insecure_plaintext", Kind::Bool),
    Key::new("proxysmart.url", Kind::Str),
    Key::new("proxysmart.username", Kind::Str),
    Key::new("proxysmart.password_file", Kind::Str),
    Key::new("proxysmart.connect_timeout_s", Kind::Int),
    Key::new("proxysmart.timeout_s", Kind::Int),
    Key::new("proxysmart.poll_interval_s", Kind::Int),
    Key::new("proxysmart.rotation_timeout_s", Kind::Int),
    Key::new("proxysmart.box_utc_offset", Kind::Str),
    Key::new("proxysmart.write_visibility_s", Kind::Int),
    Key::new("proxysmart.port_write", Kind::Str),
    Key::new("proxysmart.proxy_host", Kind::Str),
    Key::new("site.public_host", Kind::Str),
    Key::new("site.country", Kind::Str),
    Key::new("site.city", Kind::Str),
    Key::new("policy.excluded_imeis", Kind::StrList),
    Key::new("policy.max_ports_per_modem", Kind::Int),
    Key::new("policy.min_rotation_interval_s", Kind::Int),
    Key::new("policy.allow.provision", Kind::Bool),
    Key::new("policy.allow.release", Kind::Bool),
    Key::new("policy.allow.rotate_ip", Kind::Bool),
    Key::new("policy.allow.update_port", Kind::Bool),
    Key::new("policy.allow.reconcile", Kind::Bool),
    Key::new("metrics.listen", Kind::Str),
    Key::new("metrics.allow_non_loopback", Kind::Bool),
    Key::new("log.level", Kind::Str),
    Key::new("log.format", Kind::Str),
    Key::new("usage.interval_s", Kind::Int),
    Key::new("health.interval_s", Kind::Int),
    Key::new("health.proxysmart_dir", Kind::Str),
];

/// The keys, and the variables that are not config ([`NON_CONFIG_VARIABLES`]).
pub const SCHEMA: Schema = Schema {
    keys: KEYS,
    allowed: NON_CONFIG_VARIABLES,
};

/// Parses `text` with the `FARMHAND_…` variables among `vars` applied; `path` names the
/// file in errors.
pub fn parse<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<(T, Applied), ConfigError> {
    env::load(text, &SCHEMA, vars).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
