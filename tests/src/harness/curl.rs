//! The buyer's side: a real `curl` through a proxy.

use tokio::process::Command;

/// What curl did: its exit code and what it printed.
#[derive(Debug)]
pub struct CurlOutcome {
    /// curl's exit code (0 = success; 7 = could not connect; 56/97 = proxy refused…).
    pub code: Option<i32>,
    /// The response body.
    pub body: String,
    /// curl's error output.
    pub stderr: String,
}

impl CurlOutcome {
    /// Whether curl succeeded and returned exactly `body`.
    pub fn returned(&self, body: &str) -> bool {
        self.code == Some(0) && self.body == body
    }
}

/// Fetches `url` through `proxy` (e.g. `http://login:pass@127.0.0.1:8001` or
/// `socks5h://login:pass@127.0.0.1:5001`), failing on HTTP errors, with a 10 s cap.
pub async fn curl_via(proxy: &str, url: &str) -> anyhow::Result<CurlOutcome> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--noproxy",
            "",
            "-x",
            proxy,
            url,
        ])
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run curl (is it installed?): {e}"))?;
    Ok(CurlOutcome {
        code: out.status.code(),
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
