//! The agent's `FARMHAND_…` environment variables: every config key, named by the rule in
//! `farmhand_ops::env` (`proxysmart.url` → `FARMHAND_PROXYSMART_URL`,
//! `policy.max_ports_per_modem` → `FARMHAND_POLICY_MAX_PORTS_PER_MODEM`), overriding
//! `agent.toml`; any key can be read from a file with the `_FILE` suffix. The keys are the
//! file form's own, read from its `Deserialize` impl (`farmhand_ops::config_keys`): adding
//! a field adds its variable. `config/agent.example.toml` documents them (a test checks it
//! misses none).

use super::ConfigError;
use farmhand_ops::env::{self, Applied, Schema};
use std::ffi::OsString;
use std::path::Path;

/// The keys of `agent.toml`'s file form, read from its `Deserialize` impl, and the
/// variables that are not config.
pub fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| Schema::of::<super::FileConfig>(&[]))
}

/// Parses `text` into the file form whose keys [`schema`] lists, with the `FARMHAND_…`
/// variables among `vars` applied; `path` names the file in errors.
pub(super) fn parse(
    path: &Path,
    text: &str,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<(super::FileConfig, Applied), ConfigError> {
    env::load(text, schema(), vars).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
#[path = "env_tests.rs"]
mod tests;
