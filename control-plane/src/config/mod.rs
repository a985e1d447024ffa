//! The control plane's configuration: one strict TOML file (`config/control.example.toml`
//! documents every option), named defaults, validated once at load.

pub mod env;

use crate::cidr::{Cidr, CidrError};
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
/// Default time buyer credentials are kept after an allocation ends, seconds (30 days).
pub const DEFAULT_CREDENTIAL_RETENTION_S: u64 = 30 * 24 * 3600;
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
    /// Seconds buyer credentials are kept after an allocation is released or failed.
    pub credential_retention_s: u64,
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
    /// The audit log's retention (`[audit]`).
    pub audit: AuditConfig,
    /// What a box must have left to get new orders (`[health]`).
    pub health: HealthConfig,
    /// Connection caps and deadlines of the HTTP listener (`[http]`).
    pub http: HttpConfig,
    /// How new agents join (`[enroll]`).
    pub enroll: EnrollConfig,
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
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: None,
            rest_auth_failure_limit: DEFAULT_REST_AUTH_FAILURE_LIMIT,
            agent_auth_failure_limit: DEFAULT_AGENT_AUTH_FAILURE_LIMIT,
            enroll_attempt_limit: DEFAULT_ENROLL_ATTEMPT_LIMIT,
            max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
            credential_retention_s: DEFAULT_CREDENTIAL_RETENTION_S,
            handshake_concurrency: DEFAULT_HANDSHAKE_CONCURRENCY,
            shutdown_grace_s: DEFAULT_SHUTDOWN_GRACE_S,
            replacement_grace_s: DEFAULT_REPLACEMENT_GRACE_S,
            agent_lost_window_s: DEFAULT_AGENT_LOST_WINDOW_S,
            rotation_cooldown_s: DEFAULT_ROTATION_COOLDOWN_S,
            min_rotate_every_s: DEFAULT_MIN_ROTATE_EVERY_S,
            log: farmhand_ops::logging::LogConfig::default(),
            metrics: MetricsConfig::default(),
            webhooks: WebhooksConfig::default(),
            audit: AuditConfig::default(),
            health: HealthConfig::default(),
            http: HttpConfig::default(),
            enroll: EnrollConfig::default(),
        }
    }
}

/// Default number of days audit entries are kept (`[audit] retention_days`).
pub const DEFAULT_AUDIT_RETENTION_DAYS: u64 = 365;
/// Longest audit retention accepted, days (100 years; 0 keeps entries forever).
pub const MAX_AUDIT_RETENTION_DAYS: u64 = 36_500;

/// The `[audit]` section: how long the audit log keeps its entries (see
/// `audit_retention`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days an entry is kept before the sweeper deletes it; 0 = forever.
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: DEFAULT_AUDIT_RETENTION_DAYS,
        }
    }
}

impl AuditConfig {
    /// How long entries are kept; `None` = forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400))
    }

    /// At most [`MAX_AUDIT_RETENTION_DAYS`], which also keeps the arithmetic in range.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.retention_days > MAX_AUDIT_RETENTION_DAYS {
            return Err(ConfigError::Invalid(format!(
                "audit.retention_days must be at most {MAX_AUDIT_RETENTION_DAYS} (0 keeps entries forever)"
            )));
        }
        Ok(())
    }
}

/// Default time before `expires_at` that `allocation.expiring` is emitted, seconds (1 day).
pub const DEFAULT_WEBHOOK_EXPIRING_LEAD_S: u64 = 24 * 3600;
/// Default delay before the first retry of a failed webhook delivery, seconds.
pub const DEFAULT_WEBHOOK_RETRY_INITIAL_S: u64 = 5;
/// Default longest delay between two attempts of one delivery, seconds (1 hour).
pub const DEFAULT_WEBHOOK_RETRY_MAX_S: u64 = 3600;
/// Default time a delivery is retried before it is marked failed, seconds (24 hours).
pub const DEFAULT_WEBHOOK_MAX_AGE_S: u64 = 24 * 3600;
/// Default time one delivery attempt may take (connect, send, response headers), seconds.
pub const DEFAULT_WEBHOOK_ATTEMPT_TIMEOUT_S: u64 = 10;
/// Default number of deliveries in flight at once, all endpoints together.
pub const DEFAULT_WEBHOOK_CONCURRENCY: usize = 16;
/// Default number of deliveries in flight at once to one endpoint (a slow or unreachable
/// endpoint cannot take every slot).
pub const DEFAULT_WEBHOOK_ENDPOINT_CONCURRENCY: usize = 4;
/// Default number of finished deliveries kept in each endpoint's delivery log.
pub const DEFAULT_WEBHOOK_DELIVERIES_KEPT: usize = 1000;

