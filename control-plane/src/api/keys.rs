//! `/v1/keys` (admin, or the operator on the local admin socket): create a key (shown once,
//! in this answer only), list keys (never the key itself: id, role, name, tenant, created,
//! last used, expiry), revoke one (its next request — and one already running — gets 401).

use super::auth::Admin;
use super::json::{ApiJson, ApiPath};
use super::AppState;
use crate::http_error::ApiError;
use crate::ids::now;
use crate::keys::KeySpec;
use crate::keys::KeyView;
use crate::store::Role;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `POST /v1/keys` body, by `role`: only a marketplace key has a tenant, only a seller key
/// a seller label.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyRequest {
    /// An operator's key: every tenant.
    Admin {
        /// Always absent or `null`: admin keys see every tenant.
        #[serde(default)]
        #[schema(schema_with = null_only)]
        tenant: Option<NoTenant>,
        /// Who it is for: 1–64 printable characters (not personal data: docs/privacy.md).
        #[schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
            example = "ops-alice"
        )]
        name: String,
        /// When the key stops working (RFC 3339; default: never).
        #[serde(default, with = "time::serde::rfc3339::option")]
        #[schema(value_type = Option<String>, format = DateTime)]
        expires_at: Option<OffsetDateTime>,
    },
    /// A shop backend's key: one tenant.
    Marketplace {
        /// Who it is for: 1–64 printable characters (not personal data: docs/privacy.md).
        #[schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
            example = "shop-backend"
        )]
        name: String,
        /// The tenant (default: `default`); 1–64 of `[a-z0-9._-]`.
        #[serde(default)]
        #[schema(pattern = "^[a-z0-9._-]{1,64}$", example = "shop-eu")]
        tenant: Option<String>,
        /// When the key stops working (RFC 3339; default: never).
        #[serde(default, with = "time::serde::rfc3339::option")]
        #[schema(value_type = Option<String>, format = DateTime)]
        expires_at: Option<OffsetDateTime>,
    },
    /// A seller's key: the boxes enrolled with enrollment tokens of one label.
    Seller {
        /// Who it is for: 1–64 printable characters (not personal data: docs/privacy.md).
        #[schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
            example = "seller-berlin-dashboard"
        )]
        name: String,
        /// The label of the seller's enrollment tokens (its agents carry it): 1–128
        /// printable characters.
        #[schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
            example = "seller-berlin"
        )]
        seller: String,
        /// When the key stops working (RFC 3339; default: never).
        #[serde(default, with = "time::serde::rfc3339::option")]
        #[schema(value_type = Option<String>, format = DateTime)]
        expires_at: Option<OffsetDateTime>,
    },
}

/// What an admin key's `tenant` may be: nothing. `null` reads as absent (as it always did);
/// any value is refused with the reason.
#[derive(Debug)]
pub struct NoTenant;

impl<'de> Deserialize<'de> for NoTenant {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "admin keys have no tenant: they see every tenant",
        ))
    }
}

fn null_only() -> utoipa::openapi::schema::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Null)
        .build()
}

impl From<KeyRequest> for KeySpec {
    fn from(request: KeyRequest) -> Self {
        match request {
            KeyRequest::Admin {
                name, expires_at, ..
            } => KeySpec {
                role: Role::Admin,
                name,
                tenant: None,
                seller: None,
                expires_at,
            },
            KeyRequest::Marketplace {
                name,
                tenant,
                expires_at,
            } => KeySpec {
                role: Role::Marketplace,
                name,
                tenant,
                seller: None,
                expires_at,
            },
            KeyRequest::Seller {
                name,
                seller,
                expires_at,
            } => KeySpec {
                role: Role::Seller,
                name,
                tenant: None,
                seller: Some(seller),
                expires_at,
            },
        }
    }
}

/// `{"keys": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    keys: Vec<KeyView>,
}

/// 201 with the key object and `key` (the only time it is shown).
#[utoipa::path(post, operation_id = "create_key", path = "/v1/keys", tag = "admin", security(("admin" = [])),
    request_body = KeyRequest,
    responses((status = 201, description = "Created; `key` is shown this once.", body = KeyView)))]
pub async fn create(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<KeyRequest>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let spec = KeySpec::from(body);
    if let Some(problem) = spec.problem(now()) {
        return Err(ApiError::invalid(problem));
    }
    let (key, info) = state.store.issue_key(&spec, &caller.actor()).await?;
    tracing::info!(key_id = %info.key_id, role = spec.role.as_str(), by = %caller.name, "API key created");
    let mut answer = KeyView::from(&info);
    answer.key = Some(key);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// 200 `{"keys":[…]}`.
#[utoipa::path(get, operation_id = "list_keys", path = "/v1/keys", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "Every key (never the key itself).", body = KeyList)))]
pub async fn list(
    Admin(_caller): Admin,
    State(state): State<AppState>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state
        .store
        .api_keys()
        .await?
        .iter()
        .map(KeyView::from)
        .collect();
    Ok(Json(KeyList { keys }))
}

/// 204; 404 for an unknown id.
#[utoipa::path(delete, operation_id = "revoke_key", path = "/v1/keys/{key_id}", tag = "admin", security(("admin" = [])),
    params(("key_id" = String, Path, description = "`key_…`")),
    responses(
        (status = 204, description = "Revoked: it authenticates nothing from now on."),
        (status = 404, description = "No such key (`not_found`).", body = crate::http_error::ErrorBody),
    ))]
pub async fn revoke(
    Admin(caller): Admin,
    State(state): State<AppState>,
    ApiPath(key_id): ApiPath,
) -> Result<StatusCode, ApiError> {
    if !crate::keys::revoke(&state.store, &key_id, &caller.actor()).await? {
        return Err(ApiError::not_found(format!("no key {key_id:?}")));
    }
    tracing::info!(key_id, by = %caller.name, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
