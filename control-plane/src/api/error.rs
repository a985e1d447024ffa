//! How the REST API answers each error the layers below it can meet: the contract's status
//! and code for every [`AllocError`] and storage error (the shape itself is
//! [`crate::http_error::ApiError`]).

use crate::allocator::AllocError;
use crate::http_error::ApiError;
use crate::store::{EraseError, StoreError};
use axum::http::StatusCode;

impl From<StoreError> for ApiError {
    /// 503 `store_unavailable` while the database cannot be reached (it comes back by
    /// itself: retry), else 500.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!("storage unavailable: {e}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the plane's database cannot be reached right now; retry shortly",
                )
                .with_retry_after(5)
            }
            e => Self::internal(&e),
        }
    }
}

impl From<EraseError> for ApiError {
    fn from(e: EraseError) -> Self {
        let message = e.to_string();
        match e {
            EraseError::Unknown(_) => Self::not_found(message),
            // A `pending` allocation fails within its provisioning timeout: try again then.
            EraseError::Live(_) => {
                Self::new(StatusCode::CONFLICT, "invalid_state", message).with_retry_after(5)
            }
            EraseError::Store(e) => e.into(),
        }
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
            AllocError::Store(e) => e.into(),
            AllocError::Credentials(_) | AllocError::Internal(_) => Self::internal(&e),
        }
    }
}
