//! farmhand-agent: the seller-side daemon. It reads the local ProxySmart API, keeps an
//! outbound WebSocket to the control plane, reports the box's inventory and executes the
//! plane's commands.
//!
//! Data path: `config` → `identity` → `connection` (frames over a socket) → `session`
//! (handshake + one select loop) → `commands/` (one file per command) → `proxysmart/` (the
//! only code that talks to ProxySmart). `inventory` polls ProxySmart; `journal` makes
//! command results and managed ports durable; `backoff` paces reconnects; `run` ties it
//! together. `policy` is the seller's local say over what the plane may do, and `audit` the
//! local record of what it did; `autorotate` carries out the automatic IP rotations
//! allocations ask for; `usage` meters each allocation's traffic. ProxySmart credentials
//! live in `config` and `proxysmart` only and never reach a protocol message.

pub mod audit;
pub mod autorotate;
pub mod backoff;
pub mod box_profile;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connection;
pub mod enroll;
pub mod env;
pub(crate) mod files;
pub mod health;
pub mod identity;
pub mod inventory;
pub mod journal;
pub mod masked;
pub mod metrics;
pub mod policy;
pub mod ports;
pub mod proxy_tunnel;
pub mod proxysmart;
pub mod rotation;
mod run;
pub mod session;
pub mod status;
pub mod status_file;
pub mod tls;
pub mod usage;

pub use config::{AgentConfig, ConfigError, ControlPlaneConfig, ProxysmartConfig};
pub use enroll::{enroll, EnrollError};
pub use masked::Masked;
pub use run::{run, run_with_status, AgentError};
pub use status::AgentStatus;

use std::time::Duration;

/// The agent's version, reported in `hello`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`build.rs`), or "unknown".
pub const GIT_COMMIT: &str = env!("FARMHAND_GIT_COMMIT");
/// What `--version` prints after the program name: `0.1.0 (commit abc1234)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FARMHAND_GIT_COMMIT"),
    ")"
);

/// Installs ring as rustls' process-wide crypto provider (reqwest is built without one).
/// Idempotent: a provider installed earlier (by us or the embedding process) is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error and all its sources, joined with ": " (reqwest hides the root cause otherwise).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// An HTTP client for the control plane (honours HTTPS_PROXY/NO_PROXY), verifying HTTPS
/// servers with `trust` (the agent's CA/pin settings).
pub(crate) fn http_client_trusting(
    timeout: Duration,
    trust: Option<&tls::Trust>,
) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout);
    if let Some(trust) = trust {
        builder = builder.tls_backend_preconfigured(trust.client_config().as_ref().clone());
    }
    builder.build().map_err(|e| e.to_string())
}
