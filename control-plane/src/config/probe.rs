//! `[probe]`: proving from outside that every sold port works as sold (`probe`): where the
//! echo endpoint listens, what the probes fetch, how often, how fast, and when a port is
//! judged degraded — with the defaults `config/control.example.toml` documents.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Default seconds between two probes of one allocation.
pub const DEFAULT_PROBE_INTERVAL_S: u64 = 60;
/// Default seconds one probe (both protocols) may take before it fails `timeout`.
pub const DEFAULT_PROBE_TIMEOUT_S: u64 = 10;
/// Default first-byte time above which a probe fails `slow`, milliseconds.
pub const DEFAULT_PROBE_SLOW_MS: u64 = 5000;
/// Default probes in flight at once.
pub const DEFAULT_PROBE_CONCURRENCY: usize = 16;
/// Default most probes started per second, all allocations together.
pub const DEFAULT_PROBE_MAX_PER_SECOND: u32 = 20;
/// Default consecutive failed probes that mark an allocation degraded.
pub const DEFAULT_PROBE_FAILURES_TO_DEGRADE: u32 = 3;
/// Default probe results kept per allocation.
pub const DEFAULT_PROBE_HISTORY: usize = 100;

/// The `[probe]` section (see `probe`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Probe every live allocation (default off: the echo endpoint must be reachable from
    /// the sellers' boxes, which only the operator can arrange).
    pub enabled: bool,
    /// Where the plane's echo endpoint listens (a separate listener answering with the
    /// caller's address). Absent: no echo endpoint (`target` must then be set).
    pub listen: Option<SocketAddr>,
    /// The `http://` URL probes fetch through each port: the echo endpoint as boxes reach
    /// it, or an operator's own that answers the caller's IP (plain text or `{"ip": …}`).
    /// Absent: `http://<listen>/`.
    pub target: Option<String>,
    /// Seconds between two probes of one allocation (jittered by up to a fifth).
    pub interval_s: u64,
    /// Seconds each of a probe's fetches (HTTP, then SOCKS5) may take.
    pub timeout_s: u64,
    /// A first byte later than this (ms) fails the probe as `slow`.
    pub slow_ms: u64,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// Most probes started per second, all allocations together.
    pub max_per_second: u32,
    /// Consecutive failed probes that mark an allocation degraded.
    pub failures_to_degrade: u32,
    /// Probe results kept per allocation (`GET /v1/allocations/{id}/probes`), in the store.
    pub history: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: false,
            listen: None,
            target: None,
            interval_s: DEFAULT_PROBE_INTERVAL_S,
            timeout_s: DEFAULT_PROBE_TIMEOUT_S,
            slow_ms: DEFAULT_PROBE_SLOW_MS,
            concurrency: DEFAULT_PROBE_CONCURRENCY,
            max_per_second: DEFAULT_PROBE_MAX_PER_SECOND,
            failures_to_degrade: DEFAULT_PROBE_FAILURES_TO_DEGRADE,
            history: DEFAULT_PROBE_HISTORY,
        }
    }
}

/// Where a probe goes: an `http://` origin, as probes address it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Origin-form path, from `/`.
    pub path: String,
}

impl ProbeTarget {
    /// `host:port` for a `Host` header and an absolute URL (IPv6 in brackets).
    pub fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// Parses `http://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::Invalid(format!("probe.target {url:?}: {why}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http:// (probes read the answer in clear)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let unsafe_char = |c: char| c.is_whitespace() || c.is_control();
        if authority.contains('@') || url.chars().any(unsafe_char) {
            return Err(bad("no credentials, spaces or control characters"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
                (host, after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ProbeTarget {
            host: host.to_string(),
            port,
            path,
        })
    }
}

impl ProbeConfig {
    /// What probes fetch: `target`, else the echo listener's address as bound (`bound`:
    /// `listen` with its port chosen when it asked for port 0).
    pub fn target(&self, bound: Option<SocketAddr>) -> Result<ProbeTarget, ConfigError> {
        match (&self.target, bound) {
            (Some(url), _) => ProbeTarget::parse(url),
            (None, Some(listen)) if !listen.ip().is_unspecified() => {
                ProbeTarget::parse(&format!("http://{listen}/"))
            }
            (None, Some(_)) => Err(ConfigError::Invalid(
                "probe.target: the echo endpoint listens on every address; set target to the \
                 URL the sellers' boxes reach it at"
                    .into(),
            )),
            (None, None) => Err(ConfigError::Invalid(
                "probe: set listen (the plane's echo endpoint) or target (a URL that answers \
                 the caller's IP)"
                    .into(),
            )),
        }
    }

    /// The interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_s)
    }

    /// The per-probe deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// The `slow` threshold.
    pub fn slow(&self) -> Duration {
        Duration::from_millis(self.slow_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("probe.interval_s", self.interval_s),
            ("probe.timeout_s", self.timeout_s),
            ("probe.slow_ms", self.slow_ms),
            ("probe.concurrency", self.concurrency as u64),
            ("probe.max_per_second", u64::from(self.max_per_second)),
            (
                "probe.failures_to_degrade",
                u64::from(self.failures_to_degrade),
            ),
            ("probe.history", self.history as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!(
                "{name} must be greater than 0"
            )));
        }
        if self.timeout_s > self.interval_s || self.history > 10_000 || self.interval_s > 86_400 {
            return Err(ConfigError::Invalid(
                "probe: timeout_s must be at most interval_s (≤ 1 day), history at most 10000"
                    .into(),
            ));
        }
        if self.enabled || self.target.is_some() {
            // Port 0 is chosen at bind; any port stands in for it here.
            let bound = self
                .listen
                .map(|l| SocketAddr::new(l.ip(), l.port().max(1)));
            self.target(bound)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_why_not() {
        let t = ProbeTarget::parse("http://203.0.113.5:8081/echo").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("203.0.113.5", 8081, "/echo")
        );
        let t = ProbeTarget::parse("http://[::1]").unwrap();
        assert_eq!((t.authority().as_str(), t.path.as_str()), ("[::1]:80", "/"));
        for bad in [
            "https://a/",
            "http://",
            "http://a:0/",
            "http://u:p@a/",
            "http://a/ b",
            "a:80",
        ] {
            assert!(ProbeTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enabled_probes_need_somewhere_to_go() {
        let on = ProbeConfig {
            enabled: true,
            ..ProbeConfig::default()
        };
        assert!(on.validate().is_err());
        let everywhere = ProbeConfig {
            listen: Some("0.0.0.0:8081".parse().unwrap()),
            ..on.clone()
        };
        assert!(everywhere
            .validate()
            .unwrap_err()
            .to_string()
            .contains("target"));
        let local = ProbeConfig {
            listen: Some("127.0.0.1:8081".parse().unwrap()),
            ..on.clone()
        };
        assert_eq!(
            local.target(local.listen).unwrap().authority(),
            "127.0.0.1:8081"
        );
        let slow_timeout = ProbeConfig {
            timeout_s: 120,
            ..local
        };
        assert!(slow_timeout.validate().is_err());
        assert!(ProbeConfig::default().validate().is_ok());
    }
}
