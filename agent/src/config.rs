//! The agent's TOML configuration: strict parsing (`deny_unknown_fields`), named defaults,
//! validation done once at load, and the ProxySmart password read from its own file into a
//! masked type.
//!
//! Two layers: [`FileConfig`] mirrors the file exactly; [`AgentConfig`] is the validated
//! form the rest of the agent uses. Tests build an `AgentConfig` directly (all fields are
//! public) and pass the password as a value instead of a file.

use crate::base::masked::Masked;
use crate::policy::{FilePolicy, Policy};
use crate::ports::{PortSettings, PortWrite};
use crate::proxysmart::BoxUtcOffset;
use crate::tls::Pin;
use farmhand_ops::env::Applied;
use farmhand_ops::logging::LogConfig;
use farmhand_protocol::Site;
use reqwest::Url;
use serde::Deserialize;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default ProxySmart connect timeout, seconds (what public integrations use).
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 10;
/// Default ProxySmart total request timeout, seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 45;
/// Default interval between two inventory polls, seconds.
pub const DEFAULT_POLL_INTERVAL_S: u64 = 5;
/// Default time to wait for a modem's new IP after asking for a rotation, seconds.
pub const DEFAULT_ROTATION_TIMEOUT_S: u64 = 60;
/// Default interval between two readings of the traffic counters, seconds.
pub const DEFAULT_USAGE_INTERVAL_S: u64 = 60;
/// Path of the control plane's agent WebSocket endpoint, appended to the base URL.
pub const CONNECT_PATH: &str = "/v1/agent/connect";

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
    pub health: crate::health::HealthConfig,
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
    crate::health::DEFAULT_INTERVAL.as_secs()
}

fn default_proxysmart_dir() -> PathBuf {
    crate::health::HealthConfig::default().proxysmart_dir
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
}

