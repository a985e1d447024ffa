//! The control plane's configuration: one strict TOML file (`config/control.example.toml`
//! documents every option), named defaults, validated once at load.

pub mod env;
mod probe;
mod retention;
mod store;
mod webhooks;

pub use probe::*;
pub use retention::*;
pub use store::*;
pub use webhooks::*;

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest automatic rotation interval and rotation cooldown (one day), seconds: bounds
/// `min_rotate_every_s` here and each request's `rotate_every_s` (`allocator::request`).
pub const MAX_ROTATE_EVERY_S: u64 = 86_400;

/// Default address the binary listens on (`listen`).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default storage directory (`data_dir`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/farmhand-control";
/// Default heartbeat interval announced in `welcome`, seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_S: u64 = 15;
/// Default time an agent has to complete `hello` + `auth`, seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT_S: u64 = 10;
/// Default time an agent has to confirm a `provision`, seconds.
pub const DEFAULT_PROVISIONING_TIMEOUT_S: u64 = 10;
/// Default time an agent has to answer `release`, `rotate_ip`, `update_port`, seconds.
pub const DEFAULT_COMMAND_TIMEOUT_S: u64 = 90;
/// Default WebSocket frame limit, bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = farmhand_protocol::DEFAULT_MAX_FRAME_BYTES;
/// Default number of live allocations per modem.
pub const DEFAULT_MODEM_CAPACITY: u32 = 1;
/// Default REST request body limit, bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default budget of failed REST authentications per client address.
pub const DEFAULT_REST_AUTH_FAILURE_LIMIT: RateLimit = RateLimit {
    max: 10,
    window_s: 60,
};
/// Default budget of failed agent handshakes per client address.
pub const DEFAULT_AGENT_AUTH_FAILURE_LIMIT: RateLimit = RateLimit {
    max: 10,
    window_s: 60,
};
/// Default budget of enrollment attempts per token.
pub const DEFAULT_ENROLL_ATTEMPT_LIMIT: RateLimit = RateLimit {
    max: 5,
    window_s: 3600,
};
/// Default bound on agent connections that have not finished their handshake.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1024;
/// Default number of handshakes whose storage work (agent lookup, reconcile set) runs at
/// once; more queue (within the handshake timeout) rather than being refused.
pub const DEFAULT_HANDSHAKE_CONCURRENCY: usize = 32;
/// Default time in-flight REST requests get to finish after a shutdown signal, seconds.
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 10;
/// Default time a modem must stay offline before its allocations move elsewhere, seconds.
pub const DEFAULT_REPLACEMENT_GRACE_S: u64 = 300;
/// Default time an agent must stay disconnected before its allocations move elsewhere,
/// seconds (15 min: a disconnected agent is not a dead box).
pub const DEFAULT_AGENT_LOST_WINDOW_S: u64 = 900;

/// Default time after a rotation of a modem during which `POST /v1/modems/{imei}/rotate`
/// answers 409 `rotation_cooldown`, seconds.
pub const DEFAULT_ROTATION_COOLDOWN_S: u64 = 60;
/// Default shortest `rotate_every_s` an allocation may ask for, seconds (the contract's
/// minimum; tests lower it).
pub const DEFAULT_MIN_ROTATE_EVERY_S: u64 = 60;

/// An event budget: at most `max` events per `window_s` seconds, refilled continuously
/// (see `ratelimit`). Written inline in TOML: `{ max = 10, window_s = 60 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Events allowed in one window (the burst).
    pub max: u32,
    /// The window, seconds.
    pub window_s: u64,
}

/// Default time a client has to complete the TLS handshake, seconds.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_S: u64 = 10;

/// The `[tls]` section: the certificate the plane serves HTTPS and WSS with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Time a client has to complete the TLS handshake before the connection is dropped.
    #[serde(default = "default_tls_handshake_timeout_s")]
    pub handshake_timeout_s: u64,
}

fn default_tls_handshake_timeout_s() -> u64 {
    DEFAULT_TLS_HANDSHAKE_TIMEOUT_S
}

