//! The control plane's configuration: defaults, the example file, strict parsing and
//! validation that names the key.

use super::*;

#[test]
fn every_shipped_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("control") && name.ends_with(".toml") {
            ServerConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            found += 1;
        }
    }
    assert!(
        found > 0,
        "no config/control*.toml found in {}",
        dir.display()
    );
}

#[test]
fn example_documents_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    // Every option appears (commented) with its default, so the file and code agree.
    let uncommented: String = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# ")
                .filter(|l| l.contains(" = ") || l.starts_with('['))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut parsed = ServerConfig::from_toml_str(&uncommented).unwrap();
    // `[tls]` has no default (absent = plain HTTP); its optional key shows its default.
    let tls = parsed.tls.take().expect("the example documents [tls]");
    // `[webhooks] ca_file` has no default either (absent = system roots only).
    assert!(parsed.webhooks.ca_file.take().is_some());
    assert_eq!(tls.handshake_timeout_s, DEFAULT_TLS_HANDSHAKE_TIMEOUT_S);
    assert_eq!(parsed.heartbeat_interval_s, DEFAULT_HEARTBEAT_INTERVAL_S);
    assert_eq!(parsed.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(parsed.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(parsed, ServerConfig::default());
}

#[test]
fn retention_is_one_section_and_old_keys_say_where_they_went() {
    let c =
        ServerConfig::from_toml_str("[retention]\naudit_days = 30\ncredentials_s = 60").unwrap();
    assert_eq!(c.retention.audit_days, 30);
    assert_eq!(c.retention.credentials(), Duration::from_secs(60));
    assert_eq!(
        ServerConfig::default().retention,
        RetentionConfig::default()
    );
    for bad in ["audit_days = 36501", "financial_days = 9223372036854775807"] {
        let err = ServerConfig::from_toml_str(&format!("[retention]\n{bad}")).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
        assert!(err.to_string().contains("retention."), "{err}");
    }
    for bad in ["audit_days = -1", "audit_days = \"1y\"", "audit_dayz = 7"] {
        let err = ServerConfig::from_toml_str(&format!("[retention]\n{bad}")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse(_)), "{bad}: {err}");
    }
    let err = ServerConfig::from_toml_str("credential_retention_s = 60").unwrap_err();
    assert!(
        err.to_string()
            .contains("moved to [retention] credentials_s"),
        "{err}"
    );
    let err = ServerConfig::from_toml_str("[audit]\nretention_days = 30").unwrap_err();
    assert!(
        err.to_string().contains("moved to [retention] audit_days"),
        "{err}"
    );
}

#[test]
fn private_webhook_targets_are_cidr_blocks() {
    let c = ServerConfig::from_toml_str(
        "[webhooks]\nallow_private_targets = [\"127.0.0.1/32\", \"10.0.0.0/8\", \"::1/128\"]",
    )
    .unwrap();
    let blocks: Vec<String> = c
        .webhooks
        .allowed_targets()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(blocks, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
    assert!(ServerConfig::default()
        .webhooks
        .allow_private_targets
        .is_empty());
    for bad in [
        "10.0.0.0/33",
        "10.0.0.1",
        "localhost/8",
        "10.1.0.0/8",
        "::1/200",
    ] {
        let text = format!("[webhooks]\nallow_private_targets = [\"127.0.0.0/8\", \"{bad}\"]");
        let err = ServerConfig::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("webhooks.allow_private_targets") && message.contains(bad),
            "{message}"
        );
    }
    assert!(matches!(
        ServerConfig::from_toml_str("[webhooks]\nallow_private_targets = \"10.0.0.0/8\""),
        Err(ConfigError::Parse(_))
    ));
}

#[test]
fn unknown_keys_and_zero_values_are_rejected() {
    assert!(matches!(
        ServerConfig::from_toml_str("heartbeat_intervl_s = 3"),
        Err(ConfigError::Parse(_))
    ));
    for bad in [
        "[webhooks]\nconcurrency = 0",
        "[webhooks]\nretry_initial_s = 10\nretry_max_s = 5",
    ] {
        assert!(
            matches!(
                ServerConfig::from_toml_str(bad),
                Err(ConfigError::Invalid(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        ServerConfig::from_toml_str("[webhooks]\nretry_intial_s = 1"),
        Err(ConfigError::Parse(_))
    ));
    let off = ServerConfig::from_toml_str("[webhooks]\nexpiring_lead_s = 0").unwrap();
    assert_eq!(
        off.webhooks.expiring_lead_s, 0,
        "0 switches expiry warnings off"
    );
    assert!(matches!(
        ServerConfig::from_toml_str("provisioning_timeout_s = 0"),
        Err(ConfigError::Invalid(_))
    ));
    assert!(matches!(
        ServerConfig::from_toml_str("modem_capacity = \"2\""),
        Err(ConfigError::Parse(_))
    ));
    assert!(matches!(
        ServerConfig::from_toml_str("rest_auth_failure_limit = { max = 0, window_s = 60 }"),
        Err(ConfigError::Invalid(_))
    ));
    assert!(matches!(
        ServerConfig::from_toml_str("enroll_attempt_limit = { max = 3, windw_s = 60 }"),
        Err(ConfigError::Parse(_))
    ));
    let tuned = ServerConfig::from_toml_str(
        "agent_auth_failure_limit = { max = 3, window_s = 5 }\n[retention]\ncredentials_s = 60",
    )
    .unwrap();
    assert_eq!(
        tuned.agent_auth_failure_limit,
        RateLimit {
            max: 3,
            window_s: 5
        }
    );
    assert_eq!(
        ServerConfig::from_toml_str("").unwrap(),
        ServerConfig::default()
    );
}