impl ControlPlaneConfig {
    /// `url` over TLS, trusting the system roots.
    pub fn new(url: impl Into<String>) -> Self {
        ControlPlaneConfig {
            url: url.into(),
            insecure_plaintext: false,
            ca_file: None,
            pin_sha256: None,
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

    /// Whether the URL asks for TLS (`https://` or `wss://`).
    pub fn uses_tls(&self) -> bool {
        websocket_url(&self.url).is_ok_and(|u| u.starts_with("wss://"))
    }
}

/// ProxySmart connection settings.
#[derive(Debug, Clone)]
pub struct ProxysmartConfig {
    /// Base URL of the API, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Basic-auth user.
    pub username: String,
    /// Basic-auth password; never logged, never sent anywhere but ProxySmart.
    pub password: Masked,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Total timeout of one request.
    pub timeout: Duration,
    /// Interval between inventory polls.
    pub poll_interval: Duration,
    /// How long `rotate_ip` waits for the new IP.
    pub rotation_timeout: Duration,
    /// The box's zone for `PROXY_VALID_BEFORE` (default: learned from the box).
    pub box_utc_offset: BoxUtcOffset,
    /// How ports are written and checked (`write_visibility_s`, `port_write`,
    /// `proxy_host`).
    pub ports: PortSettings,
}

impl ProxysmartConfig {
    /// Settings with the documented default timings.
    pub fn new(url: impl Into<String>, username: impl Into<String>, password: Masked) -> Self {
        ProxysmartConfig {
            url: url.into(),
            username: username.into(),
            password,
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_S),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
            poll_interval: Duration::from_secs(DEFAULT_POLL_INTERVAL_S),
            rotation_timeout: Duration::from_secs(DEFAULT_ROTATION_TIMEOUT_S),
            box_utc_offset: BoxUtcOffset::Auto,
            ports: PortSettings::default(),
        }
    }
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileControlPlane {
    url: String,
    #[serde(default)]
    insecure_plaintext: bool,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    pin_sha256: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProxysmart {
    url: String,
    username: String,
    password_file: PathBuf,
    #[serde(default = "default_connect_timeout_s")]
    connect_timeout_s: u64,
    #[serde(default = "default_timeout_s")]
    timeout_s: u64,
    #[serde(default = "default_poll_interval_s")]
    poll_interval_s: u64,
    #[serde(default = "default_rotation_timeout_s")]
    rotation_timeout_s: u64,
    /// "auto" (default), "UTC" or "±HH:MM"; see `proxysmart::box_clock`.
    #[serde(default)]
    box_utc_offset: Option<String>,
    #[serde(default = "default_write_visibility_s")]
    write_visibility_s: u64,
    /// "auto" (default), "json" or "form"; see `ports`.
    #[serde(default)]
    port_write: Option<String>,
    /// Where the box's proxies are reached to check a new port ("" = do not check).
    #[serde(default = "default_proxy_host")]
    proxy_host: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSite {
    public_host: String,
    country: String,
    #[serde(default)]
    city: Option<String>,
}

fn default_connect_timeout_s() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_S
}
fn default_timeout_s() -> u64 {
    DEFAULT_TIMEOUT_S
}
fn default_poll_interval_s() -> u64 {
    DEFAULT_POLL_INTERVAL_S
}
fn default_rotation_timeout_s() -> u64 {
    DEFAULT_ROTATION_TIMEOUT_S
}
fn default_write_visibility_s() -> u64 {
    crate::ports::DEFAULT_WRITE_VISIBILITY.as_secs()
}
fn default_proxy_host() -> String {
    "127.0.0.1".to_string()
}

impl AgentConfig {
    /// Reads, parses and validates `path`, then reads the ProxySmart password file.
    /// The process's `FARMHAND_…` variables override the file (`crate::env`).
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
        websocket_url(&self.control_plane.url)
            .map_err(|problem| invalid(Path::new("<config>"), "control_plane.url", problem))
    }
}

impl FileConfig {
    /// Parses TOML text; `path` is only used in error messages.
    /// The process's `FARMHAND_…` variables override the file (`crate::env`).
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        Self::parse_with_env(path, text, std::env::vars_os())
    }

    /// Like [`FileConfig::parse`] with the variables given (tests pass their own).
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<FileConfig, ConfigError> {
        let (mut file, applied) = crate::env::parse(path, text, vars)?;
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
        let cp = &self.control_plane;
        let pin_sha256 = cp
            .pin_sha256
            .as_deref()
            .map(Pin::parse)
            .transpose()
            .map_err(|problem| invalid(path, "control_plane.pin_sha256", problem))?;
        Ok(ControlPlaneConfig {
            url: cp.url.clone(),
            insecure_plaintext: cp.insecure_plaintext,
            ca_file: cp.ca_file.clone(),
            pin_sha256,
        })
    }

    /// Builds and validates the config with the password read elsewhere.
    pub fn into_config(self, path: &Path, password: Masked) -> Result<AgentConfig, ConfigError> {
        let control_plane = self.control_plane(path)?;
        let p = self.proxysmart;
        let box_utc_offset = BoxUtcOffset::parse(p.box_utc_offset.as_deref().unwrap_or("auto"))
            .map_err(|e| invalid(path, "proxysmart.box_utc_offset", e))?;
        let port_write = PortWrite::parse(p.port_write.as_deref().unwrap_or("auto"))
            .map_err(|e| invalid(path, "proxysmart.port_write", e))?;
        let proxy_host = p.proxy_host.trim().to_string();
        let config = AgentConfig {
            state_dir: self.state_dir,
            control_plane,
            proxysmart: ProxysmartConfig {
                url: p.url,
                username: p.username,
                password,
                connect_timeout: Duration::from_secs(p.connect_timeout_s),
                timeout: Duration::from_secs(p.timeout_s),
                poll_interval: Duration::from_secs(p.poll_interval_s),
                rotation_timeout: Duration::from_secs(p.rotation_timeout_s),
                box_utc_offset,
                ports: PortSettings {
                    write_visibility: Duration::from_secs(p.write_visibility_s),
                    port_write,
                    proxy_host: (!proxy_host.is_empty()).then_some(proxy_host),
                },
            },
            site: Site {
                public_host: self.site.public_host,
                country: self.site.country.to_ascii_uppercase(),
                city: self.site.city.filter(|c| !c.trim().is_empty()),
            },
            policy: self.policy.into_policy(),
            metrics: self.metrics,
            usage: UsageConfig {
                interval: Duration::from_secs(self.usage.interval_s),
            },
            health: crate::health::HealthConfig {
                interval: Duration::from_secs(self.health.interval_s),
                proxysmart_dir: self.health.proxysmart_dir,
            },
            log: self.log,
        };
        check_config(path, &config).map_err(|e| name_variable(e, &self.env))?;
        Ok(config)
    }
}

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
    check_control_plane(path, &c.control_plane)?;
    check_http_url(&c.proxysmart.url).map_err(|p| invalid(path, "proxysmart.url", p))?;
    if c.proxysmart.username.is_empty() {
        return Err(invalid(path, "proxysmart.username", "must not be empty"));
    }
    check_timings(path, &c.proxysmart)?;
    check_site(path, &c.site)?;
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

fn check_control_plane(path: &Path, cp: &ControlPlaneConfig) -> Result<(), ConfigError> {
    websocket_url(&cp.url).map_err(|p| invalid(path, "control_plane.url", p))?;
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

fn check_timings(path: &Path, p: &ProxysmartConfig) -> Result<(), ConfigError> {
    let in_range = |d: Duration, max: u64| (1..=max).contains(&d.as_secs());
    if !in_range(p.connect_timeout, 300) {
        return Err(invalid(
            path,
            "proxysmart.connect_timeout_s",
            "must be 1..=300 seconds",
        ));
    }
    if !in_range(p.timeout, 3600) || p.timeout < p.connect_timeout {
        return Err(invalid(
            path,
            "proxysmart.timeout_s",
            "must be 1..=3600 seconds and >= connect_timeout_s",
        ));
    }
    if !in_range(p.poll_interval, 3600) {
        return Err(invalid(
            path,
            "proxysmart.poll_interval_s",
            "must be 1..=3600 seconds",
        ));
    }
    if !in_range(p.rotation_timeout, 3600) {
        return Err(invalid(
            path,
            "proxysmart.rotation_timeout_s",
            "must be 1..=3600 seconds",
        ));
    }
    if !in_range(p.ports.write_visibility, 120) {
        return Err(invalid(
            path,
            "proxysmart.write_visibility_s",
            "must be 1..=120 seconds",
        ));
    }
    Ok(())
}

fn check_site(path: &Path, site: &Site) -> Result<(), ConfigError> {
    let host = site.public_host.trim();
    if host.is_empty() || host.len() > 253 || host.contains(char::is_whitespace) {
        return Err(invalid(
            path,
            "site.public_host",
            "must be a host name or IP address",
        ));
    }
    if !is_iso_country(&site.country) {
        return Err(invalid(
            path,
            "site.country",
            format!(
                "{:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"DE\")",
                site.country
            ),
        ));
    }
    Ok(())
}

fn check_http_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{url:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(parsed)
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

/// ISO 3166-1 alpha-2 codes, officially assigned.
const ISO_COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ \
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET \
FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR \
IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN \
MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR \
TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `code` is an assigned ISO 3166-1 alpha-2 code (upper case).
pub fn is_iso_country(code: &str) -> bool {
    code.len() == 2 && ISO_COUNTRIES.split(' ').any(|c| c == code)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
