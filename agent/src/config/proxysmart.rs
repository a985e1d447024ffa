//! The `[proxysmart]` section: how the local ProxySmart API is reached (URL, admin
//! credentials, timeouts), how often it is polled, and the box-specific settings of port
//! writes — the box's UTC offset ([`BoxUtcOffset`], see `proxysmart::box_clock`), the
//! write path ([`PortWrite`]) and how long a write may take to show ([`PortSettings`],
//! see `ports`).

use super::{invalid, ConfigError};
use crate::base::masked::Masked;
use reqwest::Url;
use serde::Deserialize;
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
/// Real zones are whole quarter hours.
const QUARTER_HOUR_S: i64 = 15 * 60;
/// UTC−12:00 … UTC+14:00.
const MIN_OFFSET_S: i64 = -12 * 3600;
const MAX_OFFSET_S: i64 = 14 * 3600;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileProxysmart {
    url: String,
    username: String,
    pub(super) password_file: PathBuf,
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

impl FileProxysmart {
    /// The validated-later settings, with the password read elsewhere.
    pub(super) fn into_config(
        self,
        path: &Path,
        password: Masked,
    ) -> Result<ProxysmartConfig, ConfigError> {
        let box_utc_offset = BoxUtcOffset::parse(self.box_utc_offset.as_deref().unwrap_or("auto"))
            .map_err(|e| invalid(path, "proxysmart.box_utc_offset", e))?;
        let port_write = PortWrite::parse(self.port_write.as_deref().unwrap_or("auto"))
            .map_err(|e| invalid(path, "proxysmart.port_write", e))?;
        let proxy_host = self.proxy_host.trim().to_string();
        Ok(ProxysmartConfig {
            url: self.url,
            username: self.username,
            password,
            connect_timeout: Duration::from_secs(self.connect_timeout_s),
            timeout: Duration::from_secs(self.timeout_s),
            poll_interval: Duration::from_secs(self.poll_interval_s),
            rotation_timeout: Duration::from_secs(self.rotation_timeout_s),
            box_utc_offset,
            ports: PortSettings {
                write_visibility: Duration::from_secs(self.write_visibility_s),
                port_write,
                proxy_host: (!proxy_host.is_empty()).then_some(proxy_host),
            },
        })
    }
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
    DEFAULT_WRITE_VISIBILITY.as_secs()
}
fn default_proxy_host() -> String {
    "127.0.0.1".to_string()
}

/// Checks the URL, the user and the timings.
pub(super) fn check(path: &Path, p: &ProxysmartConfig) -> Result<(), ConfigError> {
    check_http_url(&p.url).map_err(|problem| invalid(path, "proxysmart.url", problem))?;
    if p.username.is_empty() {
        return Err(invalid(path, "proxysmart.username", "must not be empty"));
    }
    check_timings(path, p)
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

/// Each timing within its range, the total timeout at least the connect one.
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

/// The `box_utc_offset` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BoxUtcOffset {
    /// Learn it from the box (`CREATED_AT` of a port just stored).
    #[default]
    Auto,
    /// This many seconds east of UTC.
    Fixed(i64),
}

impl BoxUtcOffset {
    /// Parses "auto", "UTC", "Z" or "±HH:MM" (a multiple of 15 minutes, −12:00…+14:00).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "auto" => return Ok(BoxUtcOffset::Auto),
            "utc" | "z" => return Ok(BoxUtcOffset::Fixed(0)),
            _ => {}
        }
        let bad = || format!("{text:?} is not \"auto\", \"UTC\" or an offset like \"+02:00\"");
        let (sign, rest) = match text.as_bytes().first() {
            Some(b'+') => (1, &text[1..]),
            Some(b'-') => (-1, &text[1..]),
            _ => return Err(bad()),
        };
        let (h_text, m_text) = rest.split_once(':').ok_or_else(bad)?;
        if h_text.len() != 2 || m_text.len() != 2 {
            return Err(bad());
        }
        let (h, m): (i64, i64) = (
            h_text.parse().map_err(|_| bad())?,
            m_text.parse().map_err(|_| bad())?,
        );
        let seconds = sign * (h * 3600 + m * 60);
        if !(0..60).contains(&m) || !is_zone_offset(seconds) {
            return Err(bad());
        }
        Ok(BoxUtcOffset::Fixed(seconds))
    }
}

/// Whether `seconds` east of UTC is a real zone: a whole quarter hour, UTC−12:00…+14:00.
pub fn is_zone_offset(seconds: i64) -> bool {
    (MIN_OFFSET_S..=MAX_OFFSET_S).contains(&seconds) && seconds % QUARTER_HOUR_S == 0
}

/// Default of `[proxysmart] write_visibility_s`: operators re-read ~0.5 s after a write and
/// over ~1.5 s after apply; a JSON write that never shows and the form tried after it must
/// still fit the plane's 10 s provisioning timeout.
pub const DEFAULT_WRITE_VISIBILITY: Duration = Duration::from_secs(3);

/// Which write path ports are created through (`[proxysmart] port_write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortWrite {
    /// JSON (`/crud/store_port`) first; the form when the box refuses or drops it, and the
    /// form straight away once the profile says JSON does not work here.
    #[default]
    Auto,
    /// Only `/crud/store_port`.
    Json,
    /// Only the `/conf/add_port` form.
    Form,
}

impl PortWrite {
    /// "auto", "json" or "form".
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(PortWrite::Auto),
            "json" => Ok(PortWrite::Json),
            "form" => Ok(PortWrite::Form),
            other => Err(format!("{other:?} is not \"auto\", \"json\" or \"form\"")),
        }
    }
}

/// How ports are written and checked on this box.
#[derive(Debug, Clone)]
pub struct PortSettings {
    /// How long a write may take to show in the port list.
    pub write_visibility: Duration,
    /// The write path.
    pub port_write: PortWrite,
    /// Where the box's proxies are reached from the agent to check an applied port
    /// accepts the buyer's credentials; `None` skips that check.
    pub proxy_host: Option<String>,
}

impl Default for PortSettings {
    fn default() -> Self {
        PortSettings {
            write_visibility: DEFAULT_WRITE_VISIBILITY,
            port_write: PortWrite::Auto,
            proxy_host: Some("127.0.0.1".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_setting() {
        assert_eq!(BoxUtcOffset::parse("auto"), Ok(BoxUtcOffset::Auto));
        assert_eq!(BoxUtcOffset::parse("UTC"), Ok(BoxUtcOffset::Fixed(0)));
        assert_eq!(BoxUtcOffset::parse("+02:00"), Ok(BoxUtcOffset::Fixed(7200)));
        assert_eq!(
            BoxUtcOffset::parse("-03:30"),
            Ok(BoxUtcOffset::Fixed(-12_600))
        );
        assert_eq!(
            BoxUtcOffset::parse("+05:45"),
            Ok(BoxUtcOffset::Fixed(20_700))
        );
        for bad in [
            "", "2", "+2", "+02:07", "+15:00", "-13:00", "+02:60", "+002:00", "x",
        ] {
            assert!(BoxUtcOffset::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_modes_parse() {
        assert_eq!(PortWrite::parse("auto"), Ok(PortWrite::Auto));
        assert_eq!(PortWrite::parse("form"), Ok(PortWrite::Form));
        assert_eq!(PortWrite::parse("json"), Ok(PortWrite::Json));
        assert!(PortWrite::parse("html").is_err());
    }
}
