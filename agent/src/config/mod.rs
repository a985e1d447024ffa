//! The agent's TOML configuration: strict parsing (`deny_unknown_fields`), named defaults,
//! validation done once at load, and the ProxySmart password read from its own file into a
//! masked type.
//!
//! Two layers: [`FileConfig`] mirrors the file exactly; [`AgentConfig`] is the validated
//! form the rest of the agent uses. Tests build an `AgentConfig` directly (all fields are
//! public) and pass the password as a value instead of a file.
//!
//! Config sits below every module that reads it, so the value types of the settings live
//! here, one file per section that has more than a few keys: `plane` (`[control_plane]`,
//! with `pin`), `proxysmart`, `site`, `policy` (the seller's rules, read by the commands).
//! `env` maps every key to its `FARMHAND_…` variable. Config imports nothing of the agent
//! but `base`.

pub mod env;
pub mod pin;
pub mod plane;
pub mod policy;
pub mod proxysmart;
pub mod site;

pub use plane::ControlPlaneConfig;
pub use proxysmart::ProxysmartConfig;

use crate::base::masked::Masked;
use farmhand_ops::env::Applied;
use farmhand_ops::logging::LogConfig;
use farmhand_protocol::Site;
use plane::FileControlPlane;
use policy::{FilePolicy, Policy};
use proxysmart::FileProxysmart;
use serde::Deserialize;
use site::FileSite;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default interval between two readings of the traffic counters, seconds.
pub const DEFAULT_USAGE_INTERVAL_S: u64 = 60;
/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where the key, identity and journal live.
    pub state_dir: PathBuf,
    /// How to reach the control plane.
    pub control_plane: ControlPlaneConfig,
    /// How to reach the local ProxySmart API.
    pub proxysmart: ProxysmartConfig,
    /// The labels reported to the plane.
    pub site: Site,
    /// The seller's local policy (`[policy]`); the plane cannot change it.
    pub policy: Policy,
    /// The local metrics listener (`[metrics]`; off by default).
    pub metrics: MetricsConfig,
    /// Log level and format (`[log]`), applied by the binary.
    pub log: LogConfig,
    /// Traffic metering (`[usage]`).
    pub usage: UsageConfig,
    /// The box's own health reports (`[health]`).
    pub health: HealthConfig,
}

/// The `[usage]` section: how often the traffic counters are read and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageConfig {
    /// Interval between two readings (each one is reported to the plane).
    pub interval: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            interval: Duration::from_secs(DEFAULT_USAGE_INTERVAL_S),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUsage {
    #[serde(default = "default_usage_interval_s")]
    interval_s: u64,
}

impl Default for FileUsage {
    fn default() -> Self {
        FileUsage {
            interval_s: DEFAULT_USAGE_INTERVAL_S,
        }
    }
}

fn default_usage_interval_s() -> u64 {
    DEFAULT_USAGE_INTERVAL_S
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    #[serde(default = "default_health_interval_s")]
    interval_s: u64,
    #[serde(default = "default_proxysmart_dir")]
    proxysmart_dir: PathBuf,
}

impl Default for FileHealth {
    fn default() -> Self {
        FileHealth {
            interval_s: default_health_interval_s(),
            proxysmart_dir: default_proxysmart_dir(),
        }
    }
}

fn default_health_interval_s() -> u64 {
    DEFAULT_HEALTH_INTERVAL.as_secs()
}

fn default_proxysmart_dir() -> PathBuf {
    HealthConfig::default().proxysmart_dir
}

/// Default of `[health] interval_s`.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);

/// The `[health]` section: how often the box's own health is measured, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How often to measure.
    pub interval: Duration,
    /// A path on ProxySmart's volume (its files), watched beside the state directory.
    pub proxysmart_dir: PathBuf,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: DEFAULT_HEALTH_INTERVAL,
            proxysmart_dir: PathBuf::from("/"),
        }
    }
}

/// The `[metrics]` section: where the agent serves Prometheus metrics, if anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the listener (`GET /metrics`); `None` (default) serves nothing.
    pub listen: Option<SocketAddr>,
    /// Allows a non-loopback `listen` (the page is unauthenticated).
    pub allow_non_loopback: bool,
}

/// A configuration problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/mistyped keys.
    #[error("invalid config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config file {}: key `{key}`: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending key, dotted.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The file as written: `[control_plane]`, `[proxysmart]`, `[site]`, `[policy]` and `state_dir`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    state_dir: PathBuf,
    control_plane: FileControlPlane,
    proxysmart: FileProxysmart,
    site: FileSite,
    #[serde(default)]
    policy: FilePolicy,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    usage: FileUsage,
    #[serde(default)]
    health: FileHealth,
    /// The `FARMHAND_…` variables applied over the file (errors name them).
    #[serde(skip)]
    env: Applied,
}