impl TlsConfig {
    /// The two files with the default handshake timeout.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        TlsConfig {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            handshake_timeout_s: DEFAULT_TLS_HANDSHAKE_TIMEOUT_S,
        }
    }

    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_s)
    }
}

/// Everything the control plane can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (used by the binary; libraries take a bound listener).
    pub listen: SocketAddr,
    /// Directory holding the database (`db/`) and the credential key file.
    pub data_dir: PathBuf,
    /// Heartbeat interval announced to agents; a peer silent for 3 intervals is gone.
    pub heartbeat_interval_s: u64,
    /// Time allowed for `hello` + `auth` after the WebSocket opens.
    pub handshake_timeout_s: u64,
    /// Time the agent has to confirm a `provision` before the allocation fails (504).
    pub provisioning_timeout_s: u64,
    /// Time the agent has to answer `release`, `rotate_ip` and `update_port`.
    pub command_timeout_s: u64,
    /// Largest WebSocket frame/message accepted from an agent.
    pub max_frame_bytes: usize,
    /// Live allocations (pending, active, releasing) allowed per modem.
    pub modem_capacity: u32,
    /// Which available modem a new allocation takes: the least loaded (`load`, default),
    /// or the one whose agent scores best over the last day (`quality`, from probes:
    /// `quality`), then the least loaded.
    pub prefer: Prefer,
    /// Largest REST request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// HTTPS/WSS settings (`[tls]`); absent = plain HTTP (loopback and tests only).
    pub tls: Option<TlsConfig>,
    /// Failed REST authentications per client address before 429 `rate_limited`.
    pub rest_auth_failure_limit: RateLimit,
    /// Failed agent handshakes per client address before `retry_later`.
    pub agent_auth_failure_limit: RateLimit,
    /// Enrollment attempts per token before 429 `rate_limited`.
    pub enroll_attempt_limit: RateLimit,
    /// Agent connections allowed mid-handshake at once (503 `retry_later` above it).
    pub max_pending_handshakes: usize,
    /// Handshakes doing their storage work at once; the rest queue (reconnect storms).
    pub handshake_concurrency: usize,
    /// Seconds in-flight REST requests may take to finish once shutdown starts.
    pub shutdown_grace_s: u64,
    /// Seconds a modem must be offline without interruption before its allocations are
    /// moved to another modem; 0 disables automatic replacement.
    pub replacement_grace_s: u64,
    /// Seconds an agent must be disconnected without interruption before its allocations
    /// are moved; 0 never moves them for that reason alone.
    pub agent_lost_window_s: u64,
    /// Seconds after a rotation of a modem (manual or automatic) before the REST API
    /// rotates it again (409 `rotation_cooldown` meanwhile); 0 = no cooldown.
    pub rotation_cooldown_s: u64,
    /// Shortest `rotate_every_s` accepted in `POST /v1/allocations`, seconds.
    pub min_rotate_every_s: u64,
    /// Log level and format (`[log]`).
    pub log: farmhand_ops::logging::LogConfig,
    /// Who may read `GET /metrics` (`[metrics]`).
    pub metrics: MetricsConfig,
    /// Webhook delivery (`[webhooks]`).
    pub webhooks: WebhooksConfig,
    /// How long each kind of record is kept (`[retention]`).
    pub retention: RetentionConfig,
    /// Which storage backend (`[store]`).
    pub store: StoreConfig,
    /// What a box must have left to get new orders (`[health]`).
    pub health: HealthConfig,
    /// Connection caps and deadlines of the HTTP listener (`[http]`).
    pub http: HttpConfig,
    /// How new agents join (`[enroll]`).
    pub enroll: EnrollConfig,
    /// Probing sold ports from outside (`[probe]`).
    pub probe: ProbeConfig,
}

/// How a new allocation picks among available modems (`prefer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prefer {
    /// The least loaded modem (then the lowest IMEI).
    #[default]
    Load,
    /// The modem whose agent has the best quality score over the last 24 h; agents without
    /// a score after those with one; ties by load.
    Quality,
}

