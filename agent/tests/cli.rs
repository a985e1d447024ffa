//! The real `farmhand-agent` binary: `--version` names the commit, `enroll` takes the token
//! from stdin, and `doctor`/`status` exit non-zero (with a readable reason) when something
//! is wrong. The happy paths against a real stack are in `tests/tests/e2e_ops.rs` and
//! `packaging/test-deb`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_farmhand-agent");

fn agent(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("FARMHAND_ENROLL_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_git_commit() {
    let out = agent(&["--version"], "");
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("farmhand-agent 0.1.0 (commit "), "{text}");
    assert!(text.contains(farmhand_agent::GIT_COMMIT), "{text}");
}

#[test]
fn doctor_and_status_exit_1_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("agent.toml");
    let out = agent(&["doctor", "--config", missing.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.starts_with("FAIL  config") && text.contains("fix:"),
        "{text}"
    );

    let status_file = dir.path().join("status.json");
    let out = agent(
        &["status", "--status-file", status_file.to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("not running"), "{}", stdout(&out));
}

/// Fake `POST /v1/agent/enroll` accepting only the token "tok-from-stdin".
async fn enroll_server() -> String {
    let app = Router::new().route(
        "/v1/agent/enroll",
        post(|Json(body): Json<Value>| async move {
            if body["token"] != "tok-from-stdin" {
                let e = json!({"error": {"code": "invalid_enrollment_token", "message": "no"}});
                return (StatusCode::UNAUTHORIZED, Json(e));
            }
            (StatusCode::CREATED, Json(json!({"agent_id": "ag-stdin"})))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_reads_the_token_from_stdin() {
    let server = enroll_server().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let run = move |token_args: Vec<&'static str>, stdin: &'static str| {
        let server = server.clone();
        let state_arg = state_arg.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "enroll",
                "--server",
                &server,
                "--insecure-plaintext",
                "--state-dir",
                &state_arg,
            ];
            args.extend(token_args);
            agent(&args, stdin)
        })
    };
    // An empty stdin is refused before anything is written.
    let out = run(vec![], "\n").await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no enrollment token"));

    let out = run(vec!["--token", "-"], "tok-from-stdin\n").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("enrolled as ag-stdin"));
    let identity = std::fs::read_to_string(state.join("agent.json")).unwrap();
    assert!(identity.contains("ag-stdin"));
}
