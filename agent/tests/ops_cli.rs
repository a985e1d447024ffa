//! The real `farmhand-agent run` for operators: `FARMHAND_…` variables override the config
//! (a `_FILE` variable supplies the password file), a bad config or variable exits 1
//! naming the file, key or variable, `--log-format json` writes JSON lines, and the
//! metrics listener serves valid Prometheus text. The proxy variables (`HTTP_PROXY`…) of
//! the process take `run` and `doctor` to the plane through an HTTP CONNECT proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use farmhand_agent::plane::identity::{generate_key, write_identity, IdentityFile};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::plane::PlaneConn;
use support::proxy::{Mode, TestProxy};
use support::{TestBox, PASSWORD};

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
    let sim = TestBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, password) = setup(dir.path(), &sim.url());
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

/// Every proxy variable, removed from a child so the host's own settings cannot interfere.
const PROXY_VARS: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The agent process, killed if a test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// SIGTERM, then the exit must be clean.
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        assert!(self.0.wait().unwrap().success());
    }
}

fn without_proxies(mut cmd: Command) -> Command {
    for name in PROXY_VARS {
        cmd.env_remove(name);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn run_reaches_the_plane_through_the_proxy_named_by_http_proxy() {
    let sim = TestBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, password) = setup(dir.path(), &sim.url());
    let public_key = farmhand_agent::plane::identity::Identity::load(&dir.path().join("state"))
        .unwrap()
        .public_key()
        .to_vec();
    let plane = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plane_addr = plane.local_addr().unwrap().to_string();
    let expected = "Basic c2VsbGVyOmNhbmFyeS1wcm94eS1wdw=="; // seller:canary-proxy-pw
    let proxy = TestProxy::start(Mode::RequireAuth(expected.into())).await;
    let mut cmd = without_proxies(agent(
        &["run", "--config", config.to_str().unwrap()],
        &[
            (
                "FARMHAND_PROXYSMART_PASSWORD_FILE",
                password.to_str().unwrap(),
            ),
            (
                "FARMHAND_CONTROL_PLANE_URL",
                &format!("http://{plane_addr}"),
            ),
            ("RUST_LOG", "info"),
        ],
    ));
    cmd.env("HTTP_PROXY", proxy.url_with("seller:canary-proxy-pw"));
    let mut child = Running(cmd.stderr(Stdio::piped()).spawn().unwrap());
    let stderr = child.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut text);
        text
    });

    let mut conn = PlaneConn::accept(&plane, &public_key, Default::default()).await;
    conn.welcome().await;
    let farmhand_protocol::AgentMessage::Inventory(_) = conn.recv().await else {
        panic!("inventory")
    };
    assert_eq!(proxy.tunnels(), 1);
    let requests = proxy.requests();
    assert!(
        requests[0].starts_with(&format!("CONNECT {plane_addr} HTTP/1.1\r\n"))
            && requests[0].contains(&format!("Proxy-Authorization: {expected}\r\n")),
        "{requests:?}"
    );

    child.stop();
    let log = log.join().unwrap();
    assert!(
        log.contains("through an HTTP proxy") && log.contains(&proxy.url),
        "{log}"
    );
    assert!(
        !log.contains("canary-proxy-pw") && !log.contains("c2VsbGVy"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_goes_through_the_proxy_and_names_its_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let (config, password) = setup(dir.path(), "http://127.0.0.1:9");
    let proxy = TestProxy::start(Mode::Answer("403 Forbidden")).await;
    let mut cmd = without_proxies(agent(
        &["doctor", "--config", config.to_str().unwrap()],
        &[(
            "FARMHAND_PROXYSMART_PASSWORD_FILE",
            password.to_str().unwrap(),
        )],
    ));
    cmd.env("http_proxy", &proxy.url);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let refused = format!(
        "FAIL  control plane   the proxy {} refused the tunnel to 127.0.0.1:9: HTTP 403",
        proxy.url
    );
    assert!(report.contains(&refused), "{report}");
    assert!(
        report.contains("FAIL  agent endpoint  the proxy"),
        "{report}"
    );
    assert!(report.contains("fix: check HTTPS_PROXY"), "{report}");
    assert!(report.contains("resolved by the proxy"), "{report}");
    assert_eq!(proxy.requests().len(), 2, "/healthz and the upgrade");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_reports_a_proxy_refusal_and_keeps_retrying() {
    let sim = TestBox::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, password) = setup(dir.path(), &sim.url());
    let proxy = TestProxy::start(Mode::Answer("407 Proxy Authentication Required")).await;
    let mut cmd = without_proxies(agent(
        &["run", "--config", config.to_str().unwrap()],
        &[(
            "FARMHAND_PROXYSMART_PASSWORD_FILE",
            password.to_str().unwrap(),
        )],
    ));
    cmd.env("ALL_PROXY", &proxy.url);
    let mut child = Running(cmd.stderr(Stdio::piped()).spawn().unwrap());
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    // The refusal is logged with its status and hint, and the agent tries again (backoff).
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.requests().len() < 2
        || !lines.lock().unwrap().iter().any(|l| {
            l.contains("cannot reach the control plane through the proxy")
                && l.contains("HTTP 407")
                && l.contains("put them in the proxy URL")
        })
    {
        assert!(
            Instant::now() < deadline,
            "no retried 407 in the log: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    assert_eq!(proxy.tunnels(), 0);
    child.stop();
    reader.join().unwrap();
}
