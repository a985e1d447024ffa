//! The real `farmhand-control serve` for operators: `FARMHAND_…` variables override the
//! config, a bad config or variable exits 1 naming the file, key or variable,
//! `--log-format json` writes JSON lines, and `/metrics` is valid Prometheus text that can
//! be restricted to admin keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_farmhand-control");

fn control(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("FARMHAND_LOG_FORMAT");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

fn serve_fails(config: &Path, vars: &[(&str, &str)]) -> String {
    let dir = config.parent().unwrap().join("data");
    let args = [
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    let out = control(&args, vars).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_config_and_bad_variables_exit_1_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("control.toml");
    let path = config.to_str().unwrap();
    std::fs::write(&config, "modem_capacity = \"two\"\n").unwrap();
    let err = serve_fails(&config, &[]);
    assert!(
        err.contains(path) && err.contains("modem_capacity") && err.contains("line 1"),
        "{err}"
    );
    std::fs::write(&config, "modem_capacity = 2\n").unwrap();
    let err = serve_fails(&config, &[("FARMHAND_MODEM_CAPACITY", "two")]);
    assert!(
        err.contains("FARMHAND_MODEM_CAPACITY") && err.contains("integer"),
        "{err}"
    );
    let err = serve_fails(&config, &[("FARMHAND_MODEM_CAPACITY", "0")]);
    assert!(
        err.contains("modem_capacity must be greater than 0")
            && err.contains("FARMHAND_MODEM_CAPACITY"),
        "{err}"
    );
    let err = serve_fails(&config, &[("FARMHAND_HEARTBEAT_INTERVAL", "5")]);
    assert!(
        err.contains("unknown environment variable FARMHAND_HEARTBEAT_INTERVAL"),
        "{err}"
    );
    let err = serve_fails(&config, &[("FARMHAND_LOG_LEVEL", "info,[[")]);
    assert!(err.contains("log.level"), "{err}");
}

/// A minimal HTTP GET: (status code, body).
fn http_get(addr: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    (status, body.to_owned())
}

/// Reads JSON log lines until "listening on http://ADDR"; returns ADDR and the reader.
fn listening(child: &mut Child) -> (String, impl Iterator<Item = String>) {
    let mut lines = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map(|l| l.unwrap());
    loop {
        let line = lines.next().expect("the plane logged its address");
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            json["level"].is_string() && json["timestamp"].is_string(),
            "{line}"
        );
        let message = json["fields"]["message"].as_str().unwrap_or_default();
        if let Some(addr) = message.strip_prefix("listening on http://") {
            return (addr.to_owned(), lines);
        }
    }
}

fn stop(mut child: Child, lines: impl Iterator<Item = String>) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for line in lines {
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
    assert!(child.wait().unwrap().success());
}

#[test]
fn json_logs_env_overrides_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = control(
        &["serve", "--log-format", "json"],
        &[
            ("FARMHAND_LISTEN", "127.0.0.1:0"),
            ("FARMHAND_DATA_DIR", data.to_str().unwrap()),
            ("FARMHAND_HEARTBEAT_INTERVAL_S", "5"),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (addr, lines) = listening(&mut child);
    // The data dir came from the environment.
    assert!(data.join("credentials.key").exists());
    assert_eq!(http_get(&addr, "/healthz", None).0, 200);
    let (status, text) = http_get(&addr, "/metrics", None);
    assert_eq!(status, 200, "{text}");
    farmhand_ops::metrics::validate(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(text.contains("farmhand_agents_connected 0"), "{text}");
    // The earlier /healthz, counted by its matched route.
    assert!(
        text.contains(
            "farmhand_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{text}"
    );
    stop(child, lines);
}

#[test]
fn metrics_can_require_an_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = data.to_str().unwrap();
    let key = control(
        &[
            "keys",
            "create",
            "--data-dir",
            data_dir,
            "--role",
            "admin",
            "--name",
            "ops",
        ],
        &[],
    )
    .output()
    .unwrap();
    assert!(key.status.success(), "{key:?}");
    let key = String::from_utf8(key.stdout).unwrap().trim().to_owned();
    let mut child = control(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--log-format",
            "json",
        ],
        &[("FARMHAND_METRICS_REQUIRE_ADMIN", "true")],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (addr, lines) = listening(&mut child);
    assert_eq!(http_get(&addr, "/metrics", None).0, 401);
    let (status, text) = http_get(&addr, "/metrics", Some(&key));
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("route=\"/metrics\",status=\"401\"} 1"),
        "{text}"
    );
    stop(child, lines);
}

fn keys_cli(args: &[&str], data_dir: &str) -> std::process::Output {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", data_dir]);
    control(&all, &[]).output().unwrap()
}

#[test]
fn keys_are_managed_from_the_cli_while_the_plane_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = data.to_str().unwrap();
    // Offline first: the plane is stopped.
    let admin = keys_cli(&["create", "--role", "admin", "--name", "ops"], data_dir);
    assert!(admin.status.success(), "{admin:?}");
    let mut child = control(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--log-format",
            "json",
        ],
        &[],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let (addr, lines) = listening(&mut child);
    let socket = data.join("admin.sock");
    assert!(socket.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // While it runs: created through its admin socket, no stop needed.
    let created = keys_cli(
        &[
            "create",
            "--role",
            "marketplace",
            "--name",
            "shop-b",
            "--tenant",
            "acme",
            "--expires-in-days",
            "30",
        ],
        data_dir,
    );
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("fh_"), "{key}");
    assert_eq!(http_get(&addr, "/v1/modems", Some(&key)).0, 200);

    let list = keys_cli(&["list"], data_dir);
    assert!(list.status.success(), "{list:?}");
    let table = String::from_utf8(list.stdout).unwrap();
    assert!(!table.contains(&key), "a key is never listed");
    let row = table.lines().find(|l| l.contains("shop-b")).expect(&table);
    let cells: Vec<&str> = row.split('\t').collect();
    assert_eq!((cells[1], cells[3]), ("marketplace", "acme"), "{row}");
    assert_ne!(cells[5], "-", "last used is noted: {row}");
    assert_ne!(cells[6], "-", "expiry: {row}");

    let revoked = keys_cli(&["revoke", cells[0]], data_dir);
    assert!(revoked.status.success(), "{revoked:?}");
    assert_eq!(http_get(&addr, "/v1/modems", Some(&key)).0, 401);
    let again = keys_cli(&["revoke", cells[0]], data_dir);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("404"),
        "{again:?}"
    );
    stop(child, lines);
    assert!(!socket.exists(), "the socket goes with the plane");
}