/// The `[webhooks]` section: when `allocation.expiring` fires and how deliveries are
/// retried (see `webhooks`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Seconds before `expires_at` when `allocation.expiring` is emitted; 0 = never.
    pub expiring_lead_s: u64,
    /// Delay before the first retry; doubles per failed attempt (with jitter).
    pub retry_initial_s: u64,
    /// Longest delay between two attempts.
    pub retry_max_s: u64,
    /// Seconds after the event when a delivery that never succeeded is marked failed.
    pub max_age_s: u64,
    /// Time one attempt may take before it counts as failed.
    pub attempt_timeout_s: u64,
    /// Deliveries in flight at once, all endpoints together.
    pub concurrency: usize,
    /// Deliveries in flight at once to one endpoint.
    pub endpoint_concurrency: usize,
    /// Finished deliveries kept per endpoint in `GET /v1/webhooks/{id}/deliveries`.
    pub deliveries_kept: usize,
    /// PEM CA certificates trusted for `https://` endpoints in addition to the system roots
    /// (private endpoints, tests).
    pub ca_file: Option<PathBuf>,
    /// CIDR blocks webhooks may target although they are not global (loopback, private,
    /// link-local, …), e.g. `["10.0.0.0/8", "::1/128"]`. Empty: only global addresses.
    pub allow_private_targets: Vec<String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            expiring_lead_s: DEFAULT_WEBHOOK_EXPIRING_LEAD_S,
            retry_initial_s: DEFAULT_WEBHOOK_RETRY_INITIAL_S,
            retry_max_s: DEFAULT_WEBHOOK_RETRY_MAX_S,
            max_age_s: DEFAULT_WEBHOOK_MAX_AGE_S,
            attempt_timeout_s: DEFAULT_WEBHOOK_ATTEMPT_TIMEOUT_S,
            concurrency: DEFAULT_WEBHOOK_CONCURRENCY,
            endpoint_concurrency: DEFAULT_WEBHOOK_ENDPOINT_CONCURRENCY,
            deliveries_kept: DEFAULT_WEBHOOK_DELIVERIES_KEPT,
            ca_file: None,
            allow_private_targets: Vec::new(),
        }
    }
}

impl WebhooksConfig {
    /// Zero delays, limits or timeouts would break delivery; the cap must not undercut
    /// the first delay.
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("webhooks.retry_initial_s", self.retry_initial_s),
            ("webhooks.retry_max_s", self.retry_max_s),
            ("webhooks.max_age_s", self.max_age_s),
            ("webhooks.attempt_timeout_s", self.attempt_timeout_s),
            ("webhooks.concurrency", self.concurrency as u64),
            (
                "webhooks.endpoint_concurrency",
                self.endpoint_concurrency as u64,
            ),
            ("webhooks.deliveries_kept", self.deliveries_kept as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if self.retry_max_s < self.retry_initial_s {
            return Err(ConfigError::Invalid(
                "webhooks.retry_max_s must be at least webhooks.retry_initial_s".into(),
            ));
        }
        self.allowed_targets()?;
        Ok(())
    }

    /// `allow_private_targets` parsed; an error names the key and the bad block.
    pub fn allowed_targets(&self) -> Result<Vec<Cidr>, ConfigError> {
        self.allow_private_targets
            .iter()
            .map(|text| {
                text.parse().map_err(|e: CidrError| {
                    ConfigError::Invalid(format!("webhooks.allow_private_targets: {e}"))
                })
            })
            .collect()
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

impl ServerConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: ServerConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
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
            ("credential_retention_s", self.credential_retention_s),
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
        self.audit.validate()?;
        self.http.validate()?;
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

    /// The credential retention period as a duration.
    pub fn credential_retention(&self) -> Duration {
        Duration::from_secs(self.credential_retention_s)
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
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut found = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("control") && name.ends_with(".toml") {
                ServerConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                found += 1;
            }
        }
        assert!(
            found > 0,
            "no config/control*.toml found in {}",
            dir.display()
        );
    }

