//! The one error shape of every HTTP answer the plane gives (`{"error":{"code","message"}}`
//! with the status the contract names, and `Retry-After` where it helps). It sits below
//! the layers that answer HTTP (`api`, and `gateway` for a refused upgrade); the mapping
//! from each layer's own errors lives in `api::error`. Internal details are logged, never
//! sent.

use crate::ratelimit::Limited;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The body of every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// snake_case, for programs: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid_request`, `payload_too_large`, `rate_limited`, `order_conflict`,
    /// `no_capacity`, `invalid_state`, `rotation_cooldown`, `duplicate_identity`,
    /// `agent_offline`, `agent_timeout`, `provision_failed`, `not_ready`, `internal`, …
    #[schema(example = "not_found")]
    pub code: String,
    /// A sentence for people; never a secret or an internal detail.
    #[schema(example = "no allocation \"al_…\"")]
    pub message: String,
}

/// An API error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code for programs.
    pub code: &'static str,
    /// Sentence for people.
    pub message: String,
    /// Sent as `Retry-After` (seconds) when set.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// The same error with a `Retry-After` header.
    pub fn with_retry_after(self, seconds: u64) -> Self {
        ApiError {
            retry_after_s: Some(seconds),
            ..self
        }
    }

    /// 429: this client (or token) used up its budget (see `ratelimit`).
    pub fn rate_limited(what: &str, limited: Limited) -> Self {
        let seconds = limited.retry_after_s();
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many {what}; retry after {seconds} s"),
        )
        .with_retry_after(seconds)
    }

    /// 401: missing or unknown key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    /// 403: the key's role may not do this.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this API key's role may not use this endpoint",
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422: the request is not acceptable as sent.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    }

    /// 500; `detail` is logged, not sent.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the control plane's logs",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        });
        let mut response = (self.status, body).into_response();
        let retry_after = match self.retry_after_s {
            Some(seconds) => Some(HeaderValue::from(seconds)),
            None if self.status == StatusCode::SERVICE_UNAVAILABLE => {
                Some(HeaderValue::from_static("5"))
            }
            None => None,
        };
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
