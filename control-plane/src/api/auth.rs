//! Bearer-key authentication and role checks as extractors: [`Admin`] for operator routes,
//! [`AnyRole`] for routes open to admin and marketplace keys. A missing or unknown key is
//! 401 `unauthorized`; a known key of the wrong role is 403 `forbidden`.
//!
//! Every 401 spends one event of the client address's failure budget (`ratelimit`); an
//! address with none left gets 429 `rate_limited` before its key is even looked at.

use super::error::ApiError;
use super::AppState;
use crate::ratelimit::ClientAddr;
use crate::store::{AuditAction, Role};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's role.
    pub role: Role,
    /// The key's name.
    pub name: String,
}

impl Caller {
    /// How the audit log names this caller: `ROLE:NAME`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.name)
    }
}

/// 429 when `client` has no failed-authentication budget left.
pub fn check_budget(state: &AppState, client: ClientAddr) -> Result<(), ApiError> {
    state
        .limits
        .rest_auth
        .check(&client.limit_key())
        .map_err(|limited| ApiError::rate_limited("failed authentications", limited))
}

/// Spends one failed authentication of `client`; the one that empties the budget is
/// recorded in the audit log (once per burst).
pub fn note_failure(state: &AppState, client: ClientAddr, scope: &str) {
    if !state.limits.rest_auth.spend(&client.limit_key()) {
        return;
    }
    tracing::warn!(%client, scope, "too many failed authentications: refusing this address for a while");
    state.store.audit(
        format!("client:{client}"),
        AuditAction::AuthFailureBurst,
        format!("client:{client}"),
        serde_json::json!({"scope": scope, "window_s": state.limits.rest_window_s}),
    );
}

/// A caller with the admin role.
#[derive(Debug)]
pub struct Admin(pub Caller);

/// A caller with any role.
#[derive(Debug)]
pub struct AnyRole(pub Caller);

fn caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let client = ClientAddr::of(parts);
    check_budget(state, client)?;
    match authenticate(parts, state) {
        Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
            note_failure(state, client, "api_key");
            Err(e)
        }
        other => other,
    }
}

fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::unauthorized)?;
    let key = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(ApiError::unauthorized)?;
    let record = state
        .store
        .find_api_key(key)?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Caller {
        role: record.role,
        name: record.name,
    })
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller(parts, state)?;
        if caller.role != Role::Admin {
            return Err(ApiError::forbidden());
        }
        Ok(Admin(caller))
    }
}

impl FromRequestParts<AppState> for AnyRole {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        caller(parts, state).map(AnyRole)
    }
}
