//! Unit tests for `config`: defaults, strictness, validation messages, shipped examples.

use super::plane::websocket_url;
use super::proxysmart::DEFAULT_TIMEOUT_S;
use super::*;
use std::io::Write;

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
country = "de"
"#;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let pw = dir.join("pw");
    std::fs::write(&pw, "  s3cret-canary \n").unwrap();
    let path = dir.join("agent.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.replace("PWFILE", pw.to_str().unwrap()).as_bytes())
        .unwrap();
    path
}

#[test]
fn loads_minimal_config_with_defaults_and_trimmed_password() {
    let dir = tempfile::tempdir().unwrap();
    let c = AgentConfig::load(&write_config(dir.path(), MINIMAL)).unwrap();
    assert_eq!(c.proxysmart.password.expose(), "s3cret-canary");
    assert_eq!(c.proxysmart.timeout, Duration::from_secs(DEFAULT_TIMEOUT_S));
    assert_eq!(c.proxysmart.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.proxysmart.poll_interval, Duration::from_secs(5));
    assert_eq!(c.proxysmart.rotation_timeout, Duration::from_secs(60));
    assert_eq!(c.usage.interval, Duration::from_secs(60));
    assert_eq!(c.site.country, "DE");
    assert_eq!(
        c.connect_url().unwrap(),
        "ws://127.0.0.1:7000/v1/agent/connect"
    );
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug must not print the password"
    );
}

#[test]
fn unknown_key_is_rejected_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace(
        "username = \"proxy\"",
        "username = \"proxy\"\npasword = \"x\"",
    );
    let err = AgentConfig::load(&write_config(dir.path(), &text))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pasword") && err.contains("agent.toml"),
        "{err}"
    );
}

#[test]
fn invalid_values_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("country = \"de\"", "country = \"XX\"", "site.country"),
        (
            "url = \"http://127.0.0.1:7000\"",
            "url = \"ftp://x\"",
            "control_plane.url",
        ),
        (
            "url = \"http://127.0.0.1:8080\"",
            "url = \"not a url\"",
            "proxysmart.url",
        ),
        (
            "username = \"proxy\"",
            "username = \"proxy\"\ntimeout_s = 0",
            "proxysmart.timeout_s",
        ),
        (
            "username = \"proxy\"",
            "username = \"proxy\"\npoll_interval_s = 0",
            "proxysmart.poll_interval_s",
        ),
        (
            "public_host = \"203.0.113.7\"",
            "public_host = \"\"",
            "site.public_host",
        ),
        (
            "country = \"de\"",
            "country = \"de\"\n[usage]\ninterval_s = 0",
            "usage.interval_s",
        ),
        (
            "country = \"de\"",
            "country = \"de\"\n[usage]\ninterval_s = 86401",
            "usage.interval_s",
        ),
    ];
    for (from, to, key) in cases {
        let err = AgentConfig::load(&write_config(dir.path(), &MINIMAL.replace(from, to)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains("agent.toml"),
            "{key}: {err}"
        );
    }
}

#[test]
fn missing_or_empty_password_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &MINIMAL.replace("PWFILE", "/nonexistent/pw"));
    let err = AgentConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("proxysmart.password_file"), "{err}");
    let path = write_config(dir.path(), MINIMAL);
    std::fs::write(dir.path().join("pw"), " \n").unwrap();
    let err = AgentConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn websocket_url_maps_schemes_and_keeps_prefix() {
    assert_eq!(
        websocket_url("https://p.example.com/").unwrap(),
        "wss://p.example.com/v1/agent/connect"
    );
    assert_eq!(
        websocket_url("http://[::1]:7000").unwrap(),
        "ws://[::1]:7000/v1/agent/connect"
    );
    assert_eq!(
        websocket_url("https://x.io/fh").unwrap(),
        "wss://x.io/fh/v1/agent/connect"
    );
    assert!(websocket_url("mailto:a@b").is_err());
}

#[test]
fn every_shipped_agent_config_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("agent") && name.ends_with(".toml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file = FileConfig::parse(&path, &text).unwrap();
        file.into_config(&path, Masked::new("x")).unwrap();
        found += 1;
    }
    assert!(
        found > 0,
        "no config/agent*.toml found in {}",
        dir.display()
    );
}

#[test]
fn plaintext_needs_insecure_plaintext_and_trust_settings_need_https() {
    let dir = tempfile::tempdir().unwrap();
    let load = |from: &str, to: &str| {
        AgentConfig::load(&write_config(dir.path(), &MINIMAL.replace(from, to)))
    };
    let err = load("insecure_plaintext = true", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("control_plane.insecure_plaintext") && err.contains("https://"),
        "{err}"
    );
    let err = load("insecure_plaintext = true", "insecure_plaintext = false")
        .unwrap_err()
        .to_string();
    assert!(err.contains("control_plane.insecure_plaintext"), "{err}");
    let err = load(
        "insecure_plaintext = true",
        "insecure_plaintext = true\nca_file = \"/x.pem\"",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("need an https:// URL"), "{err}");

    let pin = vec!["AB"; 32].join(":");
    let https = load(
        "url = \"http://127.0.0.1:7000\"\ninsecure_plaintext = true",
        &format!("url = \"https://plane.example.com\"\npin_sha256 = \"{pin}\"\nca_file = \"/etc/ca.pem\""),
    )
    .unwrap();
    let cp = &https.control_plane;
    assert!(cp.uses_tls() && !cp.insecure_plaintext);
    assert_eq!(
        cp.pin_sha256.unwrap().to_string(),
        format!("sha256:{}", "ab".repeat(32))
    );
    assert_eq!(cp.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
    let err = load("insecure_plaintext = true", "pin_sha256 = \"sha256:beef\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("control_plane.pin_sha256"), "{err}");
    assert!(ControlPlaneConfig::new("http://127.0.0.1:1")
        .check()
        .is_err());
    assert!(ControlPlaneConfig::plaintext("http://127.0.0.1:1")
        .check()
        .is_ok());
}

#[test]
fn several_nodes_are_one_list_of_one_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = MINIMAL.replace(
        "url = \"http://127.0.0.1:7000\"",
        "urls = [\"http://127.0.0.1:7000\", \"http://127.0.0.1:7001/\"]",
    );
    let c = AgentConfig::load(&write_config(dir.path(), &nodes)).unwrap();
    assert_eq!(c.control_plane.url, "http://127.0.0.1:7000");
    assert_eq!(
        c.connect_urls().unwrap(),
        [
            "ws://127.0.0.1:7000/v1/agent/connect",
            "ws://127.0.0.1:7001/v1/agent/connect"
        ]
    );
    for (bad, says) in [
        (
            "url = \"http://127.0.0.1:7000\"\nurls = [\"http://127.0.0.1:7001\"]",
            "not both",
        ),
        (
            "urls = [\"http://127.0.0.1:7000\", \"https://b.example\"]",
            "same scheme",
        ),
        (
            "urls = [\"http://127.0.0.1:7000\", \"http://127.0.0.1:7000/\"]",
            "twice",
        ),
        ("urls = []", "required"),
    ] {
        let text = MINIMAL.replace("url = \"http://127.0.0.1:7000\"", bad);
        let err = AgentConfig::load(&write_config(dir.path(), &text))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