impl AgentConfig {
    /// Reads, parses and validates `path`, then reads the ProxySmart password file.
    /// The process's `FARMHAND_…` variables override the file (`env`).
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        Self::load_with_env(path, std::env::vars_os())
    }

    /// Like [`AgentConfig::load`] with the variables given (tests pass their own).
    pub fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file = FileConfig::parse_with_env(path, &text, vars)?;
        let password_file = file.proxysmart.password_file.clone();
        let password = read_password(&password_file)
            .map_err(|problem| invalid(path, "proxysmart.password_file", problem))
            .map_err(|e| name_variable(e, &file.env))?;
        file.into_config(path, password)
    }

    /// Checks every value; called by `load`, and by `run` for configs built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let path = Path::new("<in-memory config>");
        check_config(path, self)
    }

    /// The WebSocket URL of the plane's agent endpoint (`ws://…/v1/agent/connect`).
    pub fn connect_url(&self) -> Result<String, ConfigError> {
        plane::websocket_url(&self.control_plane.url)
            .map_err(|problem| invalid(Path::new("<config>"), "control_plane.url", problem))
    }

    /// The agent endpoint of every node (`url` first, then `urls`' others).
    pub fn connect_urls(&self) -> Result<Vec<String>, ConfigError> {
        self.control_plane
            .all_urls()
            .map(|url| {
                plane::websocket_url(url).map_err(|problem| {
                    invalid(Path::new("<config>"), "control_plane.urls", problem)
                })
            })
            .collect()
    }
}

impl FileConfig {
    /// Parses TOML text; `path` is only used in error messages.
    /// The process's `FARMHAND_…` variables override the file (`env`).
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        Self::parse_with_env(path, text, std::env::vars_os())
    }

    /// Like [`FileConfig::parse`] with the variables given (tests pass their own).
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<FileConfig, ConfigError> {
        let (mut file, applied): (FileConfig, _) = env::parse(path, text, vars)?;
        file.env = applied;
        Ok(file)
    }

    /// The state directory as written; `farmhand-agent audit` needs only this (and no
    /// access to the ProxySmart password file).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The `[control_plane]` settings alone (what `enroll --config` needs), unchecked.
    pub fn control_plane(&self, path: &Path) -> Result<ControlPlaneConfig, ConfigError> {
        self.control_plane.to_config(path)
    }

    /// Builds and validates the config with the password read elsewhere.
    pub fn into_config(self, path: &Path, password: Masked) -> Result<AgentConfig, ConfigError> {
        let control_plane = self.control_plane(path)?;
        let config = AgentConfig {
            state_dir: self.state_dir,
            control_plane,
            proxysmart: self.proxysmart.into_config(path, password)?,
            site: self.site.into_site(),
            policy: self.policy.into_policy(),
            metrics: self.metrics,
            usage: UsageConfig {
                interval: Duration::from_secs(self.usage.interval_s),
            },
            health: HealthConfig {
                interval: Duration::from_secs(self.health.interval_s),
                proxysmart_dir: self.health.proxysmart_dir,
            },
            log: self.log,
        };
        check_config(path, &config).map_err(|e| name_variable(e, &self.env))?;
        Ok(config)
    }
}

/// A value problem at `key` in `path`.
fn invalid(path: &Path, key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        key,
        problem: problem.into(),
    }
}

fn read_password(file: &Path) -> Result<Masked, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("{} is empty", file.display()));
    }
    Ok(Masked::new(trimmed))
}

/// Adds the variable that set the offending key, if one did.
fn name_variable(error: ConfigError, applied: &Applied) -> ConfigError {
    match error {
        ConfigError::Invalid { path, key, problem } => {
            let problem = match applied.var_for(key) {
                Some(var) => format!("{problem} (set by the environment variable {var})"),
                None => problem,
            };
            ConfigError::Invalid { path, key, problem }
        }
        other => other,
    }
}

fn check_metrics(path: &Path, m: &MetricsConfig) -> Result<(), ConfigError> {
    match m.listen {
        Some(addr) if !addr.ip().is_loopback() && !m.allow_non_loopback => Err(invalid(
            path,
            "metrics.listen",
            format!(
                "{addr} is not a loopback address and the metrics page is unauthenticated; \
                 use 127.0.0.1 or [::1], or set allow_non_loopback = true"
            ),
        )),
        _ => Ok(()),
    }
}

fn check_config(path: &Path, c: &AgentConfig) -> Result<(), ConfigError> {
    if c.state_dir.as_os_str().is_empty() {
        return Err(invalid(path, "state_dir", "must not be empty"));
    }
    plane::check_control_plane(path, &c.control_plane)?;
    proxysmart::check(path, &c.proxysmart)?;
    site::check_site(path, &c.site)?;
    check_metrics(path, &c.metrics)?;
    // Sub-second intervals only come from configs built in code (tests).
    if c.health.interval.is_zero() || c.health.interval > Duration::from_secs(86_400) {
        return Err(invalid(
            path,
            "health.interval_s",
            "must be 1..=86400 seconds",
        ));
    }
    if c.usage.interval.is_zero() || c.usage.interval > Duration::from_secs(86_400) {
        return Err(invalid(
            path,
            "usage.interval_s",
            "must be 1..=86400 seconds",
        ));
    }
    c.log
        .check()
        .map_err(|problem| invalid(path, "log.level", problem))?;
    c.policy
        .check_values()
        .map_err(|(key, problem)| invalid(path, key, problem))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
