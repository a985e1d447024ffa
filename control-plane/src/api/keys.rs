//! `/v1/keys` (admin, or the operator on the local admin socket): create a key (shown once,
//! in this answer only), list keys (never the key itself: id, role, name, tenant, created,
//! last used, expiry), revoke one (its next request — and one already running — gets 401).

use super::auth::Admin;
use super::json::{ApiJson, ApiPath};
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::now;
use crate::keys::KeySpec;
use crate::store::Role;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use time::OffsetDateTime;

/// `POST /v1/keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    role: Role,
    name: String,
    /// Marketplace keys: the tenant (default: `default`).
    #[serde(default)]
    tenant: Option<String>,
    /// When the key stops working (RFC 3339; default: never).
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

/// 201 with the key object and `key` (the only time it is shown).
pub async fn create(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<KeyRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = KeySpec {
        role: body.role,
        name: body.name,
        tenant: body.tenant,
        expires_at: body.expires_at,
    };
    if let Some(problem) = spec.problem(now()) {
        return Err(ApiError::invalid(problem));
    }
    let (key, info) = state.store.issue_key(&spec, &caller.actor())?;
    tracing::info!(key_id = %info.key_id, role = spec.role.as_str(), by = %caller.name, "API key created");
    let mut answer = crate::keys::view(&info);
    answer["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// 200 `{"keys":[…]}`.
pub async fn list(
    Admin(_caller): Admin,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let keys: Vec<Value> = state
        .store
        .api_keys()?
        .iter()
        .map(crate::keys::view)
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

/// 204; 404 for an unknown id.
pub async fn revoke(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(key_id): ApiPath,
) -> Result<StatusCode, ApiError> {
    if !crate::keys::revoke(&state.store, &key_id, &caller.actor())? {
        return Err(ApiError::not_found(format!("no key {key_id:?}")));
    }
    tracing::info!(key_id, by = %caller.name, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
