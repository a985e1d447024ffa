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
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::Duration;
use tracing::info;

/// Token lifetime when `ttl_s` is omitted.
pub const DEFAULT_TOKEN_TTL_S: u64 = 3600;
/// Longest token lifetime (30 days).
pub const MAX_TOKEN_TTL_S: u64 = 30 * 24 * 3600;

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The operator's label, copied to the agent it enrolls: 1–128 printable characters
    /// (an opaque seller id, not personal data: docs/privacy.md).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
        example = "seller-42"
    )]
    label: String,
    /// Lifetime in seconds (default 3600, at most 30 days).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2_592_000, example = 3600)]
    ttl_s: Option<u64>,
}

/// A new token: shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    /// The one-time token for `farmhand-agent enroll`.
    #[schema(example = "fht_…")]
    token: String,
    /// `tok_` + 12 hex digits: how the API and the audit log name it.
    token_id: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    expires_at: String,
    /// The label.
    label: String,
}

/// One token as listed (never the token).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    token_id: String,
    label: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    expires_at: String,
    /// An agent enrolled with it.
    used: bool,
    /// Past its expiry.
    expired: bool,
}

/// `{"tokens": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    tokens: Vec<TokenView>,
}

/// 201 `{"token","expires_at","label"}`.
#[utoipa::path(post, operation_id = "create_enrollment_token", path = "/v1/enrollment-tokens", tag = "admin", security(("admin" = [])),
    request_body = TokenRequest,
    responses((status = 201, description = "Issued; `token` is shown this once.", body = NewToken)))]
pub async fn create(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let label = body.label.trim();
    if !crate::store::valid_label(label) {
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
    state.store.insert_enrollment_token(&token, &record).await?;
    info!(label, ttl_s, by = %caller.name, "enrollment token issued");
    state
        .store
        .audit(
            caller.actor(),
            AuditAction::EnrollmentTokenIssued,
            format!("token:{}", fingerprint(&token)),
            json!({"label": label, "expires_at": rfc3339(expires_at)}),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(NewToken {
            token_id: format!("tok_{}", fingerprint(&token)),
            token,
            expires_at: rfc3339(expires_at),
            label: label.to_string(),
        }),
    ))
}

/// 200 `{"tokens":[{"token_id","label","created_at","expires_at","used","expired"}]}`.
#[utoipa::path(get, operation_id = "list_enrollment_tokens", path = "/v1/enrollment-tokens", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Every stored token, oldest first.", body = TokenList)))]
pub async fn list(
    Admin(_caller): Admin,
    State(state): State<AppState>,
) -> Result<Json<TokenList>, ApiError> {
    let at = now();
    let tokens = state
        .store
        .enrollment_tokens()
        .await?
        .into_iter()
        .map(|(token_id, t)| TokenView {
            token_id,
            label: t.label,
            created_at: rfc3339(t.created_at),
            expires_at: rfc3339(t.expires_at),
            used: t.used,
            expired: t.expires_at <= at,
        })
        .collect();
    Ok(Json(TokenList { tokens }))
}

/// 204: an unused token can no longer enroll; 404 unknown; 409 `invalid_state` if it was
/// used (revoke the agent it enrolled instead).
#[utoipa::path(delete, operation_id = "revoke_enrollment_token", path = "/v1/enrollment-tokens/{token_id}", tag = "admin",
    security(("admin" = [])),
    params(("token_id" = String, Path, description = "`tok_…`")),
    responses(
        (status = 204, description = "It can no longer enroll."),
        (status = 404, description = "No such token (`not_found`).", body = crate::http_error::ErrorBody),
        (status = 409, description = "It was used (`invalid_state`): revoke its agent instead.", body = crate::http_error::ErrorBody),
    ))]
pub async fn revoke(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(token_id): ApiPath,
) -> Result<StatusCode, ApiError> {
    match state.store.revoke_enrollment_token(&token_id).await? {
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
            state
                .store
                .audit(
                    caller.actor(),
                    AuditAction::EnrollmentTokenRevoked,
                    format!("token:{}", token_id.trim_start_matches("tok_")),
                    json!({"label": t.label}),
                )
                .await;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}