/// The `[enroll]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollConfig {
    /// Newly enrolled agents get no orders until an admin approves them
    /// (`POST /v1/agents/{id}/approve`, audited): a stolen admin key alone cannot then
    /// draw orders to a box it enrolled without a visible step. Default off.
    pub require_approval: bool,
}

/// The `[http]` section: what any client, authenticated or not, can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Seconds for a request's head, and for the next one on an idle keep-alive connection.
    pub header_timeout_s: u64,
    /// Seconds for a request's body once its head arrived.
    pub body_timeout_s: u64,
    /// Open connections in all (agent WebSocket sessions are not counted once upgraded).
    pub max_connections: usize,
    /// Open connections from one client address (behind a load balancer: raise it, or set it
    /// to `max_connections`).
    pub max_connections_per_address: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout_s: 10,
            body_timeout_s: 30,
            max_connections: 1024,
            max_connections_per_address: 128,
        }
    }
}

impl HttpConfig {
    /// How long a client may take to send its request headers.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_s)
    }

    /// The body deadline.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let ok = (1..=3600).contains(&self.header_timeout_s)
            && (1..=3600).contains(&self.body_timeout_s)
            && self.max_connections >= 1
            && (1..=self.max_connections).contains(&self.max_connections_per_address);
        if ok {
            return Ok(());
        }
        Err(ConfigError::Invalid(
            "[http]: header_timeout_s and body_timeout_s must be 1..=3600, max_connections at \
             least 1, max_connections_per_address 1..=max_connections"
                .into(),
        ))
    }
}

/// The `[health]` section: below either limit a box keeps its allocations but gets no new
/// one until it recovers (0 = no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Least free space on each of a box's watched volumes, MB.
    pub min_disk_free_mb: u64,
    /// Least available memory, MB.
    pub min_memory_available_mb: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let d = farmhand_protocol::HealthLimits::DEFAULT;
        HealthConfig {
            min_disk_free_mb: d.min_disk_free_mb,
            min_memory_available_mb: d.min_memory_available_mb,
        }
    }
}

impl HealthConfig {
    /// As the protocol carries them.
    pub fn limits(&self) -> farmhand_protocol::HealthLimits {
        farmhand_protocol::HealthLimits {
            min_disk_free_mb: self.min_disk_free_mb,
            min_memory_available_mb: self.min_memory_available_mb,
        }
    }
}

/// The `[metrics]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` to admin keys only (default: unauthenticated).
    pub require_admin: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            heartbeat_interval_s: DEFAULT_HEARTBEAT_INTERVAL_S,
            handshake_timeout_s: DEFAULT_HANDSHAKE_TIMEOUT_S,
            provisioning_timeout_s: DEFAULT_PROVISIONING_TIMEOUT_S,
            command_timeout_s: DEFAULT_COMMAND_TIMEOUT_S,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            modem_capacity: DEFAULT_MODEM_CAPACITY,
            prefer: Prefer::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: None,
            rest_auth_failure_limit: DEFAULT_REST_AUTH_FAILURE_LIMIT,
            agent_auth_failure_limit: DEFAULT_AGENT_AUTH_FAILURE_LIMIT,
            enroll_attempt_limit: DEFAULT_ENROLL_ATTEMPT_LIMIT,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            handshake_concurrency: DEFAULT_HANDSHAKE_CONCURRENCY,
            shutdown_grace_s: DEFAULT_SHUTDOWN_GRACE_S,
            replacement_grace_s: DEFAULT_REPLACEMENT_GRACE_S,
            agent_lost_window_s: DEFAULT_AGENT_LOST_WINDOW_S,
            rotation_cooldown_s: DEFAULT_ROTATION_COOLDOWN_S,
            min_rotate_every_s: DEFAULT_MIN_ROTATE_EVERY_S,
            log: farmhand_ops::logging::LogConfig::default(),
            metrics: MetricsConfig::default(),
            webhooks: WebhooksConfig::default(),
            retention: RetentionConfig::default(),
            store: StoreConfig::default(),
            health: HealthConfig::default(),
            http: HttpConfig::default(),
            enroll: EnrollConfig::default(),
            probe: ProbeConfig::default(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid, has unknown keys, or a `FARMHAND_…` variable is unusable.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// A parse error; one naming a key that moved says where it went.
    pub fn parse(message: String) -> Self {
        let moved = MOVED_KEYS
            .iter()
            .find(|(old, _)| message.contains(&format!("unknown field `{old}`")));
        match moved {
            Some((old, new)) => ConfigError::Parse(format!("`{old}` moved to {new}: {message}")),
            None => ConfigError::Parse(message),
        }
    }
}

