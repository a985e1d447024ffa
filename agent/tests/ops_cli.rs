//! The real `farmhand-agent run` for operators: `FARMHAND_…` variables override the config
//! (a `_FILE` variable supplies the password file), a bad config or variable exits 1
//! naming the file, key or variable, `--log-format json` writes JSON lines, and the
//! metrics listener serves valid Prometheus text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::identity::{generate_key, write_identity, IdentityFile};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{FakeBox, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_farmhand-agent");

/// An enrolled state dir, a password file and a config pointing at `proxysmart`. The
/// config's `password_file` does not exist: tests supply it through the environment.
fn setup(dir: &Path, proxysmart: &str) -> (PathBuf, PathBuf) {
    let state = dir.join("state");
    generate_key(&state).unwrap();
    let file = IdentityFile {
        agent_id: "ag_opstest".into(),
        server: "http://127.0.0.1:9".into(),
    };
    write_identity(&state, &file).unwrap();
    let password = dir.join("proxysmart.password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let config = dir.join("agent.toml");
    let text = format!(
        "state_dir = {state:?}\n[control_plane]\nurl = \"http://127.0.0.1:9\"\ninsecure_plaintext = true\n\
         [proxysmart]\nurl = {proxysmart:?}\nusername = \"proxy\"\npassword_file = \"/nonexistent/pw\"\n\
         [site]\npublic_host = \"203.0.113.7\"\ncountry = \"DE\"\n"
    );
    std::fs::write(&config, text).unwrap();
    (config, password)
}

fn agent(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("FARMHAND_LOG_FORMAT");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn run_fails(config: &Path, vars: &[(&str, &str)]) -> String {
    let out = agent(&["run", "--config", config.to_str().unwrap()], vars)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_config_and_bad_variables_exit_1_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (config, password) = setup(dir.path(), "http://127.0.0.1:9");
    let pw = password.to_str().unwrap();
    let path = config.to_str().unwrap();
    // The config's password_file is missing, and nothing overrides it.
    let err = run_fails(&config, &[]);
    assert!(
        err.contains(path) && err.contains("proxysmart.password_file"),
        "{err}"
    );
    let with_pw = ("FARMHAND_PROXYSMART_PASSWORD_FILE", pw);
    let err = run_fails(
        &config,
        &[with_pw, ("FARMHAND_PROXYSMART_TIMEOUT_S", "soon")],
    );
    assert!(
        err.contains("FARMHAND_PROXYSMART_TIMEOUT_S") && err.contains("integer"),
        "{err}"
    );
    let err = run_fails(&config, &[with_pw, ("FARMHAND_PROXYSMART_TIMOUT_S", "5")]);
    assert!(
        err.contains("unknown environment variable FARMHAND_PROXYSMART_TIMOUT_S"),
        "{err}"
    );
    let err = run_fails(
        &config,
        &[with_pw, ("FARMHAND_METRICS_LISTEN", "0.0.0.0:9464")],
    );
    assert!(
        err.contains("metrics.listen") && err.contains("loopback"),
        "{err}"
    );
    // A bad key in the file itself: the file, the key and the line.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("country = \"DE\"", "country = \"DE\"\ncountyr = \"x\""),
    )
    .unwrap();
    let err = run_fails(&config, &[with_pw]);
    assert!(err.contains(path) && err.contains("countyr"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A minimal HTTP GET on a fresh connection; returns the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_and_a_metrics_listener_from_the_environment() {
    let fake = FakeBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, password) = setup(dir.path(), &fake.url);
    let mut child = agent(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &[
            (
                "FARMHAND_PROXYSMART_PASSWORD_FILE",
                password.to_str().unwrap(),
            ),
            ("FARMHAND_METRICS_LISTEN", "127.0.0.1:0"),
            ("FARMHAND_PROXYSMART_POLL_INTERVAL_S", "1"),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut parsed = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .expect("the agent logged its metrics address")
            .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let message = json["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        parsed.push(json);
        if let Some(rest) = message.strip_prefix("serving metrics on http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };
    assert!(parsed
        .iter()
        .all(|j| j["level"].is_string() && j["timestamp"].is_string()));
    // Keep draining stderr: an agent whose pipe fills blocks on its next log line.
    let rest = std::thread::spawn(move || lines.collect::<Result<Vec<String>, _>>());

    // The password came from the variable: ProxySmart answers, so the poll succeeds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = http_get(&addr, "/metrics");
        if text.contains("farmhand_agent_proxysmart_reachable 1") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "ProxySmart never reachable:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    farmhand_ops::metrics::validate(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(text.contains("farmhand_agent_connected 0"), "{text}");
    assert!(text.contains("farmhand_agent_modems_online "), "{text}");
    assert!(
        text.contains("farmhand_agent_proxysmart_request_duration_seconds_bucket{le=\"+Inf\"}"),
        "{text}"
    );
    assert!(
        text.contains("farmhand_agent_proxysmart_errors_total{kind=\"unauthorized\"} 0"),
        "{text}"
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    for line in rest.join().unwrap().unwrap() {
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
    assert!(status.success(), "{status:?}");
}
