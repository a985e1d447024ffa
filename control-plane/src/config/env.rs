//! The control plane's `FARMHAND_…` environment variables: every config key, named by the
//! rule in `farmhand_ops::env` (`heartbeat_interval_s` → `FARMHAND_HEARTBEAT_INTERVAL_S`,
//! `tls.cert_file` → `FARMHAND_TLS_CERT_FILE`), overriding the config file; any key can be
//! read from a file with the `_FILE` suffix. `config/control.example.toml` lists the keys,
//! and a test keeps [`SCHEMA`] and that file in step.

use super::{ConfigError, ServerConfig};
use farmhand_ops::env::{self, Key, Kind, Schema, NON_CONFIG_VARIABLES};
use std::ffi::OsString;
use std::path::Path;

/// Every key of `control.toml` and its kind.
const KEYS: &[Key] = &[
    Key::new("listen", Kind::Str),
    Key::new("data_dir", Kind::Str),
    Key::new("heartbeat_interval_s", Kind::Int),
    Key::new("handshake_timeout_s", Kind::Int),
    Key::new("provisioning_timeout_s", Kind::Int),
    Key::new("command_timeout_s", Kind::Int),
    Key::new("max_frame_bytes", Kind::Int),
    Key::new("modem_capacity", Kind::Int),
    Key::new("max_body_bytes", Kind::Int),
    Key::new("rest_auth_failure_limit", Kind::Inline),
    Key::new("agent_auth_failure_limit", Kind::Inline),
    Key::new("enroll_attempt_limit", Kind::Inline),
    Key::new("max_pending_handshakes", Kind::Int),
    Key::new("handshake_concurrency", Kind::Int),
    Key::new("shutdown_grace_s", Kind::Int),
    Key::new("credential_retention_s", Kind::Int),
    Key::new("rotation_cooldown_s", Kind::Int),
    Key::new("min_rotate_every_s", Kind::Int),
    Key::new("replacement_grace_s", Kind::Int),
    Key::new("agent_lost_window_s", Kind::Int),
    Key::new("log.level", Kind::Str),
    Key::new("log.format", Kind::Str),
    Key::new("metrics.require_admin", Kind::Bool),
    Key::new("enroll.require_approval", Kind::Bool),
    Key::new("webhooks.expiring_lead_s", Kind::Int),
    Key::new("webhooks.retry_initial_s", Kind::Int),
    Key::new("webhooks.retry_max_s", Kind::Int),
    Key::new("webhooks.max_age_s", Kind::Int),
    Key::new("webhooks.attempt_timeout_s", Kind::Int),
    Key::new("webhooks.concurrency", Kind::Int),
    Key::new("webhooks.endpoint_concurrency", Kind::Int),
    Key::new("webhooks.deliveries_kept", Kind::Int),
    Key::new("webhooks.ca_file", Kind::Str),
    Key::new("webhooks.allow_private_targets", Kind::StrList),
    Key::new("audit.retention_days", Kind::Int),
    Key::new("health.min_disk_free_mb", Kind::Int),
    Key::new("health.min_memory_available_mb", Kind::Int),
    Key::new("http.header_timeout_s", Kind::Int),
    Key::new("http.body_timeout_s", Kind::Int),
    Key::new("http.max_connections", Kind::Int),
    Key::new("http.max_connections_per_address", Kind::Int),
    Key::new("tls.cert_file", Kind::Str),
    Key::new("tls.key_file", Kind::Str),
    Key::new("tls.handshake_timeout_s", Kind::Int),
];

/// The keys, and the variables that are not config ([`NON_CONFIG_VARIABLES`]).
pub const SCHEMA: Schema = Schema {
    keys: KEYS,
    allowed: NON_CONFIG_VARIABLES,
};

/// The config from `file` (none: the defaults) with the `FARMHAND_…` variables among
/// `vars` applied, validated. Errors name the file, the key and the variable.
pub fn load(
    file: Option<&Path>,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<ServerConfig, ConfigError> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?,
        None => String::new(),
    };
    let (config, applied): (ServerConfig, _) =
        env::load(&text, &SCHEMA, vars).map_err(|e| ConfigError::Parse(e.to_string()))?;
    config
        .validate()
        .map_err(|e| match (e, applied.is_empty()) {
            (ConfigError::Invalid(message), false) => ConfigError::Invalid(format!(
                "{message} (with overrides from the environment: {})",
                applied.vars()
            )),
            (other, _) => other,
        })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn schema_matches_the_example_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control.example.toml");
        let documented = env::documented_keys(&std::fs::read_to_string(path).unwrap());
        let schema: std::collections::BTreeSet<String> =
            KEYS.iter().map(|k| k.path.to_owned()).collect();
        assert_eq!(
            schema, documented,
            "SCHEMA and control.example.toml disagree"
        );
    }

    #[test]
    fn variables_override_the_file_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("control.toml");
        std::fs::write(&file, "heartbeat_interval_s = 20\nmodem_capacity = 2\n").unwrap();
        let c = load(
            Some(&file),
            vars(&[
                ("FARMHAND_HEARTBEAT_INTERVAL_S", "5"),
                ("FARMHAND_LISTEN", "127.0.0.1:9999"),
                ("FARMHAND_ENROLL_ATTEMPT_LIMIT", "{ max = 2, window_s = 9 }"),
                ("FARMHAND_METRICS_REQUIRE_ADMIN", "true"),
                ("FARMHAND_WEBHOOKS_MAX_AGE_S", "600"),
                ("FARMHAND_AUDIT_RETENTION_DAYS", "7"),
                (
                    "FARMHAND_WEBHOOKS_ALLOW_PRIVATE_TARGETS",
                    "127.0.0.0/8, ::1/128",
                ),
                ("FARMHAND_URL", "http://ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.webhooks.max_age_s, 600);
        assert_eq!(c.audit.retention_days, 7);
        assert_eq!(c.webhooks.allow_private_targets, ["127.0.0.0/8", "::1/128"]);
        assert_eq!(c.heartbeat_interval_s, 5);
        assert_eq!(c.modem_capacity, 2);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.enroll_attempt_limit.window_s, 9);
        assert!(c.metrics.require_admin);

        let err = load(None, vars(&[("FARMHAND_LISTEN", "not-an-address")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listen") && err.contains("FARMHAND_LISTEN"),
            "{err}"
        );
        let err = load(None, vars(&[("FARMHAND_MODEM_CAPACITY", "0")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("modem_capacity") && err.contains("FARMHAND_MODEM_CAPACITY"),
            "{err}"
        );
        let err = load(None, vars(&[("FARMHAND_HEARTBEAT_INTERVAL", "5")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown environment variable FARMHAND_HEARTBEAT_INTERVAL"),
            "{err}"
        );
        let err = load(
            None,
            vars(&[("FARMHAND_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "10.0.0.0/33")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("webhooks.allow_private_targets")
                && err.contains("FARMHAND_WEBHOOKS_ALLOW_PRIVATE_TARGETS"),
            "{err}"
        );
        let err = load(None, vars(&[("FARMHAND_LOG_FORMAT", "yaml")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("FARMHAND_LOG_FORMAT"), "{err}");
    }
}