impl ServerConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: ServerConfig =
            toml::from_str(text).map_err(|e| ConfigError::parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file, with the process's `FARMHAND_…`
    /// environment variables applied over it (`env`).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        env::load(Some(path), std::env::vars_os())
    }

    /// Checks that every value is usable (zero timeouts or limits would break the plane).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("heartbeat_interval_s", self.heartbeat_interval_s),
            ("handshake_timeout_s", self.handshake_timeout_s),
            ("provisioning_timeout_s", self.provisioning_timeout_s),
            ("command_timeout_s", self.command_timeout_s),
            ("modem_capacity", u64::from(self.modem_capacity)),
            ("max_pending_handshakes", self.max_pending_handshakes as u64),
            ("handshake_concurrency", self.handshake_concurrency as u64),
            ("shutdown_grace_s", self.shutdown_grace_s),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if self.max_frame_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_frame_bytes must be at least 1024".into(),
            ));
        }
        self.validate_rotation()?;
        for (name, limit) in [
            ("rest_auth_failure_limit", self.rest_auth_failure_limit),
            ("agent_auth_failure_limit", self.agent_auth_failure_limit),
            ("enroll_attempt_limit", self.enroll_attempt_limit),
        ] {
            if limit.max == 0 || limit.window_s == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name}: max and window_s must be greater than 0"
                )));
            }
        }
        if self
            .tls
            .as_ref()
            .is_some_and(|t| t.handshake_timeout_s == 0)
        {
            return Err(ConfigError::Invalid(
                "tls.handshake_timeout_s must be greater than 0".into(),
            ));
        }
        self.log
            .check()
            .map_err(|e| ConfigError::Invalid(format!("log.level: {e}")))?;
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        self.webhooks.validate()?;
        self.retention.validate()?;
        self.store.validate()?;
        self.http.validate()?;
        self.probe.validate()?;
        Ok(())
    }

    /// The heartbeat interval as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_s)
    }

    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_s)
    }

    /// The provisioning timeout as a duration.
    pub fn provisioning_timeout(&self) -> Duration {
        Duration::from_secs(self.provisioning_timeout_s)
    }

    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }

    /// The timeout of other commands as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.command_timeout_s)
    }

    /// `min_rotate_every_s` is 1 … one day; the cooldown at most one day.
    fn validate_rotation(&self) -> Result<(), ConfigError> {
        let max = MAX_ROTATE_EVERY_S;
        if !(1..=max).contains(&self.min_rotate_every_s) {
            return Err(ConfigError::Invalid(format!(
                "min_rotate_every_s must be between 1 and {max}"
            )));
        }
        if self.rotation_cooldown_s > max {
            return Err(ConfigError::Invalid(format!(
                "rotation_cooldown_s must be at most {max}"
            )));
        }
        Ok(())
    }

    /// How long a modem may be offline before its allocations move; `None` = never.
    pub fn replacement_grace(&self) -> Option<Duration> {
        (self.replacement_grace_s > 0).then(|| Duration::from_secs(self.replacement_grace_s))
    }

    /// How long an agent may be away before its allocations move; `None` = never (also
    /// when automatic replacement is off).
    pub fn agent_lost_window(&self) -> Option<Duration> {
        self.replacement_grace()?;
        (self.agent_lost_window_s > 0).then(|| Duration::from_secs(self.agent_lost_window_s))
    }
}

#[cfg(test)]
mod tests;