    #[test]
    fn example_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/control.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        // Every option appears (commented) with its default, so the file and code agree.
        let uncommented: String = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| l.contains(" = ") || l.starts_with('['))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut parsed = ServerConfig::from_toml_str(&uncommented).unwrap();
        // `[tls]` has no default (absent = plain HTTP); its optional key shows its default.
        let tls = parsed.tls.take().expect("the example documents [tls]");
        // `[webhooks] ca_file` has no default either (absent = system roots only).
        assert!(parsed.webhooks.ca_file.take().is_some());
        assert_eq!(tls.handshake_timeout_s, DEFAULT_TLS_HANDSHAKE_TIMEOUT_S);
        assert_eq!(parsed.heartbeat_interval_s, DEFAULT_HEARTBEAT_INTERVAL_S);
        assert_eq!(parsed.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(parsed.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(parsed, ServerConfig::default());
    }

    #[test]
    fn audit_retention_is_validated() {
        let c = ServerConfig::from_toml_str("[audit]\nretention_days = 30").unwrap();
        assert_eq!(c.audit.retention(), Some(Duration::from_secs(30 * 86_400)));
        let forever = ServerConfig::from_toml_str("[audit]\nretention_days = 0").unwrap();
        assert_eq!(forever.audit.retention(), None, "0 keeps entries forever");
        assert_eq!(
            ServerConfig::default().audit.retention_days,
            DEFAULT_AUDIT_RETENTION_DAYS
        );
        for bad in [
            "retention_days = 36501",
            "retention_days = 9223372036854775807",
        ] {
            let err = ServerConfig::from_toml_str(&format!("[audit]\n{bad}")).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
            assert!(err.to_string().contains("audit.retention_days"), "{err}");
        }
        for bad in [
            "retention_days = -1",
            "retention_days = \"1y\"",
            "retention_days = 1.5",
            "retention_dayz = 7",
        ] {
            let err = ServerConfig::from_toml_str(&format!("[audit]\n{bad}")).unwrap_err();
            assert!(matches!(err, ConfigError::Parse(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn private_webhook_targets_are_cidr_blocks() {
        let c = ServerConfig::from_toml_str(
            "[webhooks]\nallow_private_targets = [\"127.0.0.1/32\", \"10.0.0.0/8\", \"::1/128\"]",
        )
        .unwrap();
        let blocks: Vec<String> = c
            .webhooks
            .allowed_targets()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(blocks, ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        assert!(ServerConfig::default()
            .webhooks
            .allow_private_targets
            .is_empty());
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1",
            "localhost/8",
            "10.1.0.0/8",
            "::1/200",
        ] {
            let text = format!("[webhooks]\nallow_private_targets = [\"127.0.0.0/8\", \"{bad}\"]");
            let err = ServerConfig::from_toml_str(&text).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{bad}: {err}");
            let message = err.to_string();
            assert!(
                message.contains("webhooks.allow_private_targets") && message.contains(bad),
                "{message}"
            );
        }
        assert!(matches!(
            ServerConfig::from_toml_str("[webhooks]\nallow_private_targets = \"10.0.0.0/8\""),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn unknown_keys_and_zero_values_are_rejected() {
        assert!(matches!(
            ServerConfig::from_toml_str("heartbeat_intervl_s = 3"),
            Err(ConfigError::Parse(_))
        ));
        for bad in [
            "[webhooks]\nconcurrency = 0",
            "[webhooks]\nretry_initial_s = 10\nretry_max_s = 5",
        ] {
            assert!(
                matches!(
                    ServerConfig::from_toml_str(bad),
                    Err(ConfigError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            ServerConfig::from_toml_str("[webhooks]\nretry_intial_s = 1"),
            Err(ConfigError::Parse(_))
        ));
        let off = ServerConfig::from_toml_str("[webhooks]\nexpiring_lead_s = 0").unwrap();
        assert_eq!(
            off.webhooks.expiring_lead_s, 0,
            "0 switches expiry warnings off"
        );
        assert!(matches!(
            ServerConfig::from_toml_str("provisioning_timeout_s = 0"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            ServerConfig::from_toml_str("modem_capacity = \"2\""),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            ServerConfig::from_toml_str("rest_auth_failure_limit = { max = 0, window_s = 60 }"),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            ServerConfig::from_toml_str("enroll_attempt_limit = { max = 3, windw_s = 60 }"),
            Err(ConfigError::Parse(_))
        ));
        let tuned = ServerConfig::from_toml_str(
            "agent_auth_failure_limit = { max = 3, window_s = 5 }\ncredential_retention_s = 60",
        )
        .unwrap();
        assert_eq!(
            tuned.agent_auth_failure_limit,
            RateLimit {
                max: 3,
                window_s: 5
            }
        );
        assert_eq!(
            ServerConfig::from_toml_str("").unwrap(),
            ServerConfig::default()
        );
    }
}
