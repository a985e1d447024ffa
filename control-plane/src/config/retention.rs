//! The `[retention]` section: how long each kind of record is kept after its window
//! starts (docs/privacy.md names every kind). Defaults follow what marketplaces' privacy
//! policies promise: credentials 30 days after the end, operational detail and logs 90
//! days, the audit log 5 years, the financial core 7 years.

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// Longest window accepted, days (100 years; also keeps the arithmetic in range).
pub const MAX_RETENTION_DAYS: u64 = 36_500;
const DAY_S: u64 = 86_400;

/// The `[retention]` section (see the module docs). A `…_days` value of 0 keeps that kind
/// forever.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Seconds a buyer's sealed password is kept after its allocation ended (released or
    /// failed); must be greater than 0.
    pub credentials_s: u64,
    /// Days an ended allocation keeps its operational detail (modem, host, ports, login,
    /// failure text).
    pub allocation_detail_days: u64,
    /// Days an ended allocation's financial core (ids, tenant, agent, times, terms, usage
    /// totals) is kept; then the record is deleted.
    pub financial_days: u64,
    /// Days a modem's last rotation (old and new IP) is kept.
    pub rotation_days: u64,
    /// Days a webhook delivery (payload and log line) is kept after the event.
    pub webhook_delivery_days: u64,
    /// Days an enrollment token's record is kept after it expired.
    pub enrollment_token_days: u64,
    /// Days an audit entry is kept.
    pub audit_days: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            credentials_s: 30 * DAY_S,
            allocation_detail_days: 90,
            financial_days: 7 * 365,
            rotation_days: 90,
            webhook_delivery_days: 90,
            enrollment_token_days: 90,
            audit_days: 5 * 365,
        }
    }
}

/// Keys that moved into `[retention]`, with where they went: an old config gets told.
pub const MOVED_KEYS: [(&str, &str); 2] = [
    ("credential_retention_s", "[retention] credentials_s"),
    (
        "audit",
        "[retention] audit_days (was [audit] retention_days)",
    ),
];

impl RetentionConfig {
    /// A `…_days` window as a duration; `None` keeps forever.
    pub fn days(days: u64) -> Option<Duration> {
        (days > 0).then(|| Duration::from_secs(days.min(MAX_RETENTION_DAYS) * DAY_S))
    }

    /// How long credentials are kept.
    pub fn credentials(&self) -> Duration {
        Duration::from_secs(self.credentials_s)
    }

    /// Every window in range; operational detail never outlives the financial core, and
    /// credentials never outlive the detail they belong to.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let days = [
            ("allocation_detail_days", self.allocation_detail_days),
            ("financial_days", self.financial_days),
            ("rotation_days", self.rotation_days),
            ("webhook_delivery_days", self.webhook_delivery_days),
            ("enrollment_token_days", self.enrollment_token_days),
            ("audit_days", self.audit_days),
        ];
        for (name, value) in days {
            if value > MAX_RETENTION_DAYS {
                return Err(invalid(format!(
                    "retention.{name} must be at most {MAX_RETENTION_DAYS} (0 keeps forever)"
                )));
            }
        }
        if self.credentials_s == 0 {
            return Err(invalid(
                "retention.credentials_s must be greater than 0".into(),
            ));
        }
        let forever = |d: u64| if d == 0 { u64::MAX } else { d };
        if forever(self.allocation_detail_days) > forever(self.financial_days) {
            return Err(invalid(
                "retention.allocation_detail_days must not exceed retention.financial_days".into(),
            ));
        }
        if self.credentials_s / DAY_S >= forever(self.allocation_detail_days) {
            return Err(invalid(
                "retention.credentials_s must be shorter than retention.allocation_detail_days (clearing the detail deletes the password)".into(),
            ));
        }
        Ok(())
    }
}

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_policies() {
        let r = RetentionConfig::default();
        r.validate().unwrap();
        assert_eq!(r.credentials(), Duration::from_secs(30 * DAY_S));
        assert_eq!(
            RetentionConfig::days(r.audit_days),
            Some(Duration::from_secs(1825 * DAY_S))
        );
        assert_eq!(RetentionConfig::days(0), None);
    }

    #[test]
    fn out_of_order_windows_are_refused_with_the_key_named() {
        let mut r = RetentionConfig {
            allocation_detail_days: 400,
            financial_days: 300,
            ..RetentionConfig::default()
        };
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("allocation_detail_days"), "{e}");
        r.financial_days = 0;
        r.validate().unwrap();
        r.audit_days = MAX_RETENTION_DAYS + 1;
        assert!(r.validate().unwrap_err().to_string().contains("audit_days"));
        let r = RetentionConfig {
            credentials_s: 0,
            ..RetentionConfig::default()
        };
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("credentials_s"));
        let r = RetentionConfig {
            credentials_s: 90 * DAY_S,
            ..RetentionConfig::default()
        };
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("credentials_s"));
    }
}
