//! Bearer-key authentication and role checks as extractors: [`Admin`] for operator routes,
//! [`AnyRole`] for routes open to admin and marketplace keys, [`SellerScope`] for the seller
//! routes (seller keys, and admins naming a seller). A seller key opens nothing else. A
//! missing, unknown, revoked or expired key is 401 `unauthorized`; a known key of the wrong
//! role is 403 `forbidden`.
//! Requests on the local admin socket (`local_admin`) are the operator: admin, no key.
//!
//! Every 401 spends one event of the client address's failure budget (`ratelimit`); an
//! address with none left gets 429 `rate_limited` before its key is even looked at.
//!
//! A key revoked while its request runs (an allocation waits for an agent for seconds)
//! does not get the answer: [`recheck`] looks the key up again once the handler is done
//! and answers 401 instead.

use super::AppState;
use crate::http_error::ApiError;
use crate::ratelimit::ClientAddr;
use crate::store::{AuditAction, Role};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, OnceLock};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's role.
    pub role: Role,
    /// The key's name.
    pub name: String,
    /// The key's id (`None`: the operator on the local admin socket).
    pub key_id: Option<String>,
    /// The tenant a marketplace key acts for; `None` for other keys.
    pub tenant: Option<String>,
    /// The seller label a seller key sees; `None` for other keys.
    pub seller: Option<String>,
}

/// Set on requests that came in on the local admin socket (never on a TCP request).
#[derive(Debug, Clone, Copy)]
pub struct LocalOperator;

/// Where the extractor leaves the id of the key that authenticated the request, for
/// [`recheck`].
#[derive(Debug, Clone, Default)]
struct AuthenticatedKey(Arc<OnceLock<String>>);

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
pub async fn note_failure(state: &AppState, client: ClientAddr, scope: &str) {
    if !state.limits.rest_auth.spend(&client.limit_key()) {
        return;
    }
    tracing::warn!(%client, scope, "too many failed authentications: refusing this address for a while");
    state
        .store
        .audit(
            format!("client:{client}"),
            AuditAction::AuthFailureBurst,
            format!("client:{client}"),
            serde_json::json!({"scope": scope, "window_s": state.limits.rest_window_s}),
        )
        .await;
}

/// A caller with the admin role.
#[derive(Debug)]
pub struct Admin(pub Caller);

/// An admin or a marketplace caller (the REST API's shared routes; not seller keys).
#[derive(Debug)]
pub struct AnyRole(pub Caller);

/// An admin or a seller caller (the seller routes).
#[derive(Debug)]
pub struct SellerScope(pub Caller);

async fn caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    if parts.extensions.get::<LocalOperator>().is_some() {
        return Ok(Caller {
            role: Role::Admin,
            name: "local".into(),
            key_id: None,
            tenant: None,
            seller: None,
        });
    }
    let client = ClientAddr::of(parts);
    check_budget(state, client)?;
    match authenticate(parts, state).await {
        Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
            note_failure(state, client, "api_key").await;
            Err(e)
        }
        other => other,
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
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
    let now = crate::ids::now();
    let found = state
        .store
        .find_api_key(key, now)
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    // Written once a minute at most, so most requests skip even the call.
    if !found.used_recently(now) {
        if let Err(e) = state.store.touch_api_key(&found.key_id, now).await {
            tracing::warn!(error = %e, "cannot note a key's last use");
        }
    }
    if let Some(slot) = parts.extensions.get::<AuthenticatedKey>() {
        let _ = slot.0.set(found.key_id.clone());
    }
    Ok(Caller {
        role: found.record.role,
        tenant: found.record.tenant().map(str::to_owned),
        seller: found.record.seller().map(str::to_owned),
        name: found.record.name,
        key_id: Some(found.key_id),
    })
}

/// Middleware: a request whose key was revoked while it ran gets 401, not
/// the handler's answer — which may hold buyer credentials.
pub async fn recheck(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let slot = AuthenticatedKey::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    let Some(key_id) = slot.0.get() else {
        return response;
    };
    match state.store.api_key_exists(key_id).await {
        Ok(true) => response,
        Ok(false) => {
            tracing::info!(
                key_id,
                "a key was revoked while its request ran: answer withheld"
            );
            ApiError::unauthorized().into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller(parts, state).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::forbidden());
        }
        Ok(Admin(caller))
    }
}

impl FromRequestParts<AppState> for AnyRole {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller(parts, state).await?;
        if caller.role == Role::Seller {
            return Err(ApiError::forbidden());
        }
        Ok(AnyRole(caller))
    }
}

impl FromRequestParts<AppState> for SellerScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller(parts, state).await?;
        if caller.role == Role::Marketplace {
            return Err(ApiError::forbidden());
        }
        Ok(SellerScope(caller))
    }
}
