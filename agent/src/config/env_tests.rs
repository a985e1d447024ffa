//! Unit tests for `env` through the config loader: overrides, type errors, unknown
//! variables, the password file from a variable, and the schema against the example.

use super::*;
use crate::config::AgentConfig;
use std::path::PathBuf;

const MINIMAL: &str = r#"
state_dir = "/tmp/fh"
[control_plane]
url = "http://127.0.0.1:7000"
insecure_plaintext = true
[proxysmart]
url = "http://127.0.0.1:8080"
username = "proxy"
password_file = "PWFILE"
[site]
public_host = "203.0.113.7"
country = "DE"
"#;

fn write_config(dir: &Path) -> PathBuf {
    let pw = dir.join("pw");
    std::fs::write(&pw, "from-the-file\n").unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(&path, MINIMAL.replace("PWFILE", pw.to_str().unwrap())).unwrap();
    path
}

fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    list.iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn load_err(path: &Path, list: &[(&str, &str)]) -> String {
    AgentConfig::load_with_env(path, vars(list))
        .unwrap_err()
        .to_string()
}

#[test]
fn the_example_config_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.example.toml");
    let documented = env::documented_keys(&std::fs::read_to_string(path).unwrap());
    let keys: std::collections::BTreeSet<String> =
        schema().keys.iter().map(|k| k.path.clone()).collect();
    assert!(keys.len() > 30, "the walk found only {keys:?}");
    assert_eq!(
        keys, documented,
        "agent.example.toml must document every key of the config file, and only those"
    );
}

#[test]
fn variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let c = AgentConfig::load_with_env(
        &path,
        vars(&[
            ("FARMHAND_PROXYSMART_URL", "http://10.0.0.2:8080"),
            ("FARMHAND_CONTROL_PLANE_URL", "http://127.0.0.1:7001"),
            ("FARMHAND_POLICY_MAX_PORTS_PER_MODEM", "3"),
            (
                "FARMHAND_POLICY_EXCLUDED_IMEIS",
                "356000000000001,356000000000002",
            ),
            ("FARMHAND_POLICY_ALLOW_ROTATE_IP", "false"),
            ("FARMHAND_METRICS_LISTEN", "127.0.0.1:9464"),
            ("FARMHAND_LOG_FORMAT", "json"),
            ("FARMHAND_ENROLL_TOKEN", "not-config"),
        ]),
    )
    .unwrap();
    assert_eq!(c.proxysmart.url, "http://10.0.0.2:8080");
    assert_eq!(c.control_plane.url, "http://127.0.0.1:7001");
    assert_eq!(c.policy.max_ports_per_modem, Some(3));
    assert_eq!(c.policy.excluded_imeis.len(), 2);
    assert!(!c.policy.allow.rotate_ip);
    assert_eq!(c.metrics.listen.unwrap().port(), 9464);
    assert_eq!(c.log.format, farmhand_ops::logging::LogFormat::Json);
}

#[test]
fn the_password_file_can_come_from_a_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "  from-the-variable\n").unwrap();
    let c = AgentConfig::load_with_env(
        &path,
        vars(&[(
            "FARMHAND_PROXYSMART_PASSWORD_FILE",
            secret.to_str().unwrap(),
        )]),
    )
    .unwrap();
    assert_eq!(c.proxysmart.password.expose(), "from-the-variable");
    let err = load_err(
        &path,
        &[("FARMHAND_PROXYSMART_PASSWORD_FILE", "/nonexistent/pw")],
    );
    assert!(
        err.contains("proxysmart.password_file")
            && err.contains("FARMHAND_PROXYSMART_PASSWORD_FILE"),
        "{err}"
    );
}

#[test]
fn bad_variables_are_errors_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let err = load_err(&path, &[("FARMHAND_PROXYSMART_TIMEOUT_S", "soon")]);
    assert!(
        err.contains(path.to_str().unwrap())
            && err.contains("FARMHAND_PROXYSMART_TIMEOUT_S")
            && err.contains("integer"),
        "{err}"
    );
    let err = load_err(&path, &[("FARMHAND_PROXYSMART_URLL", "http://x")]);
    assert!(
        err.contains("unknown environment variable FARMHAND_PROXYSMART_URLL"),
        "{err}"
    );
    // A plane variable is not an agent key either.
    let err = load_err(&path, &[("FARMHAND_LISTEN", "127.0.0.1:1")]);
    assert!(err.contains("FARMHAND_LISTEN"), "{err}");
    let err = load_err(&path, &[("FARMHAND_SITE_COUNTRY", "XX")]);
    assert!(
        err.contains("site.country")
            && err.contains("set by the environment variable FARMHAND_SITE_COUNTRY"),
        "{err}"
    );
    let err = load_err(&path, &[("FARMHAND_LOG_LEVEL", "info,[[")]);
    assert!(err.contains("log.level"), "{err}");
}

#[test]
fn metrics_listen_must_be_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let err = load_err(&path, &[("FARMHAND_METRICS_LISTEN", "0.0.0.0:9464")]);
    assert!(
        err.contains("metrics.listen") && err.contains("loopback"),
        "{err}"
    );
    let ok = AgentConfig::load_with_env(
        &path,
        vars(&[
            ("FARMHAND_METRICS_LISTEN", "0.0.0.0:9464"),
            ("FARMHAND_METRICS_ALLOW_NON_LOOPBACK", "true"),
        ]),
    );
    assert!(ok.is_ok());
    let err = load_err(&path, &[("FARMHAND_METRICS_LISTEN", "localhost")]);
    assert!(err.contains("FARMHAND_METRICS_LISTEN"), "{err}");
}
