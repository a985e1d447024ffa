//! The `[control_plane]` section: where the plane is, and how its certificate is trusted
//! (`ca_file`, `pin_sha256`) — or, with `insecure_plaintext`, that it is not (tests and
//! loopback only). Also the WebSocket URL the agent dials, derived from the base URL.

use super::pin::Pin;
use super::{invalid, ConfigError};
use reqwest::Url;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Path of the control plane's agent WebSocket endpoint, appended to the base URL.
pub const CONNECT_PATH: &str = "/v1/agent/connect";

/// Control-plane connection settings.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Base URL, e.g. `https://plane.example.com` (or `http://…` with `insecure_plaintext`).
    pub url: String,
    /// Allows an `http://` URL: no TLS at all. Tests and loopback only.
    pub insecure_plaintext: bool,
    /// PEM bundle of the CAs to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the plane's leaf certificate (see `tls::pin` for how it combines).
    pub pin_sha256: Option<Pin>,
    /// The other nodes of a clustered plane (`urls` in the file, after the first): the
    /// agent tries all of them in a shuffled order, with the usual backoff between tries.
    /// They share `url`'s scheme and trust settings.
    pub other_urls: Vec<String>,
}

impl ControlPlaneConfig {
    /// `url` over TLS, trusting the system roots.
    pub fn new(url: impl Into<String>) -> Self {
        ControlPlaneConfig {
            url: url.into(),
            insecure_plaintext: false,
            ca_file: None,
            pin_sha256: None,
            other_urls: Vec::new(),
        }
    }

    /// `url` (`http://`) without TLS, as tests on loopback use it.
    pub fn plaintext(url: impl Into<String>) -> Self {
        ControlPlaneConfig {
            insecure_plaintext: true,
            ..ControlPlaneConfig::new(url)
        }
    }

    /// Checks these settings alone (what `enroll` needs); `AgentConfig::validate` does too.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_control_plane(Path::new("<control-plane settings>"), self)
    }

    /// Every node's base URL: `url`, then the others.
    pub fn all_urls(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.url).chain(&self.other_urls)
    }

    /// Whether the URL asks for TLS (`https://` or `wss://`).
    pub fn uses_tls(&self) -> bool {
        websocket_url(&self.url).is_ok_and(|u| u.starts_with("wss://"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileControlPlane {
    /// One node (or a load balancer in front of several).
    #[serde(default)]
    url: Option<String>,
    /// Several nodes, tried in a shuffled order: instead of `url`.
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    pin_sha256: Option<String>,
}

impl FileControlPlane {
    /// The settings as written, with the pin parsed; unchecked.
    pub(super) fn to_config(&self, path: &Path) -> Result<ControlPlaneConfig, ConfigError> {
        let pin_sha256 = self
            .pin_sha256
            .as_deref()
            .map(Pin::parse)
            .transpose()
            .map_err(|problem| invalid(path, "control_plane.pin_sha256", problem))?;
        let (url, other_urls) = match (&self.url, self.urls.split_first()) {
            (Some(url), None) => (url.clone(), Vec::new()),
            (None, Some((first, rest))) => (first.clone(), rest.to_vec()),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    path,
                    "control_plane.urls",
                    "set url (one node) or urls (several), not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    path,
                    "control_plane.url",
                    "the control plane's URL is required (url, or urls for several nodes)",
                ))
            }
        };
        Ok(ControlPlaneConfig {
            url,
            insecure_plaintext: self.insecure_plaintext,
            ca_file: self.ca_file.clone(),
            pin_sha256,
            other_urls,
        })
    }
}

/// Checks the URL, and that a URL without TLS is asked for and carries no trust settings.
pub(super) fn check_control_plane(path: &Path, cp: &ControlPlaneConfig) -> Result<(), ConfigError> {
    websocket_url(&cp.url).map_err(|p| invalid(path, "control_plane.url", p))?;
    let mut seen = std::collections::HashSet::new();
    for url in cp.all_urls() {
        let ws = websocket_url(url).map_err(|p| invalid(path, "control_plane.urls", p))?;
        if ws.starts_with("wss://") != cp.uses_tls() {
            return Err(invalid(
                path,
                "control_plane.urls",
                "every node must use the same scheme (all https://, or all http://)",
            ));
        }
        if !seen.insert(ws) {
            return Err(invalid(
                path,
                "control_plane.urls",
                format!("{url:?} is listed twice"),
            ));
        }
    }
    if cp.uses_tls() {
        return Ok(());
    }
    if !cp.insecure_plaintext {
        return Err(invalid(
            path,
            "control_plane.insecure_plaintext",
            format!(
                "{:?} has no TLS; use https://, or set insecure_plaintext = true (tests and loopback only)",
                cp.url
            ),
        ));
    }
    // Trust settings on a plaintext URL would silently protect nothing.
    if cp.ca_file.is_some() || cp.pin_sha256.is_some() {
        return Err(invalid(
            path,
            "control_plane.url",
            "ca_file and pin_sha256 need an https:// URL",
        ));
    }
    Ok(())
}

/// Derives `ws(s)://host/…/v1/agent/connect` from the plane's base URL.
pub fn websocket_url(base: &str) -> Result<String, String> {
    let parsed = Url::parse(base).map_err(|e| format!("{base:?} is not a URL: {e}"))?;
    let scheme = match parsed.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (use http(s):// or ws(s)://)"
            ))
        }
    };
    let Some(host) = parsed.host_str() else {
        return Err(format!("{base:?} has no host"));
    };
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = parsed.path().trim_end_matches('/');
    Ok(format!("{scheme}://{host}{port}{path}{CONNECT_PATH}"))
}
