//! The `proxysmart-sim` binary: announces its URL on stdout, serves the API with the password
//! from the file, fails clearly without a password file, and exits cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_proxysmart-sim");

#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "  file-pass  \nignored second line\n").unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--modems",
            "3",
            "--username",
            "admin",
            "--password-file",
        ])
        .arg(&pw)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("PROXYSMART_URL=")
        .expect("announces its URL")
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = client
        .get(format!("{url}/apix/show_status_json"))
        .basic_auth("admin", Some("file-pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&status.text().await.unwrap()).unwrap();
    assert_eq!(body.as_array().unwrap().len(), 5);
    let denied = client
        .get(format!("{url}/apix/show_status_json"))
        .basic_auth("admin", Some("proxy"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "clean exit: {exit:?}");
}

#[test]
fn missing_password_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--password-file",
            "/nonexistent/pw",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read password file"), "{stderr}");
    assert!(out.stdout.is_empty(), "no URL announced");
}
