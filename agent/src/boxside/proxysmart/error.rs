//! What can go wrong when talking to ProxySmart, and the command error code each maps to.
//!
//! Messages never include response bodies verbatim (a port listing holds passwords); they
//! describe the shape instead, or quote ProxySmart's own short `message` field.

use farmhand_protocol::{CommandError, CommandErrorCode};

/// A failed ProxySmart call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxysmartError {
    /// HTTP 401/403: the configured admin credentials are wrong.
    #[error("ProxySmart rejected the configured credentials (HTTP {status})")]
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
    /// Connection refused/reset, or a 5xx answer.
    #[error("ProxySmart is unavailable: {detail}")]
    Unavailable {
        /// What happened.
        detail: String,
    },
    /// No answer within the configured timeout.
    #[error("ProxySmart did not answer in time")]
    Timeout,
    /// ProxySmart answered but refused the action.
    #[error("ProxySmart refused: {message}")]
    Refused {
        /// ProxySmart's message.
        message: String,
    },
    /// HTTP 404, e.g. applying an unknown port id.
    #[error("ProxySmart: not found: {what}")]
    NotFound {
        /// What was asked for.
        what: String,
    },
    /// An answer that is not what the API returns (HTML page, garbage, wrong shape).
    #[error("ProxySmart answered something unexpected: {detail}")]
    Malformed {
        /// A description of the answer (never the body itself).
        detail: String,
    },
}

impl ProxysmartError {
    /// Every [`ProxysmartError::kind`], so the metrics can show each series from the start.
    pub const KINDS: [&'static str; 6] = [
        "unauthorized",
        "unavailable",
        "timeout",
        "refused",
        "not_found",
        "malformed",
    ];

    /// The kind, as the metrics label it (`farmhand_agent_proxysmart_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            ProxysmartError::Unauthorized { .. } => "unauthorized",
            ProxysmartError::Unavailable { .. } => "unavailable",
            ProxysmartError::Timeout => "timeout",
            ProxysmartError::Refused { .. } => "refused",
            ProxysmartError::NotFound { .. } => "not_found",
            ProxysmartError::Malformed { .. } => "malformed",
        }
    }

    /// Builds a `Malformed` error.
    pub fn malformed(detail: impl Into<String>) -> Self {
        ProxysmartError::Malformed {
            detail: detail.into(),
        }
    }

    /// The command error code this maps to.
    pub fn code(&self) -> CommandErrorCode {
        match self {
            ProxysmartError::Unauthorized { .. } => CommandErrorCode::ProxysmartUnauthorized,
            ProxysmartError::Unavailable { .. } => CommandErrorCode::ProxysmartUnavailable,
            ProxysmartError::Timeout => CommandErrorCode::ProxysmartTimeout,
            ProxysmartError::Refused { .. } | ProxysmartError::NotFound { .. } => {
                CommandErrorCode::ProxysmartRefused
            }
            ProxysmartError::Malformed { .. } => CommandErrorCode::ProxysmartMalformed,
        }
    }
}

impl From<ProxysmartError> for CommandError {
    fn from(e: ProxysmartError) -> Self {
        CommandError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed() {
        let all = [
            ProxysmartError::Unauthorized { status: 401 },
            ProxysmartError::Unavailable { detail: "x".into() },
            ProxysmartError::Timeout,
            ProxysmartError::Refused {
                message: "x".into(),
            },
            ProxysmartError::NotFound { what: "x".into() },
            ProxysmartError::malformed("x"),
        ];
        let kinds: Vec<&str> = all.iter().map(ProxysmartError::kind).collect();
        assert_eq!(kinds, ProxysmartError::KINDS);
    }

    #[test]
    fn every_error_maps_to_its_code() {
        let cases = [
            (
                ProxysmartError::Unauthorized { status: 401 },
                "proxysmart_unauthorized",
            ),
            (
                ProxysmartError::Unavailable { detail: "x".into() },
                "proxysmart_unavailable",
            ),
            (ProxysmartError::Timeout, "proxysmart_timeout"),
            (
                ProxysmartError::Refused {
                    message: "is busy".into(),
                },
                "proxysmart_refused",
            ),
            (
                ProxysmartError::NotFound {
                    what: "port".into(),
                },
                "proxysmart_refused",
            ),
            (ProxysmartError::malformed("html"), "proxysmart_malformed"),
        ];
        for (err, code) in cases {
            let ce: CommandError = err.clone().into();
            assert_eq!(ce.code.as_str(), code, "{err}");
            assert_eq!(ce.message, err.to_string());
        }
    }
}
