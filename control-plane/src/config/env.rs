//! The control plane's `FARMHAND_…` environment variables: every config key, named by the
//! rule in `farmhand_ops::env` (`heartbeat_interval_s` → `FARMHAND_HEARTBEAT_INTERVAL_S`,
//! `tls.cert_file` → `FARMHAND_TLS_CERT_FILE`), overriding the config file; any key can be
//! read from a file with the `_FILE` suffix. The keys are [`ServerConfig`]'s own, read from
//! its `Deserialize` impl (`farmhand_ops::config_keys`): adding a field adds its variable.
//! `config/control.example.toml` documents them (a test checks it misses none).

use super::{ConfigError, ServerConfig};
use farmhand_ops::env::{self, Schema};
use std::ffi::OsString;
use std::path::Path;

/// The keys of [`ServerConfig`], read from its `Deserialize` impl (a rate limit is set
/// whole, as an inline table), and the variables that are not config.
pub fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| Schema::of::<ServerConfig>(&["RateLimit"]))
}

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
        env::load(&text, schema(), vars).map_err(|e| ConfigError::parse(e.to_string()))?;
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
    fn the_example_config_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control.example.toml");
        let documented = env::documented_keys(&std::fs::read_to_string(path).unwrap());
        let keys: std::collections::BTreeSet<String> =
            schema().keys.iter().map(|k| k.path.clone()).collect();
        assert!(keys.len() > 40, "the walk found only {keys:?}");
        assert_eq!(
            keys, documented,
            "control.example.toml must document every key of ServerConfig, and only those"
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
                ("FARMHAND_RETENTION_AUDIT_DAYS", "7"),
                (
                    "FARMHAND_WEBHOOKS_ALLOW_PRIVATE_TARGETS",
                    "127.0.0.0/8, ::1/128",
                ),
                ("FARMHAND_URL", "http://ignored"),
                // What CI exports for the test suites reaches the binaries they start.
                ("FARMHAND_REQUIRE_POSTGRES", "1"),
                ("FARMHAND_TEST_PATIENCE", "2"),
            ]),
        )
        .unwrap();
        assert_eq!(c.webhooks.max_age_s, 600);
        assert_eq!(c.retention.audit_days, 7);
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
