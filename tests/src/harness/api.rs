//! A small REST client for the control plane, as a marketplace backend would use it.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A client bound to one base URL and one API key.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Parsed body.
    pub body: Value,
}

/// The value of the sample line of `text` (a metrics page) that starts with `series`
/// (name and labels, e.g. `farmhand_agents_connected` or `x{a="b"}`), if any.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

impl Reply {
    /// The `error.code` of an error body, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.body.pointer("/error/code").and_then(Value::as_str)
    }

    /// A string field of the body by JSON pointer.
    pub fn str(&self, pointer: &str) -> Option<&str> {
        self.body.pointer(pointer).and_then(Value::as_str)
    }
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:7000`) using `key` as Bearer token.
    pub fn new(base: &str, key: Option<&str>) -> Api {
        farmhand_agent::install_crypto_provider();
        Api {
            base: base.trim_end_matches('/').to_owned(),
            key: key.map(str::to_owned),
            http: reqwest::Client::new(),
        }
    }

    /// The same key and client, for another server (another node of a cluster).
    pub fn with_base(&self, base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            key: self.key.clone(),
            http: self.http.clone(),
        }
    }

    /// A client for `base` sending requests through `http` (e.g. one trusting a test CA).
    pub fn with_client(base: &str, key: Option<&str>, http: reqwest::Client) -> Api {
        Api {
            http,
            ..Api::new(base, key)
        }
    }

    /// The same server with another key.
    pub fn with_key(&self, key: Option<&str>) -> Api {
        Api {
            key: key.map(str::to_owned),
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(Method::GET, path, None).await
    }

    /// GET `path`, expecting 200: its JSON body (an error names the status and body).
    pub async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let reply = self.get(path).await?;
        anyhow::ensure!(
            reply.status == 200,
            "GET {path}: {} {:?}",
            reply.status,
            reply.body
        );
        Ok(reply.body)
    }

    /// POST `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Reply> {
        self.send(Method::POST, path, Some(body.to_string())).await
    }

    /// POST a raw body (for malformed-input tests) to `path`.
    pub async fn post_raw(&self, path: &str, body: String) -> anyhow::Result<Reply> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `GET /metrics` as text, checked against the exposition format.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let mut req = self.http.get(format!("{}/metrics", self.base));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let text = req.send().await?.error_for_status()?.text().await?;
        farmhand_ops::metrics::validate(&text)
            .map_err(|e| anyhow::anyhow!("malformed metrics: {e}"))?;
        Ok(text)
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(Method::DELETE, path, None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Reply> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }
}
