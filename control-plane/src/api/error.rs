//! The one error shape of the REST API: `{"error":{"code","message"}}` with the status the
//! contract names, built from every error the handlers can meet. Internal details are
//! logged, never sent.

use crate::allocator::AllocError;
use crate::ratelimit::Limited;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

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
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(&e)
    }
}

impl From<AllocError> for ApiError {
    fn from(e: AllocError) -> Self {
        let message = e.to_string();
        match e {
            AllocError::Invalid(_) => Self::invalid(message),
            AllocError::NotFound(_) => Self::not_found(message),
            AllocError::OrderConflict => Self::new(StatusCode::CONFLICT, "order_conflict", message),
            AllocError::NoCapacity => Self::new(StatusCode::CONFLICT, "no_capacity", message),
            AllocError::InvalidState(_) => {
                Self::new(StatusCode::CONFLICT, "invalid_state", message)
            }
            AllocError::RotationCooldown { retry_after_s, .. } => {
                Self::new(StatusCode::CONFLICT, "rotation_cooldown", message)
                    .with_retry_after(retry_after_s)
            }
            AllocError::DuplicateIdentity(_) => {
                Self::new(StatusCode::CONFLICT, "duplicate_identity", message)
            }
            AllocError::AgentOffline => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "agent_offline", message)
            }
            AllocError::AgentTimeout(_) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "agent_timeout", message)
            }
            AllocError::AgentRefused { code, .. } => {
                Self::new(StatusCode::BAD_GATEWAY, code, message)
            }
            AllocError::Store(_) | AllocError::Credentials(_) | AllocError::Internal(_) => {
                Self::internal(&e)
            }
        }
    }
}
