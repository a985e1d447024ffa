//! `[webhooks]`: delivery retries, deadlines, concurrency, the delivery log kept per
//! endpoint, and which private address blocks endpoints may target — with the defaults
//! `config/control.example.toml` documents.

use super::ConfigError;
use crate::cidr::{Cidr, CidrError};
use serde::Deserialize;
use std::path::PathBuf;

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
