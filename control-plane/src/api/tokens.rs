//! `/v1/enrollment-tokens` (admin): issue a one-time enrollment token (returned once; only
//! its hash is stored), list them (id, label, created, expiry, used — never the token),
//! revoke an unused one.

use super::auth::Admin;
use super::json::{ApiJson, ApiPath};
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::{now, random_bytes, rfc3339};
use crate::store::{fingerprint, AuditAction, TokenRecord};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use time::Duration;
use tracing::info;

/// Token lifetime when `ttl_s` is omitted.
pub const DEFAULT_TOKEN_TTL_S: u64 = 3600;
/// Longest token lifetime (30 days).
pub const MAX_TOKEN_TTL_S: u64 = 30 * 24 * 3600;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    label: String,
    #[serde(default)]
    ttl_s: Option<u64>,
}

/// 201 `{"token","expires_at","label"}`.
pub async fn create(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > 128 || label.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "label must be 1–128 printable characters",
        ));
    }
    let ttl_s = body.ttl_s.unwrap_or(DEFAULT_TOKEN_TTL_S);
    if !(1..=MAX_TOKEN_TTL_S).contains(&ttl_s) {
        return Err(ApiError::invalid(format!(
            "ttl_s must be between 1 and {MAX_TOKEN_TTL_S}"
        )));
    }
    let token = format!("fht_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    let created_at = now();
    let expires_at = created_at + Duration::seconds(i64::try_from(ttl_s).unwrap_or(i64::MAX));
    let record = TokenRecord {
        label: label.to_string(),
        created_at,
        expires_at,
        used: false,
        agent_id: None,
    };
    state.store.insert_enrollment_token(&token, &record)?;
    info!(label, ttl_s, by = %caller.name, "enrollment token issued");
    state.store.audit(
        caller.actor(),
        AuditAction::EnrollmentTokenIssued,
        format!("token:{}", fingerprint(&token)),
        json!({"label": label, "expires_at": rfc3339(expires_at)}),
    );
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"token": token, "token_id": format!("tok_{}", fingerprint(&token)),
                    "expires_at": rfc3339(expires_at), "label": label}),
        ),
    ))
}

/// 200 `{"tokens":[{"token_id","label","created_at","expires_at","used","expired"}]}`.
pub async fn list(
    Admin(_caller): Admin,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let at = now();
    let tokens: Vec<Value> = state
        .store
        .enrollment_tokens()?
        .into_iter()
        .map(|(token_id, t)| {
            json!({"token_id": token_id, "label": t.label, "created_at": rfc3339(t.created_at),
                   "expires_at": rfc3339(t.expires_at), "used": t.used,
                   "expired": t.expires_at <= at})
        })
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

/// 204: an unused token can no longer enroll; 404 unknown; 409 `invalid_state` if it was
/// used (revoke the agent it enrolled instead).
pub async fn revoke(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(token_id): ApiPath,
) -> Result<StatusCode, ApiError> {
    match state.store.revoke_enrollment_token(&token_id)? {
        None => Err(ApiError::not_found(format!(
            "no enrollment token {token_id:?}"
        ))),
        Some(t) if t.used => Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_state",
            "this token was already used; revoke the agent it enrolled instead",
        )),
        Some(t) => {
            info!(token_id, label = %t.label, by = %caller.name, "enrollment token revoked");
            state.store.audit(
                caller.actor(),
                AuditAction::EnrollmentTokenRevoked,
                format!("token:{}", token_id.trim_start_matches("tok_")),
                json!({"label": t.label}),
            );
            Ok(StatusCode::NO_CONTENT)
        }
    }
}
